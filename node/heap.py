"""The node's garbage-collector upkeep (memorose/runtime.py says why): settle the heap once
the node has loaded what it keeps, then now and then collect it in full and freeze it again."""

from __future__ import annotations

import asyncio
import logging

from memorose.config import RuntimeSettings
from memorose.runtime import HeapReport, prepare_heap, settle_heap
from node.tasks import BackgroundTask

log = logging.getLogger(__name__)


class HeapSettler(BackgroundTask):
    task_name = "heap-settler"

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.last: HeapReport | None = None

    def start(self) -> None:
        """Settle at once (the caller has just loaded the indexes; the local model loads on
        first use, and its session is C++ memory the collector never walks), then refreeze
        in the background every ``gc_refreeze_secs``."""
        self.last = prepare_heap(self.settings.gc_freeze, self.settings.gc_gen0_threshold)
        if self.last is None:
            return
        log.info("heap settled at start: %d objects frozen (%.0f ms)", self.last.frozen, self.last.took_ms)
        if self.settings.gc_refreeze_secs > 0:
            super().start()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gc_refreeze_secs)
            self.last = settle_heap(refreeze=True)
