"""Insight passes on the leader (docs/insights.md), next to the consolidation worker.

A tenant gets a pass when its graph changed (its ``graph_gen`` moved past the generation of
its insights) and either the schedule comes round (``insights.interval_secs``), enough
memories changed since the last pass (``insights.min_changes``), an insight lost a member
(superseded, archived, deleted: ``insights_dirty``), or someone asked
(``POST /api/v1/insights/refresh``). A tenant that did not change costs one record read.

What a pass may cost (docs/insights.md, "When passes run"):

- a tenant with events not yet consolidated is deferred (``defer_while_pending``): its graph
  is about to change again, and consolidation needs the CPU; after ``max_deferral_secs`` it
  gets its pass anyway;
- the worker measures each pass's CPU time (``time.thread_time`` in the thread that runs
  it) and waits ``cost * (1 / cpu_share - 1)`` before the next background pass, so passes
  take at most ``cpu_share`` of one core over time. A refresh someone asked for is not made
  to wait (its cost still counts).

The pass runs off the event loop, then proposes ONE ``insights`` command; the state
machine refuses it if a newer pass already landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from memorose.config import InsightSettings, Settings
from memorose.errors import OutcomeUnknown, Unavailable
from memorose.insights.planner import InsightPlan, current_analysis, insight_id, plan_insights
from memorose.insights.projection import ProjectionCache
from memorose.models import iso
from memorose.providers.llm.base import LLMProvider
from memorose.retrieval.insights import public
from memorose.retrieval.search import Retriever
from memorose.storage.reader import StateReader
from node.proposer import Proposer
from node.tasks import BackgroundTask

log = logging.getLogger(__name__)


class InsightHost(Protocol):
    """What ``Insights`` needs of the node (``node.service.NodeService`` is one). A protocol,
    not an import: the service builds ``Insights``, so importing it back would be a cycle."""

    settings: Settings
    reader: StateReader
    retriever: Retriever
    proposer: Proposer | None
    llm: LLMProvider
    clock: Any

    def is_leader(self) -> bool: ...


def has_pending_events(record: dict[str, Any]) -> bool:
    """Events acknowledged but not consolidated yet: the graph is about to change."""
    return int(record.get("next_seq", 1)) - 1 > int(record.get("cursor", 0))


def is_due(record: dict[str, Any] | None, settings: InsightSettings, scheduled: bool) -> bool:
    """Whether a tenant's insights need a pass (see the module docstring; deferral for
    pending events is decided by the worker)."""
    if record is None:
        return False
    last = record.get("insights_gen")
    if last is None:  # never had a pass (or the data predates insights)
        if record.get("memories", 0) <= 0 and record.get("graph_gen", 0) == 0:
            return False
    elif record.get("graph_gen", 0) == last:
        return False
    if scheduled or record.get("insights_dirty"):
        return True
    changed = record.get("graph_changes", 0) - record.get("insights_changes", 0)
    return bool(changed >= settings.min_changes)


class InsightWorker(BackgroundTask):
    task_name = "insights"

    def __init__(
        self,
        reader: StateReader,
        proposer: Proposer,
        settings: InsightSettings,
        cache: ProjectionCache,
        *,
        llm: LLMProvider | None,
        is_leader: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.reader = reader
        self.proposer = proposer
        self.settings = settings
        self.cache = cache
        self.llm = llm
        self.is_leader = is_leader
        self.clock = clock
        self.stats: dict[str, float] = {
            "passes": 0,
            "proposed": 0,
            "unchanged": 0,
            "errors": 0,
            "deferred": 0,
            "full": 0,
            "incremental": 0,
            #: CPU seconds spent in passes (projection, analysis, synthesis) by this node.
            "cpu_s": 0.0,
            "last_cpu_s": 0.0,
        }
        #: Called after every pass that proposed: (tenant, plan usage) for metrics.
        self.on_pass: Callable[[str, Any], None] | None = None
        self._pending: dict[str, bool] = {}  # tenant -> forced
        #: Tenants deferred for pending events: (since when, forced).
        self._deferred: dict[str, tuple[float, bool]] = {}
        #: No background pass starts before this (monotonic): the CPU budget.
        self._not_before = 0.0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def start(self) -> None:
        if self.settings.enabled:  # on-demand refreshes work either way
            super().start()

    def trigger(self, tenant_id: str, *, force: bool = False) -> None:
        """Check this tenant soon (``force``: whatever the change threshold)."""
        deferred = self._deferred.get(tenant_id, (0.0, False))[1]
        self._pending[tenant_id] = self._pending.get(tenant_id, False) or force or deferred
        self._wake.set()

    def budget_wait(self) -> float:
        """Seconds until the CPU budget allows the next background pass."""
        return max(0.0, self._not_before - time.monotonic())

    async def _run(self) -> None:
        next_scheduled = time.monotonic() + self.settings.interval_secs
        while True:
            wake_at = next_scheduled
            if self._pending:  # queued work: as soon as the budget allows
                wake_at = min(wake_at, time.monotonic())
            if self._deferred:  # re-check when the oldest deferral runs out
                oldest = min(since for since, _ in self._deferred.values())
                wake_at = min(wake_at, oldest + self.settings.max_deferral_secs)
            wake_at = max(wake_at, self._not_before)  # never before the budget allows
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - time.monotonic()))
            self._wake.clear()
            if self.budget_wait() > 0:
                continue  # the queue waits for the budget
            scheduled = time.monotonic() >= next_scheduled
            if scheduled:
                next_scheduled = time.monotonic() + self.settings.interval_secs
            pending, self._pending = self._pending, {}
            if not self.is_leader():
                self._deferred.clear()  # the new leader decides
                continue
            if scheduled:
                pending = dict.fromkeys(self.reader.tenant_ids(), True)
            elif self._overdue():
                pending = {**{t: f for t, (_, f) in self._deferred.items()}, **pending}
            await self._round(pending)

    def _overdue(self) -> bool:
        """Some deferred tenant has waited ``max_deferral_secs``."""
        if not self._deferred:
            return False
        oldest = min(since for since, _ in self._deferred.values())
        return time.monotonic() - oldest >= self.settings.max_deferral_secs

    async def _round(self, pending: dict[str, bool]) -> None:
        """Check each queued tenant; what the budget cuts off goes back in the queue."""
        tenants = sorted(pending)
        for position, tenant_id in enumerate(tenants):
            if not self.is_leader():
                return
            if self.budget_wait() > 0:
                for rest in tenants[position:]:
                    self._pending[rest] = self._pending.get(rest, False) or pending[rest]
                return
            forced = pending[tenant_id]
            record = self.reader.tenant(tenant_id)
            if not is_due(record, self.settings, forced):
                self._deferred.pop(tenant_id, None)
                continue
            assert record is not None
            if self._defer(tenant_id, record, forced):
                continue
            self._deferred.pop(tenant_id, None)
            await self._pass_logged(tenant_id)

    def _defer(self, tenant_id: str, record: dict[str, Any], forced: bool) -> bool:
        """Whether to leave a due tenant for later: it has events still to consolidate."""
        if not self.settings.defer_while_pending or not has_pending_events(record):
            return False
        since, was_forced = self._deferred.get(tenant_id, (time.monotonic(), False))
        if time.monotonic() - since >= self.settings.max_deferral_secs:
            return False
        self._deferred[tenant_id] = (since, forced or was_forced)
        self.stats["deferred"] += 1
        return True

    async def _pass_logged(self, tenant_id: str) -> None:
        try:
            await self.run_tenant(tenant_id)
        except (Unavailable, OutcomeUnknown) as exc:  # leadership moved: the new leader redoes it
            log.info("insight pass over %s interrupted (%s); retried on the next round", tenant_id, exc)
        except Exception:
            self.stats["errors"] += 1
            log.exception("insight pass over %s failed; it is retried on the next round", tenant_id)

    async def run_tenant(self, tenant_id: str) -> dict[str, Any]:
        """One pass; nothing is computed or proposed if the tenant's graph did not change."""
        async with self._lock:
            started = time.perf_counter()
            record = self.reader.tenant_or_empty(tenant_id)
            graph_gen = record.get("graph_gen", 0)
            if record.get("insights_gen") is not None and graph_gen == record["insights_gen"]:
                self.stats["unchanged"] += 1
                return self._answer(tenant_id, graph_gen, record, False, False, started)
            previous = {r["insight_id"]: r for r in self.reader.insights(tenant_id)}
            plan, cost = await asyncio.to_thread(self._compute, tenant_id, record, previous, self.clock())
            self._charge(cost)
            self.stats[plan.analysis.method] += 1
            result = await self.proposer.propose(plan.command)
            self.stats["passes"] += 1
            if not result.get("ok"):
                log.info("insight pass over %s not applied: %s", tenant_id, result.get("error"))
            else:
                self.stats["proposed"] += 1
            if self.on_pass is not None:
                self.on_pass(tenant_id, plan.usage)
            after = self.reader.tenant_or_empty(tenant_id)
            answer = self._answer(
                tenant_id, plan.analysis.generation, after, bool(result.get("ok")), plan.changed, started
            )
            return {**answer, "method": plan.analysis.method, "cpu_ms": round(cost * 1000, 1)}

    def _compute(
        self, tenant_id: str, record: dict[str, Any], previous: dict[str, dict[str, Any]], now: float
    ) -> tuple[InsightPlan, float]:
        """Projection, analysis and synthesis, in a worker thread; with the thread's CPU time."""
        started = time.thread_time()
        projection, analysis = current_analysis(self.cache, tenant_id, self.settings)
        plan = plan_insights(
            projection, self.settings, now, stored=record, previous=previous, llm=self.llm, analysis=analysis
        )
        return plan, time.thread_time() - started

    def _charge(self, cost: float) -> None:
        """Account a pass's CPU seconds; the next background pass waits its share."""
        self.stats["cpu_s"] += cost
        self.stats["last_cpu_s"] = cost
        pause = cost * (1.0 / self.settings.cpu_share - 1.0)
        self._not_before = max(self._not_before, time.monotonic() + pause)

    @staticmethod
    def _answer(
        tenant_id: str, generation: int, record: dict[str, Any], applied: bool, changed: bool, started: float
    ) -> dict[str, Any]:
        return {
            "tenant_id": tenant_id,
            "generation": generation,
            "insights": record.get("insights_count", 0),
            "proposed": applied,
            "changed": changed and applied,
            "took_ms": round((time.perf_counter() - started) * 1000, 1),
        }


class Insights:
    """The node's insight side: projection cache, worker, read views."""

    def __init__(self, service: InsightHost) -> None:
        self.service = service
        self.settings = service.settings.insights
        self.cache = ProjectionCache(service.reader)
        self.worker: InsightWorker | None = None
        service.retriever.insights_per_query = self.settings.per_query

    def start(self) -> None:
        s = self.service
        assert s.proposer is not None
        self.worker = InsightWorker(
            s.reader,
            s.proposer,
            self.settings,
            self.cache,
            llm=s.llm,
            is_leader=s.is_leader,
            clock=lambda: s.clock(),
        )
        self.worker.start()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()

    def changed(self, tenant_id: str) -> None:
        """Memories of a tenant changed (a batch, a delete, a forgetting pass)."""
        if self.worker is not None:
            self.worker.trigger(tenant_id)

    async def refresh(self, tenant_id: str, wait: bool, timeout: float = 600.0) -> dict[str, Any]:
        s = self.service
        if self.worker is None or s.proposer is None:
            raise Unavailable("node is starting")
        if not s.is_leader():
            raise s.proposer.not_leader()
        if not wait:
            self.worker.trigger(tenant_id, force=True)
            return {"tenant_id": tenant_id, "done": False}
        answer = await asyncio.wait_for(self.worker.run_tenant(tenant_id), timeout)
        return {**answer, "done": True}

    def list(self, tenant_id: str, stream_id: str | None, limit: int) -> dict[str, Any]:
        reader = self.service.reader
        record = reader.tenant_or_empty(tenant_id)
        items = [i for i in reader.insights(tenant_id) if stream_id is None or stream_id in i["stream_ids"]]
        items.sort(key=lambda i: (-i["score"], i["insight_id"]))
        return {
            "tenant_id": tenant_id,
            "generation": record.get("insights_gen"),
            "graph_generation": record.get("graph_gen", 0),
            "stale": record.get("insights_gen") != record.get("graph_gen", 0),
            "computed_at": iso(record.get("insights_at")),
            "insights": [public(i) for i in items[:limit]],
        }

    def analysis(self, tenant_id: str, limit: int) -> dict[str, Any]:
        """Communities, PageRank and centrality of the tenant's graph as this replica holds it."""
        started = time.perf_counter()
        _, a = current_analysis(self.cache, tenant_id, self.settings)
        stored = {i["insight_id"] for i in self.service.reader.insights(tenant_id)}
        min_size = self.settings.min_community_size
        communities = []
        for c in a.communities[:limit]:
            ident = insight_id(c.members)
            communities.append(
                {
                    "index": c.index,
                    "size": c.size,
                    "members": list(c.members),
                    "anchors": list(c.anchors(3)),
                    "pagerank_mass": round(c.pagerank_mass, 6),
                    "density": round(c.density, 6),
                    "insight_id": ident if ident in stored else None,
                    "qualifies": c.size >= min_size,
                }
            )
        top = sorted(a.pagerank, key=lambda m: (-a.pagerank[m], m))[:limit]
        central = sorted(a.centrality, key=lambda m: (-a.centrality[m], m))[:limit]
        return {
            "tenant_id": tenant_id,
            "generation": a.generation,
            "nodes": a.nodes,
            "edges": a.edges,
            "modularity": round(a.modularity, 6),
            "parameters": {"resolution": self.settings.resolution, "seed": self.settings.seed},
            "method": a.method,
            "min_community_size": min_size,
            "communities_total": len(a.communities),
            "communities": communities,
            "pagerank": {m: round(a.pagerank[m], 8) for m in top},
            "centrality": {
                m: {"degree": round(a.centrality[m], 8), "strength": round(a.strength.get(m, 0.0), 6)}
                for m in central
            },
            "took_ms": round((time.perf_counter() - started) * 1000, 1),
        }
