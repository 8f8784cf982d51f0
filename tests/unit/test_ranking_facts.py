"""Ranking from the facts the indexer keeps (retrieval/terms.py, timeline.py; issue 12's
100K reads): packed terms count as the analysed text does, BM25 over them is bit-identical,
a retrieve ranked from facts answers as one ranked from the records while reading only its
results' records, and a memory changed after the indexer's last cycle is re-checked before
it is shown. Real RocksDB and Tantivy under a state machine, no Raft."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from memorose import commands
from memorose.retrieval.rerank import DEFAULT_WEIGHTS, Candidate, CorpusStats, bm25_scores, term_counts
from memorose.retrieval.rerank import term_frequencies as text_frequencies
from memorose.retrieval.search import PASSAGE_DEPTH, Retriever
from memorose.retrieval.terms import pack, packed_matrix, term_id, term_ids
from tests.unit.test_small_tenant_reads import DIM
from tests.unit.test_small_tenant_reads import Node as SmallTenantNode
from tests.unit.test_small_tenant_reads import memory as small_memory

TEXTS = [
    "Ana plays the cello on Sundays, the cello her grandmother gave her",
    "Ana moved to Lisbon last spring",
    "Bruno bakes sourdough bread at 6:30 every morning in 2023",
    "Straße, café und Ünïcode — naïve façade",
    "a_b c-d e.f 42 42 42",
    "",
    "!!!",
    " ".join(["again"] * 300) + " once",  # a count far above a byte
]


def test_packed_terms_count_as_the_analysed_text() -> None:
    packed = [pack(t) for t in TEXTS]
    assert packed[5] == packed[6] == b""
    query = ["cello", "ana", "unknown-term", "cello", "42", "again", "cafe", "lisbon"]
    tf, lengths = packed_matrix(packed, term_ids(query))
    assert tf.tolist() == text_frequencies([term_counts(t) for t in TEXTS], query).tolist()
    assert lengths.tolist() == [sum(term_counts(t).values()) for t in TEXTS]
    assert tf[7].tolist()[5] == 300 and tf[0].tolist()[0] == tf[0].tolist()[3] == 2  # repeated column
    assert len(packed[7]) == 8 * 3  # 300 = 255 + 45 in two words, "once" in a third
    assert packed_matrix([], [1])[0].shape == (0, 1)


def test_term_ids_are_stable_and_spread() -> None:
    """The same id in every process (not Python's salted ``hash``), 56 bits wide."""
    assert term_id("cello") == 0x2DADEDD8492B4C
    words = [f"w{i}" for i in range(50_000)]
    ids = term_ids(words)
    assert len(set(ids)) == len(words) and max(ids) < 2**56 and max(ids) > 2**50


def candidates(texts: list[str], packed_share: float) -> list[Candidate]:
    rng = random.Random(7)
    out = []
    for i, text in enumerate(texts):
        c = Candidate(("memory", f"m-{i}"), {}, "chat", float(i), text=text)
        if rng.random() < packed_share:
            c.text, c.packed = None, pack(text)
        out.append(c)
    return out


@pytest.mark.parametrize("packed_share", [0.0, 0.5, 1.0])
def test_bm25_from_packed_terms_is_bit_identical(packed_share: float) -> None:
    rng = random.Random(3)
    words = ["cello", "lisbon", "bread", "moved", "sunday", "the", "ana", "bruno", "sea", "42"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(200)]
    stats = CorpusStats(5000, {"cello": 40, "ana": 300, "the": 4000})
    terms = ["cello", "ana", "moved", "nowhere", "the", "cello"]
    weights = {"moved": 0.3}
    expected = bm25_scores(candidates(texts, 0.0), terms, stats, 1.2, 0.3, weights)
    found = bm25_scores(candidates(texts, packed_share), terms, stats, 1.2, 0.3, weights)
    assert found == expected  # exact: the same counts and lengths, the same float operations
    assert any(expected) and not all(expected)


# -- a retrieve on real components ---------------------------------------------------------

FACTS = [  # (content, speaker, stream)
    ("Ana plays the cello on Sundays", "Ana", "chat"),
    ("Ana moved to Lisbon last spring", "Ana", "chat"),
    ("Bruno bakes sourdough bread", "Bruno", "chat"),
    ("Bruno repairs old bicycles on 12 May 2024", "Bruno", "chat"),
    ("Carla studies marine biology", "Carla", "mail"),
    ("Carla swims in the cold sea every morning", "Carla", "mail"),
    ("the cello was a gift from her grandmother", "Ana", "chat"),
    ("they went to the sea in Lisbon in 2023", "Bruno", "mail"),
]
QUERIES = [
    "Ana cello",
    "when did Bruno repair bicycles",
    "Where does Ana live?",
    "Carla sea",
    "what did Bruno bake",
    "grandmother gift",
    "Lisbon",
    "nothing matches this",
]


def memory(i: int, content: str, speaker: str = "", stream: str = "chat") -> dict[str, Any]:
    """The small-tenant reads' memory, in ``stream``, said by ``speaker``."""
    return {
        **small_memory(i, content),
        "stream_id": stream,
        "metadata": {"speaker": speaker} if speaker else {},
    }


class Node(SmallTenantNode):
    """The small-tenant reads' node (the indexer follows when told, record reads counted),
    each query starting with an empty record cache so that every read it makes shows."""

    @property
    def read(self) -> list[str]:
        return [memory_id for ids in self.store_reads for memory_id in ids]

    def ask(self, query: str, **options: Any) -> list[dict[str, Any]]:
        self.retriever.records._kept.clear()
        return super().ask(query, **options)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    memories = [memory(i, c, s, stream) for i, (c, s, stream) in enumerate(FACTS, 1)]
    n.apply(commands.consolidate("t1", 0, 0, memories, 2.0))
    n.indexer.catch_up()
    yield n
    n.close()


def answers(results: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["id"], r["score"], r.get("passage"), r["content"]) for r in results]


@pytest.mark.parametrize("options", [{}, {"passages": False}, {"top_k": 2}, {"enable_arbitration": False}])
def test_ranking_from_facts_answers_as_ranking_from_the_records(
    node: Node, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    from_facts = {}
    facts_reads = 0
    for q in QUERIES:
        node.store_reads.clear()
        from_facts[q] = answers(node.ask(q, **options))
        if options.get("passages", True):  # the hits that may join a passage are read too
            assert len(node.read) <= options.get("top_k", 10) + PASSAGE_DEPTH
        else:  # only the results' records were read
            assert set(node.read) <= {r[0] for r in from_facts[q]}
        facts_reads += len(node.read)
    node.store_reads.clear()
    monkeypatch.setattr(Retriever, "_ranks_from_facts", lambda self, req: False)
    for q in QUERIES:
        assert answers(node.ask(q, **options)) == from_facts[q], q
    assert len(node.read) > facts_reads  # the record path reads every candidate
    assert sum(bool(a) for a in from_facts.values()) >= 6


@pytest.mark.parametrize("options", [{"passages": False, "explain": True, "top_k": 3}, {}])
def test_cosines_from_the_int8_rows_rank_as_the_records_vectors(
    node: Node, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    """Where cosines count (a sentence model's weight), a candidate's cosine comes from the
    vector index's int8 row instead of its record: the same memories, scores within the
    rows' quantisation error (so only near-ties change places), and still only the shown
    records read."""
    node.retriever.weights = replace(DEFAULT_WEIGHTS, cosine=1.0)
    # |row - codes * scale| <= max|row| / 254 <= 1/254 a coordinate, times |query|_1 <= sqrt(dim)
    bound = math.sqrt(DIM) / 254
    from_rows = {}
    for q in QUERIES:
        node.store_reads.clear()
        from_rows[q] = node.ask(q, **options)
        if options.get("passages", True):
            assert len(node.read) <= 10 + PASSAGE_DEPTH
        else:  # only the results' records were read
            assert set(node.read) <= {r["id"] for r in from_rows[q]}
    monkeypatch.setattr(Retriever, "_ranks_from_facts", lambda self, req: False)
    cosines = []
    for q in QUERIES:
        from_records = node.ask(q, **options)
        exact = {r["id"]: r for r in from_records}
        assert set(exact) == {r["id"] for r in from_rows[q]}, q
        for i, a in enumerate(from_rows[q]):
            b = exact[a["id"]]
            assert a["score"] == pytest.approx(b["score"], abs=bound)
            # Ahead of every later result, unless the exact scores are a near-tie.
            assert all(b["score"] >= exact[c["id"]]["score"] - 2 * bound for c in from_rows[q][i:])
            if "features" in a:
                assert a["features"]["cosine"] == pytest.approx(b["features"]["cosine"], abs=bound)
                cosines.append(b["features"]["cosine"])
    assert not options.get("explain") or max(cosines) > 0.3  # the cosines did count


def test_a_memory_changed_since_the_indexer_last_ran_is_re_checked(node: Node) -> None:
    """The facts trail RocksDB by an indexer cycle: what was superseded, deleted or archived
    since is dropped when its record is read, and the next candidates move up."""
    before = [r["id"] for r in node.ask("Ana cello Lisbon", passages=False)]
    assert {"m-1", "m-2", "m-7"} <= set(before)
    op = {
        "op": "supersede",
        "memory_id": "m-2",
        "memory": memory(9, "Ana moved to Porto", "Ana"),
        "reason": "x",
    }
    node.apply(commands.consolidate("t1", 0, 0, [], 3.0, ops=[op]))
    node.apply(commands.delete_memory("t1", "m-1"))
    # Not followed yet: the timeline still holds m-1 and m-2 as current facts.
    assert node.indexer.timeline.of("t1").place_of(["m-2"])[0] is not None
    now = [r["id"] for r in node.ask("Ana cello Lisbon", passages=False)]
    assert "m-1" not in now and "m-2" not in now
    assert now == [m for m in before if m not in ("m-1", "m-2")][: len(now)] and "m-7" in now
    assert [r["id"] for r in node.ask("Ana cello Lisbon", passages=False, top_k=1)] == now[:1]
    everything = [r["id"] for r in node.ask("Ana cello Lisbon", passages=False, enable_arbitration=False)]
    assert "m-2" in everything and "m-1" not in everything  # superseded: shown when asked for
    node.indexer.catch_up()  # the successor is indexed; the facts now say what the records say
    followed = [r["id"] for r in node.ask("Ana cello Lisbon", passages=False)]
    assert "m-9" in followed and not {"m-1", "m-2"} & set(followed)
