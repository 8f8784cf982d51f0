"""Offline arbitration by meaning on the labelled pairs (benchmarks/data/, docs/consolidation.md):
updates supersede, restatements reinforce, distinct facts and other subjects stay separate."""

from __future__ import annotations

import pytest

from benchmarks.arbitration import HELD_OUT, evaluate, load_pairs
from memorose.providers.embeddings import Embedder, load_embedder


@pytest.fixture(scope="module")
def local() -> Embedder:
    return load_embedder("local")


def test_corpus_is_large_and_covers_every_kind() -> None:
    pairs = load_pairs()
    kinds = {p["kind"] for p in pairs}
    assert len(pairs) >= 60 and kinds == {"update", "duplicate", "distinct", "other"}


def test_each_decision_on_the_labelled_pairs(local: Embedder) -> None:
    report = evaluate(local)
    scores = report.scores()
    for decision in ("supersede", "reinforce", "create"):
        assert scores[decision]["precision"] >= 0.9, (decision, scores)
        assert scores[decision]["recall"] >= 0.9, (decision, scores)
    assert scores["merge"]["predicted"] <= 2
    wrong = [(o.old, o.new, o.decision) for o in report.outcomes if o.decision != o.expected]
    assert len(wrong) <= 3, wrong


def test_held_out_pairs_keep_related_facts_separate(local: Embedder) -> None:
    report = evaluate(local, load_pairs(HELD_OUT))
    assert report.accuracy() >= 0.85
    # Related but distinct facts and facts about someone else are never folded into others.
    separate = [o for o in report.outcomes if o.kind in ("distinct", "other")]
    assert all(o.decision == "create" for o in separate), [o for o in separate if o.decision != "create"]


def test_the_local_model_beats_hashing_on_updates_and_restatements(local: Embedder) -> None:
    pairs = [p for p in load_pairs() if p["kind"] in ("update", "duplicate")]
    semantic = evaluate(local, pairs).accuracy()
    lexical = evaluate(load_embedder("hashing", dim=384), pairs).accuracy()
    assert semantic > lexical
