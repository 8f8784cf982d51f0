"""The timeline the indexer keeps (retrieval/timeline.py, issue 12's cold tenants): the same
neighbours as the per-query build it replaced, following new, superseded, archived and
deleted memories in a warm indexer and after a restart (cold), on real RocksDB and Tantivy;
a touch re-sorts nothing; the ranking facts kept beside (``Facts``) follow every change;
a couple of hundred bytes per memory."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memorose import commands
from memorose.models import Memory
from memorose.retrieval.terms import pack
from memorose.retrieval.timeline import Entry, Facts, Place, TenantTimeline, Timeline
from memorose.storage.indexer import Indexer
from memorose.storage.reader import StateReader
from memorose.storage.vectors import VectorIndex
from tests.unit.state_node import StateNode

GAP = 100.0
DIM = 8


def facts(rng: random.Random | None = None, text: str = "") -> Facts:
    """Ranking facts, random with ``rng``."""
    if rng is None:
        return Facts(True, "", False, pack(text))
    words = " ".join(
        rng.choice(["ana", "cello", "paris", "moved", "hiking"]) for _ in range(rng.randint(0, 6))
    )
    return Facts(rng.random() < 0.7, rng.choice(["", "Ana", "Bo"]), rng.random() < 0.2, pack(words))


def entry(memory_id: str, stream: str, valid_from: float) -> Entry:
    return (memory_id, stream, valid_from, facts(text=memory_id))


def reference_neighbours(
    entries: list[Entry], memory_id: str, span: int, gap: float
) -> list[tuple[str, int]]:
    """The per-query build this replaced: sorted (stream, valid_from, id) tuples, walked."""
    order = sorted((stream, valid_from, m) for m, stream, valid_from, _ in entries)
    position = {entry[2]: i for i, entry in enumerate(order)}
    index = position.get(memory_id)
    if index is None:
        return []
    out = []
    for step in (-1, 1):
        prev = order[index][1]
        for distance in range(1, span + 1):
            j = index + step * distance
            if not 0 <= j < len(order) or order[j][0] != order[index][0] or abs(order[j][1] - prev) > gap:
                break
            out.append((order[j][2], step * distance))
            prev = order[j][1]
    return out


def random_entries(n: int, seed: int) -> list[Entry]:
    """Memories over three streams, in episodes (gaps above ``GAP`` now and then), with ties."""
    rng = random.Random(seed)
    entries, now = [], 0.0
    for i in range(n):
        now += rng.choice([0.0, 5.0, 40.0, 99.0, 150.0, 1000.0])
        memory_id = f"m-{rng.getrandbits(40):010x}-{i}"
        entries.append((memory_id, rng.choice(["chat", "mail", "notes"]), now, facts(rng)))
    return entries


def test_neighbours_match_the_per_query_build() -> None:
    entries = random_entries(400, seed=1)
    timeline = TenantTimeline.build(entries)
    longer, shorter = entries[0][0] + "0", entries[0][0][:-1]  # only exact ids match
    ids = [m for m, _, _, _ in entries] + ["m-unknown", "m-0", longer, shorter]
    for span in (1, 2, 4):
        found = timeline.neighbours_many(ids, span, GAP)
        assert found == {m: reference_neighbours(entries, m, span, GAP) for m in ids}
    assert any(found.values()) and not all(found.values())  # the data has episodes and loners
    for m in ids:  # the single lookup (passages) answers as the batch does
        assert timeline.neighbours(m, 2, GAP) == reference_neighbours(entries, m, 2, GAP)
    assert TenantTimeline.build([]).neighbours_many(["m-1"], 2, GAP) == {"m-1": []}
    # Each memory's facts sit on its row.
    assert timeline.place_of(ids) == [(s, t, f) for _, s, t, f in entries] + [None] * 4


def test_merged_changes_equal_a_build_from_scratch() -> None:
    entries = random_entries(300, seed=2)
    base = TenantTimeline.build(entries[:250])
    changes: dict[str, Place] = {m: (s, t, f) for m, s, t, f in entries[250:]}  # new
    changes[entries[0][0]] = None  # deleted
    changes[entries[1][0]] = ("other", entries[1][2], entries[1][3])  # moved to a new stream
    changes[entries[2][0]] = (entries[2][1], entries[2][2] + 77.0, entries[2][3])  # new valid time
    new_facts = Facts(False, "Cy", True, pack("superseded since"))
    changes[entries[3][0]] = (entries[3][1], entries[3][2], new_facts)  # new facts only
    changes["m-never-there"] = None
    merged = base.merged(changes)

    expected = [e for e in entries[4:]] + [
        (entries[1][0], "other", entries[1][2], entries[1][3]),
        (entries[2][0], entries[2][1], entries[2][2] + 77.0, entries[2][3]),
        (entries[3][0], entries[3][1], entries[3][2], new_facts),
    ]
    assert len(merged) == len(expected)
    ids = [m for m, _, _, _ in entries]
    assert merged.neighbours_many(ids, 3, GAP) == {m: reference_neighbours(expected, m, 3, GAP) for m in ids}
    by_id = {m: (s, t, f) for m, s, t, f in expected}
    assert merged.place_of(ids) == [by_id.get(m) for m in ids]


def rows(timeline: TenantTimeline) -> list[tuple[str, float, str, Facts]]:
    """The timeline as (stream, valid_from, id, facts) in its order, after checking its id
    order."""
    ids = [i.decode() for i in timeline.ids.tolist()]
    assert sorted(timeline.by_id.tolist()) == list(range(len(ids)))  # a permutation
    assert [ids[p] for p in timeline.by_id.tolist()] == sorted(ids)
    codes = timeline.streams.tolist()
    assert codes == sorted(codes)  # each stream's rows together
    streams = [timeline.stream_names[c] for c in codes]
    # Streams are ordered by code (first seen), so compare them by name; within a stream the
    # order is the timeline's (a stable sort keeps it).
    kept = [timeline.facts(row) for row in range(len(ids))]
    return sorted(zip(streams, timeline.valid_from.tolist(), ids, kept, strict=True), key=lambda row: row[0])


def test_merging_rounds_of_random_changes_equals_building_from_scratch() -> None:
    """Insert positions, ties of valid time, new streams, ids longer and shorter than any
    before (the bytes column widens), deletions down to empty and back."""
    rng = random.Random(3)
    state: dict[str, tuple[str, float, Facts]] = {}
    timeline = TenantTimeline.build([])
    for round_ in range(40):
        changes: dict[str, Place] = {}
        for _ in range(rng.choice([1, 5, 30])):
            if state and rng.random() < 0.4:
                memory_id = rng.choice(sorted(state))
                changes[memory_id] = (
                    None if rng.random() < 0.5 else (rng.choice("abcd"), float(rng.randint(0, 9)), facts(rng))
                )
            else:
                memory_id = "m" + "x" * rng.randint(0, 12) + str(rng.getrandbits(16))
                changes[memory_id] = (
                    rng.choice(["a", "b", f"s{round_}"]),
                    float(rng.randint(0, 9)),
                    facts(rng),
                )
        if round_ == 20:
            changes = dict.fromkeys(state)  # everything deleted
        for memory_id, place in changes.items():
            if place is None:
                state.pop(memory_id, None)
            else:
                state[memory_id] = place
        timeline = timeline.merged(changes)
        expected = TenantTimeline.build((m, *place) for m, place in state.items())
        assert rows(timeline) == rows(expected)
    assert len(timeline) > 50


def test_queued_changes_are_merged_by_the_indexer_or_the_next_query(monkeypatch: pytest.MonkeyPatch) -> None:
    timeline = Timeline()
    timeline.replace("t", [entry("m-1", "s", 1.0), entry("m-2", "s", 2.0)])
    before = timeline.of("t")
    same = {e[0]: e[1:] for e in (entry("m-1", "s", 1.0), entry("m-2", "s", 2.0))}
    timeline.update("t", {**same, "m-gone": None})  # moves nothing
    assert timeline.of("t") is before
    timeline.update("t", {"m-3": entry("m-3", "s", 3.0)[1:]})
    assert timeline.of("t").neighbours("m-3", 2, GAP) == [("m-2", -1), ("m-1", -2)]
    superseded = Facts(False, "", False, pack("m-1"))
    timeline.update("t", {"m-1": ("s", 1.0, superseded)})  # same place, new facts: kept
    assert timeline.of("t").place_of(["m-1"]) == [("s", 1.0, superseded)]

    monkeypatch.setattr("memorose.retrieval.timeline.EAGER_MERGE_MAX", 0)  # a "large" tenant
    timeline.replace("big", [entry(f"m-{i:03d}", "s", float(i)) for i in range(100)])
    big = timeline.of("big")
    timeline.update("big", {"m-100": entry("m-100", "s", 100.0)[1:]})
    timeline.settle(["big"])  # 1 change in 100: left to the query
    assert timeline.of("big") is not big and len(timeline.of("big")) == 101
    timeline.update("big", {f"m-{i:03d}": None for i in range(20)})
    timeline.settle(["big"])  # a fifth of the tenant: merged now
    settled = timeline.of("big")
    assert len(settled) == 81 and timeline.of("big") is settled


def test_a_timeline_costs_a_couple_of_hundred_bytes_per_memory() -> None:
    tenants, per_tenant = 100, 1000
    texts = [  # ~15 distinct terms each, as a conversation turn
        pack(" ".join(f"w{(i * 7 + j * 13) % 5000}" for j in range(15)) + " the and w1")
        for i in range(per_tenant)
    ]
    rows = [
        [
            (f"m-{t:03d}{i:021x}", f"s{i % 3}", float(i), Facts(i % 5 > 0, f"p{i % 2}", i % 4 == 0, texts[i]))
            for i in range(per_tenant)
        ]
        for t in range(tenants)
    ]  # 26-character ids, as the pipeline makes them; packed terms shared between tenants here
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        timeline = Timeline()
        for t, entries in enumerate(rows):
            timeline.replace(f"t{t}", entries)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_memory = held / (tenants * per_tenant)
    columns = tenants * per_tenant * (26 + 4 + 8 + 4 + 1 + 4 + 1 + 8 + 8)
    assert timeline.nbytes() == columns + tenants * sum(len(t) + 33 for t in texts)
    # The columns and pointers (the packed terms are shared by the tenants here, counted by
    # nbytes above: ~150 B each).
    assert per_memory < 78, per_memory


# -- on real components: the state machine writes, the indexer follows ---------------------


def memory(memory_id: str, valid_from: float, stream: str = "chat") -> dict[str, object]:
    return Memory(
        tenant_id="t1",
        memory_id=memory_id,
        stream_id=stream,
        content=f"fact {memory_id}",
        embedding=np.ones(DIM, np.float32).tobytes(),
        source_event_ids=[f"ev-{memory_id}"],
        created_at=1.0,
        valid_from=valid_from,
        embedding_dim=DIM,
    ).to_dict()


class Node(StateNode):
    """Applies each command, then lets the indexer follow it at once."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, DIM)
        self.rebuilds = 0

    def apply(self, command: dict[str, object]) -> dict[str, object]:
        result = super().apply(command)
        self.indexer.catch_up()
        return result

    def neighbours(self, indexer: Indexer, memory_id: str, span: int = 1) -> list[tuple[str, int]]:
        return indexer.timeline.neighbours("t1", memory_id, span, 1800.0)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    n.apply(commands.consolidate("t1", 0, 0, [memory(f"m-{i}", 100.0 * i) for i in range(1, 6)], 2.0))
    yield n
    n.close()


def cold_and_warm(node: Node) -> Iterator[Indexer]:
    """The indexer that followed the changes (warm), then cold ones that never saw them: the
    node's indexer restarted from its saved state, and one rebuilt from RocksDB."""
    yield node.indexer
    node.indexer.stop()
    node.indexer = node.open_indexer()
    yield node.indexer
    node.rebuilds += 1
    rebuilt = node.open_indexer(f"index-rebuilt-{node.rebuilds}")  # no saved state: a rebuild
    try:
        assert rebuilt.rebuilds == 1
        yield rebuilt
    finally:
        rebuilt.stop()


def test_a_new_memory_joins_its_episode_warm_and_cold(node: Node) -> None:
    assert node.neighbours(node.indexer, "m-3") == [("m-2", -1), ("m-4", 1)]
    node.apply(commands.consolidate("t1", 0, 0, [memory("m-new", 250.0)], 3.0))
    for indexer in cold_and_warm(node):
        assert node.neighbours(indexer, "m-3") == [("m-new", -1), ("m-4", 1)]
        assert node.neighbours(indexer, "m-new") == [("m-2", -1), ("m-3", 1)]


def test_a_superseded_memory_stays_beside_its_successor(node: Node) -> None:
    """Superseded memories stay searchable (``as_of``); retrieval filters them later."""
    op = {"op": "supersede", "memory_id": "m-2", "memory": memory("m-2b", 210.0), "reason": "changed"}
    node.apply(commands.consolidate("t1", 0, 0, [], 3.0, ops=[op]))
    assert node.reader.memory("t1", "m-2").superseded_by == "m-2b"  # type: ignore[union-attr]
    for indexer in cold_and_warm(node):
        assert node.neighbours(indexer, "m-2", span=2) == [("m-1", -1), ("m-2b", 1), ("m-3", 2)]
        old, new = indexer.timeline.of("t1").place_of(["m-2", "m-2b"])
        assert old is not None and new is not None
        assert not old[2].current and new[2].current  # ranking reads "current" from here
        assert new[2].terms == pack("fact m-2b")  # the same ids in every process


def test_deleted_and_archived_memories_leave_and_a_restored_one_returns(node: Node) -> None:
    node.apply(commands.delete_memory("t1", "m-3"))
    node.apply(commands.forget("t1", 10.0**9, ["m-5"], half_life_days=1.0, min_importance=1.0))
    assert node.reader.memory("t1", "m-5").archived  # type: ignore[union-attr]
    for indexer in cold_and_warm(node):
        assert node.neighbours(indexer, "m-4") == [("m-2", -1)]  # m-3 gone: m-2 is 200 s away
        assert node.neighbours(indexer, "m-3") == node.neighbours(indexer, "m-5") == []
    node.apply(commands.restore("t1", "m-5", 10.0**9))
    for indexer in cold_and_warm(node):
        assert node.neighbours(indexer, "m-5") == [("m-4", -1)]


def test_a_touch_re_sorts_nothing_and_a_deleted_tenant_is_dropped(node: Node) -> None:
    before = node.indexer.timeline.of("t1")
    node.apply(commands.touch("t1", 5.0, [["m-1", 1], ["m-2", 3]], [["m-1", "m-2", 1]], 0.1))
    assert node.reader.memory("t1", "m-2").access_count == 3  # type: ignore[union-attr]
    assert node.indexer.timeline.of("t1") is before
    node.apply(commands.delete_tenant("t1"))
    assert len(node.indexer.timeline.of("t1")) == 0


def readable(indexer: Indexer, memory_ids: list[str]) -> list[object]:
    """Each memory's place with its facts."""
    return list(indexer.timeline.of("t1").place_of(memory_ids))


def test_a_tenant_in_lancedb_gets_its_timeline_from_the_stored_records(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large tenant's vectors are not decoded at start-up: its timeline is read from the
    stored dicts (archived memories left out) and answers as the warm one does."""
    node.apply(commands.forget("t1", 10.0**9, ["m-2"], half_life_days=1.0, min_importance=1.0))
    warm = {m: node.neighbours(node.indexer, m, span=2) for m in ("m-1", "m-2", "m-3", "m-4")}
    op = {"op": "supersede", "memory_id": "m-4", "memory": memory("m-4b", 410.0), "reason": "changed"}
    node.apply(commands.consolidate("t1", 0, 0, [], 3.0, ops=[op]))
    ids = ["m-1", "m-2", "m-3", "m-4", "m-4b", "m-5"]
    warm_places = readable(node.indexer, ids)
    assert warm_places[1] is None and not warm_places[3][2][0]  # type: ignore[index]
    assert warm["m-2"] == [] and warm["m-3"] == [("m-1", -1), ("m-4", 1), ("m-5", 2)]
    read: list[str] = []
    records = StateReader.memory_records

    def spied(reader: StateReader, tenant_id: str) -> Iterator[dict[str, object]]:
        read.append(tenant_id)
        return records(reader, tenant_id)

    monkeypatch.setattr(StateReader, "memory_records", spied)
    monkeypatch.setattr(VectorIndex, "is_large", lambda self, tenant_id: tenant_id == "t1")
    node.indexer.stop()
    node.indexer = node.open_indexer()
    assert read == ["t1"]
    assert {m: node.neighbours(node.indexer, m, span=2) for m in ("m-1", "m-2", "m-3")} == {
        "m-1": warm["m-1"],
        "m-2": [],
        "m-3": [("m-1", -1), ("m-4", 1), ("m-4b", 2)],
    }
    assert readable(node.indexer, ids) == warm_places  # the facts, read from the records
