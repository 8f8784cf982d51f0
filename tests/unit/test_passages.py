"""Passages: adjacent hits of one episode grouped into one result (retrieval/passages.py)."""

from __future__ import annotations

from collections.abc import Hashable

from memorose.retrieval import passages
from memorose.retrieval.rerank import Candidate

T0 = 1_683_550_000.0


def turn(n: int, score: float, bm25: float = 1.0) -> Candidate:
    c = Candidate(
        ("m", f"m{n}"),
        {"id": f"m{n}", "content": f"turn {n}", "source_event_ids": [f"e{n}"]},
        "chat",
        T0 + n,
    )
    c.score = score
    c.features = {"bm25": bm25}
    return c


def windows(turns: list[Candidate], span: int = passages.MAX_SPAN) -> dict[str, dict[str, int]]:
    """Every memory's neighbours within ``span - 1`` places (turn n is ``n`` seconds in)."""
    out: dict[str, dict[str, int]] = {}
    for c in turns:
        out[c.result["id"]] = {
            o.result["id"]: int(o.valid_from - c.valid_from)
            for o in turns
            if o is not c and abs(o.valid_from - c.valid_from) <= span - 1
        }
    return out


def grouped(
    ranked: list[Candidate], everything: list[Candidate], limit: int = 10, depth: int = 10
) -> list[dict[str, object]]:
    win = windows(everything)
    by_id = {c.result["id"]: c for c in everything}
    found = passages.group(ranked, limit, passages.MAX_SPAN, depth, lambda c: win[c.result["id"]])
    passages.fill(found, lambda ids: {m: by_id[m] for m in ids if m in by_id})
    return [passages.result(p) for p in found]


def keys(results: list[dict[str, object]]) -> list[Hashable]:
    return [r["id"] for r in results]  # type: ignore[misc]


def test_adjacent_hits_become_one_passage_in_time_order() -> None:
    a, b, far = turn(2, 2.0), turn(1, 1.5), turn(9, 1.2)
    results = grouped([a, b, far], [a, b, far])
    assert keys(results) == ["m2", "m9"]  # the passage keeps its best hit's place and id
    first = results[0]
    assert first["content"] == "turn 1\nturn 2"
    assert first["source_event_ids"] == ["e1", "e2"]
    assert first["passage"] == ["m1", "m2"]
    assert first["score"] == 2.0
    assert "passage" not in results[1] and results[1]["content"] == "turn 9"


def test_the_memory_between_two_hits_is_filled_in() -> None:
    a, gap, c = turn(1, 2.0), turn(2, 0.1, bm25=0.0), turn(3, 1.8)
    results = grouped([a, c], [a, gap, c])
    assert len(results) == 1
    assert results[0]["source_event_ids"] == ["e1", "e2", "e3"]
    assert results[0]["content"] == "turn 1\nturn 2\nturn 3"


def test_a_passage_never_grows_beyond_its_span() -> None:
    run = [turn(n, 3.0 - n / 10) for n in range(1, 6)]
    results = grouped(run, run)
    assert [len(r.get("passage") or [r["id"]]) for r in results] == [3, 2]  # type: ignore[arg-type]
    covered = [e for r in results for e in r["source_event_ids"]]  # type: ignore[attr-defined]
    assert sorted(covered) == ["e1", "e2", "e3", "e4", "e5"]  # each turn once


def test_context_only_or_weak_neighbours_do_not_join() -> None:
    hit = turn(1, 2.0)
    lifted = turn(2, 1.9, bm25=0.0)  # scored only through its neighbour: not glued on
    weak = turn(3, 0.5)  # matches, but far below the passage's best
    results = grouped([hit, lifted, weak], [hit, lifted, weak])
    assert keys(results) == ["m1", "m2", "m3"]
    assert all("passage" not in r for r in results)


def test_a_smaller_top_k_is_a_prefix_of_a_larger_one() -> None:
    a, x, y, b = turn(1, 2.0), turn(10, 1.9), turn(20, 1.8), turn(2, 1.7)
    ranked = [a, x, y, b]  # b joins a's passage although two passages come before it
    small = grouped(ranked, ranked, limit=2)
    large = grouped(ranked, ranked, limit=4)
    assert small == large[:2]
    assert small[0]["passage"] == ["m1", "m2"]


def test_hits_beyond_the_depth_stay_on_their_own() -> None:
    a, b = turn(1, 2.0), turn(2, 1.9)
    filler = [turn(n, 1.95) for n in range(20, 23)]
    far_apart = [turn(n, 1.95) for n in (40, 50, 60)]
    ranked = [a, *far_apart, b]
    everything = [a, b, *filler, *far_apart]
    assert "passage" in grouped(ranked, everything, depth=5)[0]
    assert "passage" not in grouped(ranked, everything, depth=4)[0]  # b is 5th: too deep
