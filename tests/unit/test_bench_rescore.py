"""``memorose bench rescore``: re-ordering the re-ranker's top N, the oracle, the fit on halves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.locomo import Question, Tally
from benchmarks.rescore import Asked, fit_halves, load_scorer, merged, oracle, reorder
from memorose.retrieval.rerank import Candidate
from memorose.retrieval.search import RetrieveRequest


def candidate(name: str, score: float, sources: list[str] | None = None) -> Candidate:
    result: dict[str, Any] = {"id": name, "content": name, "source_event_ids": sources or [name]}
    return Candidate(("memory", name), result, "s", 0.0, score=score, text=name)


def ranked() -> list[Candidate]:
    return [candidate(n, s) for n, s in [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0)]]


def test_weight_zero_keeps_the_ranking() -> None:
    r = ranked()
    assert reorder(r, np.array([0.0, 0.0, 9.0]), 3, 0.0) is r


def test_scorer_alone_reorders_the_top_n_and_leaves_the_rest() -> None:
    r = ranked()
    out = reorder(r, np.array([0.1, 0.2, 0.9, 0.0]), 3, 1.0)
    assert [c.content for c in out] == ["c", "b", "a", "d"]
    assert out[3] is r[3]  # below N: untouched
    # New scores span [score of the first one below N, best score]: passages compare ratios.
    assert out[0].score == pytest.approx(4.0) and out[2].score == pytest.approx(1.0)
    assert [c.score for c in r] == [4.0, 3.0, 2.0, 1.0]  # the original candidates are not changed


def test_a_blend_moves_a_candidate_only_as_far_as_its_weight_allows() -> None:
    # Ranking scores 4, 3, 2 -> 1, .5, 0; scorer 0, 0, 1. a = .4: .6, .3, .4 ("c" passes "b" only).
    out = reorder(ranked(), np.array([0.0, 0.0, 1.0, 0.0]), 3, 0.4)
    assert [c.content for c in out] == ["a", "c", "b", "d"]
    out = reorder(ranked(), np.array([0.0, 0.0, 1.0, 0.0]), 3, 0.3)  # .7, .35, .3: no change
    assert [c.content for c in out] == ["a", "b", "c", "d"]


def test_oracle_marks_memories_that_cite_a_gold_turn() -> None:
    r = [candidate("a", 3, ["D1:1"]), candidate("b", 2, ["D1:2", "D1:3"]), candidate("c", 1, ["D1:4"])]
    asked = Asked("t", Question("q", 1, frozenset({"D1:3"})), RetrieveRequest("t", "q"), None, r, None)  # type: ignore[arg-type]
    assert oracle(asked, 2).tolist() == [0.0, 1.0]


def tally(recall10: float) -> Tally:
    t = Tally()
    t.add(
        1,
        {
            "recall@1": recall10,
            "recall@5": recall10,
            "recall@10": recall10,
            "recall@500w": recall10,
            "footprint@10": 10.0,
        },
    )
    return t


def test_fit_on_one_half_is_reported_on_the_other() -> None:
    table = {
        (20, 0.0): {"x": tally(0.5), "y": tally(0.5)},
        (20, 0.5): {"x": tally(0.9), "y": tally(0.4)},  # best on x, worse on y
        (20, 1.0): {"x": tally(0.6), "y": tally(0.7)},  # best on y
    }
    on_x, on_y = fit_halves(table, ({"x"}, {"y"}))
    assert (on_x["a"], on_x["held_out"]["R@10"], on_x["held_out_baseline"]["R@10"]) == (0.5, 0.4, 0.5)
    assert (on_y["a"], on_y["held_out"]["R@10"], on_y["held_out_baseline"]["R@10"]) == (1.0, 0.6, 0.5)
    both = merged(table[(20, 0.5)], {"x", "y"})
    assert both.counts["1-4"] == 2 and both.summary()["1-4"]["recall@10"] == pytest.approx(0.65)


def test_scorer_specs() -> None:
    assert load_scorer("oracle") is None
    assert load_scorer("numpy:mean") is np.mean
    with pytest.raises(SystemExit):
        load_scorer("cross-encoder")
