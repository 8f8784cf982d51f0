"""Retrieval feedback writes a memory's access state under its own key (``keys.access``), not
the memory's record: on a real RocksDB and state machine, every reader sees the access
state folded in, the next write of the record absorbs it, and replicas stay identical."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memorose import codec, commands
from memorose.consolidation.forgetting import strengthen
from memorose.storage import keys
from tests.unit.state_node import StateNode
from tests.unit.test_small_tenant_reads import FACTS, memory


@pytest.fixture
def node(tmp_path: Path) -> Iterator[StateNode]:
    n = StateNode(tmp_path, dim=8)
    n.apply(commands.consolidate("t1", 0, 0, [memory(i, c) for i, c in enumerate(FACTS, 1)], 2.0))
    yield n
    n.close()


def raw_record(node: StateNode, memory_id: str) -> bytes | None:
    return node.store.get(keys.memory("t1", memory_id))


def test_a_touch_writes_the_access_state_and_leaves_the_record_alone(node: StateNode) -> None:
    before = raw_record(node, "m-2")
    node.apply(commands.touch("t1", 50.0, [["m-2", 3], ["m-5", 1], ["m-gone", 2]], [], 0.1))
    node.apply(commands.touch("t1", 60.0, [["m-2", 1]], [], 0.1))
    assert raw_record(node, "m-2") == before  # the record, vector and all, is not rewritten
    state = codec.unpack(node.store.get(keys.access("t1", "m-2")))
    expected = {
        "access_count": 4,
        "last_accessed_at": 60.0,
        "importance": strengthen(strengthen(0.5, 0.1, 3), 0.1),
    }
    assert state == expected
    assert node.store.get(keys.access("t1", "m-gone")) is None  # no access state without a memory
    m2 = node.reader.memory("t1", "m-2")
    assert m2 is not None and (m2.access_count, m2.last_accessed_at, m2.importance) == tuple(
        expected.values()
    )
    many = node.reader.memories_many("t1", ["m-1", "m-2", "m-5"])
    assert [many[m].access_count for m in ("m-1", "m-2", "m-5")] == [0, 4, 1]


def test_a_scan_folds_each_access_state_into_its_own_memory(node: StateNode) -> None:
    node.apply(commands.touch("t1", 50.0, [["m-1", 1], ["m-3", 3], ["m-6", 6]], [], 0.1))
    counts = {m.memory_id: m.access_count for m in node.reader.memories("t1")}
    assert counts == {"m-1": 1, "m-2": 0, "m-3": 3, "m-4": 0, "m-5": 0, "m-6": 6}
    page = list(node.reader.memories("t1", after_id="m-2", limit=3))
    assert [(m.memory_id, m.access_count) for m in page] == [("m-3", 3), ("m-4", 0), ("m-5", 0)]
    # The raw records are the stored ones (no access state): the timeline and lexicon read them.
    assert all(r["access_count"] == 0 for r in node.reader.memory_records("t1"))


def test_the_next_write_of_the_record_absorbs_the_access_state(node: StateNode) -> None:
    node.apply(commands.touch("t1", 50.0, [["m-4", 2]], [], 0.1))
    touched = node.reader.memory("t1", "m-4")
    node.apply(commands.forget("t1", 10_000.0 * 86_400, ["m-4"], 30.0, 0.99))  # archives: a record write
    assert node.store.get(keys.access("t1", "m-4")) is None
    record = codec.unpack(raw_record(node, "m-4"))
    assert record["archived"] is True
    assert touched is not None
    assert (record["access_count"], record["last_accessed_at"], record["importance"]) == (
        touched.access_count,
        touched.last_accessed_at,
        touched.importance,
    )
    node.apply(commands.touch("t1", 70.0, [["m-4", 1]], [], 0.1))  # and a later touch starts from there
    again = node.reader.memory("t1", "m-4")
    assert again is not None and again.access_count == 3 and again.archived


def test_a_touch_counts_when_forgetting_decides(node: StateNode) -> None:
    """The forget command re-checks each memory at apply with its access state."""
    day = 86_400.0
    node.apply(commands.touch("t1", 200 * day, [["m-1", 5]], [], 0.5))
    result = node.apply(commands.forget("t1", 240 * day, ["m-1", "m-2"], 30.0, 0.1))
    assert result["archived"] == ["m-2"]  # m-1 was used recently: it stays


def test_deleting_a_memory_or_its_tenant_deletes_its_access_state(node: StateNode) -> None:
    node.apply(commands.touch("t1", 50.0, [["m-1", 1], ["m-2", 1]], [], 0.1))
    node.apply(commands.delete_memory("t1", "m-1", purge_events=False))
    assert node.store.get(keys.access("t1", "m-1")) is None
    assert node.store.get(keys.access("t1", "m-2")) is not None
    node.apply(commands.delete_tenant("t1"))
    assert list(node.store.scan(keys.tenant_prefix(keys.ACCESS, "t1"))) == []


def test_replicas_applying_the_same_touches_hold_the_same_state(tmp_path: Path) -> None:
    nodes = [StateNode(tmp_path / name, dim=8) for name in ("a", "b")]
    try:
        for n in nodes:
            n.apply(commands.consolidate("t1", 0, 0, [memory(i, c) for i, c in enumerate(FACTS, 1)], 2.0))
            n.apply(commands.touch("t1", 50.0, [["m-1", 2], ["m-3", 1]], [["m-1", "m-3", 1]], 0.1))
        digests = {n.reader.tenant_digest("t1") for n in nodes}
        assert len(digests) == 1
        nodes[1].apply(commands.touch("t1", 51.0, [["m-3", 1]], [], 0.1))
        assert nodes[0].reader.tenant_digest("t1") != nodes[1].reader.tenant_digest("t1")  # it is covered
    finally:
        for n in nodes:
            n.close()


def test_a_touch_reads_its_memories_and_edges_in_one_multi_get(
    node: StateNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One call into the store for the whole touch: on a busy node every call waits for the
    store's lock behind the queries' reads, and the Raft thread applies touches. The result
    is the one the key-by-key reads gave (edges strengthened both ways, unknown ids skipped)."""
    node.apply(commands.touch("t1", 40.0, [["m-1", 1]], [["m-1", "m-2", 1]], 0.1))
    calls: list[int] = []
    get_many, get = node.store.get_many, node.store.get

    def counting_get_many(keys_: list[bytes]) -> list[bytes | None]:
        calls.append(len(keys_))
        return get_many(keys_)

    def counting_get(key: bytes) -> bytes | None:
        calls.append(1)
        return get(key)

    monkeypatch.setattr(node.store, "get_many", counting_get_many)
    monkeypatch.setattr(node.store, "get", counting_get)
    accesses = [["m-1", 2], ["m-3", 1], ["m-4", 1], ["m-gone", 1]]
    pairs = [["m-1", "m-2", 1], ["m-3", "m-4", 2], ["m-1", "m-gone", 1]]
    node.apply(commands.touch("t1", 50.0, accesses, pairs, 0.1))
    monkeypatch.undo()

    reads_of_the_touch = [n for n in calls if n > 1]
    assert reads_of_the_touch == [2 * 5 + 2 * 3]  # 5 memories (+ access states), 3 pairs both ways
    m1 = node.reader.memory("t1", "m-1")
    assert m1 is not None and m1.access_count == 3
    assert node.store.get(keys.access("t1", "m-gone")) is None
    targets = {e.target: e for e in node.reader.edges_of("t1", "m-1")}
    assert set(targets) == {"m-2"}  # no edge to a memory that does not exist
    assert {e.target for e in node.reader.edges_of("t1", "m-3")} == {"m-4"}


def _store_dump(node: StateNode) -> dict[bytes, bytes]:
    return dict(node.store.scan(b""))


def test_a_touch_reads_three_fields_and_writes_what_reading_whole_records_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A touch decodes only the access fields of the records it touches (``access_states``);
    applied to a second replica whose touches read whole records (``memory``), the same
    commands leave byte-identical stores: missing memories, repeated touches, pairs of
    missing ends, a record rewritten in between, an archived memory."""
    touches = [
        commands.touch("t1", 50.0, [["m-2", 3], ["m-5", 1], ["m-gone", 2]], [["m-2", "m-5", 2]], 0.1),
        commands.touch("t1", 60.0, [["m-2", 1], ["m-6", 4]], [["m-2", "m-6", 1], ["m-6", "m-gone", 1]], 0.1),
        commands.forget("t1", 10_000.0 * 86_400, ["m-5"], 30.0, 0.99),  # m-5 rewritten (archived)
        commands.touch("t1", 70.0, [["m-5", 1], ["m-1", 1]], [["m-1", "m-5", 3], ["m-1", "m-1", 1]], 0.1),
        commands.delete_memory("t1", "m-6"),
        commands.touch("t1", 80.0, [["m-6", 1], ["m-2", 2]], [["m-2", "m-6", 1]], 0.1),
    ]
    dumps = []
    for name, whole in (("light", False), ("whole", True)):
        if whole:

            def whole_records(tx: Any, tenant_id: str, memory_ids: list[str], edges: Any) -> dict[str, Any]:
                tx.prefetch(tenant_id, memory_ids, edges)
                return {m: tx.memory(tenant_id, m) for m in memory_ids}

            monkeypatch.setattr("memorose.statemachine._Tx.access_states", whole_records)
            monkeypatch.setattr(
                "memorose.statemachine._Tx.exists", lambda tx, t, m: tx.memory(t, m) is not None
            )
        replica = StateNode(tmp_path / name, dim=8)
        replica.apply(commands.consolidate("t1", 0, 0, [memory(i, c) for i, c in enumerate(FACTS, 1)], 2.0))
        results = [replica.apply(command) for command in touches]
        dumps.append((results, _store_dump(replica)))
        replica.close()
    assert dumps[0] == dumps[1]
    results, dump = dumps[0]
    assert [r.get("touched") for r in results if "touched" in r] == [2, 2, 2, 1]
    assert [r.get("edges") for r in results if "edges" in r] == [1, 1, 1, 0]
    assert any(k.startswith(keys.tenant_prefix(keys.ACCESS, "t1")) for k in dump)


def test_a_record_msgspec_will_not_take_is_read_whole() -> None:
    """An integer map key (msgpack allows it, codec.unpack reads it) is no struct field: the
    touch then decodes the record whole, with the same values as before."""
    from memorose.statemachine import _access_fields

    odd = codec.pack({1: "x", "importance": 0.5, "access_count": 2, "content": "c"})
    assert _access_fields(odd) == {"importance": 0.5, "access_count": 2}
    plain = codec.pack({"importance": 0.25, "content": "c", "last_accessed_at": None})
    assert _access_fields(plain) == {"importance": 0.25, "last_accessed_at": None}
