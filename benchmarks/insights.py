"""``memorose bench insights``: the cost of insight passes over one tenant of 1K, 10K, 100K
memories (docs/benchmarks.md, "Insights (issue 5)" and "Insights cost (issue 12)"), and the
insight worker's CPU share during a bulk load (``--bulk``).

The graph is synthetic but shaped like what consolidation builds: memories arrive in one
stream, each linked to the previous one (``temporal``, 0.3) and to 1-5 earlier memories
(``similar``, cosine-like weights 0.70-0.95; at most ``max_similar_edges`` = 5), 85 % of
them in its own topic and 15 % anywhere (noise). Topics have log-normal sizes (median 25)
and their own vocabulary, so labels and summaries do real work. Memories and edges are
written to a real RocksDB in the state machine's layout; each size runs in a fresh
subprocess so its peak RSS is its own.

Per size, in this order: the previous full pass (the code before issue 12: networkx
projection, python-louvain from singletons, ``nx.pagerank``, synthesis of every community)
as the baseline of the same run; a full pass of the current code (graph read into a
``TenantGraph``, networkx Louvain, numpy PageRank); its command applied on a state machine
(the Raft thread's cost); a small change (``--change`` new memories through a real
``consolidate`` entry, linked like the rest); the incremental pass after it (the graph
refreshed by difference, Louvain from the previous partition, only changed communities
written again); a fresh full pass over the changed graph, whose modularity and
communities the incremental pass is compared with; and a pass over the unchanged tenant.
Every phase prints a progress line on stderr. ``--memory`` adds a second, traced full pass
(``tracemalloc`` slows Python allocation-heavy code by 5-10x: minutes at 100K).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import community as louvain
import networkx as nx
import numpy as np
import scipy.sparse as sp
from rocksdict import WriteBatch

from memorose import codec, commands
from memorose.config import InsightSettings
from memorose.insights.planner import InsightPlan, current_analysis, plan_insights
from memorose.insights.projection import ProjectionCache, is_active
from memorose.insights.synthesis import distinctive_terms
from memorose.statemachine import StateMachine
from memorose.storage import keys
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore

TENANT = "bench"
COMMON = [
    "the",
    "a",
    "went",
    "with",
    "my",
    "friend",
    "today",
    "really",
    "new",
    "great",
    "about",
    "we",
    "our",
    "last",
    "week",
]


def build(store: RocksStore, n: int, seed: int) -> dict[str, int]:
    """Write ``n`` memories and their edges in the state machine's key layout."""
    rng = random.Random(seed)
    topics: list[list[str]] = []
    sizes: list[int] = []
    left = n
    while left > 0:
        size = min(left, max(3, int(rng.lognormvariate(3.2, 0.8))))
        topics.append([f"t{len(topics)}w{i}" for i in range(12)])
        sizes.append(size)
        left -= size
    order = [t for t, size in enumerate(sizes) for _ in range(size)]
    rng.shuffle(order)  # topics interleave in time, as conversations do
    by_topic: dict[int, list[str]] = {}
    ids: list[str] = []
    edges = 0
    batch = WriteBatch(raw_mode=True)
    t0 = 1_700_000_000.0
    for i, topic in enumerate(order):
        memory_id = f"m-{i:08d}"
        words = rng.sample(topics[topic], 4) + rng.sample(COMMON, 4) + [str(rng.randint(2, 2030))]
        rng.shuffle(words)
        record = {
            "tenant_id": TENANT,
            "memory_id": memory_id,
            "stream_id": "s",
            "content": "Speaker: " + " ".join(words) + ".",
            "embedding": b"",
            "source_event_ids": [f"e-{i}"],
            "created_at": t0 + i,
            "valid_from": t0 + 60 * i,
        }
        batch.put(keys.memory(TENANT, memory_id), codec.pack(record))
        links: dict[str, tuple[str, float]] = {}
        if ids:
            links[ids[-1]] = ("temporal", 0.3)
        own = by_topic.get(topic, [])
        for _ in range(rng.randint(1, 5)):
            pool = own if own and rng.random() < 0.85 else ids
            if pool:
                links[rng.choice(pool)] = ("similar", round(rng.uniform(0.70, 0.95), 3))
        for other, (kind, weight) in links.items():
            value = codec.pack({"kinds": {kind: weight}, "created_at": t0, "updated_at": t0})
            batch.put(keys.edge(TENANT, memory_id, other), value)
            batch.put(keys.edge(TENANT, other, memory_id), value)
            edges += 1
        ids.append(memory_id)
        by_topic.setdefault(topic, []).append(memory_id)
        if i % 5000 == 4999:
            store.write(batch)
            batch = WriteBatch(raw_mode=True)
    record = {"next_seq": n + 1, "cursor": n, "events": n, "memories": n, "graph_gen": 1, "graph_changes": n}
    batch.put(keys.tenant(TENANT), codec.pack(record))
    store.write(batch)
    return {"memories": n, "edges": edges, "planted_topics": len(sizes)}


T = TypeVar("T")
_STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def timed(label: str, work: Callable[[], T]) -> tuple[T, float, float]:
    """(result, wall seconds, this thread's CPU seconds), with a progress line each side."""
    progress(f"{label} ...")
    wall, cpu = time.perf_counter(), time.thread_time()
    result = work()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    progress(f"{label}: {wall:.2f} s")
    return result, wall, cpu


def previous_full_pass(reader: StateReader, settings: InsightSettings) -> dict[str, float]:
    """The pass as it was before issue 12 (the baseline): a networkx graph read from
    scratch, python-louvain from singletons, ``nx.pagerank``, degree centrality, and the
    c-TF-IDF terms of every community."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    graph: nx.Graph = nx.Graph()
    contents: dict[str, str] = {}
    for _, raw in reader.store.scan(keys.tenant_prefix(keys.MEMORY, TENANT)):
        record = codec.unpack(raw)
        if is_active(record):
            contents[record["memory_id"]] = record["content"]
            graph.add_node(record["memory_id"])
    prefix = keys.tenant_prefix(keys.EDGE, TENANT)
    for key, raw in reader.store.scan(prefix):
        source, _, target = key[len(prefix) :].decode().partition("/")
        if source < target and source in contents and target in contents:
            weight = min(1.0, sum(codec.unpack(raw)["kinds"].values()))
            if weight > 0:
                graph.add_edge(source, target, weight=weight)
    timings["projection_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    partition = louvain.best_partition(
        graph, weight="weight", resolution=settings.resolution, random_state=settings.seed
    )
    timings["louvain_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    nx.pagerank(graph, weight="weight")
    nx.degree_centrality(graph)
    timings["pagerank_centrality_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    groups: dict[int, list[str]] = {}
    for memory_id, label in partition.items():
        groups.setdefault(label, []).append(memory_id)
    nodes = {m: _TermsOnly(c) for m, c in contents.items()}
    distinctive_terms(list(groups.values()), nodes)  # type: ignore[arg-type]
    timings["synthesis_s"] = time.perf_counter() - clock
    timings["communities"] = len(groups)
    timings["modularity"] = louvain.modularity(partition, graph, weight="weight")
    return timings


class _TermsOnly:
    """What ``distinctive_terms`` reads of a node."""

    def __init__(self, content: str) -> None:
        self.content = content


def current_pass(
    cache: ProjectionCache, reader: StateReader, settings: InsightSettings, now: float
) -> InsightPlan:
    """One pass as the worker runs it (``InsightWorker._compute``)."""
    projection, analysis = current_analysis(cache, TENANT, settings)
    previous = {r["insight_id"]: r for r in reader.insights(TENANT)}
    stored = reader.tenant_or_empty(TENANT)
    return plan_insights(projection, settings, now, stored=stored, previous=previous, analysis=analysis)


def small_change(reader: StateReader, count: int, seed: int, now: float) -> dict[str, Any]:
    """``count`` new memories, each linked to the previous one and to 1-5 earlier memories
    (85 % of them in one topic's neighbourhood), as one ``consolidate`` entry."""
    rng = random.Random(seed)
    record = reader.tenant_or_empty(TENANT)
    total, cursor = int(record["memories"]), int(record["cursor"])
    memories, edges = [], []
    previous = f"m-{total - 1:08d}"
    for i in range(count):
        memory_id = f"m-{total + i:08d}"
        memories.append(
            {
                "tenant_id": TENANT,
                "memory_id": memory_id,
                "stream_id": "s",
                "content": f"Speaker: a new fact number {i} about topic {rng.randint(0, 99)}.",
                "embedding": b"",
                "source_event_ids": [f"e-{total + i}"],
                "created_at": now,
                "valid_from": now + i,
            }
        )
        edges.append({"a": memory_id, "b": previous, "kind": "temporal", "w": 0.3})
        near = rng.randrange(total)
        for _ in range(rng.randint(1, 5)):
            other = near + rng.randint(-20, 20) if rng.random() < 0.85 else rng.randrange(total)
            other = min(total - 1, max(0, other))
            edges.append({"a": memory_id, "b": f"m-{other:08d}", "kind": "similar", "w": 0.85})
        previous = memory_id
    return commands.consolidate(TENANT, cursor, cursor, memories, now, edges=edges)


def agreement(a: dict[str, int], b: dict[str, int]) -> float:
    """How far two partitions of the same memories agree: for each community of ``a``, the
    best Jaccard overlap with a community of ``b``, averaged weighted by size (1.0: equal)."""
    ids = sorted(a.keys() & b.keys())
    left = np.unique(np.array([a[m] for m in ids]), return_inverse=True)[1]
    right = np.unique(np.array([b[m] for m in ids]), return_inverse=True)[1]
    both = sp.coo_array((np.ones(len(ids)), (left, right))).tocsr()
    both.sum_duplicates()
    sizes_left, sizes_right = np.bincount(left), np.bincount(right)
    coo = both.tocoo()
    jaccard = coo.data / (sizes_left[coo.row] + sizes_right[coo.col] - coo.data)
    best = np.zeros(len(sizes_left))
    np.maximum.at(best, coo.row, jaccard)
    return float((best * sizes_left).sum() / max(1, len(ids)))


def build_in(root: str, n: int, seed: int) -> dict[str, Any]:
    """Build the tenant (run in its own process, so its memory is not the pass's)."""
    store = RocksStore(Path(root) / "rocks")
    started = time.perf_counter()
    shape = build(store, n, seed)
    store.close()
    return {**shape, "build_s": round(time.perf_counter() - started, 2)}


def run_size(
    n: int, seed: int, *, change: int = 50, baseline: bool = True, memory: bool = False
) -> dict[str, Any]:
    settings = InsightSettings()
    row: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="memorose-insights-") as root:
        progress(f"{n:,} memories: building the tenant")
        cmd = [sys.executable, "-m", "benchmarks.insights", "build", root, str(n), str(seed)]
        built = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row.update(json.loads(built.stdout.strip().splitlines()[-1]))
        store = RocksStore(Path(root) / "rocks")
        reader = StateReader(store)
        machine = StateMachine(store)
        if baseline:
            before, wall, _ = timed(
                "previous full pass (baseline)", lambda: previous_full_pass(reader, settings)
            )
            row["previous_full_pass_s"] = round(wall, 3)
            row["previous"] = {k: round(v, 4) for k, v in before.items()}
        rss_before = _rss()
        cache = ProjectionCache(reader)
        plan, wall, cpu = timed("full pass", lambda: current_pass(cache, reader, settings, 1.9e9))
        row["peak_rss_growth_mb"] = round((_peak_rss() - rss_before) / 2**10, 1)
        row.update(_pass_row("full", plan, wall, cpu))
        first = plan.analysis
        payload = commands.encode(plan.command)
        row["command_bytes"] = len(payload)
        result, row["apply_s"], _ = timed("apply", lambda: machine.apply(payload, store.applied_index() + 1))
        row["insights"] = result.get("insights")
        change_cmd = small_change(reader, change, seed, 1.95e9)
        machine.apply(commands.encode(change_cmd), store.applied_index() + 1)
        plan, wall, cpu = timed(
            f"incremental pass after {change} new memories",
            lambda: current_pass(cache, reader, settings, 1.96e9),
        )
        row["change_memories"] = change
        row.update(_pass_row("incremental", plan, wall, cpu))
        incremental = plan.analysis
        machine.apply(commands.encode(plan.command), store.applied_index() + 1)
        fresh = ProjectionCache(reader)
        full_plan, wall, _ = timed(
            "fresh full pass over the changed graph", lambda: current_pass(fresh, reader, settings, 1.97e9)
        )
        row["full_after_change_s"] = round(wall, 3)
        row["modularity_full_after_change"] = round(full_plan.analysis.modularity, 4)
        fresh_partition = full_plan.analysis.partition
        row["agreement_incremental_vs_full"] = round(agreement(incremental.partition, fresh_partition), 4)
        row["agreement_full_before_vs_after"] = round(agreement(first.partition, fresh_partition), 4)
        _, wall, _ = timed("unchanged pass", lambda: current_pass(cache, reader, settings, 1.98e9))
        row["unchanged_pass_ms"] = round(wall * 1000, 2)
        if memory:
            tracemalloc.start()
            timed(
                "traced full pass (--memory)",
                lambda: current_pass(ProjectionCache(reader), reader, settings, 2e9),
            )
            row["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
            tracemalloc.stop()
        row["peak_rss_mb"] = round(_peak_rss() / 2**10, 1)
        store.close()
    return row


def _pass_row(kind: str, plan: InsightPlan, wall: float, cpu: float) -> dict[str, Any]:
    a = plan.analysis
    sizes = [c.size for c in a.communities]
    out = {
        f"{kind}_pass_s": round(wall, 3),
        f"{kind}_cpu_s": round(cpu, 3),
        f"{kind}_method": a.method,
        f"{kind}_communities": len(sizes),
        f"{kind}_modularity": round(a.modularity, 4),
        f"{kind}_synthesised": plan.synthesised,
        **{f"{kind}_{k}_s": round(v, 3) for k, v in a.timings.items()},
    }
    if kind == "full":
        out.update(graph_edges=a.edges, largest_community=max(sizes, default=0))
    else:
        out["frontier"] = a.frontier
    return out


def _peak_rss() -> int:
    """Peak resident set of this process, KiB (Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _rss() -> int:
    """Current resident set of this process, KiB (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def run_insights_bench(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()
    progress(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    if args.locomo:
        from benchmarks.insights_locomo import main

        main(args.locomo, args.locomo_out, args.limit_conversations)
    results: list[dict[str, Any]] = []
    for n in [int(s) for s in args.sizes.split(",") if s]:  # --sizes '' skips the synthetic runs
        cmd = [sys.executable, "-m", "benchmarks.insights", str(n), str(args.seed), str(args.change)]
        cmd += [flag for flag, on in (("--no-baseline", args.no_baseline), ("--memory", args.memory)) if on]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)  # progress: stderr, live
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        results.append(row)
    bulk = None
    if args.bulk:
        bulk = asyncio.run(bulk_load_share(args.bulk, args.bulk_embedder))
        print(json.dumps(bulk), flush=True)
    load_after = os.getloadavg()
    progress(f"load average {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if not results and bulk is None:
        return 0
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(sys.argv),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "results": results,
        "bulk_load": bulk,
    }
    path.write_text(json.dumps(report, indent=1) + "\n")
    return 0


#: The scheduler as it was before issue 12, on the current code: no deferral, no CPU
#: budget, a full Louvain pass every time (every ``min_changes`` = 50 changed memories).
BEFORE = {"defer_while_pending": False, "cpu_share": 1.0, "full_pass_share": 0.0}


async def bulk_load_share(events: int, embedder: str = "auto") -> dict[str, Any]:
    """Bulk-load ``events`` into one tenant of an in-process node (default settings, the
    default embedder) and wait until consolidation caught up: the insight worker's CPU
    seconds (its passes' thread CPU time) against the wall time and the process's CPU."""
    out: dict[str, Any] = {"events": events}
    scenarios: tuple[tuple[str, dict[str, Any]], ...] = (
        ("before", BEFORE),
        ("budget only (no deferral)", {"defer_while_pending": False}),
        ("now", {}),
    )
    for label, overrides in scenarios:
        progress(f"bulk load of {events:,} events, scheduler {label} ...")
        out[label] = await _bulk_once(events, overrides, embedder)
        progress(f"bulk load, scheduler {label}: {out[label]}")
    return out


async def _bulk_once(events: int, insights: dict[str, Any], embedder: str) -> dict[str, Any]:
    import aiohttp

    from benchmarks.consolidation import Client, _node, synthetic_events

    with tempfile.TemporaryDirectory(prefix="memorose-insights-bulk-") as tmp:
        node = await _node(Path(tmp), insights=insights, embeddings={"provider": embedder})
        worker = node.service.insights.worker
        assert worker is not None
        try:
            async with aiohttp.ClientSession() as session:
                api = Client(node.url, session)
                wall, cpu = time.perf_counter(), time.process_time()
                items = synthetic_events(events)
                for start in range(0, events, 1000):
                    batch = items[start : start + 1000]
                    await api.call("POST", "/api/v1/events/batch", {"tenant_id": TENANT, "events": batch})
                while (await api.call("GET", f"/api/v1/status?tenant_id={TENANT}"))["pending_events"] > 0:
                    await asyncio.sleep(0.5)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                during = dict(worker.stats)
                status = await api.call("GET", f"/api/v1/status?tenant_id={TENANT}")
                after = await _pass_after_load(worker, during)
        finally:
            await node.stop()
    stats = during
    return {
        "embedder": node.service.embedder.model,
        "seconds": round(wall, 1),
        "events_per_s": round(events / wall, 1),
        "process_cpu_s": round(cpu, 1),
        "insight_cpu_s": round(stats["cpu_s"], 2),
        "insight_share_of_one_core": round(stats["cpu_s"] / wall, 3),
        "insight_share_of_process_cpu": round(stats["cpu_s"] / max(cpu, 1e-9), 3),
        "passes": int(stats["passes"]),
        "full": int(stats["full"]),
        "incremental": int(stats["incremental"]),
        "deferred": int(stats["deferred"]),
        "l1_memories": status.get("l1_memories"),
        **after,
    }


async def _pass_after_load(worker: Any, during: dict[str, float], limit: float = 120.0) -> dict[str, Any]:
    """The pass that follows the load (a deferred one runs once nothing is pending)."""
    started = time.perf_counter()
    while worker.stats["passes"] <= during["passes"] and time.perf_counter() - started < limit:
        await asyncio.sleep(0.1)
    if worker.stats["passes"] <= during["passes"]:
        return {"pass_after_load": None}
    return {
        "pass_after_load_s": round(time.perf_counter() - started, 1),
        "pass_after_load_cpu_s": round(worker.stats["cpu_s"] - during["cpu_s"], 2),
        "pass_after_load_method": "incremental"
        if worker.stats["incremental"] > during["incremental"]
        else "full",
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="memories in the tenant, comma-separated"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic memories")
    parser.add_argument("--change", type=int, default=50, help="new memories before the incremental pass")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the previous full pass (the baseline)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="also a tracemalloc-traced full pass (slow: minutes at 100K)"
    )
    parser.add_argument(
        "--bulk",
        type=int,
        default=0,
        help="also bulk-load this many events into a node and report the worker's CPU share",
    )
    parser.add_argument(
        "--bulk-embedder",
        default="auto",
        help="embedding provider of the --bulk node (hashing: a larger graph sooner)",
    )
    parser.add_argument("--out", default="benchmarks/results/insights.json", help="JSON results file")
    parser.add_argument(
        "--locomo", default=None, help="also run LoCoMo with insights (path to locomo10.json)"
    )
    parser.add_argument(
        "--locomo-out", default="benchmarks/results/insights_locomo.json", help="LoCoMo results file"
    )
    parser.add_argument(
        "--limit-conversations", type=int, default=0, help="only the first N LoCoMo conversations (0: all)"
    )


if __name__ == "__main__":
    if sys.argv[1] == "build":
        print(json.dumps(build_in(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        flags = set(sys.argv[4:])
        row = run_size(
            int(sys.argv[1]),
            int(sys.argv[2]),
            change=int(sys.argv[3]),
            baseline="--no-baseline" not in flags,
            memory="--memory" in flags,
        )
        print(json.dumps(row))
