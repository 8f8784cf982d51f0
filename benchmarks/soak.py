"""``memorose bench soak``: the standing fault soak of a 3-node shard (issue 10).

Randomized rounds of SIGKILL (leader, follower, two nodes), SIGSTOP of the leader, graceful
restarts, network cuts, and snapshot faults (a dropped or corrupted transfer chunk, a
receiver or a packer killed by a failpoint), with writers using client event ids all along.
At the end: every acknowledged event exactly once on every node, nothing never-sent or
refused present, identical L0 streams, equal digests at an equal applied index, no empty
snapshot install and no fatal log line. Prints failover figures and the load average,
writes a JSON result and exits 1 on any violation. The engine is node/testing/soak.py.

    nice -n 10 memorose bench soak --rounds 300 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from node.testing.faults import FAULTS, TAKEOVER_ROUNDS
from node.testing.soak import SoakConfig, SoakRun, run_soak


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=60, help="fault rounds (each picked at random)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the round picks, victims and holds")
    parser.add_argument("--writers", type=int, default=4, help="concurrent writers (client event ids)")
    parser.add_argument("--event-bytes", type=int, default=2500, help="content size of each event")
    parser.add_argument(
        "--compaction-entries",
        type=int,
        default=300,
        help="log_compaction_min_entries of the nodes: small, so snapshots and installs are frequent",
    )
    parser.add_argument(
        "--journal-cache-bytes",
        type=int,
        default=64 << 10,
        help="raft_tuning.journal_cache_bytes of the nodes: small, so lagging followers are "
        "served commands read back from the journal file",
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help="comma-separated fault kinds to pick from",
    )
    parser.add_argument(
        "--snapshot-share",
        type=float,
        default=0.25,
        help="share of rounds that are snapshot faults (each takes 20-60 s, the others ~5 s)",
    )
    parser.add_argument("--duration-cap", type=float, default=3600.0, help="stop starting rounds after (s)")
    parser.add_argument("--min-hold", type=float, default=1.0, help="shortest fault hold (s)")
    parser.add_argument("--max-hold", type=float, default=6.0, help="longest fault hold (s)")
    parser.add_argument(
        "--settle-timeout", type=float, default=90.0, help="deadline for a leader after each round (s)"
    )
    parser.add_argument("--workdir", default=None, help="keep the nodes' data dirs and logs here")
    parser.add_argument("--with-workers", action="store_true", help="keep consolidation and insights on")
    parser.add_argument(
        "--readers",
        type=int,
        default=0,
        help="clients retrieving meanwhile (with --with-workers their answers become touch commands)",
    )
    parser.add_argument("--out", default="benchmarks/results/soak.json", help="JSON result file")


def config_from_args(args: argparse.Namespace) -> SoakConfig:
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise SystemExit(f"memorose: unknown fault kinds {unknown}; known: {', '.join(FAULTS)}")
    return SoakConfig(
        rounds=args.rounds,
        seed=args.seed,
        writers=args.writers,
        event_bytes=args.event_bytes,
        compaction_entries=args.compaction_entries,
        journal_cache_bytes=args.journal_cache_bytes,
        faults=faults,
        snapshot_share=args.snapshot_share,
        duration_cap_s=args.duration_cap,
        min_hold_s=args.min_hold,
        max_hold_s=args.max_hold,
        settle_timeout_s=args.settle_timeout,
        workdir=Path(args.workdir) if args.workdir else None,
        quiet_workers=not args.with_workers,
        readers=args.readers,
    )


def run_soak_bench(args: argparse.Namespace) -> int:
    run = asyncio.run(run_soak(config_from_args(args)))
    result = summarize(run)
    print_report(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"result: {out}")
    return 0 if run.ok else 1


def percentiles(values: list[float]) -> dict[str, float | int]:
    """n, p50, p99, max (seconds); nearest-rank, so p99 of fewer than 100 samples is the max."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p99": round(p99, 3),
        "max": round(ordered[-1], 3),
    }


def failover_figures(run: SoakRun) -> dict[str, Any]:
    """Takeover after a leader kill / pause / cut, and graceful stop durations."""

    def takeovers(kind: str) -> list[float]:
        return [
            r.takeover_s
            for r in run.rounds
            if r.kind == kind and r.victim_was_leader and r.takeover_s is not None
        ]

    stops = [r.graceful_stop_s for r in run.rounds if r.kind == "restart_graceful"]
    return {
        "kill_leader_to_next_ack_s": percentiles(takeovers("kill_leader")),
        "pause_leader_to_new_leader_ack_s": percentiles(takeovers("pause_leader")),
        "cut_leader_to_new_leader_ack_s": percentiles(takeovers("cut_node")),
        "no_takeover_within_timeout": sum(
            1
            for r in run.rounds
            if r.kind in TAKEOVER_ROUNDS and r.victim_was_leader and r.takeover_s is None
        ),
        "longest_time_without_an_ack_s": run.longest_ack_gap_s,
        "graceful_stop_s": percentiles([s for s in stops if s is not None]),
        "graceful_stop_killed": sum(1 for s in stops if s is None),
    }


def summarize(run: SoakRun) -> dict[str, Any]:
    verdict = run.verdict
    snapshot_rounds = [r for r in run.rounds if r.snapshot_fault]
    return {
        "config": {k: v for k, v in vars(run.config).items() if k != "schedule"},
        "ok": run.ok,
        "violations": run.violations(),
        "rounds": len(run.rounds),
        "rounds_by_kind": dict(Counter(r.kind for r in run.rounds)),
        "stopped_early": run.stopped_early,
        "seconds": run.seconds,
        "operations": run.history.counts(),
        "attempts": dict(run.history.attempt_results),
        "ack_latency_s": percentiles(run.history.latencies),
        "applied_index": verdict.applied_index if verdict else None,
        "lost_by_node": verdict.lost_on if verdict else {},
        "examples": _examples(run),
        "notes": (verdict.notes if verdict else []) + run.settle_failures + run.round_errors,
        "failover": failover_figures(run),
        "snapshot_faults": {
            "armed": len(snapshot_rounds),
            "fired": sum(1 for r in snapshot_rounds if r.snapshot_fault and r.snapshot_fault["fired"]),
            "failpoint_rounds": sum(1 for r in run.rounds if r.failpoint),
            "failpoint_kills": sum(1 for r in run.rounds if r.failpoint_killed),
        },
        "dump_bytes_max": run.dump_bytes_max,
        "journal_disk_reads": run.journal_disk_reads,
        "reads_answered": run.reads_answered,
        "logs": run.logs,
        "deaths": run.deaths,
        "loadavg": run.loadavg,
        "workdir": run.workdir,
        "round_log": [r.as_dict() for r in run.rounds],
    }


def _examples(run: SoakRun) -> dict[str, list[str]]:
    verdict = run.verdict
    if verdict is None:
        return {}
    kinds = ("lost", "duplicated", "resurrected", "phantom", "damaged")
    return {kind: getattr(verdict, kind)[:10] for kind in kinds if getattr(verdict, kind)}


def print_report(result: dict[str, Any]) -> None:
    """The human summary: outcome counts, violations, failover figures, logs, load."""
    print("\n== memorose bench soak ==")
    print(f"rounds {result['rounds']} {result['rounds_by_kind']} in {result['seconds']}s")
    if result["stopped_early"]:
        print(f"stopped early: {result['stopped_early']}")
    print(f"operations {result['operations']} attempts {result['attempts']}")
    print(
        f"applied index {result['applied_index']}, largest dump {result['dump_bytes_max']:,} bytes, "
        f"journal commands read back from disk {result['journal_disk_reads']:,}, "
        f"retrievals answered {result['reads_answered']:,}"
    )
    print(f"violations {result['violations']}")
    for kind, ids in result["examples"].items():
        print(f"  {kind}: {ids}")
    for note in result["notes"]:
        print(f"  {note}")
    if result["lost_by_node"] and any(result["lost_by_node"].values()):
        print(f"  acknowledged events missing per node: {result['lost_by_node']}")
    failover = result["failover"]
    for name in (
        "kill_leader_to_next_ack_s",
        "pause_leader_to_new_leader_ack_s",
        "cut_leader_to_new_leader_ack_s",
    ):
        print(f"{name}: {failover[name]}")
    print(f"leader faults with no takeover in time: {failover['no_takeover_within_timeout']}")
    print(f"longest time with no write acknowledged: {failover['longest_time_without_an_ack_s']} s")
    killed = failover["graceful_stop_killed"]
    print(f"graceful_stop_s: {failover['graceful_stop_s']} (killed after the timeout: {killed})")
    print(f"snapshot faults: {result['snapshot_faults']}")
    total = result["logs"].get("total", {})
    print("logs: " + ", ".join(f"{k} {total.get(k)}" for k in total if k != "excerpts"))
    for line in total.get("excerpts", [])[:15]:
        print(f"  {line}")
    for death in result["deaths"]:
        print(f"died: {death['node']} exit {death['exit_code']} ({death['when']})")
    print(f"load average {result['loadavg']}")
    print("OK" if result["ok"] else "FAILED")
