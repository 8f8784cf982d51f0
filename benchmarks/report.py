"""Markdown tables of a storage benchmark result, and their place in docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HEADING = "## Storage node (issue 2)"
RETRIEVE_TARGET_MS = 20.0
BATCH_TARGET_EPS = 10_000.0
PATH_NAMES = {"exact": "exact (in-memory matrix)", "ann": "ANN (LanceDB IVF_HNSW_SQ)"}


def _ms(p: dict[str, float]) -> str:
    return f"{p['p50']:.2f} / {p['p99']:.2f}"


def _ingest_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| ingest | scenario | events | events/request | requests in flight | events/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    single = result.get("ingest_single")
    if single:
        lines.append(
            f"| single-event `POST /events` | fresh tenant on the first node | {single['events']} | 1 "
            f"| {single['in_flight']} | {single['events_per_s']:,.0f} |"
        )
    for s in result["scenarios"]:
        b = s.get("ingest_batch")
        if b:
            lines.append(
                f"| batch `POST /events/batch` | {s['scenario']} | {b['events']} "
                f"| {b['events_per_request']:g} | {b['in_flight']} | {b['events_per_s']:,.0f} |"
            )
    return lines


def _retrieve_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | memories | tenants | vector path | client p50 / p99 ms | server `took_ms` p50 / p99 "
        "| exact numpy floor p50 / p99 ms | source in top 10 | idle RSS MiB (anon) | disk bytes / memory |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["scenarios"]:
        r = s["retrieve"]
        path = PATH_NAMES.get(s["vector_path"], s["vector_path"])
        lines.append(
            f"| {s['scenario']} | {s['memories']:,} | {s['tenants']:,} | {path} | {_ms(r['client_ms'])} "
            f"| {_ms(r['server_ms'])} | {s['floor']['ms']['p50']:.3f} / {s['floor']['ms']['p99']:.3f} "
            f"| {r['source_in_top10']:.0%} | {s['idle_rss_mib']:.0f} ({s.get('idle_rss_anon_mib', 0):.0f}) "
            f"| {s['disk_bytes_per_memory']:,} |"
        )
    return lines


def _reads_table(result: dict[str, Any]) -> list[str]:
    """Issue 12's read figures, each beside its baseline from the same run."""
    lines = [
        "| scenario | embedder | server `took_ms` p50 / p99 | node CPU ms / query | client p50 / p99 ms "
        "| exact float32 scan p50 / p99 ms | bm25s p50 / p99 ms (source in top 10) | `/healthz` p50 ms "
        "| q/s 1 in flight / N in flight (ratio; its ceiling on this machine) | idle RSS bytes / memory |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["scenarios"]:
        r = s["retrieve"]
        peer = s.get("bm25s")
        bm25 = f"{_ms(peer['ms'])} ({peer['source_in_top10']:.0%})" if peer else "-"
        health = r.get("healthz_ms")
        t = r.get("throughput")
        rates = _rates(t)
        cells = [
            s["scenario"],
            s.get("embedder", "-"),
            _ms(r["server_ms"]),
            f"{r['node_cpu_ms_per_query']:.2f}" if "node_cpu_ms_per_query" in r else "-",
            _ms(r["client_ms"]),
            _ms(s["floor"]["ms"]),
            bm25,
            f"{health['p50']:.2f}" if health else "-",
            rates,
            _rss_per_memory(s),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _rates(t: dict[str, Any] | None) -> str:
    """q/s with 1 and N in flight, their ratio and, where measured, its ceiling on this
    machine (benchmarks/storage.py, ``throughput_ceiling``)."""
    if not t:
        return "-"
    rates = f"{t['qps_1']:.0f} / {t['qps_n']:.0f} at {t['in_flight']} ({t['ratio']:.2f}x"
    ceiling = t.get("ratio_ceiling")
    return rates + (f"; ceiling {ceiling:.2f}x)" if ceiling else ")")


def _rss_per_memory(s: dict[str, Any]) -> str:
    """Idle RSS / memories, and above a warm empty node of the same code where measured."""
    above = s.get("rss_bytes_per_memory_above_empty")
    total = f"{s.get('rss_bytes_per_memory', 0):,}"
    return total if above is None else f"{total} ({above:,} above empty)"


def _other_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | empty-node RSS MiB | consolidation drain s | disk total MiB (rocks / index / raft) "
        "| CPU used by other processes (cores) |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in result["scenarios"]:
        d = s["disk_bytes"]
        mib = {k: v / 2**20 for k, v in d.items()}
        parts = " / ".join(f"{mib.get(k, 0):.0f}" for k in ("rocks", "index", "raft"))
        empty = f"{s['empty_rss_mib']:.0f}" if "empty_rss_mib" in s else "-"
        drain = (
            f"{s['consolidate_drain_s']:.1f}"
            if "consolidate_drain_s" in s
            else f"reindex {s.get('reindex_ms', 0) / 1000:.1f}"
        )
        other = s.get("other_processes_cpu_cores")
        lines.append(
            f"| {s['scenario']} | {empty} | {drain} | {mib['total']:.0f} ({parts}) "
            f"| {'-' if other is None else f'{other:.2f}'} |"
        )
    return lines


def _targets(result: dict[str, Any]) -> list[str]:
    out = []
    one = [s for s in result["scenarios"] if s["tenants"] == 1 and s["memories"] >= 100_000]
    for s in one:
        p99 = s["retrieve"]["client_ms"]["p99"]
        verdict = "met" if p99 < RETRIEVE_TARGET_MS else "MISSED"
        out.append(
            f"- Retrieve p99 < {RETRIEVE_TARGET_MS:g} ms at {s['memories']:,} memories in one tenant "
            f"({PATH_NAMES.get(s['vector_path'], s['vector_path'])}): {p99:.2f} ms, {verdict}."
        )
    batches = [s["ingest_batch"]["events_per_s"] for s in result["scenarios"] if s.get("ingest_batch")]
    if batches:
        best = max(batches)
        verdict = "met" if best > BATCH_TARGET_EPS else "MISSED"
        out.append(
            f"- Batch ingest > {BATCH_TARGET_EPS:,.0f} events/s: best {best:,.0f} events/s, {verdict}."
        )
    return out


def render_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    load = ", ".join(f"{x:.2f}" for x in machine["loadavg"])
    load_after = ", ".join(f"{x:.2f}" for x in machine.get("loadavg_after", []))
    cfg = result["config"]
    lines = [
        HEADING,
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']} ({result['seconds']:.0f} s); {machine['cpus']} CPUs, Python "
        f"{machine['python']}; load average before {load}, after {load_after}.",
        "",
        f"Top-k {cfg['top_k']}, one query in flight, queries drawn from the ingested vocabulary; "
        f"ANN threshold {cfg['ann_threshold']:,} memories per tenant.",
        "",
        *_ingest_table(result),
        "",
        *_retrieve_table(result),
        "",
        *_other_table(result),
        "",
        *_reads_table(result),
        "",
        "Targets:",
        "",
        *_targets(result),
        "",
    ]
    return "\n".join(lines)


def update_docs(path: Path, section: str) -> None:
    """Replace this benchmark's section of the docs page (or append it), keeping the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    lines = text.splitlines()
    try:
        start = lines.index(HEADING)
    except ValueError:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = (
            "\n".join([*lines[:start], *section.rstrip("\n").splitlines(), "", *lines[end:]]).rstrip("\n")
            + "\n"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def save_json(result: dict[str, Any], out: str | Path) -> None:
    """Print a benchmark's result and write it to ``out`` (JSON, parents created)."""
    print(json.dumps(result, indent=2))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
