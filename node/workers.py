"""Background consolidation on the leader: read each tenant's L0 cursor in batches, plan
memories (filter, extract, embed) off the event loop, propose one command per batch.

The command carries ``from_cursor``; the state machine drops it if the cursor moved, so
two leaders racing through a leadership change can never consolidate an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from memorose import commands
from memorose.consolidation.planner import ConsolidationPlanner, Plan
from memorose.errors import Unavailable
from memorose.priority import in_background
from memorose.storage.reader import StateReader
from node.proposer import Proposer

log = logging.getLogger(__name__)


class ConsolidationWorker:
    def __init__(
        self,
        reader: StateReader,
        planner: ConsolidationPlanner,
        proposer: Proposer,
        *,
        interval: float,
        batch_size: int,
        auto: bool = True,
        is_leader: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.planner = planner
        self.proposer = proposer
        self.interval = interval
        self.batch_size = batch_size
        #: False: a pass runs only when triggered (``consolidation.auto``).
        self.auto = auto
        self.is_leader = is_leader
        self.clock = clock
        self._trigger = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pass: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.stats: dict[str, int] = {"batches": 0, "events": 0, "memories": 0, "rejected": 0, "errors": 0}
        self.on_batch: Callable[[str, int, int, dict[str, str]], None] | None = None
        #: Called with the whole plan of every applied batch (pipeline metrics).
        self.on_plan: Callable[[str, int, Plan, dict[str, Any]], None] | None = None
        #: Awaited before planning a batch: arbitration must see the previous batch's
        #: memories in the indexes (the node waits for the indexer).
        self.before_plan: Callable[[], Awaitable[None]] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="consolidation")

    def trigger(self) -> None:
        self._trigger.set()

    def on_leadership_lost(self) -> None:
        """Stop the pass in flight at once (its proposals could no longer commit anyway);
        a new leader resumes from the replicated cursors."""
        if self._pass is not None and not self._pass.done():
            self._pass.cancel()
            self.stats["cancelled"] = self.stats.get("cancelled", 0) + 1

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._trigger.wait(), self.interval if self.auto else None)
            self._trigger.clear()
            if not self.is_leader():
                continue
            self._pass = asyncio.create_task(self.run_pass(), name="consolidation-pass")
            await asyncio.wait({self._pass})
            if self._pass.cancelled():
                log.info("consolidation pass cancelled: leadership lost")
            elif self._pass.exception() is not None:
                self.stats["errors"] += 1
                log.error("consolidation pass failed; will retry", exc_info=self._pass.exception())
            self._pass = None

    async def stop(self) -> None:
        if self._pass is not None:
            self._pass.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(
                *(t for t in (self._task, self._pass) if t is not None), return_exceptions=True
            )

    async def run_pass(self) -> None:
        for tenant_id in self.reader.tenant_ids():
            if not self.is_leader():
                return
            await self.consolidate_tenant(tenant_id)

    async def consolidate_tenant(self, tenant_id: str, upto_seq: int | None = None) -> None:
        """Consolidate pending events of one tenant (up to ``upto_seq`` if given)."""
        async with self._lock:
            while self.is_leader():
                record = self.reader.tenant(tenant_id)
                if record is None:
                    return
                cursor, last = record["cursor"], record["next_seq"] - 1
                if upto_seq is not None:
                    last = min(last, upto_seq)
                if cursor >= last:
                    return
                await self._consolidate_batch(tenant_id, cursor, min(last, cursor + self.batch_size))

    async def _consolidate_batch(self, tenant_id: str, cursor: int, to_seq: int) -> None:
        events = list(self.reader.events(tenant_id, after_seq=cursor, limit=to_seq - cursor))
        if self.before_plan is not None:
            await self.before_plan()
        now = self.clock()
        try:
            plan = await in_background(self.planner.plan, tenant_id, events, now)
        except Exception as exc:  # a provider is down: the cursor stays, the batch is retried
            self.stats["errors"] += 1
            log.warning("planning a consolidation batch of %s failed: %s", tenant_id, exc)
            raise Unavailable(f"consolidation is failing: {str(exc)[:200]}", retry_after=5.0) from exc
        command = commands.consolidate(
            tenant_id,
            cursor,
            to_seq,
            plan.memories,
            now,
            ops=plan.ops,
            edges=plan.edges,
            rejected=plan.rejected,
        )
        result: dict[str, Any] = await self.proposer.propose(command)
        if not result.get("ok"):
            log.info("consolidation batch for %s not applied: %s", tenant_id, result.get("error"))
            return
        self.stats["batches"] += 1
        self.stats["events"] += len(events)
        self.stats["memories"] += plan.created
        self.stats["rejected"] += len(plan.rejected)
        if self.on_batch is not None:
            self.on_batch(tenant_id, len(events), plan.created, plan.rejected)
        if self.on_plan is not None:
            self.on_plan(tenant_id, len(events), plan, result)
