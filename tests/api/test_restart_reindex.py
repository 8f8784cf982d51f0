"""Durability across restarts and rebuilding the derived indexes from RocksDB."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import Api, NodeStarter

FACTS = [
    "Alice lives in Paris and works as a pastry chef",
    "Bob bought a red bicycle in March 2023",
    "The quarterly review moved to Thursday at 3pm",
    "Carol is allergic to peanuts and shellfish",
    "Dan's daughter started violin lessons last week",
    "The staging database runs on Postgres 15",
]
QUERIES = [
    "who is allergic to peanuts",
    "bicycle purchase",
    "where does Alice live",
    "violin",
    "Postgres version",
]


async def _ingest_all(api: Api, tenant: str = "acme") -> None:
    events = [{"stream_id": "s1", "content": text, "event_id": f"f{i}"} for i, text in enumerate(FACTS)]
    status, _ = await api.post("/api/v1/events/batch", {"tenant_id": tenant, "events": events})
    assert status == 202


def _strip(results: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    return [(r["id"], r["content"], r["source_event_ids"]) for r in results]


async def _answers(api: Api) -> list[list[tuple[str, str, list[str]]]]:
    return [_strip(await api.retrieve("acme", q)) for q in QUERIES]


async def test_restart_keeps_everything_and_applies_nothing_twice(start: NodeStarter, tmp_path: Path) -> None:
    data_dir = tmp_path / "restart"
    node, api = await start(data_dir=data_dir)
    await _ingest_all(api)
    await api.consolidate("acme")
    await api.ingest("acme", "A late note about the Lisbon offsite", event_id="late")  # stays pending
    before_answers = await _answers(api)
    _, before_status = await api.get("/api/v1/status?tenant_id=acme")
    applied_before = node.service.store.applied_index()
    entries_applied = node.service.raft.machine.applied_count  # type: ignore[union-attr]
    assert entries_applied >= 3
    await node.stop()

    node, api = await start(data_dir=data_dir, consolidation={"interval_secs": 3600})
    _, after_status = await api.get("/api/v1/status?tenant_id=acme")
    assert after_status == before_status
    assert node.service.store.applied_index() == applied_before
    machine = node.service.raft.machine  # type: ignore[union-attr]
    assert machine.applied_count == 0, "journal replay re-applied entries"
    assert machine.skipped_count >= entries_applied
    assert await _answers(api) == before_answers
    late = await api.retrieve("acme", "Lisbon offsite")
    assert late[0]["source_event_ids"] == ["late"]
    _, events = await api.get("/api/v1/events?tenant_id=acme&limit=1000")
    ids = [e["event_id"] for e in events["events"]]
    assert len(ids) == len(set(ids)) == len(FACTS) + 1

    # Consolidation resumes from the replicated cursor.
    done = await api.consolidate("acme")
    assert done["cursor"] == len(FACTS) + 1
    _, status = await api.get("/api/v1/status?tenant_id=acme")
    assert status["l1_memories"] == len(FACTS) + 1 and status["pending_events"] == 0


async def test_online_reindex_rebuilds_identical_results(start: NodeStarter) -> None:
    _, api = await start(consolidation={"interval_secs": 3600})
    await _ingest_all(api)
    await api.consolidate("acme")
    await api.ingest("acme", "Pending: the router firmware needs an update", event_id="pending")
    before = await _answers(api) + [_strip(await api.retrieve("acme", "router firmware"))]
    status, body = await api.post("/api/v1/admin/reindex")
    assert status == 200 and body["rebuilt"] is True
    after = await _answers(api) + [_strip(await api.retrieve("acme", "router firmware"))]
    assert after == before
    assert after[-1][0][2] == ["pending"]


async def test_offline_reindex_and_lost_index_dir(start: NodeStarter, tmp_path: Path) -> None:
    data_dir = tmp_path / "offline"
    node, api = await start(data_dir=data_dir)
    await _ingest_all(api)
    await api.consolidate("acme")
    before = await _answers(api)
    await node.stop()

    shutil.rmtree(data_dir / "index")
    cli = subprocess.run(
        [sys.executable, "-m", "memorose.cli", "admin", "reindex", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert '"rebuilt": true' in cli.stdout
    _, api = await start(data_dir=data_dir)
    assert await _answers(api) == before

    # Losing the index directory entirely is repaired at start, too.
    await api.post("/api/v1/admin/reindex")
    assert await _answers(api) == before


async def test_large_tenant_uses_the_ann_index_and_finds_its_memories(start: NodeStarter) -> None:
    _, api = await start(index={"ann_threshold": 40})
    events = [
        {
            "stream_id": "s1" if i % 2 else "s2",
            "content": f"Ticket {i}: customer {i} reports printer jam",
            "event_id": f"t{i}",
        }
        for i in range(60)
    ] + [
        {"stream_id": "s1", "content": "The espresso machine in the kitchen is broken", "event_id": "coffee"}
    ]
    status, _ = await api.post("/api/v1/events/batch", {"tenant_id": "big", "events": events})
    assert status == 202
    await api.consolidate("big")
    results = await api.retrieve("big", "espresso machine broken", top_k=3)
    assert results[0]["source_event_ids"] == ["coffee"]
    only_s2 = await api.retrieve("big", "printer jam", stream_id="s2", top_k=10)
    assert only_s2 and all(r["stream_id"] == "s2" for r in only_s2)
