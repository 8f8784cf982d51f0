"""The timelines' text facts kept on disk between runs (storage/facts_cache.py): a restart
analyses only the texts it has no facts for, and ends with the facts a fresh analysis
gives, whatever the cache holds (stale, another analyser's, damaged, missing). Real
RocksDB and Tantivy under a state machine, no Raft."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memorose import commands
from memorose.retrieval.timeline import Facts, TenantTimeline, facts_of, text_digest
from memorose.storage import facts_cache, indexer
from memorose.storage.facts_cache import FactsCache
from tests.unit.state_node import StateNode
from tests.unit.test_timeline import DIM, memory

TEXTS = ["Ana plays the cello since 2023", "Bruno bakes bread", "Ana plays the cello since 2023", ""]


def test_lookup_answers_what_was_written_once_per_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [
        (f"m-{i}", "chat", float(i), facts_of(text, {"speaker": "Ana"}, True)) for i, text in enumerate(TEXTS)
    ]
    root = tmp_path / "facts"
    assert facts_cache.write(root, [TenantTimeline.build(entries), TenantTimeline.build(entries[:2])]) == 3
    cache = FactsCache.load(root)
    found = cache.lookup([text_digest(t) for t in TEXTS] + [text_digest("never written")])
    assert found[:4] == [(f.dated, f.terms) for _, _, _, f in entries]
    assert found[0] is not None and found[0][0] and not found[1][0]  # "2023" is dated
    assert found[4] is None and (cache.hits, cache.misses) == (4, 1)
    # Past 65,536 distinct terms the vocabulary positions take 4 bytes; encoded in chunks.
    monkeypatch.setattr(facts_cache, "ENCODE_CHUNK", 64)
    wide = [" ".join(f"w{i}x{j}" for j in range(100)) + " again again" for i in range(700)]
    rows = [(f"m-{i}", "chat", 1.0, facts_of(text, {}, True)) for i, text in enumerate(wide)]
    assert facts_cache.write(root, [TenantTimeline.build(rows)]) == 700
    cache = FactsCache.load(root)
    assert cache.codes.dtype == np.uint32
    assert cache.lookup([text_digest(t) for t in wide]) == [(f.dated, f.terms) for _, _, _, f in rows]
    unknown = TenantTimeline.build([("m-x", "chat", 1.0, Facts(True, "", False, b"", 0))])
    assert facts_cache.write(root, [unknown]) == 0  # a row without a digest is not kept
    assert len(FactsCache.load(root)) == 0


class Node(StateNode):
    def __init__(self, root: Path) -> None:
        super().__init__(root, DIM)

    def facts(self) -> dict[str, Any]:
        timeline = self.indexer.timeline.of("t1")
        return {m.decode(): timeline.facts(row) for row, m in enumerate(timeline.ids.tolist())}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    n.apply(commands.consolidate("t1", 0, 0, [memory(f"m-{i}", 100.0 * i) for i in range(1, 41)], 2.0))
    n.indexer.catch_up()
    yield n
    n.close()


@pytest.fixture
def analysed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the indexer analyses from here on."""
    seen: list[str] = []

    def counted(content: str, *args: Any, **kwargs: Any) -> Facts:
        seen.append(content)
        return facts_of(content, *args, **kwargs)

    monkeypatch.setattr(indexer, "facts_of", counted)
    return seen


def fresh_facts(node: Node) -> dict[str, Any]:
    """What an indexer with no cache and no saved state (a rebuild) finds."""
    rebuilt = node.open_indexer("index-rebuilt")
    try:
        timeline = rebuilt.timeline.of("t1")
        return {m.decode(): timeline.facts(row) for row, m in enumerate(timeline.ids.tolist())}
    finally:
        rebuilt.stop()


def test_a_restart_analyses_only_texts_changed_while_it_was_down(node: Node, analysed: list[str]) -> None:
    node.indexer.stop()  # keeps the facts of the 40 texts
    assert (node.root / "index" / "facts" / "manifest.json").exists()
    op = {"op": "supersede", "memory_id": "m-2", "memory": memory("m-2b", 210.0), "reason": "changed"}
    node.apply(commands.consolidate("t1", 0, 0, [], 3.0, ops=[op]))  # while no indexer follows
    node.apply(commands.delete_memory("t1", "m-3"))
    node.indexer = node.open_indexer()
    # The one text not seen before, and the changed memories again when the catch-up
    # re-indexes them (Tantivy needs their tokens); none of the 37 others.
    assert analysed[0] == "fact m-2b" and set(analysed) == {"fact m-2", "fact m-2b"}
    facts = node.facts()
    assert not facts["m-2"].current and facts["m-2b"].current and "m-3" not in facts
    assert facts == fresh_facts(node)


@pytest.mark.parametrize("damage", ["probe", "format", "truncated", "vocabulary", "garbage", "missing"])
def test_an_unusable_cache_costs_the_analysis_not_the_facts(
    node: Node, analysed: list[str], damage: str
) -> None:
    node.indexer.stop()
    root = node.root / "index" / "facts"
    manifest = json.loads((root / "manifest.json").read_text())
    if damage in ("probe", "format"):
        manifest[damage] = "another" if damage == "probe" else 0
        (root / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "truncated":
        np.save(root / "counts.npy", np.zeros(3, np.uint8))
    elif damage == "vocabulary":
        np.save(root / "vocabulary.npy", np.zeros(1, np.uint64))
    elif damage == "garbage":
        (root / "offsets.npy").write_bytes(b"not an array")
    else:
        (root / "digests.npy").unlink()
    node.indexer = node.open_indexer()
    assert len(analysed) == 40  # everything analysed again
    assert node.facts() == fresh_facts(node)
    analysed.clear()
    node.restart_indexer()  # kept again, for the next start-up
    assert analysed == [] and len(FactsCache.load(root)) == 40


def test_the_idle_indexer_keeps_the_facts_once_a_tenth_changed(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large node's stop is too short to write the cache (FACTS_STOP_ROWS): the indexer
    writes it when idle, once enough was indexed since the last time."""
    root = node.root / "index" / "facts"
    node.indexer.start()
    node.apply(commands.consolidate("t1", 0, 0, [memory(f"n-{i}", 5000.0 + i) for i in range(10)], 3.0))
    deadline = time.monotonic() + 30
    while len(FactsCache.load(root)) < 50:  # the 10 new texts: a fifth of the rows
        assert time.monotonic() < deadline, "the idle indexer never wrote the facts"
        time.sleep(0.05)
    node.apply(commands.consolidate("t1", 0, 0, [memory("n-late", 6000.0)], 4.0))
    assert node.indexer.wait_for(node.index, timeout=30)
    assert node.indexer._facts_unsaved == 1  # 1 of 51: not yet worth a write
    monkeypatch.setattr(indexer, "FACTS_STOP_ROWS", 10)
    node.indexer.stop()  # too many rows to write within a stop
    assert len(FactsCache.load(root)) == 50
    node.indexer = node.open_indexer()
