"""``memorose bench insights``: time and memory of one insight pass over one tenant of 1K,
10K, 100K memories (docs/benchmarks.md, "Insights (issue 5)").

The graph is synthetic but shaped like what consolidation builds: memories arrive in one
stream, each linked to the previous one (``temporal``, 0.3) and to 1-5 earlier memories
(``similar``, cosine-like weights 0.70-0.95; at most ``max_similar_edges`` = 5), 85 % of
them in its own topic and 15 % anywhere (noise). Topics have log-normal sizes (median 25)
and their own vocabulary, so labels and summaries do real work. Memories and edges are
written to a real RocksDB in the state machine's layout; each size runs in a fresh
subprocess so its peak RSS is its own.

Phases: projection (RocksDB scan -> networkx), analysis (Louvain, PageRank, degree
centrality), synthesis (c-TF-IDF labels, extractive summaries, the command), the
command's size, its apply on a state machine (the Raft thread's cost), and the cost of a
pass over the unchanged tenant (a cache hit). Memory: ``tracemalloc`` peak of a second,
traced run, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from rocksdict import WriteBatch

from memorose import codec, commands
from memorose.config import InsightSettings
from memorose.insights.communities import analyze
from memorose.insights.planner import plan_insights
from memorose.insights.projection import ProjectionCache, project
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


def one_pass(reader: StateReader, settings: InsightSettings) -> tuple[dict[str, float], Any]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    projection = project(reader, TENANT)
    timings["projection_s"] = time.perf_counter() - started
    started = time.perf_counter()
    analysis = analyze(projection, settings.resolution, settings.seed)
    timings["analysis_s"] = time.perf_counter() - started
    started = time.perf_counter()
    plan = plan_insights(projection, settings, time.time(), stored={}, previous={})
    timings["synthesis_s"] = time.perf_counter() - started
    return timings, (projection, analysis, plan)


def build_in(root: str, n: int, seed: int) -> dict[str, Any]:
    """Build the tenant (run in its own process, so its memory is not the pass's)."""
    store = RocksStore(Path(root) / "rocks")
    started = time.perf_counter()
    shape = build(store, n, seed)
    store.close()
    return {**shape, "build_s": round(time.perf_counter() - started, 2)}


def run_size(n: int, seed: int) -> dict[str, Any]:
    settings = InsightSettings()
    with tempfile.TemporaryDirectory(prefix="memorose-insights-") as root:
        cmd = [sys.executable, "-m", "benchmarks.insights", "build", root, str(n), str(seed)]
        built = subprocess.run(cmd, check=True, capture_output=True, text=True)
        shape = json.loads(built.stdout.strip().splitlines()[-1])
        store = RocksStore(Path(root) / "rocks")
        reader = StateReader(store)
        rss_before = _rss()
        timings, (projection, analysis, plan) = one_pass(reader, settings)
        rss_after = _peak_rss()  # the pass's peak, above rss_before
        payload = commands.encode(plan.command)
        machine = StateMachine(store)
        started = time.perf_counter()
        result = machine.apply(payload, store.applied_index() + 1)
        apply_s = time.perf_counter() - started
        cache = ProjectionCache(reader)
        cache.get(TENANT)
        started = time.perf_counter()
        for _ in range(100):
            cache.get(TENANT)
        unchanged_us = (time.perf_counter() - started) / 100 * 1e6
        del projection, plan
        tracemalloc.start()
        one_pass(reader, settings)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        store.close()
    sizes = [c.size for c in analysis.communities]
    return {
        **shape,
        "graph_edges": analysis.edges,
        **{k: round(v, 3) for k, v in timings.items()},
        **{f"{k}_s": round(v, 3) for k, v in analysis.timings.items()},
        "pass_s": round(sum(timings.values()), 3),
        "communities": len(sizes),
        "insights": result.get("insights"),
        "largest_community": max(sizes, default=0),
        "modularity": round(analysis.modularity, 4),
        "command_bytes": len(payload),
        "apply_s": round(apply_s, 3),
        "unchanged_pass_us": round(unchanged_us, 1),
        "tracemalloc_peak_mb": round(traced_peak / 2**20, 1),
        "peak_rss_mb": round(rss_after / 2**10, 1),
        "peak_rss_growth_mb": round((rss_after - rss_before) / 2**10, 1),
    }


def _peak_rss() -> int:
    """Peak resident set of this process, KiB (Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _rss() -> int:
    """Current resident set of this process, KiB (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def run_insights_bench(args: argparse.Namespace) -> int:
    if args.locomo:
        from benchmarks.insights_locomo import main

        main(args.locomo, args.locomo_out, args.limit_conversations)
    results = []
    for n in [int(s) for s in args.sizes.split(",") if s]:  # --sizes '' skips the synthetic runs
        print(f"insight pass over {n:,} memories ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "benchmarks.insights", str(n), str(args.seed)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        results.append(row)
    if not results:
        return 0
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1) + "\n")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="memories in the tenant, comma-separated"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic memories")
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
        print(json.dumps(run_size(int(sys.argv[1]), int(sys.argv[2]))))
