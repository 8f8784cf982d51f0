"""Where a retrieve's time goes: each step of ``Retriever.retrieve``, in-process, timed.

Over a copy of a scenario that ``memorose bench storage --data DIR`` built (its tenants, and
queries drawn from its corpus as that bench draws them), the retriever is called
directly, one query at a time, with a timer around each of its steps. It prints, per query,
the wall time inside each step (nested steps are inside their parents), the query thread's
CPU time, and the garbage collections that ran. What it shows is where to cut; the figures of
record stay those of ``bench storage`` (through the node, HTTP included).

``--preloaded-heads`` is a counterfactual, not a design: every memory's head is decoded into
a dict before the measured queries, so the candidates' record reads cost nothing. The
difference from a plain run is what keeping the candidates' fields in memory could save at
most (docs/benchmarks.md, "Eighth session").

The embedder is the configured one (``MEMOROSE_EMBEDDINGS__PROVIDER``): use the one the data
was built with.

    memorose bench read-stages --data /tmp/bench-data --scenario 100k-1tenant --queries 300
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.ablation import open_data_dir, parse_variant
from benchmarks.storage import BenchConfig, build_scenario, percentiles
from memorose.retrieval import rerank, search
from memorose.retrieval.lexicon import tenant_lexicon
from memorose.retrieval.search import Reads, Retriever, RetrieveRequest
from memorose.runtime import prepare_heap
from memorose.storage import keys
from memorose.storage.reader import MemoryHead, memory_head

#: (label, Retriever method): the retriever's steps, outermost first.
METHODS = (
    ("retrieve", "retrieve"),
    ("Tantivy search", "_bm25_ranking"),
    ("tail scan", "_tail_ranking"),
    # On a helper thread, overlapped, when the query's vector is known at once (hashing).
    ("vector ranking (int8 scan)", "_vector_ranking"),
    ("candidates built", "_load_many"),
    ("second stage", "_rerank"),
    ("neighbours", "_neighbours"),
    ("feedback pass", "_feedback"),
    ("results and views", "_results"),
)
RECORD_READS = "record reads (Reads.memories)"
RANKING = "ranking passes (rank)"
BM25 = "BM25 passes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="the --data DIR of a `bench storage` run")
    parser.add_argument(
        "--scenario", default=None, help="scenario in DIR, e.g. 100k-1tenant (default: the only one there)"
    )
    parser.add_argument("--queries", type=int, default=300, help="measured queries")
    parser.add_argument("--warmup", type=int, default=20, help="queries before measuring")
    parser.add_argument("--offset", type=int, default=0, help="skip this many drawn queries (another set)")
    parser.add_argument(
        "--preloaded-heads",
        action="store_true",
        help="counterfactual: decode every memory's head beforehand, so record reads cost nothing",
    )
    parser.add_argument("--out", default="benchmarks/results/read_stages.json", help="JSON results file")


class StepClock:
    """Wall time and calls per step, summed over the measured queries (any thread)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.seconds[label] = self.seconds.get(label, 0.0) + elapsed
                    self.calls[label] = self.calls.get(label, 0) + 1

        return wrapper

    def reset(self) -> None:
        with self._lock:
            self.seconds.clear()
            self.calls.clear()


@contextmanager
def instrumented(retriever: Retriever, clock: StepClock) -> Iterator[None]:
    """Timers around the retriever's steps and the module functions it calls, removed after."""
    with ExitStack() as undo:
        for label, name in METHODS:
            setattr(retriever, name, clock.timed(label, getattr(retriever, name)))
            undo.callback(delattr, retriever, name)
        patches: list[tuple[Any, str, str]] = [
            (Reads, "memories", RECORD_READS),
            (search, "rank", RANKING),
            (search, "bm25_scores", BM25),  # the neighbours' pass
            (rerank, "bm25_scores", BM25),  # the ranking passes'
        ]
        for owner, name, label in patches:
            original = getattr(owner, name)
            setattr(owner, name, clock.timed(label, original))
            undo.callback(setattr, owner, name, original)
        yield


@contextmanager
def preloaded_heads(retriever: Retriever, tenant_ids: set[str]) -> Iterator[int]:
    """Every memory head of these tenants decoded now; ``Reads.memories`` answers from them."""
    heads: dict[tuple[str, str], tuple[MemoryHead, bytes]] = {}
    for tenant_id in tenant_ids:
        prefix = keys.tenant_prefix(keys.MEMORY, tenant_id)
        for key, raw in retriever.reader.store.scan(prefix):
            heads[(tenant_id, key[len(prefix) :].decode())] = (memory_head(raw), raw)
    original = Reads.memories

    def from_memory(self: Reads, memory_ids: list[str]) -> dict[str, tuple[MemoryHead, bytes]]:
        found = ((m, heads.get((self.tenant_id, m))) for m in memory_ids)
        return {m: head for m, head in found if head is not None}

    Reads.memories = from_memory  # type: ignore[method-assign]
    try:
        yield len(heads)
    finally:
        Reads.memories = original  # type: ignore[method-assign]


@contextmanager
def collections_seen() -> Iterator[list[tuple[int, float]]]:
    """(generation, ms) of every garbage collection while inside."""
    seen: list[tuple[int, float]] = []
    started: list[float] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            seen.append((int(info["generation"]), (time.perf_counter() - started[0]) * 1000))

    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)


def _scenario_dir(data: Path, name: str | None) -> Path:
    built = sorted(p.name.removesuffix(".built.json") for p in data.glob("*.built.json"))
    if name is None:
        if len(built) != 1:
            raise SystemExit(f"--scenario: choose one of {built or 'nothing (no built scenario in --data)'}")
        name = built[0]
    if name not in built:
        raise SystemExit(f"no built scenario {name!r} in {data} (found: {built})")
    return data / name


def _queries(scenario: Path, queries: int, warmup: int, offset: int) -> list[tuple[str, str]]:
    """(tenant, text) drawn as ``bench storage`` draws them for this scenario, the first
    ``offset`` skipped."""
    built = json.loads(scenario.with_name(scenario.name + ".built.json").read_text())
    cfg = BenchConfig(sizes=[built["size"]], tenants=built["tenants"], queries=offset + queries + warmup,
                      out=Path(os.devnull), seed=built["seed"])  # fmt: skip
    drawn = build_scenario(cfg, built["size"], built["tenants"]).queries
    return [(tenant, text) for tenant, text, _ in drawn[offset:]][: queries + warmup]


def measure(retriever: Retriever, asked: list[tuple[str, str]], warmup: int) -> dict[str, Any]:
    """Warm up, then time each measured query's steps; the answers' ids are kept too."""
    for tenant, text in asked[:warmup]:
        retriever.retrieve(RetrieveRequest(tenant, text))
    clock = StepClock()
    cpu: list[float] = []
    wall: list[float] = []
    answers: list[list[str]] = []
    with instrumented(retriever, clock), collections_seen() as collections:
        for tenant, text in asked[warmup:]:
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            found = retriever.retrieve(RetrieveRequest(tenant, text))["results"]
            cpu.append((time.thread_time() - cpu0) * 1000)
            wall.append((time.perf_counter() - wall0) * 1000)
            answers.append([str(r.get("memory_id") or r.get("id")) for r in found])
    n = max(1, len(cpu))
    steps = {
        label: {
            "ms_per_query": round(seconds * 1000 / n, 3),
            "calls_per_query": round(clock.calls[label] / n, 2),
        }
        for label, seconds in sorted(clock.seconds.items(), key=lambda item: -item[1])
    }
    return {
        "queries": len(cpu),
        "thread_cpu_ms": {**percentiles(cpu), "mean": round(sum(cpu) / n, 3)},
        "wall_ms": percentiles(wall),
        "steps": steps,
        "collections": [{"generation": g, "ms": round(ms, 2)} for g, ms in collections],
        "answers": answers,
    }


def run_read_stages(args: argparse.Namespace) -> int:
    if args.queries < 1 or args.warmup < 0 or args.offset < 0:
        raise SystemExit("--queries must be positive, --warmup and --offset not negative")
    scenario = _scenario_dir(Path(args.data), args.scenario)
    asked = _queries(scenario, args.queries, args.warmup, args.offset)
    with tempfile.TemporaryDirectory(prefix="memorose-read-stages-") as tmp:
        copy = Path(tmp) / scenario.name  # the node's indexes catch up on open: not in place
        shutil.copytree(scenario, copy, symlinks=True, ignore=shutil.ignore_patterns("raft"))
        with open_data_dir(str(copy)) as opened:
            variant = parse_variant("", opened.embedder.model)
            lexicon = tenant_lexicon(opened.reader, opened.embedder, variant.retrieval, background=False)
            retriever = Retriever(
                opened.reader, opened.indexer, opened.embedder, variant.weights, lexicon=lexicon
            )
            runtime = opened.settings.runtime  # the collector as a node sets it (node/heap.py)
            prepare_heap(runtime.gc_freeze, runtime.gc_gen0_threshold)
            with ExitStack() as stack:
                heads = None
                if args.preloaded_heads:
                    heads = stack.enter_context(preloaded_heads(retriever, {t for t, _ in asked}))
                result = measure(retriever, asked, args.warmup)
            model = opened.embedder.model
    result = {
        "scenario": scenario.name,
        "embedding_model": model,
        "preloaded_heads": heads,
        "load_average": os.getloadavg(),
        **result,
    }
    _print(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"result: {out}")
    return 0


def _print(result: dict[str, Any]) -> None:
    heads = result["preloaded_heads"]
    print(f"== memorose bench read-stages: {result['scenario']}, {result['embedding_model']}"
          + (f", {heads} heads preloaded (counterfactual)" if heads is not None else "") + " ==")  # fmt: skip
    print(f"{result['queries']} queries; thread CPU ms {result['thread_cpu_ms']}")
    print(f"wall ms {result['wall_ms']}")
    for label, step in result["steps"].items():
        print(f"{step['ms_per_query']:9.3f} ms {step['calls_per_query']:6.2f}x  {label}")
    collected = result["collections"]
    print(f"garbage collections while measuring: {len(collected)}"
          + (f", longest {max(c['ms'] for c in collected):.1f} ms" if collected else ""))  # fmt: skip
    print(f"load average {tuple(round(x, 2) for x in result['load_average'])}")
