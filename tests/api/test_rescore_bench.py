"""``memorose bench rescore`` over a data directory that ``bench locomo`` filled through HTTP."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.locomo import run_locomo
from benchmarks.rescore import run_rescore
from tests.api.test_locomo_bench import args, synthetic
from tests.conftest import ADMIN_KEY, NodeStarter


def longest_first(question: str, texts: list[str]) -> list[float]:
    """A scorer for ``--scorer module:function``: longer memories first."""
    return [float(len(t)) for t in texts]


async def test_rescore_reproduces_the_http_run_and_applies_the_scorer(
    start: NodeStarter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "node"
    node, api = await start(data_dir)
    data, out = tmp_path / "syn.json", tmp_path / "out.json"
    data.write_text(json.dumps(synthetic()))
    assert await asyncio.to_thread(run_locomo, args(data, out, url=api.url, admin_key=ADMIN_KEY)) == 0
    http = json.loads(out.read_text())["summary"]["1-4"]
    await node.stop()  # RocksDB is opened by the benchmark
    capsys.readouterr()  # bench locomo's own report

    def rescore(scorer: str) -> list[dict[str, Any]]:
        ns = argparse.Namespace(
            data_dir=str(data_dir), locomo=str(data), scorer=scorer, depth=[20], weight=[1.0]
        )
        assert run_rescore(ns) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    rows = {(r.get("N"), r.get("a")): r for r in await asyncio.to_thread(rescore, "oracle")}
    # In-process, the node's code over its data dir answers as it did through HTTP.
    assert rows[(20, 0.0)]["R@10"] == http["recall@10"] and rows[(20, 0.0)]["R@5"] == http["recall@5"]
    assert rows[(20, 1.0)]["R@1"] == 1.0  # a perfect scorer puts a gold turn first
    assert rows[(20, 1.0)]["n"] == 2
    scorer = "tests.api.test_rescore_bench:longest_first"
    custom = await asyncio.to_thread(rescore, scorer)
    assert any(r.get("scorer") == scorer for r in custom)
    by_length = {(r["N"], r["a"]): r for r in custom if "N" in r}
    assert by_length[(20, 0.0)] == rows[(20, 0.0)]
    # Longest first puts the long filler turns above both (short) gold turns.
    assert by_length[(20, 1.0)]["R@1"] < by_length[(20, 0.0)]["R@1"]
