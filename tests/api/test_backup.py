"""Backup and restore (docs/operations.md): a stopped node's archive, restored into a new
data directory, brings back exactly the state at the backup, answers searches (derived
indexes rebuilt), and applies new writes (the Raft log and the applied index agree:
nothing new is skipped as "already applied"). Damaged archives are refused."""

from __future__ import annotations

import asyncio
import gzip
import io
import tarfile
from pathlib import Path

import pytest

from memorose.cli import main
from node.backup import BackupError, backup, restore
from tests.conftest import NodeStarter


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, ["admin", *argv])


async def test_backup_restore_round_trip(start: NodeStarter, tmp_path: Path) -> None:
    data = tmp_path / "node"
    node, api = await start(data_dir=data)
    await api.ingest("acme", "Alice moved to Lisbon in 2021 and teaches surfing", event_id="before")
    await api.consolidate("acme")
    with pytest.raises(BackupError, match="stop the node"):
        backup(data, tmp_path / "live.tar.gz")  # RocksDB is locked by the running node
    await node.stop()

    archive = tmp_path / "backup.tar.gz"
    assert await cli("backup", "--data-dir", str(data), "--out", str(archive)) == 0
    node, api = await start(data_dir=data)
    await api.ingest("acme", "written after the backup", event_id="after")
    await node.stop()

    restored = tmp_path / "restored"
    assert await cli("restore", "--archive", str(archive), "--data-dir", str(restored)) == 0
    assert not (restored / "index").exists()  # derived: rebuilt at start
    node, api = await start(data_dir=restored)
    _, events = await api.get("/api/v1/events?tenant_id=acme")
    assert [e["event_id"] for e in events["events"]] == ["before"]
    hits = await api.retrieve("acme", "where does Alice live")
    assert hits and hits[0]["source_event_ids"] == ["before"]
    await api.ingest("acme", "a new write on the restored node", event_id="new")
    _, events = await api.get("/api/v1/events?tenant_id=acme")
    assert [e["event_id"] for e in events["events"]] == ["before", "new"]
    assert await cli("restore", "--archive", str(archive), "--data-dir", str(restored)) == 1  # not empty

    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if member.name.startswith("rocks/") and member.name.endswith(".sst"):
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(BackupError, match="SHA-256"):
        restore(tampered, tmp_path / "from-tampered")
    assert not (tmp_path / "from-tampered").exists()


def test_a_damaged_archive_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "truncated.tar.gz"
    archive.write_bytes(gzip.compress(b"not a tar at all" * 100)[:200])
    with pytest.raises(BackupError):
        restore(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()
