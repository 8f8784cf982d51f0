"""Retrieval decodes its candidates as ``MemoryHead``s (reader.py): the same fields, filter
and view as the full ``Memory``, from the same stored bytes."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rocksdict import WriteBatch

from memorose import codec
from memorose.models import Memory
from memorose.retrieval import temporal
from memorose.retrieval.search import Reads, RetrieveRequest
from memorose.storage import keys
from memorose.storage.indexer import is_searchable
from memorose.storage.reader import MemoryHead, StateReader, memory_head, memory_view
from memorose.storage.rocks import RocksStore


def _memory(**changes: Any) -> Memory:
    vector = np.linspace(-1, 1, 8, dtype=np.float32)
    fields: dict[str, Any] = {
        "tenant_id": "t",
        "memory_id": "m1",
        "stream_id": "s",
        "content": "Ana moved to Lisbon in May",
        "embedding": (vector / np.linalg.norm(vector)).tobytes(),
        "source_event_ids": ["e1"],
        "created_at": 1_700_000_100.0,
        "valid_from": 1_700_000_000.0,
        "metadata": {"speaker": "Ana", 3: "an int key"},
        "embedding_model": "hashing-v1-8",
        "embedding_dim": 8,
        "pipeline": {"policy": "verbatim"},
    }
    return Memory(**{**fields, **changes})


def _same_head(head: MemoryHead, memory: Memory) -> None:
    assert head.stream_id == memory.stream_id and head.content == memory.content
    assert head.embedding == memory.embedding and head.metadata == memory.metadata
    assert (head.valid_from, head.valid_to, head.archived) == (
        memory.valid_from,
        memory.valid_to,
        memory.archived,
    )
    assert head.superseded_by == memory.superseded_by and head.is_current == memory.is_current
    assert head.embedding_model == memory.embedding_model
    for model, dim in [("hashing-v1-8", 8), (None, 8), ("other", 8), ("hashing-v1-8", 16)]:
        assert head.in_space(model, dim) == memory.in_space(model, dim)
    assert is_searchable(head) == is_searchable(memory)


def test_a_head_holds_what_the_full_decode_holds() -> None:
    memory = _memory(valid_to=1_700_000_500.0, superseded_by="m2", archived=True)
    raw = codec.pack(memory.to_dict())
    _same_head(memory_head(raw), memory)
    assert memory_view(raw) == memory.public()


def test_records_of_older_and_newer_versions_decode() -> None:
    full = _memory().to_dict()
    older = {
        k: v for k, v in full.items() if k not in ("valid_to", "archived", "metadata", "embedding_model")
    }
    newer = {**full, "a_field_from_a_later_version": [1, 2]}
    for record in (older, newer):
        raw = codec.pack(record)
        _same_head(memory_head(raw), Memory.from_dict(codec.unpack(raw)))


def test_a_field_of_an_unexpected_type_falls_back_to_the_full_decode() -> None:
    record = {**_memory().to_dict(), "archived": 0, "valid_from": 1_700_000_000}
    head = memory_head(codec.pack(record))
    assert head.valid_from == 1_700_000_000 and not head.archived and is_searchable(head)


@pytest.mark.parametrize(
    ("as_of", "arbitration"),
    list(itertools.product([None, 1_699_999_999.0, 1_700_000_300.0, 1_700_000_900.0], [True, False])),
)
def test_the_temporal_filter_admits_a_head_as_it_admits_its_memory(
    as_of: float | None, arbitration: bool
) -> None:
    req = RetrieveRequest("t", "q", as_of=as_of, enable_arbitration=arbitration)
    for valid_to, superseded_by, archived in itertools.product(
        [None, 1_700_000_500.0], [None, "m2"], [False, True]
    ):
        memory = _memory(valid_to=valid_to, superseded_by=superseded_by, archived=archived)
        head = memory_head(codec.pack(memory.to_dict()))
        assert temporal.admit_memory(head, req) == temporal.admit_memory(memory, req)  # type: ignore[arg-type]


def test_reads_read_each_memory_once_and_skip_missing_ones(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "rocks")
    batch = WriteBatch(raw_mode=True)
    for memory_id in ("m1", "m2"):
        batch.put(keys.memory("t", memory_id), codec.pack(_memory(memory_id=memory_id).to_dict()))
    store.write(batch)
    reader = StateReader(store)
    calls: list[list[str]] = []
    heads_many = reader.memory_heads_many

    def counted(tenant_id: str, memory_ids: list[str]) -> dict[str, tuple[MemoryHead, bytes]]:
        calls.append(list(memory_ids))
        return heads_many(tenant_id, memory_ids)

    reader.memory_heads_many = counted  # type: ignore[method-assign]
    reads = Reads(reader, "t")
    assert list(reads.memories(["m1", "gone", "m1"])) == ["m1"]
    assert list(reads.memories(["m2", "m1", "gone"])) == ["m2", "m1"]
    assert calls == [["m1", "gone"], ["m2"]]
    head, raw = reads.memories(["m2"])["m2"]
    assert memory_view(raw)["id"] == "m2" and head.content == _memory().content
    store.close()
