"""Leader-side maintenance: retrieval feedback (Touch) and forgetting passes.

Touch: retrievals served by the leader record which memories they returned; every
``touch_flush_secs`` the buffer becomes one replicated ``touch`` command per tenant, with
the leader's clock. Retrievals served by a follower are NOT forwarded: feedback is a
statistic, and forwarding would put a network hop on every read; they are counted in
``memorose_touch_dropped_total`` (docs/consolidation.md). A leader change loses at most one
flush interval of feedback.

Forgetting: every ``interval_secs`` the leader picks, per tenant, the memories whose
decayed importance at its clock is below ``min_importance`` and proposes one ``forget``
command carrying that time; the state machine re-checks each one at apply.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from memorose import commands
from memorose.config import ForgettingSettings
from memorose.consolidation.forgetting import effective_importance, should_archive
from memorose.errors import MemoroseError
from memorose.models import Memory
from memorose.priority import in_background
from memorose.storage.reader import StateReader
from node.proposer import Proposer
from node.tasks import BackgroundTask

log = logging.getLogger(__name__)

#: Co-retrieval edges link pairs among this many best results of one retrieval.
CO_RETRIEVAL_TOP = 5
#: Memory ids per forget command (bounded apply time on the Raft thread).
FORGET_CHUNK = 500


class TouchBuffer:
    """Accesses and co-retrievals accumulated between two flushes (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accesses: dict[str, Counter[str]] = {}
        self._pairs: dict[str, Counter[tuple[str, str]]] = {}

    def record(self, tenant_id: str, memory_ids: list[str]) -> None:
        if not memory_ids:
            return
        top = sorted(set(memory_ids[:CO_RETRIEVAL_TOP]))
        with self._lock:
            self._accesses.setdefault(tenant_id, Counter()).update(memory_ids)
            self._pairs.setdefault(tenant_id, Counter()).update(itertools.combinations(top, 2))

    def drain(self) -> dict[str, tuple[Counter[str], Counter[tuple[str, str]]]]:
        with self._lock:
            accesses, pairs = self._accesses, self._pairs
            self._accesses, self._pairs = {}, {}
        return {t: (accesses[t], pairs.get(t, Counter())) for t in accesses}


class TouchFlusher(BackgroundTask):
    task_name = "touch-flusher"

    def __init__(
        self,
        buffer: TouchBuffer,
        proposer: Proposer,
        *,
        interval: float,
        boost: float,
        is_leader: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.buffer = buffer
        self.proposer = proposer
        self.interval = interval
        self.boost = boost
        self.is_leader = is_leader
        self.clock = clock
        self.flushed = 0

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except MemoroseError as exc:  # lost leadership, no quorum: expected under faults
                log.warning("touch flush failed (%s); that feedback is dropped", exc)
            except Exception:
                log.warning("touch flush failed; that feedback is dropped", exc_info=True)

    async def flush(self) -> None:
        pending = self.buffer.drain()
        if not pending or not self.is_leader():
            return
        now = self.clock()
        for tenant_id, (accesses, pairs) in sorted(pending.items()):
            command = commands.touch(
                tenant_id,
                now,
                [[m, n] for m, n in sorted(accesses.items())],
                [[a, b, n] for (a, b), n in sorted(pairs.items())],
                self.boost,
            )
            await self.proposer.propose(command)
            self.flushed += 1


class ForgettingWorker(BackgroundTask):
    task_name = "forgetting"

    def __init__(
        self,
        reader: StateReader,
        proposer: Proposer,
        settings: ForgettingSettings,
        *,
        is_leader: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.reader = reader
        self.proposer = proposer
        self.settings = settings
        self.is_leader = is_leader
        self.clock = clock
        self.on_archived: Callable[[str, int], None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        if self.settings.enabled:
            super().start()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval_secs)
            if not self.is_leader():
                continue
            try:
                for tenant_id in self.reader.tenant_ids():
                    await self.run_tenant(tenant_id)
            except Exception:
                log.exception("forgetting pass failed; will retry")

    def preview(self, tenant_id: str, now: float) -> list[tuple[Memory, float]]:
        """What a pass at ``now`` would archive, with each memory's decayed importance."""
        s = self.settings
        out = []
        for memory in self.reader.memories(tenant_id):
            record = memory.to_dict()
            if should_archive(record, now, s.decay_half_life_days, s.min_importance):
                out.append((memory, effective_importance(record, now, s.decay_half_life_days)))
        return out

    async def run_tenant(self, tenant_id: str) -> dict[str, Any]:
        """One forgetting pass over a tenant, at the leader's clock."""
        async with self._lock:
            now = self.clock()
            chosen = await in_background(self.preview, tenant_id, now)
            ids = [m.memory_id for m, _ in chosen]
            archived: list[str] = []
            for start in range(0, len(ids), FORGET_CHUNK):
                command = commands.forget(
                    tenant_id,
                    now,
                    ids[start : start + FORGET_CHUNK],
                    self.settings.decay_half_life_days,
                    self.settings.min_importance,
                )
                result = await self.proposer.propose(command)
                archived += result.get("archived", [])
            if archived and self.on_archived is not None:
                self.on_archived(tenant_id, len(archived))
            return {"tenant_id": tenant_id, "now": now, "archived": archived}
