"""Cold backup and restore of a node's data directory (docs/operations.md, "Backups").

A backup is taken from a STOPPED node (a follower: the shard keeps its quorum): a RocksDB
checkpoint of ``rocks/`` plus the Raft directory (journal, term/vote, snapshot dump) and
the generated secrets, in one tar with a manifest of SHA-256 digests. Both halves come
from the same stopped instant, so the Raft log and the applied index agree: a RocksDB
copy restored without its log would skip the next entries as "already applied".
LanceDB and Tantivy (``index/``) are derived and rebuilt at start, so they are left out.

Restore unpacks into an empty directory, checks every file against the manifest (a
truncated tar reads as complete otherwise) and opens the database before reporting
success. Restoring a whole shard = the same archive into every member's data directory,
with the members' original Raft addresses (the membership is in the log).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from memorose.storage.rocks import RocksStore, StoreError, fsync_tree, open_applied_index

MANIFEST = "memorose-backup.json"
FORMAT = 1
#: What a backup holds, relative to the data directory (``index/`` is derived).
KEPT_FILES = ("admin_key", "raft_password")
ROCKS, RAFT = "rocks", "raft"


class BackupError(Exception):
    """The backup or restore cannot be done safely; nothing was changed."""


def backup(data_dir: Path, archive: Path) -> dict[str, Any]:
    """Write ``archive`` from the stopped node at ``data_dir``; returns the manifest."""
    if not (data_dir / ROCKS).is_dir():
        raise BackupError(f"{data_dir} has no {ROCKS}/: not a Memorose data directory")
    with tempfile.TemporaryDirectory(prefix="memorose-backup-", dir=archive.parent) as tmp:
        stage = Path(tmp)
        _checkpoint(data_dir / ROCKS, stage / ROCKS)
        if (data_dir / RAFT).is_dir():
            shutil.copytree(data_dir / RAFT, stage / RAFT)
        for name in KEPT_FILES:
            if (data_dir / name).is_file():
                shutil.copy2(data_dir / name, stage / name)
        manifest = {
            "format": FORMAT,
            "created_at": time.time(),
            "applied_index": open_applied_index(stage / ROCKS),
            "files": {str(p.relative_to(stage)): _sha256(p) for p in sorted(stage.rglob("*")) if p.is_file()},
        }
        _write_tar(stage, manifest, archive)
    return manifest


def restore(archive: Path, data_dir: Path) -> dict[str, Any]:
    """Unpack ``archive`` into the empty (or absent) ``data_dir``; returns the manifest."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore only into a new data directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        manifest = _extract(archive, staging)
        _verify(staging, manifest)
        for entry in staging.iterdir():
            entry.rename(data_dir / entry.name)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_tree(data_dir)
    return manifest


def _checkpoint(source: Path, target: Path) -> None:
    try:
        store = RocksStore(source)
    except Exception as exc:
        raise BackupError(f"cannot open {source} (stop the node first): {exc}") from exc
    try:
        store.checkpoint(target)
    finally:
        store.close()


def _write_tar(stage: Path, manifest: dict[str, Any], archive: Path) -> None:
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime = len(data), int(manifest["created_at"])
        tar.addfile(info, io.BytesIO(data))
        for name in manifest["files"]:
            tar.add(stage / name, arcname=name, recursive=False)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, archive)


def _extract(archive: Path, target: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(target, filter="data")  # no absolute paths, links out, devices
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"{archive} is not a readable backup: {exc}") from exc
    manifest_path = target / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{archive} has no {MANIFEST}")
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    manifest_path.unlink()
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unsupported backup format {manifest.get('format')!r}")
    return manifest


def _verify(stage: Path, manifest: dict[str, Any]) -> None:
    present = {str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()}
    expected = set(manifest["files"])
    if present != expected:
        missing, extra = sorted(expected - present), sorted(present - expected)
        raise BackupError(f"backup incomplete or altered: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, digest in manifest["files"].items():
        if _sha256(stage / name) != digest:
            raise BackupError(f"backup file {name} is corrupt (SHA-256 mismatch)")
    try:
        applied = open_applied_index(stage / ROCKS)
    except StoreError as exc:
        raise BackupError(f"the backup's database does not open: {exc}") from exc
    if applied != manifest["applied_index"]:
        raise BackupError("the restored database is not at the backup's applied index")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
