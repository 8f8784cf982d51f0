"""Prometheus building blocks shared by the node and the gateway (which may not import
each other): the standard collectors, build info and latency buckets.
Importing this module registers nothing; each caller builds its own registry."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Info
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

import memorose

#: Fast Raft and HTTP operations live between 0.5 ms and a few seconds on this hardware.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def standard_registry(component: str) -> CollectorRegistry:
    """A fresh registry with the process, platform and GC collectors and build info."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Info("memorose_build", "version of the running Memorose build", registry=registry).info(
        {"version": memorose.__version__, "component": component, "python": platform.python_version()}
    )
    return registry


class FunctionCounter:
    """A counter whose value is read at scrape time from an ever-increasing number kept
    elsewhere (Raft's election count, say): typed counter, so rate() works on it."""

    def __init__(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        self._name, self._doc, self._fn = name, doc, fn

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._doc, value=self._fn())
