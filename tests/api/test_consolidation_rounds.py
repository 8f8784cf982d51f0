"""Consolidation in rounds across tenants (docs/consolidation.md, "Many small tenants"):
several tenants' batches share one round, a caller waiting for one tenant is served by
the rounds, and a batch whose planning fails fails alone."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

from memorose.providers.embeddings.base import Embedder
from node.runner import RunningNode
from tests.conftest import Api, NodeStarter, wait_until

TENANTS = [f"t{i:02d}" for i in range(12)]
EVENTS_PER_TENANT = 25
ROUNDS = {
    "consolidation": {"interval_secs": 3600, "batch_size": 10, "round_events": 50, "mode": "verbatim"},
    "insights": {"enabled": False},
}


async def ingest_all(api: Api, tenants: list[str]) -> None:
    for tenant in tenants:
        events = [
            {
                "event_id": f"{tenant}-e{i}",
                "stream_id": "s1",
                "content": f"{tenant} keeps the token marker{i:02d}",
            }
            for i in range(EVENTS_PER_TENANT)
        ]
        status, body = await api.post("/api/v1/events/batch", {"tenant_id": tenant, "events": events})
        assert status == 202, body


async def tenant_status(api: Api, tenant: str) -> dict[str, Any]:
    status, body = await api.get(f"/api/v1/status?tenant_id={tenant}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def test_rounds_share_tenants_and_consolidate_every_event_once(start: NodeStarter) -> None:
    node, api = await start(**ROUNDS)
    await ingest_all(api, TENANTS)

    answer = await api.consolidate("t07")  # the tenant asked for goes first; the rest follow
    assert answer["done"] and answer["cursor"] == EVENTS_PER_TENANT
    for tenant in TENANTS:
        await api.consolidate(tenant)

    stats = node.service.worker.stats if node.service.worker else {}
    # 12 tenants x 3 batches of <= 10 events: 36 batches, at most 5 per round of 50 events.
    assert stats["batches"] == 36
    assert stats["rounds"] < stats["batches"]
    for tenant in TENANTS:
        status = await tenant_status(api, tenant)
        assert status["pending_events"] == 0
        assert status["l1_memories"] == EVENTS_PER_TENANT  # verbatim: once each, never twice
    [hit, *_] = await api.retrieve("t03", "marker17")
    assert (hit["layer"], hit["content"]) == ("L1", "t03 keeps the token marker17")


class _FailsOn(Embedder):
    """The node's embedder, except that it fails a batch holding ``word`` (a provider
    outage seen by one tenant's batch)."""

    def __init__(self, inner: Embedder, word: str, gate: threading.Event | None = None) -> None:
        self.inner, self.word, self.gate = inner, word, gate
        self.dim, self.model = inner.dim, inner.model
        self.entered = threading.Event()

    def embed(self, texts: list[str]) -> np.ndarray:
        if any(self.word in t for t in texts):
            self.entered.set()
            if self.gate is not None:  # hold the failing call until the test lets it fail
                self.gate.wait(timeout=30)
            raise RuntimeError("embedding provider unavailable")
        return self.inner.embed(texts)


async def test_a_failing_batch_fails_its_tenant_only(start: NodeStarter) -> None:
    node, api = await start(**ROUNDS)
    planner = _planner(node)
    planner.embedder = _FailsOn(planner.embedder, "t01")
    await ingest_all(api, ["t00", "t01", "t02"])

    status, body = await api.post("/api/v1/consolidate", {"tenant_id": "t01", "wait": True})
    assert status == 503, body
    assert (await tenant_status(api, "t01"))["consolidation_cursor"] == 0
    for tenant in ("t00", "t02"):  # planned in the same rounds, applied
        await api.consolidate(tenant)
        assert (await tenant_status(api, tenant))["l1_memories"] == EVENTS_PER_TENANT

    planner.embedder = planner.embedder.inner  # the provider is back: the next call drains it
    await api.consolidate("t01")
    assert (await tenant_status(api, "t01"))["l1_memories"] == EVENTS_PER_TENANT


async def test_a_round_planned_before_the_outage_ended_does_not_fail_a_later_caller(
    start: NodeStarter,
) -> None:
    # The round in flight plans t01 with the failing provider; the provider comes back and
    # a caller asks: the stale round's failure is not the caller's, and the next round of
    # the same pass drains t01 (not the next pass, after a long backlog).
    node, api = await start(
        consolidation={"interval_secs": 3600, "batch_size": 100, "mode": "verbatim"},
        insights={"enabled": False},
    )
    planner, worker = _planner(node), node.service.worker
    assert worker is not None
    worker.batch_size, worker.round_events = 4, 8  # ~100 rounds for the backlog below
    gated = _FailsOn(planner.embedder, "t01", gate=threading.Event())
    planner.embedder = gated
    backlog = [f"b{i:02d}" for i in range(30)]
    await ingest_all(api, ["t01", *backlog])
    worker.trigger()
    await wait_until(lambda: _true(gated.entered.is_set()), what="a round planning t01")

    planner.embedder = gated.inner
    caller = asyncio.ensure_future(api.post("/api/v1/consolidate", {"tenant_id": "t01", "wait": True}))
    await wait_until(lambda: _true("t01" in worker._wanted), what="the caller waiting on the rounds")
    assert gated.gate is not None
    gated.gate.set()  # the stale round fails now, after the caller asked

    status, body = await caller
    assert status == 200, body
    assert (await tenant_status(api, "t01"))["l1_memories"] == EVENTS_PER_TENANT
    pending = sum([(await tenant_status(api, t))["pending_events"] for t in backlog])
    assert pending > 0  # served within the pass over the backlog


def _planner(node: RunningNode) -> Any:
    assert node.service.worker is not None
    return node.service.worker.planner


async def test_a_tenant_arriving_during_a_long_pass_is_not_kept_waiting(start: NodeStarter) -> None:
    # 30 tenants x 25 events in batches of 4, two per round: ~100 rounds in one pass; the
    # late tenant must be taken at the next turn of the queue, not after the backlog. The
    # node's batch_size (100) keeps ingest from starting passes: one pass, started below.
    node, api = await start(
        consolidation={"interval_secs": 3600, "batch_size": 100, "mode": "verbatim"},
        insights={"enabled": False},
    )
    worker = node.service.worker
    assert worker is not None
    worker.batch_size, worker.round_events = 4, 8
    backlog = [f"b{i:02d}" for i in range(30)]
    await ingest_all(api, backlog)
    worker.trigger()
    await wait_until(lambda: _true(worker.stats["rounds"] > 0), what="the pass started")
    await api.ingest("late", "a late tenant's only event", event_id="late-1")

    await wait_until(
        lambda: _drained(api, "late"), timeout=60, what="the late tenant consolidated during the pass"
    )
    pending = sum([(await tenant_status(api, t))["pending_events"] for t in backlog])
    assert pending > 0  # the pass over the backlog was still going


async def _true(value: bool) -> bool:
    return value


async def _drained(api: Api, tenant: str) -> bool:
    return (await tenant_status(api, tenant))["pending_events"] == 0
