"""Prometheus metrics. One registry per node so that several nodes can share a process
(tests, `memorose up --nodes 3`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "memorose_http_requests_total", "HTTP requests", ["route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "memorose_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.events_ingested = Counter("memorose_events_ingested_total", "L0 events stored", registry=r)
        self.events_duplicate = Counter(
            "memorose_events_duplicate_total", "re-sent events answered from the idempotency key", registry=r
        )
        self.consolidated = Counter(
            "memorose_events_consolidated_total", "L0 events consolidated", ["tenant"], registry=r
        )
        self.memories_created = Counter(
            "memorose_memories_created_total", "L1 memories created", ["tenant"], registry=r
        )
        self.rejected = Counter(
            "memorose_events_rejected_total",
            "events rejected at consolidation",
            ["tenant", "reason"],
            registry=r,
        )

        # -- consolidation pipeline (issue 4), all per tenant --------------------------------
        self.arbitration = Counter(
            "memorose_arbitration_total", "arbitration outcomes", ["tenant", "outcome"], registry=r
        )
        self.edges_created = Counter(
            "memorose_edges_linked_total",
            "edges added or strengthened by consolidation",
            ["tenant"],
            registry=r,
        )
        self.archived = Counter(
            "memorose_memories_archived_total", "memories archived by forgetting", ["tenant"], registry=r
        )
        self.llm_calls = Counter(
            "memorose_llm_calls_total", "LLM requests (retries included)", ["tenant", "provider"], registry=r
        )
        self.llm_tokens = Counter(
            "memorose_llm_tokens_total", "LLM tokens", ["tenant", "provider", "direction"], registry=r
        )
        self.llm_errors = Counter(
            "memorose_llm_errors_total", "failed LLM attempts", ["tenant", "provider", "kind"], registry=r
        )
        self.llm_fallbacks = Counter(
            "memorose_llm_fallbacks_total",
            "events or facts handled offline because the LLM failed",
            ["tenant", "reason"],
            registry=r,
        )

    def gauge(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        Gauge(name, doc, registry=self.registry).set_function(fn)


class ConsolidationLagCollector:
    """Per-tenant consolidation lag, computed at scrape time from the replicated state:
    events acknowledged but not consolidated, and the age of the oldest of them."""

    def __init__(self, pending: Callable[[], list[tuple[str, int, float]]]) -> None:
        self._pending = pending

    def collect(self) -> Iterator[Metric]:
        events = GaugeMetricFamily(
            "memorose_consolidation_pending_events", "events not consolidated yet", labels=["tenant"]
        )
        lag = GaugeMetricFamily(
            "memorose_consolidation_lag_seconds", "age of the oldest unconsolidated event", labels=["tenant"]
        )
        for tenant, count, age in self._pending():
            events.add_metric([tenant], count)
            lag.add_metric([tenant], age)
        yield events
        yield lag
