"""The fault run (CI version): concurrent writers while the harness kills, pauses and cuts
off nodes one at a time; afterwards no acknowledged event is lost or duplicated on any
node and every replica has the same digest. The randomized soak is
``benchmarks/raft_soak.py``."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.cluster.checker import History, check, run_writers
from tests.cluster.faults import FAULTS, FaultLog, inject
from tests.cluster.harness import Cluster

pytestmark = pytest.mark.timeout(300)


async def test_fault_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        cluster.start_all()
        await cluster.wait_leader()
        history, faults, stop = History(), FaultLog(), asyncio.Event()
        writers = asyncio.create_task(run_writers(cluster, "acme", 4, stop, history))
        rng = random.Random(7)
        try:
            for fault in FAULTS:
                await inject(cluster, fault, hold=3.0, rng=rng, log=faults)
        finally:
            stop.set()
            await writers
        verdict = await check(cluster, "acme", history)
        print(
            f"fault run: faults={faults.injected} outcomes={verdict.counts} "
            f"attempts={dict(history.attempt_results)} applied={verdict.applied_index}"
        )
        assert faults.injected == list(FAULTS)
        assert verdict.counts["ok"] > 0
        assert verdict.lost == [], f"acknowledged events lost: {verdict.lost[:10]}"
        assert verdict.duplicated == [], f"events stored twice: {verdict.duplicated[:10]}"
        assert verdict.resurrected == [], f"refused events present: {verdict.resurrected[:10]}"
        assert verdict.digests_equal

        # the checker itself can fail: an acknowledged id that was never written is "lost"
        history.outcomes["never-written"] = "ok"
        assert (await check(cluster, "acme", history)).lost == ["never-written"]
