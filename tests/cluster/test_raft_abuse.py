"""Issue 15 on a real 3-node shard: a peer without the password sends the 2^31-1 frame and
a slow half-frame to the leader's Raft port while clients write. Every write is
acknowledged and both attack connections are closed by the node (no timing asserted)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node.testing import raft_attack
from node.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

ENV = {
    "MEMOROSE_CONSOLIDATION__INTERVAL_SECS": "86400",  # replication only, not the workers
    "MEMOROSE_RAFT_TUNING__HANDSHAKE_TIMEOUT": "3",
    "MEMOROSE_RAFT_TUNING__FRAME_READ_TIMEOUT": "3",
}
WRITERS = 3
AFTER_ATTACK = 10  # writes per writer once both attack connections are gone


async def test_writers_keep_getting_acks_while_the_leader_is_attacked(tmp_path: Path) -> None:
    async with Cluster(tmp_path, env=ENV, proxies=False) as cluster:
        cluster.start_all()
        leader = await cluster.wait_leader()
        target = cluster.nodes[leader].raft_bind
        big = asyncio.create_task(asyncio.to_thread(raft_attack.big_frame, target, 44 << 20, 60.0))
        slow = asyncio.create_task(asyncio.to_thread(raft_attack.slow_half_frame, target, 60.0))
        failures: list[tuple[int, object]] = []
        acks = 0

        async def writer(w: int) -> None:
            nonlocal acks
            n = after = 0
            while after < AFTER_ATTACK:
                n += 1
                after += big.done() and slow.done()
                body = {
                    "tenant_id": "abuse",
                    "stream_id": f"w{w}",
                    "content": f"write {n}",
                    "event_id": f"w{w}-{n}",
                }
                code, answer = await cluster.api(leader).post("/api/v1/events", body)
                if code == 202:
                    acks += 1
                else:
                    failures.append((code, answer))

        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        assert await big, "the node kept the 2 GiB frame's connection open"
        assert await slow, "the node kept the slow half-frame's connection open"
        assert failures == []
        assert acks >= WRITERS * AFTER_ATTACK
        status = await cluster.status(leader)
        assert status is not None and status["role"] == "leader"
        guard = status["raft_transport"]
        assert guard["oversize_frames"] >= 1
        assert guard["handshake_timeouts"] + guard["read_timeouts"] >= 1
        await cluster.wait_converged()
