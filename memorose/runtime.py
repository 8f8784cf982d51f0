"""The Python runtime of a server process: garbage-collector settings that keep pauses short.

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
"""

from __future__ import annotations

import gc
import logging
import time
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
