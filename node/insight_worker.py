"""Insight passes on the leader (docs/insights.md), next to the consolidation worker.

A tenant gets a pass when its graph changed (its ``graph_gen`` moved past the generation of
its insights) and either the schedule comes round (``insights.interval_secs``), enough
memories changed since the last pass (``insights.min_changes``), an insight lost a member
(superseded, archived, deleted: ``insights_dirty``), or someone asked
(``POST /api/v1/insights/refresh``). A tenant that did not change costs one record read.

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
from memorose.insights.communities import analyze
from memorose.insights.planner import insight_id, plan_insights
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


def is_due(record: dict[str, Any] | None, settings: InsightSettings, scheduled: bool) -> bool:
    """Whether a tenant's insights need a pass now (see the module docstring)."""
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
        self.stats: dict[str, int] = {"passes": 0, "proposed": 0, "unchanged": 0, "errors": 0}
        #: Called after every pass that proposed: (tenant, plan usage) for metrics.
        self.on_pass: Callable[[str, Any], None] | None = None
        self._pending: dict[str, bool] = {}  # tenant -> forced
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def start(self) -> None:
        if self.settings.enabled:  # on-demand refreshes work either way
            super().start()

    def trigger(self, tenant_id: str, *, force: bool = False) -> None:
        """Check this tenant soon (``force``: whatever the change threshold)."""
        self._pending[tenant_id] = self._pending.get(tenant_id, False) or force
        self._wake.set()

    async def _run(self) -> None:
        next_scheduled = time.monotonic() + self.settings.interval_secs
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_scheduled - time.monotonic()))
            self._wake.clear()
            scheduled = time.monotonic() >= next_scheduled
            if scheduled:
                next_scheduled = time.monotonic() + self.settings.interval_secs
            pending, self._pending = self._pending, {}
            if not self.is_leader():
                continue
            tenants = self.reader.tenant_ids() if scheduled else sorted(pending)
            for tenant_id in tenants:
                if not self.is_leader():
                    break
                if is_due(
                    self.reader.tenant(tenant_id), self.settings, scheduled or pending.get(tenant_id, False)
                ):
                    await self._pass_logged(tenant_id)

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
            projection = await asyncio.to_thread(self.cache.get, tenant_id)
            previous = {r["insight_id"]: r for r in self.reader.insights(tenant_id)}
            plan = await asyncio.to_thread(
                plan_insights,
                projection,
                self.settings,
                self.clock(),
                stored=record,
                previous=previous,
                llm=self.llm,
            )
            result = await self.proposer.propose(plan.command)
            self.stats["passes"] += 1
            if not result.get("ok"):
                log.info("insight pass over %s not applied: %s", tenant_id, result.get("error"))
            else:
                self.stats["proposed"] += 1
            if self.on_pass is not None:
                self.on_pass(tenant_id, plan.usage)
            after = self.reader.tenant_or_empty(tenant_id)
            return self._answer(
                tenant_id, projection.generation, after, bool(result.get("ok")), plan.changed, started
            )

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
        projection = self.cache.get(tenant_id)
        a = analyze(projection, self.settings.resolution, self.settings.seed)
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
