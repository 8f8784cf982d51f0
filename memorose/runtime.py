"""The memory of a server process: garbage-collector pauses kept short, freed heap given back.

A node holds 100,000+ long-lived objects from its imports alone (aiohttp, pyarrow,
onnxruntime, PySyncObj...), and CPython's full collection visits every one of them: 50 ms
and more with the GIL held, a few times a minute under query load, which was most of the
retrieve p99 at 100K memories (docs/benchmarks.md, "Read path, second round"). The standard
remedy (CPython's ``gc.freeze`` documentation, Instagram's servers):

- once the process has loaded what it keeps, collect and *freeze*: the survivors move to a
  permanent generation that collections never visit again;
- raise the first generation's threshold, so young collections run less often and each
  keeps fewer short-lived objects alive into the older generations;
- now and then (``gc_refreeze_secs``) unfreeze, collect everything and freeze again, so that
  cycles among objects frozen earlier and dropped since are still reclaimed.

Reference counting frees everything else as before: freezing only removes long-lived
objects from the cycle detector's periodic scans.

Giving freed heap back: glibc keeps memory that Python and the native libraries free in its
arenas, for the next allocation; after a one-off peak (the startup load of a 100K-memory
tenant decodes every record) that is ~100-200 MB of resident memory nothing will use again.
``malloc_trim(0)`` returns the free pages of every arena. On another C library (musl,
macOS) it is absent and ``release_free_heap`` only collects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeapReport:
    """What one settle did (for logs and tests)."""

    frozen: int  # objects in the permanent generation afterwards
    collected: int  # unreachable objects found by its full collection
    took_ms: float


def configure_gc(gen0_threshold: int) -> None:
    """Young collections every ``gen0_threshold`` net allocations (CPython's default: 700);
    the older generations keep their default ratios."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def settle_heap(*, refreeze: bool = False) -> HeapReport:
    """Collect, then freeze what survives. With ``refreeze``, objects frozen before are
    unfrozen first, so one full collection also covers them (and frees their dead cycles)."""
    started = time.perf_counter()
    if refreeze:
        gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    report = HeapReport(gc.get_freeze_count(), collected, (time.perf_counter() - started) * 1000)
    log.debug("heap settled: %d objects frozen, %d collected, %.1f ms", *report.__dict__.values())
    return report


def prepare_heap(gc_freeze: bool, gen0_threshold: int) -> HeapReport | None:
    """What a server process does once it has loaded what it keeps (``[runtime]``
    settings): the young-generation threshold, then a settle. None when ``gc_freeze`` is
    off (the collector is left as CPython sets it)."""
    if not gc_freeze:
        return None
    configure_gc(gen0_threshold)
    return settle_heap()


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_MALLOC_TRIM = _load_malloc_trim()


def release_free_heap(collect: bool = True) -> bool:
    """Collect garbage (``collect``), then return free heap pages to the system (glibc
    only); True if the C library could be asked."""
    if collect:
        gc.collect()
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


#: What to raise the soft limit of open files to when the hard limit is unlimited.
OPEN_FILES_WANTED = 65_536


def raise_open_file_limit() -> int:
    """Raise the soft limit of open files to the hard limit (or ``OPEN_FILES_WANTED`` when
    that is unlimited), as database servers do: RocksDB keeps every table open (4 MiB
    tables: ~250 per GB of database) beside the node's client and Raft connections, and a
    common default soft limit is 1,024. Returns the soft limit now (-1: unlimited, or
    no such limit on this platform)."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return _soft_open_files()


def rocksdb_open_files(soft: int | None = None) -> int:
    """RocksDB's ``max_open_files`` for a process whose soft limit of open files is ``soft``
    (read from the process when None): -1 (every table stays open) when the limit is
    generous or unlimited, else half of it, so that tables never take the descriptors the
    node's connections and journal need (RocksDB then closes least used tables)."""
    if soft is None:
        soft = _soft_open_files()
    return -1 if soft < 0 or soft >= OPEN_FILES_WANTED else max(64, soft // 2)


def _soft_open_files() -> int:
    """The soft limit of open files (-1: unlimited, or no such limit on this platform)."""
    try:
        import resource
    except ImportError:
        return -1
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return -1 if soft == resource.RLIM_INFINITY else soft
