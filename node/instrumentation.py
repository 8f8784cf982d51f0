"""The node's Prometheus metrics and the hooks that feed them from the background workers
(consolidation, forgetting, insights). Kept apart from the routes: it is wiring of the
service, not HTTP, and ``node.http`` calls it when it builds and starts the app."""

from __future__ import annotations

from typing import Any

from memorose.consolidation.planner import Plan
from node.metrics import ConsolidationLagCollector, DataDirCollector, NodeMetrics
from node.raft import JOURNAL_NAME
from node.raft_metrics import add_raft_metrics, instrument_raft
from node.service import NodeService


def node_metrics(service: NodeService) -> NodeMetrics:
    m = NodeMetrics(service.settings.metrics.tenant_top_n)
    m.gauge("memorose_raft_applied_index", "last Raft index applied", service.store.applied_index)
    m.gauge("memorose_index_position", "last Raft index searchable", service.indexer.searchable_index)
    m.gauge(
        "memorose_index_lag_entries",
        "applied Raft entries not yet searchable (LanceDB/Tantivy behind RocksDB)",
        lambda: max(0.0, float(service.store.applied_index() - service.indexer.searchable_index())),
    )
    m.gauge(
        "memorose_embeddings_stale_memories",
        "memories whose vector is of another embedding model (BM25 only until admin reembed)",
        lambda: float(service.indexer.stale_vector_count()),
    )
    m.counter(
        "memorose_embedder_texts",
        "texts embedded by this node",
        lambda: float(getattr(service.embedder, "texts_embedded", 0)),
    )
    m.gauge(
        "memorose_embedder_model_loaded",
        "1 while the local embedding model is in memory (released after local_keep_alive_secs idle)",
        lambda: 1.0 if getattr(service.embedder, "loaded", False) else 0.0,
    )
    m.counter(
        "memorose_embedder_model_loads",
        "times the local embedding model was loaded (the first use, then once per idle spell)",
        lambda: float(getattr(service.embedder, "loads", 0)),
    )
    m.gauge("memorose_raft_is_leader", "1 on the leader", lambda: 1.0 if service.is_leader() else 0.0)
    add_raft_metrics(m, service)
    m.registry.register(DataDirCollector(service.data_dir, service.data_dir / "raft" / JOURNAL_NAME))
    _pipeline_metrics(service, m)
    _insight_metrics(service, m)
    return m


def attach(service: NodeService, metrics: NodeMetrics) -> None:
    """Once the service has started: count what its workers do."""
    assert service.worker is not None

    def on_batch(tenant_id: str, events: int, memories: int, rejected: dict[str, str]) -> None:
        metrics.consolidated.inc(events)
        metrics.memories_created.inc(memories)
        for reason in rejected.values():
            metrics.rejected.labels(reason).inc()

    service.worker.on_batch = on_batch
    instrument_raft(metrics, service)
    _attach_pipeline(service, metrics)
    _attach_insights(service)


def _pipeline_metrics(service: NodeService, metrics: NodeMetrics) -> None:
    """Pipeline counters, fed by the leader's workers; lag computed at scrape."""
    metrics.registry.register(
        ConsolidationLagCollector(lambda: pending_by_tenant(service), metrics.tenant_top_n)
    )
    metrics.counter(
        "memorose_touch_dropped",
        "retrieval feedback not recorded because a follower served the read",
        lambda: float(service.touches_dropped),
    )


def _insight_metrics(service: NodeService, metrics: NodeMetrics) -> None:
    def stat(name: str) -> float:
        worker = service.insights.worker
        return float(worker.stats[name]) if worker is not None else 0.0

    metrics.counter("memorose_insight_passes", "insight passes run by this node", lambda: stat("passes"))
    metrics.counter("memorose_insight_pass_errors", "insight passes that failed", lambda: stat("errors"))
    metrics.counter(
        "memorose_insight_cache_hits",
        "graph projections served from the cache (tenant unchanged)",
        lambda: float(service.insights.cache.hits),
    )


def _attach_pipeline(service: NodeService, metrics: NodeMetrics) -> None:
    assert service.worker is not None and service.forgetting is not None

    def on_plan(tenant_id: str, events: int, plan: Plan, result: dict[str, Any]) -> None:
        for outcome, count in plan.outcomes.items():
            metrics.arbitration.labels(outcome).inc(count)
        metrics.edges_created.inc(result.get("edges", 0))
        usage, provider = plan.usage, service.llm.name
        if usage.calls:
            metrics.llm_calls.labels(provider).inc(usage.calls)
            metrics.llm_tokens.labels(provider, "input").inc(usage.input_tokens)
            metrics.llm_tokens.labels(provider, "output").inc(usage.output_tokens)
        for kind, count in usage.errors.items():
            metrics.llm_errors.labels(provider, kind).inc(count)
        for reason, count in usage.fallbacks.items():
            metrics.llm_fallbacks.labels(reason).inc(count)

    service.worker.on_plan = on_plan
    service.forgetting.on_archived = lambda tenant_id, n: metrics.archived.inc(n)


def _attach_insights(service: NodeService) -> None:
    """Tell the insight worker when a tenant's memories change (it decides if a pass is due)."""
    assert service.worker is not None and service.forgetting is not None
    on_batch, on_archived = service.worker.on_batch, service.forgetting.on_archived

    def batch(tenant_id: str, events: int, memories: int, rejected: dict[str, str]) -> None:
        if on_batch is not None:
            on_batch(tenant_id, events, memories, rejected)
        service.insights.changed(tenant_id)

    def archived(tenant_id: str, n: int) -> None:
        if on_archived is not None:
            on_archived(tenant_id, n)
        service.insights.changed(tenant_id)

    service.worker.on_batch = batch
    service.forgetting.on_archived = archived


def pending_by_tenant(service: NodeService) -> list[tuple[str, int, float]]:
    now = service.clock()
    out = []
    for tenant_id in service.reader.tenant_ids():
        record = service.reader.tenant_or_empty(tenant_id)
        pending = record["next_seq"] - 1 - record["cursor"]
        oldest = service.reader.event(tenant_id, record["cursor"] + 1) if pending > 0 else None
        out.append((tenant_id, pending, max(0.0, now - oldest.ingested_at) if oldest else 0.0))
    return out
