"""Vectors in the Raft journal and the records: consolidate and reembed commands carry
float16, apply stores that float16 identically on every replica, and entries of the
previous format (float32, no ``vectors`` key) still apply exactly as before (old journals
replay after an upgrade)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memorose import codec, commands
from memorose.models import Memory
from memorose.statemachine import StateMachine
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore


@pytest.fixture
def machines(tmp_path: Path) -> list[StateMachine]:
    stores = [RocksStore(tmp_path / f"rocks{i}") for i in range(2)]
    yield [StateMachine(s) for s in stores]
    for s in stores:
        s.close()


def unit_vector(seed: int, dim: int = 384) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype("<f4")
    return v / np.linalg.norm(v)


def memory(memory_id: str, vector: np.ndarray, content: str = "Alice lives in Paris") -> dict[str, Any]:
    return Memory(
        tenant_id="t1",
        memory_id=memory_id,
        stream_id="s1",
        content=content,
        embedding=vector.astype("<f4").tobytes(),
        source_event_ids=["e1"],
        created_at=10.0,
        valid_from=1.0,
        embedding_model="test-384",
        embedding_dim=int(vector.shape[0]),
    ).to_dict()


def ingest_one() -> bytes:
    event = {
        "stream_id": "s1",
        "event_id": "e1",
        "content": "Alice lives in Paris",
        "metadata": {},
        "timestamp": 1.0,
    }
    return commands.encode(commands.ingest([{"tenant_id": "t1", "events": [event]}], ingested_at=2.0))


def consolidation(vectors: list[np.ndarray]) -> dict[str, Any]:
    """One creation, one merge (its own embedding plus a fallback memory) and a supersede."""
    ops = [
        {"op": "create", "memory": memory("m-b", vectors[1]), "reason": "new fact"},
        {
            "op": "merge",
            "memory_id": "m-a",
            "content": "Alice lives in Paris, near the Louvre",
            "embedding": vectors[2].tobytes(),
            "embedding_model": "test-384",
            "embedding_dim": 384,
            "source_event_ids": ["e1"],
            "boost": 0.1,
            "reason": "same subject",
            "fallback": memory("m-c", vectors[3]),
        },
    ]
    return commands.consolidate("t1", 0, 1, [memory("m-a", vectors[0])], 20.0, ops=ops)


def stored_vector(machine: StateMachine, memory_id: str) -> np.ndarray:
    found = StateReader(machine.store).memory("t1", memory_id)
    assert found is not None
    return found.vector()


def test_the_journal_form_is_float16_and_half_the_vector_bytes() -> None:
    vectors = [unit_vector(i) for i in range(4)]
    command = consolidation(vectors)
    compact = commands.encode(command)
    legacy = bytes([commands.CODEC_VERSION]) + codec.pack(command)
    # 4 vectors of 384 dims: 2 bytes saved per value, less the marker key.
    assert len(legacy) - len(compact) == 4 * 384 * 2 - len(codec.pack({"vectors": "f16"})) + 1
    assert codec.unpack(compact[1:])["vectors"] == commands.VECTORS_F16
    assert command["memories"][0]["embedding"] == vectors[0].tobytes()  # the caller's dict is untouched
    decoded = commands.decode(compact)
    assert decoded["vectors"] == commands.VECTORS_F16
    kept = np.frombuffer(decoded["ops"][1]["embedding"], "<f2")
    assert kept.shape == (384,) and kept.tobytes() == vectors[2].astype("<f2").tobytes()


def test_replicas_store_identical_float16_from_the_compact_form(machines: list[StateMachine]) -> None:
    vectors = [unit_vector(i) for i in range(4)]
    payload = commands.encode(consolidation(vectors))
    for machine in machines:
        assert machine.apply(ingest_one(), 1)["ok"]
        result = machine.apply(payload, 2)
        assert result["ok"] and result["outcomes"] == {"create": 2, "merge": 1}
    for memory_id in ("m-a", "m-b"):
        first, second = (stored_vector(m, memory_id) for m in machines)
        assert first.dtype == np.float32 and first.tobytes() == second.tobytes()
        record = StateReader(machines[0].store).memory("t1", memory_id)
        assert record is not None and len(record.embedding) == 2 * 384  # half of float32
        assert record.in_space("test-384", 384) and not record.in_space("test-384", 192)
    merged = stored_vector(machines[0], "m-a")
    assert np.abs(merged - vectors[2]).max() < 1e-3  # the merge's vector replaced the old one
    assert abs(float(stored_vector(machines[0], "m-b") @ vectors[1]) - 1.0) < 1e-3


def test_a_previous_format_entry_applies_exactly_as_before(machines: list[StateMachine]) -> None:
    """What a journal written before the change holds: float32 embeddings, no ``vectors``."""
    vectors = [unit_vector(i) for i in range(4)]
    legacy = bytes([commands.CODEC_VERSION]) + codec.pack(consolidation(vectors))
    machine = machines[0]
    assert machine.apply(ingest_one(), 1)["ok"]
    assert machine.apply(legacy, 2)["ok"]
    assert stored_vector(machine, "m-a").tobytes() == vectors[2].tobytes()
    assert stored_vector(machine, "m-b").tobytes() == vectors[1].tobytes()


def test_reembed_items_travel_compact_too(machines: list[StateMachine]) -> None:
    from memorose.statemachine import content_sha

    machine = machines[0]
    assert machine.apply(ingest_one(), 1)["ok"]
    assert machine.apply(commands.encode(consolidation([unit_vector(i) for i in range(4)])), 2)["ok"]
    new = unit_vector(9)
    item = {
        "memory_id": "m-b",
        "content_sha": content_sha("Alice lives in Paris"),
        "embedding": new.tobytes(),
        "embedding_model": "other-384",
        "embedding_dim": 384,
    }
    payload = commands.encode(commands.reembed("t1", [item], 30.0))
    assert codec.unpack(payload[1:])["vectors"] == commands.VECTORS_F16
    assert machine.apply(payload, 3) == {"ok": True, "updated": 1}
    assert np.abs(stored_vector(machine, "m-b") - new).max() < 1e-3


def test_vectors_that_do_not_fit_float16_stay_float32() -> None:
    huge = np.full(8, 1e6, "<f4")
    command = commands.reembed(
        "t1", [{"memory_id": "m", "embedding": huge.tobytes(), "embedding_dim": 8}], 1.0
    )
    payload = commands.encode(command)
    assert "vectors" not in codec.unpack(payload[1:])
    assert commands.decode(payload)["items"][0]["embedding"] == huge.tobytes()


def test_vectors_without_their_dimension_stay_float32() -> None:
    """A float16 record is recognised by ``embedding_dim``: without it, keep float32."""
    vector = unit_vector(1, dim=8)
    command = commands.reembed("t1", [{"memory_id": "m", "embedding": vector.tobytes()}], 1.0)
    payload = commands.encode(command)
    assert "vectors" not in codec.unpack(payload[1:])
    assert commands.decode(payload)["items"][0]["embedding"] == vector.tobytes()


def test_a_float16_record_of_another_dimension_is_not_in_space() -> None:
    """768 float16 dimensions are as many bytes as 384 float32 ones: ``embedding_dim``
    tells them apart, and a record without it (written before it existed) is float32."""
    from memorose.models import embedding_fits, embedding_vector

    wide = unit_vector(5, dim=768).astype("<f2").tobytes()
    assert embedding_fits(wide, 768, 768) and not embedding_fits(wide, 768, 384)
    assert embedding_vector(wide, 768).shape == (768,)
    legacy = unit_vector(6).tobytes()
    assert embedding_fits(legacy, 0, 384) and embedding_vector(legacy, 0).tobytes() == legacy


def test_a_malformed_compact_entry_is_an_error_result_on_every_replica(machines: list[StateMachine]) -> None:
    bad = {"type": commands.REEMBED, "tenant_id": "t1", "items": [{"embedding": b"\x00\x01\x02"}], "now": 1.0}
    payload = bytes([commands.CODEC_VERSION]) + codec.pack({**bad, "vectors": commands.VECTORS_F16})
    unknown = bytes([commands.CODEC_VERSION]) + codec.pack({**bad, "vectors": "bf16"})
    for machine in machines:
        assert machine.apply(payload, 1)["ok"] is False
        assert machine.apply(unknown, 2)["ok"] is False
        assert machine.store.applied_index() == 2


def test_cosines_of_stored_float16_rows_equal_those_of_their_float32_widening() -> None:
    """Retrieval hands ``cosines`` the stored float16 rows (no copy per candidate); the
    scores are bit for bit what the float32 records gave."""
    from memorose.providers.embeddings.base import cosines

    query = unit_vector(40)
    stored = [unit_vector(i).astype("<f2") for i in range(50)]
    mixed: list[np.ndarray | None] = [*stored[:25], None, unit_vector(99), *stored[25:]]
    widened = [None if v is None else v.astype(np.float32) for v in mixed]
    assert cosines(query, mixed).tobytes() == cosines(query, widened).tobytes()
