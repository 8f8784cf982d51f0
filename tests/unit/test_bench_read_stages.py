"""``memorose bench read-stages`` and ``touch-apply`` over a tiny ``bench storage`` build,
so they cannot rot.

Asserts what the run produced (its steps, counts, answers, the untouched source data), never
how fast it was.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks.args import add_storage_arguments
from benchmarks.read_stages import METHODS, RECORD_READS, add_arguments, run_read_stages
from benchmarks.storage import run_storage_bench
from benchmarks.touch_apply import add_arguments as touch_arguments
from benchmarks.touch_apply import run_touch_apply

QUERIES = 12


def _parse(add: object, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)  # type: ignore[operator]
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-memory tenant built by ``bench storage --data`` (a real node, real HTTP)."""
    root = tmp_path_factory.mktemp("read-stages")
    data = root / "data"
    args = _parse(
        add_storage_arguments, "--sizes", "60", "--layout", "single", "--queries", "10",
        "--single-events", "0", "--in-flight", "0", "--data", str(data), "--out", str(root / "storage.json"),
    )  # fmt: skip
    assert run_storage_bench(args) == 0
    return data


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def _run(data: Path, out: Path, *extra: str) -> dict[str, object]:
    args = _parse(add_arguments, "--data", str(data), "--queries", str(QUERIES), "--warmup", "3",
                  "--out", str(out), *extra)  # fmt: skip
    assert run_read_stages(args) == 0
    result: dict[str, object] = json.loads(out.read_text())
    return result


@pytest.mark.timeout(300)
def test_steps_of_each_query_are_timed_and_the_counterfactual_answers_the_same(
    built: Path, tmp_path: Path
) -> None:
    before = _files(built)
    plain = _run(built, tmp_path / "plain.json")
    preloaded = _run(built, tmp_path / "preloaded.json", "--preloaded-heads")

    assert _files(built) == before  # measured on a copy: the build is reused as it was
    assert plain["scenario"] == "60-1tenant" and plain["queries"] == QUERIES
    assert plain["preloaded_heads"] is None and preloaded["preloaded_heads"] == 60
    steps = plain["steps"]
    assert isinstance(steps, dict)
    # Every step a query at this size goes through was timed, each retrieve once.
    for label, _ in METHODS:
        assert label in steps, label
    assert RECORD_READS in steps and steps["retrieve"]["calls_per_query"] == 1.0
    retrieve_ms = steps["retrieve"]["ms_per_query"]
    assert retrieve_ms > 0
    for label in ("second stage", "neighbours", "candidates built", RECORD_READS):
        assert 0 < steps[label]["ms_per_query"] <= retrieve_ms, label
    cpu = plain["thread_cpu_ms"]
    assert isinstance(cpu, dict) and 0 < cpu["p50"] <= cpu["p99"]
    # Heads decoded beforehand are the same records: the same answers, query by query.
    answers = plain["answers"]
    assert isinstance(answers, list) and len(answers) == QUERIES and any(answers)
    assert preloaded["answers"] == answers


def test_a_missing_scenario_or_a_bad_count_is_named(built: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no built scenario 'nope'"):
        _run(built, tmp_path / "x.json", "--scenario", "nope")
    with pytest.raises(SystemExit, match="--queries must be positive"):
        _run(built, tmp_path / "x.json", "--queries", "0")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.timeout(120)
def test_touch_apply_applies_flush_shaped_touches_to_a_copy(built: Path, tmp_path: Path) -> None:
    """``memorose bench touch-apply`` over the same build: commands shaped as the flusher's
    (every access of a real memory, pairs among the top 5), applied to a copy."""
    before = _files(built)
    out = tmp_path / "touch.json"
    args = _parse(touch_arguments, "--data", str(built), "--flushes", "6", "--queries-per-flush", "4",
                  "--out", str(out))  # fmt: skip
    assert run_touch_apply(args) == 0
    result = json.loads(out.read_text())
    assert _files(built) == before
    assert result["memories"] == 60 and result["commands"] == 6
    # 4 queries of 10 results among 60 memories: 40 accesses at most, fewer when they repeat;
    # 10 pairs per query among its top 5.
    assert 10 <= result["accesses_per_command"] <= 40 and 10 <= result["pairs_per_command"] <= 40
    assert 0 < result["apply_ms"]["p50"] <= result["apply_ms"]["max"]
    with pytest.raises(SystemExit, match="must be positive"):
        run_touch_apply(_parse(touch_arguments, "--data", str(built), "--flushes", "0"))
