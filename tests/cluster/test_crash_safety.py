"""Crash safety step by step: the node is SIGKILLed by a failpoint (node/failstop.py) at
each step of writing a snapshot, compacting the journal and installing a snapshot; after a
restart nothing acknowledged is missing, nothing is applied twice, and new writes land."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from node.testing.cluster import Cluster, poll
from node.testing.soak import QUIET_WORKERS

pytestmark = pytest.mark.timeout(300)

#: Snapshots every 30 entries; no background proposals (digests are compared at the end).
COMPACT_OFTEN = {"MEMOROSE_RAFT_TUNING__LOG_COMPACTION_MIN_ENTRIES": "30", **QUIET_WORKERS}


async def _write_until_dead(cluster: Cluster, i: int, prefix: str, limit: int = 400) -> list[str]:
    """Four concurrent writers until the node kills itself (concurrency keeps entries
    arriving while a snapshot is packed); returns the acknowledged ids."""
    acked: list[str] = []

    async def writer(w: int) -> None:
        for n in range(limit // 4):
            event_id = f"{prefix}-{w}-{n}"
            body = {
                "tenant_id": "acme",
                "stream_id": "s1",
                "content": f"{prefix} {w} {n}",
                "event_id": event_id,
            }
            try:
                status, _ = await cluster.api(i).post(
                    "/api/v1/events", body, timeout=aiohttp.ClientTimeout(total=10)
                )
            except (aiohttp.ClientError, TimeoutError):
                return
            if status == 202:
                acked.append(event_id)
            if not cluster.nodes[i].alive:
                return

    await asyncio.gather(*(writer(w) for w in range(4)))
    return acked


async def _wait_dead(cluster: Cluster, i: int) -> None:
    async def dead() -> bool:
        return not cluster.nodes[i].alive

    await poll(dead, 30, f"node {i} to be killed by its failpoint")


@pytest.mark.parametrize("point", ["snapshot.pack.replaced", "journal.compact.written"])
async def test_a_crash_while_compacting_loses_nothing(tmp_path: Path, point: str) -> None:
    async with Cluster(tmp_path, size=1, env=COMPACT_OFTEN, proxies=False) as cluster:
        cluster.env = {**COMPACT_OFTEN, "MEMOROSE_FAILPOINTS": point}
        cluster.start(0)
        await cluster.wait_leader()
        acked = await _write_until_dead(cluster, 0, "before")
        await _wait_dead(cluster, 0)
        assert f"failpoint {point} fired" in cluster.nodes[0].log_path.read_text()
        assert len(acked) > 20

        cluster.env = COMPACT_OFTEN
        cluster.start(0)
        await cluster.wait_leader()
        for n in range(40):  # past the next compaction too
            await cluster.api(0).ingest("acme", f"after number {n}", event_id=f"after-{n}")
        counts = Counter(e["event_id"] for e in await cluster.events(0, "acme"))
        assert set(acked) <= set(counts), f"lost: {sorted(set(acked) - set(counts))[:5]}"
        assert {f"after-{n}" for n in range(40)} <= set(counts)
        assert set(counts.values()) == {1}


async def test_a_follower_killed_at_each_step_of_an_install_recovers(tmp_path: Path) -> None:
    async with Cluster(tmp_path, env=COMPACT_OFTEN) as cluster:
        cluster.start_all()
        leader = await cluster.wait_leader()
        follower = (leader + 1) % 3
        api = cluster.api(leader)
        written: list[str] = []

        async def write(prefix: str, count: int) -> None:
            for n in range(count):
                await api.ingest("acme", f"{prefix} zebra {n} " + "x" * 2000, event_id=f"{prefix}-{n}")
                written.append(f"{prefix}-{n}")

        for step, point in enumerate(
            [
                "snapshot.receive.chunk",
                "snapshot.install.unpacked",
                "snapshot.install.kept",  # the restart installs from the node's own dump
                "snapshot.install.switched",
            ]
        ):
            cluster.kill(follower, signal.SIGKILL)
            await write(f"gap{step}", 80)  # the leader compacts past the follower's log

            async def compacted(step: int = step) -> bool:
                status = await cluster.status(leader)
                return bool(status and status["snapshots"]["taken"] >= step + 1)

            await poll(compacted, 60, "the leader to compact its log")
            cluster.env = {**COMPACT_OFTEN, "MEMOROSE_FAILPOINTS": point}
            cluster.start(follower)
            await _wait_dead(cluster, follower)
            assert f"failpoint {point} fired" in cluster.nodes[follower].log_path.read_text()
            cluster.env = COMPACT_OFTEN

        cluster.start(follower)
        await cluster.wait_leader()
        await write("end", 5)
        await cluster.wait_converged()
        for i in range(3):
            counts = Counter(e["event_id"] for e in await cluster.events(i, "acme"))
            assert set(counts) == set(written) and set(counts.values()) == {1}, f"node {i}"
        digests = await cluster.digests("acme")
        assert len({(d["digest"], d["applied_index"]) for d in digests.values()}) == 1, digests
        log = cluster.nodes[follower].log_path.read_text()
        assert "installed snapshot at applied index 0 " not in log
