"""The server's garbage-collector settings (memorose/runtime.py, node/heap.py)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import weakref
from collections.abc import Iterator

import pytest

from memorose.config import RuntimeSettings
from memorose.runtime import configure_gc, settle_heap
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


def test_the_heap_is_trimmed_once_when_the_node_falls_idle_after_work() -> None:
    """CPU used over check intervals (a clock the test drives; 10 ms intervals, idle below
    0.5 ms): a trim at the first idle interval after busy ones, none while busy or idle."""

    async def run(cpu_per_interval: list[float]) -> int:
        readings = [0.0, *itertools.accumulate(cpu_per_interval)]
        done = asyncio.Event()

        def clock() -> float:
            if len(readings) == 1:
                done.set()
            return readings.pop(0) if len(readings) > 1 else readings[0]

        settler = HeapSettler(RuntimeSettings(gc_freeze=False, heap_trim_check_secs=0.01), cpu_clock=clock)
        settler.start()
        await asyncio.wait_for(done.wait(), 10)
        await settler.stop()
        return settler.trims

    assert asyncio.run(run([0.005, 0.008, 0.0, 0.0, 0.0])) == 1
    assert asyncio.run(run([0.005, 0.0, 0.004, 0.0001, 0.0])) == 2
    assert asyncio.run(run([0.0, 0.0001, 0.0])) == 0
    assert asyncio.run(run([0.003, 0.004, 0.005])) == 0  # never idle yet


def test_malloc_arenas_can_be_limited_or_left_to_the_c_library() -> None:
    from memorose.runtime import _MALLOC_TRIM, limit_malloc_arenas

    assert limit_malloc_arenas(0) is False  # 0: the C library's default, nothing asked
    assert limit_malloc_arenas(2) is (_MALLOC_TRIM is not None)  # glibc: accepted
