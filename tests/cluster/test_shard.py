"""A 3-node shard of subprocess nodes: election, redirects, consistency, restarts."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.testing.cluster import Cluster, poll
from node.testing.soak import JOURNAL_DISK_READS

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def shard(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path) as cluster:
        cluster.start_all()
        await cluster.wait_leader()
        yield cluster


async def test_one_leader_and_followers_redirect_writes(shard: Cluster) -> None:
    leader = await shard.wait_leader()
    statuses = await shard.statuses()
    assert [s["role"] for s in statuses.values()].count("leader") == 1
    leader_url = shard.nodes[leader].url
    for s in statuses.values():
        assert s["leader_url"] == leader_url
        assert s["term"] >= 1
        assert {p["raft_address"] for p in s["peers"]} == {n.raft for n in shard.nodes} - {s["raft_address"]}
    assert all(p["state"] == "connected" and p["lag"] >= 0 for p in statuses[leader]["peers"])

    follower = next(i for i in statuses if i != leader)
    body = {"tenant_id": "acme", "stream_id": "s", "content": "hello", "event_id": "e-1"}
    code, _ = await shard.api(follower).post("/api/v1/events", body)
    assert code == 307
    # the same request again, to read the headers
    async with shard.session.post(  # type: ignore[union-attr]
        shard.nodes[follower].url + "/api/v1/events?x=1",
        json=body,
        headers={"Authorization": "Bearer adm_test_admin_key"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 307
        assert resp.headers["X-Memorose-Leader"] == leader_url
        assert resp.headers["Location"] == leader_url + "/api/v1/events?x=1"
    code, answer = await shard.api(leader).post("/api/v1/events", body)
    assert code == 202 and answer["event_id"] == "e-1"

    # linearizable reads on a follower see the acknowledged write at once
    code, events = await shard.api(follower).get("/api/v1/events?tenant_id=acme&consistency=linearizable")
    assert code == 200 and [e["event_id"] for e in events["events"]] == ["e-1"]
    hits = await shard.api(follower).retrieve("acme", "hello", consistency="linearizable")
    assert any("hello" in h["content"] for h in hits)
    # "leader" reads are served by the leader only
    code, _ = await shard.api(follower).get("/api/v1/status?tenant_id=acme&consistency=leader")
    assert code == 307
    code, status = await shard.api(leader).get("/api/v1/status?tenant_id=acme&consistency=leader")
    assert code == 200 and status["l0_events"] == 1
    code, _ = await shard.api(leader).get("/api/v1/status?tenant_id=acme&consistency=strong")
    assert code == 400

    code, metrics = await shard.api(leader).get("/metrics")
    assert code == 200
    assert "memorose_raft_role 2.0" in metrics and "memorose_raft_term" in metrics


async def test_no_leader_means_503_with_retry_after(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        cluster.start(0)  # its two peers never start: no quorum, no leader
        api = cluster.api(0)

        async def up() -> bool:
            code, _ = await api.get("/healthz")
            return code == 200

        await poll(up, 30, "node 1 serving HTTP")
        async with cluster.session.post(  # type: ignore[union-attr]
            cluster.nodes[0].url + "/api/v1/events",
            json={"tenant_id": "acme", "stream_id": "s", "content": "x"},
            headers={"Authorization": "Bearer adm_test_admin_key"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) >= 1
        status = await cluster.status(0)
        assert status is not None and status["leader"] is None and not status["has_quorum"]


async def _write(shard: Cluster, leader: int, tenant: str, ids: list[str]) -> None:
    api = shard.api(leader)
    for eid in ids:
        code, body = await api.post(
            "/api/v1/events",
            {"tenant_id": tenant, "stream_id": "s", "content": f"event {eid}", "event_id": eid},
        )
        assert code == 202, body


async def test_full_restart_keeps_every_acknowledged_event(shard: Cluster) -> None:
    leader = await shard.wait_leader()
    ids = [f"e-{i}" for i in range(40)]
    await _write(shard, leader, "acme", ids)
    for i in range(3):
        shard.kill(i, signal.SIGKILL)  # no clean shutdown for anyone
    shard.start_all()
    leader = await shard.wait_leader()
    await shard.wait_converged()
    for i in range(3):
        events = await shard.events(i, "acme")
        assert sorted(e["event_id"] for e in events) == sorted(ids)
    digests = await shard.digests("acme")
    assert len({d["digest"] for d in digests.values()}) == 1
    await _write(shard, leader, "acme", ["after-restart"])


async def test_follower_restart_applies_nothing_twice(shard: Cluster) -> None:
    leader = await shard.wait_leader()
    follower = (leader + 1) % 3
    await _write(shard, leader, "acme", [f"a-{i}" for i in range(20)])
    await shard.wait_converged()
    shard.kill(follower, signal.SIGKILL)
    await _write(shard, leader, "acme", [f"b-{i}" for i in range(20)])
    shard.start(follower)
    await shard.wait_leader()
    applied = await shard.wait_converged()
    statuses = await shard.statuses()
    assert statuses[follower]["raft_applied_index"] == applied == statuses[leader]["raft_applied_index"]
    assert statuses[follower]["applied_index"] == statuses[leader]["applied_index"]
    events = await shard.events(follower, "acme")
    counts = Counter(e["event_id"] for e in events)
    assert len(counts) == 40 and set(counts.values()) == {1}
    assert sorted(e["seq"] for e in events) == list(range(1, 41))
    code, status = await shard.api(follower).get("/api/v1/status?tenant_id=acme")
    assert code == 200 and status["l0_events"] == 40
    digests = await shard.digests("acme")
    assert len({(d["digest"], d["applied_index"]) for d in digests.values()}) == 1


async def test_entries_bigger_than_a_message_replicate(shard: Cluster) -> None:
    """A group-commit entry larger than PySyncObj's 64 KB message size is sent in chunks
    (node/pysyncobj_fixes.py); non-ASCII text makes its pickled form much longer."""
    leader = await shard.wait_leader()
    events = [
        {"stream_id": "s", "event_id": f"big-{i}", "content": f"entrée n°{i} " + "éàü漢字" * 150}
        for i in range(300)
    ]
    code, body = await shard.api(leader).post("/api/v1/events/batch", {"tenant_id": "acme", "events": events})
    assert code == 202, body
    # Background consolidation changes the tenant too: finish it before comparing replicas.
    code, body = await shard.api(leader).post("/api/v1/consolidate", {"tenant_id": "acme", "wait": True})
    assert code == 200, body
    await shard.wait_converged()
    digests = await shard.digests("acme")
    assert len({d["digest"] for d in digests.values()}) == 1
    for i in range(3):
        assert len(await shard.events(i, "acme")) == 300
    for node in shard.nodes:  # a truncated chunked entry raises inside the follower's tick
        assert "failed _onTick" not in node.log_path.read_text(errors="replace")


async def test_a_follower_catches_up_from_commands_read_back_from_the_journal(tmp_path: Path) -> None:
    """With a journal that keeps ~2 commands in memory, a follower that missed 30 writes is
    sent them read back from the leader's journal file (node/journal.py): it ends with the
    same events and digest as the others."""
    async with Cluster(tmp_path, env={"MEMOROSE_RAFT_TUNING__JOURNAL_CACHE_BYTES": "2000"}) as shard:
        shard.start_all()
        leader = await shard.wait_leader()
        follower = (leader + 1) % 3
        await _write(shard, leader, "acme", [f"a-{i}" for i in range(5)])
        await shard.wait_converged()
        shard.kill(follower, signal.SIGKILL)
        api = shard.api(leader)
        for i in range(30):
            body = {
                "tenant_id": "acme",
                "stream_id": "s",
                "content": f"b-{i} " + "x" * 600,
                "event_id": f"b-{i}",
            }
            code, reply = await api.post("/api/v1/events", body)
            assert code == 202, reply
        before = [await shard.metric(i, JOURNAL_DISK_READS) or 0.0 for i in range(3)]  # follower: down
        shard.start(follower)
        await shard.wait_converged()
        events = await shard.events(follower, "acme")
        assert sorted(e["event_id"] for e in events) == sorted(
            [f"a-{i}" for i in range(5)] + [f"b-{i}" for i in range(30)]
        )
        digests = await shard.digests("acme")
        assert len({d["digest"] for d in digests.values()}) == 1
        # Whoever led the catch-up served it from its file: ~25 of the 30 commands were
        # evicted (a 2,000-byte cache of ~650-byte commands), far more than the one read of
        # the first entry a node makes after each eviction of it.
        after = [await shard.metric(i, JOURNAL_DISK_READS) for i in range(3)]
        assert all(value is not None for value in after)
        assert sum(after) - sum(before) >= 20  # type: ignore[arg-type]


async def test_retrieval_feedback_reaches_every_replica(shard: Cluster) -> None:
    """The leader's touch (access counts under their own key, docs/state-machine.md) is
    applied by every node: the same access count everywhere, equal digests."""
    leader = await shard.wait_leader()
    api = shard.api(leader)
    await api.ingest("acme", "Carol's favourite tea is a smoky oolong", event_id="tea")
    await api.ingest("acme", "The server room door code is 4417", event_id="code")
    await api.consolidate("acme")
    for _ in range(3):
        hits = await api.retrieve("acme", "What tea does Carol like?", top_k=1, passages=False)
    tea = hits[0]["id"]
    assert hits[0]["layer"] == "L1"

    async def counted() -> bool:
        _, memory = await api.get(f"/api/v1/memories/{tea}?tenant_id=acme")
        return bool(memory["access_count"] >= 3)

    await poll(counted, 30, "the leader's touch to apply")
    await shard.wait_converged()
    for i in range(3):
        code, memory = await shard.api(i).get(f"/api/v1/memories/{tea}?tenant_id=acme")
        assert code == 200 and memory["access_count"] == 3 and memory["importance"] > 0.5
    digests = await shard.digests("acme")
    assert len({d["digest"] for d in digests.values()}) == 1
