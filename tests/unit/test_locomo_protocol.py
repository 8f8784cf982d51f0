"""The LoCoMo-R protocol pieces of the benchmark harness, on synthetic conversations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.locomo import (
    SECTION,
    conversation_events,
    markdown,
    normalise_evidence,
    parse_session_time,
    scorable_questions,
    score_results,
    update_doc,
)


def sample() -> dict[str, Any]:
    return {
        "sample_id": "conv-x",
        "conversation": {
            "speaker_a": "Ann",
            "speaker_b": "Bo",
            "session_2_date_time": "10:05 am on 3 June, 2023",
            "session_2": [{"speaker": "Bo", "dia_id": "D2:1", "text": "Back from Oslo!"}],
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi Bo"},
                {"speaker": "Bo", "dia_id": "D1:2", "text": "Look", "blip_caption": "a photo of a cat"},
            ],
            "session_3_date_time": "9:00 am on 1 July, 2023",  # a date with no session
        },
        "qa": [
            {"question": "Where was Bo?", "answer": "Oslo", "evidence": ["D2:1"], "category": 4},
            {"question": "Pets?", "answer": "cat", "evidence": ["D1:2; D:1:01", "D9:9"], "category": 1},
            {"question": "Nothing", "answer": "x", "evidence": [], "category": 3},
            {"question": "Trap", "adversarial_answer": "y", "evidence": ["D1:1"], "category": 5},
        ],
    }


def test_session_times_parse_as_utc() -> None:
    assert (
        parse_session_time("1:56 pm on 8 May, 2023") == datetime(2023, 5, 8, 13, 56, tzinfo=UTC).timestamp()
    )
    assert (
        parse_session_time("10:05 am on 3 June, 2023") == datetime(2023, 6, 3, 10, 5, tzinfo=UTC).timestamp()
    )


def test_events_follow_session_order_with_turn_offsets() -> None:
    events = conversation_events(sample())
    assert [e["event_id"] for e in events] == ["D1:1", "D1:2", "D2:1"]
    start = parse_session_time("1:56 pm on 8 May, 2023")
    assert [e["timestamp"] for e in events[:2]] == [start, start + 1]
    assert events[1]["content"] == "Bo: Look [shared image: a photo of a cat]"
    assert events[1]["metadata"] == {"speaker": "Bo"}
    assert len({e["stream_id"] for e in events}) == 1


def test_evidence_normalisation_repairs_known_defects() -> None:
    known = {"D8:6", "D9:17", "D11:26", "D30:5", "D1:2", "D1:3"}
    assert normalise_evidence(["D8:6; D9:17"], known) == ["D8:6", "D9:17"]
    assert normalise_evidence(["D:11:26"], known) == ["D11:26"]
    assert normalise_evidence(["D30:05"], known) == ["D30:5"]
    assert normalise_evidence(["D1:2 D1:3", "D1:2"], known) == ["D1:2", "D1:3"]
    assert normalise_evidence(["D10:19", "D", ""], known) == []


def test_only_scorable_questions_of_categories_1_to_4() -> None:
    events = conversation_events(sample())
    questions = scorable_questions(sample(), {e["event_id"] for e in events})
    assert [(q.text, q.category, set(q.gold)) for q in questions] == [
        ("Where was Bo?", 4, {"D2:1"}),
        ("Pets?", 1, {"D1:2", "D1:1"}),
    ]


def test_scores_recall_footprint_and_word_budget() -> None:
    results = [
        {"content": "w " * 300, "source_event_ids": ["D1:1", "D1:2", "D1:3"]},
        {"content": "w " * 150, "source_event_ids": ["D2:1"]},
        {"content": "w " * 100, "source_event_ids": ["D3:1"]},  # past 500 words
    ]
    scores = score_results(results, frozenset({"D1:2", "D3:1"}))
    assert scores["recall@1"] == 0.5
    assert scores["recall@3"] == 1.0
    assert scores["footprint@1"] == 3.0 and scores["footprint@3"] == 5.0
    assert scores["footprint@20"] == 5.0
    assert scores["recall@500w"] == 0.5


def test_doc_section_is_replaced_and_other_sections_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Storage node (issue 2)\n\nstorage table\n")
    report = {
        "when": "now",
        "node": "n",
        "conversations": [{}],
        "summary": {"1-4": {"n": 2, "recall@10": 0.5, "recall@500w": 0.25, "footprint@10": 9.5}},
        "latency_ms": {"client_p50": 1, "client_p95": 2, "server_p50": 1, "server_p95": 2},
        "throughput": {
            "ingest_turns_per_s": 10,
            "consolidation_turns_per_s": 5,
            "memories_per_100_turns": 100,
            "turns": 3,
            "memories": 3,
        },
    }
    update_doc(doc, markdown(report))
    update_doc(doc, markdown(report).replace("| 1-4 | 2 |", "| 1-4 | 7 |"))
    text = doc.read_text()
    assert text.count(SECTION) == 1
    assert "| 1-4 | 7 |" in text and "| 1-4 | 2 |" not in text
    assert "## Storage node (issue 2)\n\nstorage table" in text
