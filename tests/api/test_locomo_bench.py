"""``memorose bench locomo`` end to end through the HTTP API, on a synthetic conversation
(and on the real data set when ``../shared/data/locomo`` is present beside the clone)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.locomo import run_locomo
from tests.conftest import ADMIN_KEY, Api

REAL_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "locomo" / "locomo10.json"

FILLER = [
    "How was your weekend?",
    "Pretty quiet, I read a novel about sailors.",
    "I cooked a big pasta dinner for friends.",
    "The weather has been so rainy lately.",
]


def synthetic() -> list[dict[str, Any]]:
    def turns(session: int, lines: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [{"speaker": s, "dia_id": f"D{session}:{i}", "text": t} for i, (s, t) in enumerate(lines, 1)]

    s1 = [("Maria", FILLER[0]), ("John", FILLER[1])]
    s1 += [
        ("Maria", "How did your kids like the military memorial trip?"),
        ("John", "They were awestruck and humbled."),
    ]
    s2 = [("John", FILLER[2]), ("Maria", FILLER[3]), ("Maria", "I adopted a puppy named Coco yesterday!")]
    s2 += [("John", "Coco is adorable")]
    return [
        {
            "sample_id": "syn-1",
            "conversation": {
                "speaker_a": "Maria",
                "speaker_b": "John",
                "session_1_date_time": "2:00 pm on 3 May, 2023",
                "session_1": turns(1, s1),
                "session_2_date_time": "6:30 pm on 20 July, 2023",
                "session_2": turns(2, s2),
            },
            "qa": [
                {
                    "question": "How did John's kids react at the military memorial?",
                    "evidence": ["D1:4"],
                    "category": 4,
                },
                {
                    "question": "When did Maria adopt Coco?",
                    "answer": "19 July 2023",
                    "evidence": ["D2:3"],
                    "category": 2,
                },
                {"question": "Unanswerable", "adversarial_answer": "x", "evidence": ["D1:1"], "category": 5},
            ],
        }
    ]


def args(data: Path, out: Path, **extra: Any) -> argparse.Namespace:
    defaults = {"url": None, "admin_key": None, "doc": "", "limit_conversations": 0}
    return argparse.Namespace(data=str(data), out=str(out), **{**defaults, **extra})


async def test_bench_runs_through_the_http_api_of_a_running_node(api: Api, tmp_path: Path) -> None:
    data = tmp_path / "syn.json"
    data.write_text(json.dumps(synthetic()))
    out, doc = tmp_path / "out.json", tmp_path / "benchmarks.md"
    code = await asyncio.to_thread(
        run_locomo, args(data, out, url=api.url, admin_key=ADMIN_KEY, doc=str(doc))
    )
    assert code == 0
    report = json.loads(out.read_text())
    overall = report["summary"]["1-4"]
    assert overall["n"] == 2  # the adversarial question is not scored
    # The reply shares no word with its question: found through the turn it answers.
    assert overall["recall@3"] == 1.0
    assert report["throughput"] == {**report["throughput"], "turns": 8, "memories": 8}
    assert "## LoCoMo retrieval (issue 7)" in doc.read_text()
    # The tenant holds exactly the conversation (a rerun starts from a clean tenant).
    await asyncio.to_thread(run_locomo, args(data, out, url=api.url, admin_key=ADMIN_KEY))
    status, body = await api.get("/api/v1/status?tenant_id=syn-1")
    assert status == 200 and body["l0_events"] == 8 and body["l1_memories"] == 8


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_on_real_locomo_with_a_subprocess_node(tmp_path: Path) -> None:
    if not REAL_DATA.exists():
        pytest.skip(f"LoCoMo data not present at {REAL_DATA}")
    out = tmp_path / "out.json"
    assert run_locomo(args(REAL_DATA, out, limit_conversations=1)) == 0
    report = json.loads(out.read_text())
    assert report["summary"]["1-4"]["n"] == 150  # conv-26's scorable questions
    assert report["throughput"]["turns"] == 419
    # Far above chance (10 of 419 turns), whatever the ranking details.
    assert report["summary"]["1-4"]["recall@10"] > 0.4
