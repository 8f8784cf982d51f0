"""/metrics of a node and of the gateway, parsed with prometheus_client's own parser:
names and types follow Prometheus conventions, no tenant id leaks into a label unless the
operator opts in (and then at most N), and every query in the shipped alert rules and
Grafana dashboard names a metric that the node or the gateway really exports."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import build_gateway_app
from gateway.config import GatewaySettings
from node.runner import free_port
from tests.conftest import ADMIN_KEY, Api, NodeStarter

ROOT = Path(__file__).resolve().parents[2]
TENANTS = ("acme", "globex")
METRIC = re.compile(r"\b((?:memorose|process|python)_[a-z0-9_]+)\b")
#: The series names a family of each type exposes (even before its first observation).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
    "gauge": ("",),
}


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def series_names(text: str) -> set[str]:
    """Every series name a query could use, from the families' names and types."""
    return {
        f.name + suffix
        for f in text_string_to_metric_families(text)
        for suffix in SERIES_SUFFIXES.get(f.type, ("",))
    }


def check_conventions(text: str, tenants: Iterable[str] = ()) -> None:
    """Prometheus naming rules, and no tenant id anywhere in a label: not as a ``tenant``
    label, nor inside another label's value (a shard or route named after a tenant)."""
    tenants = set(tenants)
    for family in text_string_to_metric_families(text):
        names = {s.name for s in family.samples}
        if family.type == "counter":
            assert all(n.endswith(("_total", "_created")) for n in names), family.name
        else:
            assert not any(n.endswith("_total") for n in names), f"{family.name} is a {family.type}"
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), f"histogram {family.name} is not in seconds"
        assert not family.name.endswith("_ms"), family.name
        for sample in family.samples:
            assert "tenant" not in sample.labels, f"{sample.name} has a tenant label by default"
            leaked = {t for t in tenants for v in sample.labels.values() if t in v}
            assert not leaked, f"{sample.name}{sample.labels} names tenant(s) {leaked}"


@pytest.fixture
async def gateway_over(start: NodeStarter) -> AsyncIterator[tuple[Api, Api]]:
    _, node = await start()
    port = free_port()
    settings = GatewaySettings(http=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, shards={"s1": [node.url]})
    runner = web.AppRunner(build_gateway_app(settings), shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()
    yield Api(f"http://127.0.0.1:{port}", session), node
    await session.close()
    await runner.cleanup()


async def test_node_and_gateway_metrics_follow_conventions_and_cover_dashboards(
    gateway_over: tuple[Api, Api],
) -> None:
    gw, node = gateway_over
    for tenant in TENANTS:
        await gw.ingest(tenant, f"{tenant} signed the renewal contract on Friday")
        assert (await gw.consolidate(tenant))["done"]
    _, node_text = await node.get("/metrics")
    _, gw_text = await gw.get("/metrics")
    check_conventions(node_text, TENANTS)
    check_conventions(gw_text, TENANTS)

    node_families = families(node_text)
    for name in ("memorose_raft_commit_duration_seconds", "memorose_raft_apply_duration_seconds"):
        assert node_families[name].type == "histogram"  # type: ignore[attr-defined]
    samples = {s.name: s.value for f in text_string_to_metric_families(node_text) for s in f.samples}
    assert samples["memorose_raft_commit_duration_seconds_count"] >= 2
    assert samples["memorose_raft_apply_duration_seconds_count"] >= 2
    assert samples["memorose_raft_fsync_duration_seconds_count"] >= 1
    assert samples["memorose_events_consolidated_total"] == 2
    assert node_families["memorose_raft_elections"].type == "counter"  # type: ignore[attr-defined]
    assert samples["process_resident_memory_bytes"] > 0
    assert "memorose_build_info" in samples
    # disk metrics for the disk alert come from the node itself (no node_exporter)
    assert 0 < samples["memorose_data_dir_available_bytes"] <= samples["memorose_data_dir_size_bytes"]
    assert samples["memorose_raft_journal_bytes"] > 0
    # whether the local model is resident (0 where the node embeds without one)
    assert samples["memorose_embedder_model_loaded"] in (0.0, 1.0)
    assert samples["memorose_embedder_model_loads_total"] >= samples["memorose_embedder_model_loaded"]
    requests = [
        s
        for s in node_families["memorose_http_requests"].samples  # type: ignore[attr-defined]
        if s.name.endswith("_total")
    ]
    assert {"method", "route", "status"} <= set(requests[0].labels)

    gw_samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(gw_text)
        for s in f.samples
    }
    forwarded = sum(
        v
        for (n, labels), v in gw_samples.items()
        if n == "memorose_gateway_requests_total" and ("shard", "s1") in labels
    )
    assert forwarded >= 4
    assert gw_samples[("memorose_gateway_shard_leader_known", (("shard", "s1"),))] == 1.0

    exported = series_names(node_text) | series_names(gw_text)
    for query in shipped_queries():
        for metric in METRIC.findall(query):
            assert metric in exported, f"{metric} (in {query!r}) is not exported"


def shipped_queries() -> list[str]:
    """Every PromQL expression in the alert rules and the Grafana dashboard."""
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    queries = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((ROOT / "deploy/grafana/memorose.json").read_text())
    panels = [p for row in dashboard["panels"] for p in [row, *row.get("panels", [])]]
    queries += [t["expr"] for p in panels for t in p.get("targets", [])]
    assert len(queries) > 10
    return queries


async def test_per_tenant_series_are_opt_in_and_bounded(start: NodeStarter) -> None:
    _, api = await start(consolidation={"interval_secs": 86_400}, metrics={"tenant_top_n": 2})
    for tenant in ("t1", "t2", "t3", "t4"):
        await api.ingest(tenant, "waiting to be consolidated")
    _, text = await api.get("/metrics")
    lagging = families(text)["memorose_tenant_consolidation_pending_events"]
    assert len(lagging.samples) == 2  # type: ignore[attr-defined]
    assert {s.labels["tenant"] for s in lagging.samples} <= {"t1", "t2", "t3", "t4"}  # type: ignore[attr-defined]
    totals = families(text)["memorose_consolidation_pending_events"]
    assert totals.samples[0].value == 4  # type: ignore[attr-defined]


async def test_advertised_url_is_what_status_reports(start: NodeStarter) -> None:
    _, api = await start(http_advertise="http://memorose.example:18081")
    _, status = await api.get("/api/v1/cluster/status")
    assert status["url"] == "http://memorose.example:18081"
    assert status["leader_url"] == "http://memorose.example:18081"


async def test_a_tenant_moved_to_an_unconfigured_shard_stays_out_of_gateway_labels(
    start: NodeStarter, tmp_path: Path
) -> None:
    """A gateway still on the old ring follows a 409 tenant_moved to a shard it has no name
    for; its metrics label that shard ``moved``, not with the tenant's id."""
    _, old = await start(data_dir=tmp_path / "old")
    _, new = await start(data_dir=tmp_path / "new")
    tenant = "initech-moving"
    port = free_port()
    settings = GatewaySettings(http=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, shards={"s1": [old.url]})
    runner = web.AppRunner(build_gateway_app(settings), shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()
    try:
        gw = Api(f"http://127.0.0.1:{port}", session)
        await gw.ingest(tenant, "filed before the move")
        await new.ingest(tenant, "filed on the new shard")
        state = f"/api/v1/admin/tenants/{tenant}/state"
        status, _ = await old.post(state, {"state": "moved", "moved_to": [new.url]})
        assert status == 200
        status, body = await gw.get(f"/api/v1/status?tenant_id={tenant}")
        assert status == 200 and body["l0_events"] == 1, "the gateway did not follow the move"
        _, text = await gw.get("/metrics")
    finally:
        await session.close()
        await runner.cleanup()
    check_conventions(text, [tenant])
    shards = {s.labels.get("shard") for f in text_string_to_metric_families(text) for s in f.samples}
    assert {"s1", "moved"} <= shards
