"""Data embedded by the hashing model (same dimension as the local one) is detected, kept out
of the vector index, and re-embedded online by `memorose admin reembed` with progress."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ADMIN_KEY, NodeStarter

QUIET = {"consolidation": {"interval_secs": 3600}}


async def test_hashing_data_is_reembedded_with_the_local_model(start: NodeStarter, tmp_path: Path) -> None:
    data = tmp_path / "node"
    first, api = await start(data_dir=data, embeddings={"provider": "hashing"}, **QUIET)
    for i, text in enumerate(
        ["User loves hiking in the Alps", "Invoice 1142 was paid by bank transfer", "Frank keeps bees"]
    ):
        await api.ingest("acme", text, event_id=f"e{i}")
    await api.consolidate("acme")
    await first.stop()

    node, api = await start(data_dir=data, **QUIET)  # default: the local model, also 384-d
    _, status = await api.get("/api/v1/status?tenant_id=acme")
    assert status["stale_vectors"] == 3
    _, cluster = await api.get("/api/v1/cluster/status")
    assert cluster["embedding_model"].startswith("local:") and cluster["stale_vectors"] == 3
    # Hashing vectors are not compared with MiniLM queries: BM25 still finds the memory.
    found = await api.retrieve("acme", "Frank keeps bees")
    assert found[0]["source_event_ids"] == ["e2"]

    env = dict(os.environ, MEMOROSE_ADMIN_KEY=ADMIN_KEY)
    cmd = [sys.executable, "-m", "memorose.cli", "admin", "reembed", "--url", node.url]
    done = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "acme: 3/3 memories re-embedded with local:" in done.stderr
    _, status = await api.get("/api/v1/status?tenant_id=acme")
    assert status["stale_vectors"] == 0
    results = await api.retrieve("acme", "outdoor activities")
    assert results[0]["source_event_ids"] == ["e0"]
