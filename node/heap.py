"""The node's heap upkeep (memorose/runtime.py says why): settle the heap once the node has
loaded what it keeps, now and then collect it in full and freeze it again, and hand freed
memory back to the system each time the node falls idle after work."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from memorose.config import RuntimeSettings
from memorose.runtime import HeapReport, configure_gc, limit_malloc_arenas, release_free_heap, settle_heap
from node.tasks import BackgroundTask

log = logging.getLogger(__name__)

#: Below this share of one core over a check interval, the node counts as idle.
IDLE_CPU_SHARE = 0.05


class HeapSettler(BackgroundTask):
    task_name = "heap-settler"

    def __init__(self, settings: RuntimeSettings, cpu_clock: Callable[[], float] = time.process_time) -> None:
        self.settings = settings
        self.cpu_clock = cpu_clock  # the process's CPU seconds
        self.last: HeapReport | None = None
        self.trims = 0
        # Before the node's threads start, so they share the arenas.
        limit_malloc_arenas(settings.malloc_arenas)

    def start(self) -> None:
        """Settle at once (the caller has just loaded the indexes; the local model loads on
        first use, and its session is C++ memory the collector never walks), then refreeze
        in the background every ``gc_refreeze_secs`` and trim when idle."""
        if self.settings.gc_freeze:
            configure_gc(self.settings.gc_gen0_threshold)
            self.last = settle_heap()
            report = self.last
            log.info("heap settled at start: %d objects frozen (%.0f ms)", report.frozen, report.took_ms)
        if self._refreezing or self.settings.heap_trim_check_secs > 0:
            super().start()

    @property
    def _refreezing(self) -> bool:
        return self.settings.gc_freeze and self.settings.gc_refreeze_secs > 0

    async def _run(self) -> None:
        loops = [self._trim_when_idle()] if self.settings.heap_trim_check_secs > 0 else []
        if self._refreezing:
            loops.append(self._refreeze())
        await asyncio.gather(*loops)

    async def _refreeze(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gc_refreeze_secs)
            self.last = settle_heap(refreeze=True)

    async def _trim_when_idle(self) -> None:
        """One ``malloc_trim`` at the first idle interval after a busy one: the pages a burst
        of queries or writes freed go back to the system, without trimming a busy node
        (whose next allocations would fault them back in) or an idle one over and over."""
        interval = self.settings.heap_trim_check_secs
        busy = False
        last = self.cpu_clock()
        while True:
            await asyncio.sleep(interval)
            now = self.cpu_clock()
            idle = now - last < IDLE_CPU_SHARE * interval
            last = now
            if not idle:
                busy = True
            elif busy:
                busy = False
                await asyncio.to_thread(release_free_heap, False)
                self.trims += 1
