"""Log compaction, snapshot install and the Raft port's password."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest
from pysyncobj.utility import TcpUtility, UtilityException

from node.testing.cluster import PASSWORD, Cluster, poll

pytestmark = pytest.mark.timeout(240)


async def test_node_down_past_compaction_rejoins_by_snapshot(tmp_path: Path) -> None:
    env = {"MEMOROSE_RAFT_TUNING__LOG_COMPACTION_MIN_ENTRIES": "40"}
    async with Cluster(tmp_path, env=env) as cluster:
        cluster.start_all()
        leader = await cluster.wait_leader()
        follower = (leader + 1) % 3
        api = cluster.api(leader)
        for i in range(10):
            await api.ingest("acme", f"before the outage {i}", event_id=f"a-{i}")
        await cluster.wait_converged()
        cluster.kill(follower, signal.SIGKILL)
        for i in range(150):  # one entry each: several compactions on the live nodes
            await api.ingest("acme", f"while n{follower + 1} was down: zebra number {i}", event_id=f"b-{i}")

        async def compacted() -> bool:
            status = await cluster.status(leader)
            return bool(status and status["snapshots"]["taken"] >= 1 and status["log_entries"] < 150)

        await poll(compacted, 60, "the leader to compact its log")
        cluster.start(follower)
        await cluster.wait_leader()
        await cluster.wait_converged()

        status = await cluster.status(follower)
        assert status is not None and status["snapshots"]["installed"] >= 1
        events = await cluster.events(follower, "acme")
        counts = Counter(e["event_id"] for e in events)
        assert len(counts) == 160 and set(counts.values()) == {1}
        digests = await cluster.digests("acme")
        assert len({d["digest"] for d in digests.values()}) == 1

        # the derived indexes were rebuilt from the installed snapshot
        async def searchable() -> bool:
            hits = await cluster.api(follower).retrieve("acme", "zebra number 149")
            return any("zebra number 149" in h["content"] for h in hits)

        await poll(searchable, 60, "the follower's search index to catch up")
        # and the node keeps replicating normally afterwards
        await api.ingest("acme", "after the snapshot", event_id="c-1")
        await cluster.wait_converged()
        assert any(e["event_id"] == "c-1" for e in await cluster.events(follower, "acme"))


async def test_raft_port_refuses_a_wrong_password(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        cluster.start_all()
        leader = await cluster.wait_leader()
        address = cluster.nodes[leader].raft_bind
        status = TcpUtility(password=PASSWORD, timeout=5).executeCommand(address, ["status"])
        assert status["state"] == 2  # the right password is answered
        with pytest.raises(UtilityException):
            TcpUtility(password="not-the-password", timeout=5).executeCommand(address, ["status"])
        with pytest.raises(UtilityException):
            TcpUtility(password=None, timeout=5).executeCommand(address, ["status"])
        # a member started with the wrong password never joins: the other two carry on
        cluster.stop(leader)
        cluster.start(leader, password="not-the-password")
        survivors = [i for i in range(3) if i != leader]
        new_leader = await cluster.wait_leader(among=survivors)
        await cluster.api(new_leader).ingest("acme", "written without the impostor", event_id="x-1")
        status = await cluster.status(new_leader)
        assert status is not None
        impostor = next(p for p in status["peers"] if p["raft_address"] == cluster.nodes[leader].raft)
        assert impostor["state"] == "disconnected"
