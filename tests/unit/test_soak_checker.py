"""The soak's checker can fail: each kind of violation is reported (pure, no nodes)."""

from __future__ import annotations

from typing import Any

from node.testing.checker import judge
from node.testing.workload import History, content_for, fingerprint


def stored(eid: str, seq: int, content: str | None = None) -> dict[str, Any]:
    return {"event_id": eid, "stream_id": "fault", "seq": seq, "content": content or content_for(eid, 50)}


def history(**outcomes: str) -> History:
    h = History(outcomes=dict(outcomes))
    h.sent = {eid: fingerprint(content_for(eid, 50)) for eid in outcomes}
    return h


def digest(value: str = "d", index: int = 7) -> dict[str, Any]:
    return {"digest": value, "applied_index": index}


def test_identical_replicas_holding_every_acknowledged_event_pass() -> None:
    events = [stored("a", 1), stored("b", 2)]
    verdict = judge(
        {"n1": events, "n2": list(events)}, {"n1": digest(), "n2": digest()}, history(a="ok", b="unknown")
    )
    assert verdict.ok, verdict


def test_each_violation_is_reported() -> None:
    h = history(a="ok", b="ok", c="failed", d="unknown")
    n1 = [stored("a", 1), stored("b", 2), stored("c", 3), stored("x", 4), stored("d", 5), stored("d", 6)]
    n2 = [stored("a", 1, content="tampered"), stored("c", 2)]
    verdict = judge({"n1": n1, "n2": n2}, {"n1": digest("d1"), "n2": digest("d2")}, h)
    assert verdict.lost == ["b"] and verdict.lost_on == {"n1": 0, "n2": 1}
    assert verdict.duplicated == ["d"]
    assert verdict.resurrected == ["c"]
    assert verdict.phantom == ["x"]
    assert verdict.damaged == ["a"]
    assert not verdict.streams_equal and not verdict.digests_equal and not verdict.ok
    assert any("differs from n1" in note for note in verdict.notes)


def test_same_digest_at_different_applied_indexes_is_divergence() -> None:
    events = [stored("a", 1)]
    verdict = judge(
        {"n1": events, "n2": events}, {"n1": digest(index=7), "n2": digest(index=8)}, history(a="ok")
    )
    assert not verdict.digests_equal


def test_same_ids_with_other_seqs_are_divergent_streams() -> None:
    verdict = judge(
        {"n1": [stored("a", 1), stored("b", 2)], "n2": [stored("a", 1), stored("b", 3)]},
        {"n1": digest(), "n2": digest()},
        history(a="ok", b="ok"),
    )
    assert not verdict.streams_equal and verdict.lost == []


def test_longest_stretch_without_an_acknowledgement() -> None:
    h = History(acked_at=[1.0, 2.0, 10.0, 11.0])
    assert h.longest_ack_gap(0.0, 12.0) == 8.0
    assert History().longest_ack_gap(5.0, 7.5) == 2.5
