"""The fault soak, short version (``memorose bench soak`` runs the long one): writers with
client ids while the harness kills, pauses, restarts and cuts off nodes and damages
snapshot transfers; afterwards nothing acknowledged is lost or duplicated on any node, the
L0 streams and digests are identical, and no node installed an empty snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import print_report, summarize
from node.testing.soak import SoakConfig, run_soak

pytestmark = pytest.mark.timeout(480)

SCHEDULE = [
    "snapshot_corrupt",
    "kill_leader",
    "pause_leader",
    "cut_node",
    "snapshot_drop",
    "kill_follower",
    "restart_graceful",
    "snapshot_kill_receiver",
]


async def test_soak_loses_duplicates_and_diverges_nothing(tmp_path: Path) -> None:
    config = SoakConfig(
        schedule=SCHEDULE,
        rounds=len(SCHEDULE),
        seed=3,
        writers=4,
        event_bytes=2500,
        compaction_entries=300,
        min_hold_s=1.0,
        max_hold_s=3.0,
        duration_cap_s=300.0,
        settle_timeout_s=60.0,
        workdir=tmp_path,
    )
    run = await run_soak(config)
    result = summarize(run)
    print_report(result)

    assert run.ok, (
        result["violations"],
        result["examples"],
        result["notes"],
        result["logs"]["total"]["excerpts"],
    )
    assert [r.kind for r in run.rounds] == SCHEDULE, result["stopped_early"]
    chunk_faults = [r for r in run.rounds if r.snapshot_fault]
    assert any(r.snapshot_fault and r.snapshot_fault["fired"] for r in chunk_faults), [
        r.as_dict() for r in chunk_faults
    ]
    assert all(r.installed for r in chunk_faults), "the damaged follower never got a snapshot installed"
    assert run.history.counts()["ok"] > 0
    # Restarted nodes replayed, and followers back from a kill or a cut were sent, commands
    # read back from the journal file (64 KiB cache), not only from memory.
    assert run.journal_disk_reads > 0
    assert run.ok, (
        result["violations"],
        result["examples"],
        result["notes"],
        result["logs"]["total"]["excerpts"],
    )
