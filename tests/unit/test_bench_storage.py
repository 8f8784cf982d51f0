"""The storage benchmark at a tiny size, so it cannot rot: a real node subprocess, real HTTP.

Asserts what the run produced (scenarios, counts, vector paths, the docs section), never
how fast it was.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from benchmarks.args import add_storage_arguments
from benchmarks.report import HEADING
from benchmarks.storage import run_storage_bench


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_storage_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.timeout(400)  # three subprocess nodes; slow when the machine is busy
def test_tiny_storage_bench(tmp_path: Path) -> None:
    out, docs = tmp_path / "storage.json", tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Storage node (issue 2)\n\nstale\n\n## Other\n\nkept\n")
    args = _args(
        "--sizes", "300", "--tenants", "5", "--queries", "20", "--single-events", "50",
        "--ann-threshold", "200", "--out", str(out), "--docs", str(docs), "--workdir", str(tmp_path / "w"),
    )  # fmt: skip

    assert run_storage_bench(args) == 0

    result = json.loads(out.read_text())
    rows = {s["scenario"]: s for s in result["scenarios"]}
    assert list(rows) == ["300-1tenant", "300-1tenant-exact", "300-5tenants"]
    # 300 memories > threshold 200: the tenant is served by LanceDB, then by the matrix after
    # the restart with a high threshold; 60 per tenant stay on the matrix.
    assert rows["300-1tenant"]["vector_path"] == "ann"
    assert rows["300-1tenant-exact"]["vector_path"] == "exact"
    assert rows["300-5tenants"]["vector_path"] == "exact"
    assert rows["300-5tenants"]["tenants"] == 5
    for row in rows.values():
        assert row["memories"] == 300
        assert row["retrieve"]["queries"] == 20
        assert 0 < row["retrieve"]["client_ms"]["p50"] <= row["retrieve"]["client_ms"]["p99"]
        assert row["idle_rss_mib"] > 0 and row["disk_bytes_per_memory"] > 0
        # Queries are drawn from the ingested records: most find their own source event.
        assert row["retrieve"]["source_in_top10"] > 0.5
    for name in ("300-1tenant", "300-5tenants"):  # issue 12's baselines, measured in the same run
        retrieve = rows[name]["retrieve"]
        throughput = retrieve["throughput"]
        assert throughput["in_flight"] == 8 and throughput["ratio"] > 0
        # The ceiling: the CPUs over the cores that one query in flight kept busy.
        busy = throughput["node_cores_1"] + throughput["client_cores_1"]
        assert throughput["node_cores_1"] > 0 and throughput["node_cores_n"] > 0
        assert throughput["ratio_ceiling"] == round(len(os.sched_getaffinity(0)) / busy, 2)
        assert retrieve["healthz_ms"]["p50"] > 0 and retrieve["node_cpu_ms_per_query"] >= 0
        assert retrieve["warmup"] == 20 and "quiet_after_warmup_s" in retrieve
        assert rows[name]["bm25s"]["source_in_top10"] > 0.5
    assert result["ingest_single"]["events"] == 50
    assert rows["300-1tenant"]["ingest_batch"]["events"] == 300

    text = docs.read_text()
    assert text.count(HEADING) == 1 and "stale" not in text
    assert "## Other\n\nkept" in text and "300-1tenant-exact" in text
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


@pytest.mark.timeout(300)
def test_built_data_is_reused(tmp_path: Path) -> None:
    """``--data``: the first run builds and keeps the node data, the second only queries it."""
    data = tmp_path / "data"
    common = ("--sizes", "60", "--layout", "single", "--queries", "10", "--single-events", "0")

    def run(name: str) -> dict[str, object]:
        out = tmp_path / f"{name}.json"
        args = _args(*common, "--in-flight", "0", "--data", str(data), "--out", str(out))
        assert run_storage_bench(args) == 0
        row: dict[str, object] = json.loads(out.read_text())["scenarios"][0]
        return row

    first, second = run("first"), run("second")
    assert first["memories"] == second["memories"] == 60
    assert "reused" not in first["build"]  # type: ignore[operator]
    assert second["build"]["reused"] is True  # type: ignore[index]
    assert second["ingest_batch"] == first["ingest_batch"]  # the build's figures, carried over
    assert (data / "60-1tenant.built.json").exists()
    # The reuse restarted the node on its first Raft port, and measured an empty node again.
    assert (data / "60-1tenant.raft-port").exists()
    assert second["empty_rss_mib"] > 0 and second["empty_rss_anon_mib"] > 0  # type: ignore[operator]
    # ... and once more after it answered a retrieve: what each memory adds is measured above it.
    warm = second["build"]["empty_warm_rss_mib"]  # type: ignore[index]
    assert warm >= second["empty_rss_mib"] * 0.95  # type: ignore[operator]
    above = second["rss_bytes_per_memory_above_empty"]
    assert above == round((second["idle_rss_mib"] - warm) * 2**20 / 60)  # type: ignore[operator]
    assert first["rss_bytes_per_memory_above_empty"] is None  # a build has no warm empty node


def test_disk_usage_counts_the_live_rocksdb_generation_once(tmp_path: Path) -> None:
    """``rocks`` is a symlink to ``rocks-<n>``: the database is counted once, under ``rocks``."""
    from benchmarks.storage import disk_usage

    (tmp_path / "rocks-0").mkdir()
    (tmp_path / "rocks-0" / "000001.sst").write_bytes(b"x" * 65536)
    (tmp_path / "rocks").symlink_to("rocks-0")
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "seg").write_bytes(b"y" * 8192)

    usage = disk_usage(tmp_path)

    assert "rocks-0" not in usage
    assert usage["rocks"] >= 65536
    assert usage["total"] == usage["rocks"] + usage["index"]


def test_disk_usage_counts_a_table_the_dump_shares_once_under_rocks(tmp_path: Path) -> None:
    """A snapshot's tables are hard links to the database's: counted once, under ``rocks``."""
    from benchmarks.storage import disk_usage

    (tmp_path / "rocks-0").mkdir()
    (tmp_path / "rocks-0" / "000001.sst").write_bytes(b"x" * 65536)
    (tmp_path / "rocks").symlink_to("rocks-0")
    (tmp_path / "raft" / "dump-1" / "db").mkdir(parents=True)
    os.link(tmp_path / "rocks-0" / "000001.sst", tmp_path / "raft" / "dump-1" / "db" / "000001.sst")
    (tmp_path / "raft" / "dump-1" / "db" / "000002.sst").write_bytes(b"z" * 32768)  # compacted away

    usage = disk_usage(tmp_path)

    assert usage["rocks"] >= 65536
    assert 32768 <= usage["raft"] < 65536
