"""Prometheus metrics. One registry per node so that several nodes can share a process
(tests, `memorose up --nodes 3`).

Conventions (docs/operations.md, "Metrics"): ``_total`` only on counters, latencies are
histograms in seconds, and no label takes a tenant id by default: series would grow with
every tenant, and /metrics would list a SaaS operator's customers to anyone who can scrape
it. The one opt-in (``[metrics] tenant_top_n``) adds the N worst-lagging tenants, chosen
afresh at every scrape, so the number of tenant series never exceeds N.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from memorose.metrics import LATENCY_BUCKETS, FunctionCounter, standard_registry


class NodeMetrics:
    def __init__(self, tenant_top_n: int = 0) -> None:
        self.tenant_top_n = tenant_top_n
        self.registry = standard_registry("node")
        r = self.registry
        self.http_requests = Counter(
            "memorose_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "memorose_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_ingested = Counter("memorose_events_ingested_total", "L0 events stored", registry=r)
        self.events_duplicate = Counter(
            "memorose_events_duplicate_total", "re-sent events answered from the idempotency key", registry=r
        )
        self.consolidated = Counter("memorose_events_consolidated_total", "events consolidated", registry=r)
        self.memories_created = Counter("memorose_memories_created_total", "L1 memories created", registry=r)
        self.rejected = Counter(
            "memorose_events_rejected_total", "events rejected at consolidation", ["reason"], registry=r
        )
        self._pipeline_metrics(r)
        self._raft_histograms(r)

    def _pipeline_metrics(self, r: CollectorRegistry) -> None:
        """Consolidation pipeline (issue 4); labels are small fixed sets, never tenants."""
        self.arbitration = Counter("memorose_arbitration_total", "outcomes", ["outcome"], registry=r)
        self.edges_created = Counter(
            "memorose_edges_linked_total", "edges added or strengthened by consolidation", registry=r
        )
        self.archived = Counter("memorose_memories_archived_total", "archived by forgetting", registry=r)
        self.llm_calls = Counter(
            "memorose_llm_calls_total", "LLM requests (retries included)", ["provider"], registry=r
        )
        self.llm_tokens = Counter(
            "memorose_llm_tokens_total", "LLM tokens", ["provider", "direction"], registry=r
        )
        self.llm_errors = Counter(
            "memorose_llm_errors_total", "failed LLM attempts", ["provider", "kind"], registry=r
        )
        self.llm_fallbacks = Counter(
            "memorose_llm_fallbacks_total",
            "events or facts handled offline because the LLM failed",
            ["reason"],
            registry=r,
        )

    def _raft_histograms(self, r: CollectorRegistry) -> None:
        self.raft_commit = Histogram(
            "memorose_raft_commit_duration_seconds",
            "propose to committed and applied on this leader",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.raft_apply = Histogram(
            "memorose_raft_apply_duration_seconds",
            "state machine apply of one entry (tick thread)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.raft_fsync = Histogram(
            "memorose_raft_fsync_duration_seconds",
            "Raft journal fsync before acknowledging entries",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def gauge(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        Gauge(name, doc, registry=self.registry).set_function(fn)

    def counter(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        """``name`` without ``_total`` (the exposition adds it)."""
        self.registry.register(FunctionCounter(name, doc, fn))


class ConsolidationLagCollector:
    """Consolidation lag computed at scrape time from the replicated state: the totals over
    all tenants, the worst tenant's age, and (opt-in) the ``top_n`` worst tenants by name."""

    def __init__(self, pending: Callable[[], list[tuple[str, int, float]]], top_n: int = 0) -> None:
        self._pending = pending
        self._top_n = top_n

    def collect(self) -> Iterator[Metric]:
        rows = self._pending()
        yield GaugeMetricFamily(
            "memorose_consolidation_pending_events",
            "events acknowledged but not consolidated yet, all tenants",
            value=sum(count for _, count, _ in rows),
        )
        yield GaugeMetricFamily(
            "memorose_consolidation_lag_seconds",
            "age of the oldest unconsolidated event, worst tenant",
            value=max((age for _, _, age in rows), default=0.0),
        )
        yield GaugeMetricFamily(
            "memorose_consolidation_lagging_tenants",
            "tenants with at least one unconsolidated event",
            value=sum(1 for _, count, _ in rows if count > 0),
        )
        if self._top_n > 0:
            yield from self._top_tenants(rows)

    def _top_tenants(self, rows: list[tuple[str, int, float]]) -> Iterator[Metric]:
        worst = sorted((r for r in rows if r[1] > 0), key=lambda r: (-r[2], -r[1], r[0]))[: self._top_n]
        events = GaugeMetricFamily(
            "memorose_tenant_consolidation_pending_events",
            "opt-in: unconsolidated events of the top-N lagging tenants",
            labels=["tenant"],
        )
        lag = GaugeMetricFamily(
            "memorose_tenant_consolidation_lag_seconds",
            "opt-in: oldest unconsolidated event of the top-N lagging tenants",
            labels=["tenant"],
        )
        for tenant, count, age in worst:
            events.add_metric([tenant], count)
            lag.add_metric([tenant], age)
        yield events
        yield lag


class DataDirCollector:
    """Disk space of the data directory's filesystem and the Raft journal's size, read at
    scrape time. The disk alert uses these rather than node_exporter's filesystem metrics,
    which a compose or Kubernetes deployment of Memorose does not ship."""

    def __init__(self, data_dir: Path, journal: Path) -> None:
        self._data_dir = data_dir
        self._journal = journal

    def collect(self) -> Iterator[Metric]:
        try:
            fs = os.statvfs(self._data_dir)
        except OSError:  # the directory is gone: the node is failing anyway; export nothing
            fs = None
        if fs is not None:
            yield GaugeMetricFamily(
                "memorose_data_dir_available_bytes",
                "bytes free for this node on the filesystem holding the data directory",
                value=fs.f_bavail * fs.f_frsize,
            )
            yield GaugeMetricFamily(
                "memorose_data_dir_size_bytes",
                "total size of the filesystem holding the data directory",
                value=fs.f_blocks * fs.f_frsize,
            )
        yield GaugeMetricFamily(
            "memorose_raft_journal_bytes",
            "size of the Raft journal file (entries since the last snapshot)",
            value=_file_size(self._journal),
        )


def _file_size(path: Path) -> float:
    try:
        return float(path.stat().st_size)
    except OSError:  # not created yet (before the first Raft start)
        return 0.0
