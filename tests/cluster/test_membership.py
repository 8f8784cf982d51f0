"""Adding and removing a member at run time through the admin API, one change at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.testing.cluster import Cluster, poll

pytestmark = pytest.mark.timeout(240)


async def test_add_then_remove_a_member(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        cluster.start_all()
        leader = await cluster.wait_leader()
        api = cluster.api(leader)
        for i in range(5):
            await api.ingest("acme", f"event {i}", event_id=f"e-{i}")

        newcomer = cluster.add_node()
        cluster.start(newcomer.index)  # knows all four members; the three do not know it yet
        follower = (leader + 1) % 3
        code, _ = await cluster.api(follower).post(
            "/api/v1/admin/cluster/members", {"raft_address": newcomer.raft, "url": newcomer.url}
        )
        assert code == 307  # membership changes go through the leader
        code, body = await api.post(
            "/api/v1/admin/cluster/members", {"raft_address": "bad", "url": newcomer.url}
        )
        assert code == 400, body
        code, body = await api.post(
            "/api/v1/admin/cluster/members", {"raft_address": newcomer.raft, "url": newcomer.url}
        )
        assert code == 200, body
        assert newcomer.raft in {m["raft_address"] for m in body["members"]}

        await cluster.wait_leader()  # all four agree
        await cluster.wait_converged()
        assert sorted(e["event_id"] for e in await cluster.events(newcomer.index, "acme")) == [
            f"e-{i}" for i in range(5)
        ]
        status = await cluster.status(follower)
        assert status is not None
        assert {"raft_address": newcomer.raft, "url": newcomer.url} in [
            {"raft_address": p["raft_address"], "url": p["url"]} for p in status["peers"]
        ]

        code, body = await api.post(
            "/api/v1/admin/cluster/members", {"raft_address": newcomer.raft, "url": newcomer.url}
        )
        assert code == 409, body  # already a member

        leader = await cluster.wait_leader()
        code, body = await cluster.api(leader).delete(f"/api/v1/admin/cluster/members/{newcomer.raft}")
        assert code == 200, body
        assert newcomer.raft not in {m["raft_address"] for m in body["members"]}
        cluster.stop(newcomer.index)

        async def three_members() -> bool:
            statuses = await cluster.statuses([0, 1, 2])
            return len(statuses) == 3 and all(len(s["peers"]) == 2 for s in statuses.values())

        await poll(three_members, 30, "every node to drop the removed member")
        leader = await cluster.wait_leader(among=[0, 1, 2])
        await cluster.api(leader).ingest("acme", "after removal", event_id="e-after")
