"""Background consolidation on the leader: read the tenants' L0 cursors in batches, plan
memories (filter, extract, embed) off the event loop, propose one command per batch.

The command carries ``from_cursor``; the state machine drops it if the cursor moved, so
two leaders racing through a leadership change can never consolidate an event twice.

Work goes in rounds across tenants (docs/consolidation.md, "Many small tenants"): one
round takes one batch from each of several tenants with pending events (up to
``round_events`` events), waits once for the indexer, plans every batch in one trip to the
background thread and proposes the batches' commands together, so that one journal fsync,
one indexer cycle and one Tantivy commit serve them all. A tenant is in a round at most
once, so each of its batches is still planned against indexes that hold its previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from memorose import commands
from memorose.consolidation.planner import ConsolidationPlanner, Plan
from memorose.errors import Unavailable
from memorose.models import Event
from memorose.priority import in_background
from memorose.storage.reader import StateReader
from node.proposer import Proposer

log = logging.getLogger(__name__)


@dataclass
class _Batch:
    """One tenant's share of a round: events (cursor, to_seq]."""

    tenant_id: str
    cursor: int
    to_seq: int
    events: list[Event]
    plan: Plan | None = None
    error: Exception | None = None
    round_no: int = 0  # the round that planned it (ConsolidationWorker._rounds_started)


@dataclass(frozen=True)
class _Want:
    """What the callers waiting for one tenant (``consolidate_tenant``) ask."""

    upto_seq: int  # consolidated at least this far
    #: Rounds started when the latest of them asked: a failure of a round started before
    #: that is not theirs to see (``_retry_for_caller``).
    asked_after_round: int


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
        round_events: int | None = None,
    ) -> None:
        self.reader = reader
        self.planner = planner
        self.proposer = proposer
        self.interval = interval
        self.batch_size = batch_size
        #: False: a pass runs only when triggered (``consolidation.auto``).
        self.auto = auto
        #: Events per round across tenants (at least one batch).
        self.round_events = max(batch_size, round_events or batch_size)
        self.is_leader = is_leader
        self.clock = clock
        self._trigger = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pass: asyncio.Task[None] | None = None
        #: Tenants a caller waits for (``consolidate_tenant``): first in the next round.
        self._wanted: dict[str, _Want] = {}
        #: Notified after every round (waiters re-read their tenant's cursor).
        self._round_done = asyncio.Condition()
        #: Per tenant, the planning failure of its last round (raised to its waiters).
        #: tenant -> (the number of the round that failed it, the error to raise).
        self._failures: dict[str, tuple[int, Exception]] = {}
        self._rounds_started = 0
        self.stats: dict[str, int] = {
            "batches": 0,
            "events": 0,
            "memories": 0,
            "rejected": 0,
            "errors": 0,
            "rounds": 0,
            "prefetched": 0,  # texts embedded ahead of their batch
        }
        self.on_batch: Callable[[str, int, int, dict[str, str]], None] | None = None
        #: Called with the whole plan of every applied batch (pipeline metrics).
        self.on_plan: Callable[[str, int, Plan, dict[str, Any]], None] | None = None
        #: Awaited before planning a round: arbitration must see the previous batch's
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
                await self._notify_round()  # waiters give up: not the leader any more
                continue
            self._pass = asyncio.create_task(self.run_pass(), name="consolidation-pass")
            await asyncio.wait({self._pass})
            failed = False
            if self._pass.cancelled():
                log.info("consolidation pass cancelled: leadership lost")
            elif self._pass.exception() is not None:
                failed = True
                self.stats["errors"] += 1
                log.error("consolidation pass failed; will retry", exc_info=self._pass.exception())
            self._pass = None
            await self._notify_round()
            if failed:  # do not spin on a persistent failure
                await asyncio.sleep(min(1.0, self.interval))

    async def stop(self) -> None:
        if self._pass is not None:
            self._pass.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(
                *(t for t in (self._task, self._pass) if t is not None), return_exceptions=True
            )

    async def run_pass(self) -> None:
        """Drain every tenant with pending events, round-robin, one batch per tenant per round."""
        queue: deque[str] = deque()
        queued: set[str] = set()
        failed: dict[str, int] = {}  # tenant -> the round its batch failed in
        rounds_left = 0
        while self.is_leader():
            if rounds_left <= 0:
                # Once per turn of the queue: tenants whose events arrived during the pass
                # join it now instead of waiting for a long pass (a 1M backlog) to end.
                fresh = [t for t in self._pending_tenants() if t not in queued and t not in failed]
                queue.extend(fresh)
                queued.update(fresh)
                rounds_left = max(1, len(queue) * self.batch_size // self.round_events)
            round_ = self._next_round(queue, queued, failed)
            rounds_left -= 1
            if not round_:
                return
            # Nobody else queued: the next round is these tenants' next batches.
            in_round = {batch.tenant_id for batch in round_}
            await self._consolidate_round(round_, prefetch=all(t in in_round for t in queue))
            for batch in round_:
                if batch.error is not None:
                    failed[batch.tenant_id] = batch.round_no  # retried on the next pass, not in a loop
                elif batch.tenant_id not in queued:
                    queue.append(batch.tenant_id)  # still pending? checked when picked again
                    queued.add(batch.tenant_id)

    async def consolidate_tenant(self, tenant_id: str, upto_seq: int | None = None) -> None:
        """Wait until this tenant is consolidated up to ``upto_seq`` (everything pending if
        None). The worker's rounds do the work, this tenant first; a planning failure of
        its batch is raised here (Unavailable)."""
        if not self.is_leader():
            return
        record = self.reader.tenant(tenant_id)
        if record is None:
            return
        target = record["next_seq"] - 1 if upto_seq is None else upto_seq
        # A round already planned when the caller asked may still fail with an outage
        # that is over now: only a round started after this call may fail it.
        asked_after_round = self._rounds_started
        async with self._round_done:
            while self.is_leader():
                record = self.reader.tenant(tenant_id)
                if record is None or record["cursor"] >= min(target, record["next_seq"] - 1):
                    return
                round_no, failure = self._failures.get(tenant_id, (0, None))
                if failure is not None and round_no > asked_after_round:
                    del self._failures[tenant_id]
                    raise failure
                self._want(tenant_id, target, asked_after_round)
                self._trigger.set()
                await self._round_done.wait()

    # -- rounds ----------------------------------------------------------------------------
    def _pending_tenants(self) -> list[str]:
        return [t for t, record in self.reader.tenant_records() if record["cursor"] < record["next_seq"] - 1]

    def _next_round(self, queue: deque[str], queued: set[str], failed: dict[str, int]) -> list[_Batch]:
        """Wanted tenants first, then the pass's queue, until ``round_events`` events. A
        tenant whose batch failed in this pass waits for the next one, unless a caller
        asked for it after the failing round had started (``_retry_for_caller``)."""
        picked: list[_Batch] = []
        seen: set[str] = set()
        budget = self.round_events
        wanted = list(self._wanted)
        while budget > 0 and (wanted or queue):
            if wanted:
                tenant_id = wanted.pop(0)
                if tenant_id in failed and self._retry_for_caller(tenant_id, failed[tenant_id]):
                    del failed[tenant_id]
            else:
                tenant_id = queue.popleft()
                queued.discard(tenant_id)
            if tenant_id in seen or tenant_id in failed:
                continue
            seen.add(tenant_id)
            batch = self._batch_of(tenant_id, min(self.batch_size, budget))
            if batch is None:
                self._unwant(tenant_id)
                continue
            picked.append(batch)
            budget -= batch.to_seq - batch.cursor
        return picked

    def _retry_for_caller(self, tenant_id: str, failed_in_round: int) -> bool:
        """Whether a caller waits for this tenant who asked once the round that failed it
        had started: that failure was never the caller's to see, so it is retried now."""
        want = self._wanted.get(tenant_id)
        return want is not None and want.asked_after_round >= failed_in_round

    def _want(self, tenant_id: str, upto_seq: int, asked_after_round: int) -> None:
        """Each field the most any waiting caller asks."""
        was = self._wanted.get(tenant_id, _Want(0, 0))
        self._wanted[tenant_id] = _Want(
            max(was.upto_seq, upto_seq), max(was.asked_after_round, asked_after_round)
        )

    def _unwant(self, tenant_id: str) -> None:
        self._wanted.pop(tenant_id, None)

    def _batch_of(self, tenant_id: str, size: int) -> _Batch | None:
        record = self.reader.tenant(tenant_id)
        if record is None:
            return None
        cursor, last = record["cursor"], record["next_seq"] - 1
        want = self._wanted.get(tenant_id)
        if want is not None and cursor >= min(want.upto_seq, last):
            return None  # what the caller waits for is done; the pass takes the rest
        if cursor >= last:
            return None
        return _Batch(tenant_id, cursor, min(last, cursor + size), [])

    async def _consolidate_round(self, round_: list[_Batch], prefetch: bool = False) -> None:
        if self.before_plan is not None:
            await self.before_plan()
        self._rounds_started += 1
        round_no = self._rounds_started
        for batch in round_:
            batch.round_no = round_no
        now = self.clock()
        # The next batches' facts are embedded (in the model, outside the GIL) while this
        # round is planned (Python) and proposed: the two overlap on two cores.
        # A cancelled round (leadership lost) does not wait for it: the thread finishes alone.
        ahead = asyncio.ensure_future(in_background(self._prefetch_next, round_)) if prefetch else None
        await in_background(self._plan_all, round_, now)
        proposals = [(b, self._command(b, now)) for b in round_ if b.plan is not None]
        results = await asyncio.gather(
            *(self.proposer.propose(command) for _, command in proposals), return_exceptions=True
        )
        if ahead is not None:
            await ahead  # never two rounds' prefetches at once
        self.stats["rounds"] += 1
        for batch in round_:
            if batch.error is not None:
                self._failures[batch.tenant_id] = (round_no, batch.error)
                self._unwant(batch.tenant_id)
        failure: BaseException | None = None
        for (batch, _), result in zip(proposals, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                self._applied(batch, result)
        await self._notify_round()
        if failure is not None:
            raise failure  # not the leader any more, or the outcome is unknown: next pass

    def _plan_all(self, round_: list[_Batch], now: float) -> None:
        """Off the event loop: read and plan every batch of the round. A failing provider
        fails its batch only; its cursor stays and the batch is retried on the next pass."""
        for batch in round_:
            batch.events = list(
                self.reader.events(batch.tenant_id, after_seq=batch.cursor, limit=batch.to_seq - batch.cursor)
            )
            try:
                batch.plan = self.planner.plan(batch.tenant_id, batch.events, now)
            except Exception as exc:
                self.stats["errors"] += 1
                log.warning("planning a consolidation batch of %s failed: %s", batch.tenant_id, exc)
                batch.error = Unavailable(f"consolidation is failing: {str(exc)[:200]}", retry_after=5.0)

    def _prefetch_next(self, round_: list[_Batch]) -> None:
        """Off the event loop, while the round is planned and proposed: embed each
        tenant's next batch ahead (Planner.prefetch). Best effort: a failure here is the
        next round's to report, when it plans for real."""
        for batch in round_:
            try:
                coming = self.reader.events(batch.tenant_id, after_seq=batch.to_seq, limit=self.batch_size)
                self.stats["prefetched"] += self.planner.prefetch(list(coming))
            except Exception as exc:
                log.debug("embedding ahead for %s failed: %s", batch.tenant_id, exc)

    @staticmethod
    def _command(batch: _Batch, now: float) -> dict[str, Any]:
        plan = batch.plan
        assert plan is not None
        return commands.consolidate(
            batch.tenant_id,
            batch.cursor,
            batch.to_seq,
            plan.memories,
            now,
            ops=plan.ops,
            edges=plan.edges,
            rejected=plan.rejected,
        )

    def _applied(self, batch: _Batch, result: dict[str, Any]) -> None:
        plan = batch.plan
        assert plan is not None
        if not result.get("ok"):
            log.info("consolidation batch for %s not applied: %s", batch.tenant_id, result.get("error"))
            return
        self.stats["batches"] += 1
        self.stats["events"] += len(batch.events)
        self.stats["memories"] += plan.created
        self.stats["rejected"] += len(plan.rejected)
        if self.on_batch is not None:
            self.on_batch(batch.tenant_id, len(batch.events), plan.created, plan.rejected)
        if self.on_plan is not None:
            self.on_plan(batch.tenant_id, len(batch.events), plan, result)

    async def _notify_round(self) -> None:
        async with self._round_done:
            self._round_done.notify_all()
