"""Prometheus metrics. One registry per node so that several nodes can share a process
(tests, `memorose up --nodes 3`)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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

    def gauge(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        Gauge(name, doc, registry=self.registry).set_function(fn)
