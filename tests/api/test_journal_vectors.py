"""An upgrade replays a Raft journal written in the previous command format: a consolidate
entry with float32 vectors (no ``vectors`` key) committed through a real node is replayed
from the journal into an empty RocksDB after a restart and gives the same memory, vector
bytes included, as the new float16 form gives its float16 vector (records keep float16)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from memorose import codec, commands
from memorose.models import Memory
from node.runner import RunningNode
from tests.conftest import NodeStarter, wait_until


def _memory(memory_id: str, vector: np.ndarray, content: str) -> dict[str, Any]:
    return Memory(
        tenant_id="t1",
        memory_id=memory_id,
        stream_id="s1",
        content=content,
        embedding=vector.tobytes(),
        source_event_ids=["e1"],
        created_at=10.0,
        valid_from=1.0,
        embedding_model="test-384",
        embedding_dim=384,
    ).to_dict()


async def _commit(node: RunningNode, payload: bytes) -> dict[str, Any]:
    proposer = node.service.proposer
    assert proposer is not None
    return await proposer._call(lambda cb: proposer.raft.apply(payload, callback=cb))  # type: ignore[no-any-return]


def _vector(node: RunningNode, memory_id: str) -> bytes | None:
    found = node.service.reader.memory("t1", memory_id)
    return None if found is None else found.embedding


async def test_old_and_new_entries_replay_from_the_journal(start: NodeStarter, tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    settings = {"consolidation": {"interval_secs": 3600}, "insights": {"enabled": False}}
    node, api = await start(data_dir=data_dir, **settings)
    status, _ = await api.post(
        "/api/v1/events",
        {"tenant_id": "t1", "stream_id": "s1", "event_id": "e1", "content": "Alice lives in Paris"},
    )
    assert status == 202
    rng = np.random.default_rng(3)
    old_vector, new_vector = (rng.normal(size=384).astype("<f4") for _ in range(2))
    old_vector /= np.linalg.norm(old_vector)
    new_vector /= np.linalg.norm(new_vector)
    legacy = commands.consolidate("t1", 0, 0, [_memory("m-old", old_vector, "Alice lives in Paris")], 20.0)
    legacy_payload = bytes([commands.CODEC_VERSION]) + codec.pack(legacy)  # the previous format
    assert (await _commit(node, legacy_payload))["ok"]
    current = commands.consolidate("t1", 0, 0, [_memory("m-new", new_vector, "Alice has a cat")], 21.0)
    assert (await _commit(node, commands.encode(current)))["ok"]
    assert _vector(node, "m-old") == old_vector.tobytes()
    compact_stored = _vector(node, "m-new")
    assert (
        compact_stored is not None and compact_stored == new_vector.astype("<f2").tobytes()  # kept float16
    )
    await node.stop()

    # Lose RocksDB and the indexes: everything comes back from the journal alone.
    for path in data_dir.iterdir():
        if path.name.startswith(("rocks", "index")):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    node, api = await start(data_dir=data_dir, **settings)

    async def replayed() -> bool:
        return _vector(node, "m-old") is not None and _vector(node, "m-new") is not None

    await wait_until(replayed, what="journal replay")
    assert _vector(node, "m-old") == old_vector.tobytes()
    assert _vector(node, "m-new") == compact_stored
    status, body = await api.post("/api/v1/retrieve", {"tenant_id": "t1", "query": "Alice Paris", "top_k": 5})
    assert status == 200 and "m-old" in [r["id"] for r in body["results"]]
