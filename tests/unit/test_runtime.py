"""The server's process settings: garbage collector (memorose/runtime.py, node/heap.py), open files."""

from __future__ import annotations

import asyncio
import gc
import resource
import subprocess
import sys
import weakref
from collections.abc import Iterator

import pytest

from memorose.config import RuntimeSettings
from memorose.runtime import OPEN_FILES_WANTED, configure_gc, rocksdb_open_files, settle_heap
from node.heap import HeapSettler


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    """A cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_settle_freezes_survivors_out_of_collections() -> None:
    kept = [Node() for _ in range(100)]
    report = settle_heap()
    assert report.frozen >= len(kept) and gc.get_freeze_count() >= len(kept)
    assert not any(o is kept for o in gc.get_objects())  # frozen: collections skip it
    gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())


def test_refreeze_frees_cycles_dropped_after_a_freeze() -> None:
    cycle = Node()
    dropped = weakref.ref(cycle)
    settle_heap()
    del cycle
    gc.collect()
    assert dropped() is not None  # frozen: a plain collection does not see it
    report = settle_heap(refreeze=True)
    assert dropped() is None and report.collected >= 1


def test_configure_gc_sets_the_young_threshold_only() -> None:
    _, gen1, gen2 = gc.get_threshold()
    configure_gc(12_345)
    assert gc.get_threshold() == (12_345, gen1, gen2)


def test_heap_settler_settles_at_start_and_can_be_turned_off() -> None:
    async def run(settings: RuntimeSettings) -> HeapSettler:
        settler = HeapSettler(settings)
        settler.start()
        await settler.stop()
        return settler

    on = asyncio.run(run(RuntimeSettings(gc_gen0_threshold=5_000)))
    assert on.last is not None and on.last.frozen > 0 and gc.get_threshold()[0] == 5_000
    gc.unfreeze()
    off = asyncio.run(run(RuntimeSettings(gc_freeze=False)))
    assert off.last is None and gc.get_freeze_count() == 0


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    """A child lowers its own soft limit to 256, then raises it: it ends at the hard limit."""
    code = (
        "import resource; from memorose.runtime import raise_open_file_limit; "
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], raise_open_file_limit(), hard)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    lowered, raised, hard = (int(x) for x in out.stdout.split())
    assert lowered == 256
    expected = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else hard
    assert raised == expected


def test_rocksdb_keeps_every_table_open_only_under_a_generous_limit() -> None:
    assert rocksdb_open_files(1 << 20) == -1
    assert rocksdb_open_files(OPEN_FILES_WANTED) == -1
    assert rocksdb_open_files(4096) == 2048  # half for tables, half for the rest
    assert rocksdb_open_files(100) == 64
    assert isinstance(rocksdb_open_files(), int)
