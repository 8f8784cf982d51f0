"""The re-ranker's top N re-scored by a pairwise (question, memory) scorer, in-process.

How much would a cross-encoder (or any second-stage scorer) lift LoCoMo recall, and what is
the most it could? Over a data directory that ``memorose bench locomo --url`` filled (stop the
node: RocksDB is opened here), every question is retrieved once with the node's code at its
default settings (as ``bench ablation``); the scorer reads the question with each of the top
``--depth`` ranked memories; then, for each N and weight a, the top N are re-ordered by
``(1 - a) * minmax(ranking score) + a * minmax(scorer)``, grouped into passages as the node
does and scored as ``bench locomo`` does. N and a are fitted on half the conversations and
reported on the other half, both ways, so the figure is not tuned on its own test set.

``--scorer oracle`` is a perfect scorer (1 for a memory that cites a gold turn, else 0): the
ceiling of any re-scoring of the top N. ``--scorer nanoranker`` uses the package of that name
if it is installed (not a dependency); ``--scorer module:function`` any callable
``(question, texts) -> scores``.

    memorose bench rescore --data-dir /tmp/lm-local \
        --locomo ../shared/data/locomo/locomo10.json --scorer oracle
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from benchmarks.ablation import open_data_dir, parse_variant
from benchmarks.locomo import (
    TOP_K,
    Question,
    Tally,
    conversation_events,
    load_samples,
    scorable_questions,
    score_results,
)
from memorose.retrieval.lexicon import tenant_lexicon
from memorose.retrieval.rerank import Candidate
from memorose.retrieval.search import Reads, Retriever, RetrieveRequest
from memorose.retrieval.timeline import TenantTimeline

#: (question, memory texts) -> one score per text, higher is more relevant.
Scorer = Callable[[str, list[str]], Sequence[float]]
DEPTHS = (20, 30, 50)
WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


@dataclass
class Asked:
    """One question as the node answered it, kept to re-order its ranking."""

    tenant: str
    question: Question
    request: RetrieveRequest
    reads: Reads
    ranked: list[Candidate]
    timeline: TenantTimeline | None
    extra: np.ndarray | None = None  # the scorer's scores of ranked[:depth]


class RecordingRetriever(Retriever):
    """The node's retriever, keeping the final ranking that ``_results`` turns into results."""

    last: tuple[RetrieveRequest, Reads, list[Candidate], TenantTimeline | None] | None = None

    def _results(
        self, req: RetrieveRequest, reads: Reads, ranked: list[Candidate], timeline: TenantTimeline | None
    ) -> list[dict[str, Any]]:
        self.last = (req, reads, list(ranked), timeline)
        return super()._results(req, reads, ranked, timeline)


def load_scorer(spec: str) -> Scorer | None:
    """None for the oracle (scored from the gold turns); else the named callable."""
    if spec == "oracle":
        return None
    if spec == "nanoranker":
        return nanoranker_scorer()
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--scorer: 'oracle', 'nanoranker' or 'module:function', not {spec!r}")
    scorer: Scorer = getattr(importlib.import_module(module), name)
    return scorer


def nanoranker_scorer() -> Scorer:
    """nanoranker 1.2 (MIT): an MLP over (question, passage) pairs of Universal Sentence
    Encoder vectors; passage vectors are cached, as a node would store them."""
    try:
        nano = importlib.import_module("nanoranker")
    except ImportError as exc:  # not a dependency: installed by hand for the measurement
        raise SystemExit("--scorer nanoranker: pip install nanoranker onnxruntime-extensions") from exc
    cache: dict[str, np.ndarray] = {}

    def vector(text: str) -> np.ndarray:
        if text not in cache:
            cache[text] = nano.embed(text)
        return cache[text]

    def score(question: str, texts: list[str]) -> Sequence[float]:
        docs = np.array([vector(t) for t in texts])
        pairs = np.concatenate([np.tile(nano.embed(question), (len(docs), 1)), docs], axis=1)
        out: np.ndarray = nano.reranker_model.run(["output"], {"input": pairs.astype(np.float32)})[0]
        return [float(v) for v in out.reshape(-1)]

    return score


def oracle(asked: Asked, depth: int) -> np.ndarray:
    gold = asked.question.gold
    return np.array(
        [1.0 if gold & set(c.result.get("source_event_ids") or []) else 0.0 for c in asked.ranked[:depth]]
    )


def minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def reorder(ranked: list[Candidate], extra: np.ndarray, n: int, weight: float) -> list[Candidate]:
    """The top ``n`` re-ordered by the blend; their new scores span the same range as before
    (from the score of the first one left below to the best), so the passages' score ratio
    (passages.py) reads them as it reads the ranking's. Copies: ``ranked`` is not touched."""
    n = min(n, len(ranked), len(extra))
    if weight <= 0 or n < 2:
        return ranked
    top = ranked[:n]
    before = np.array([c.score for c in top])
    blend = minmax((1 - weight) * minmax(before) + weight * minmax(extra[:n]))
    low = ranked[n].score if len(ranked) > n else 0.0
    high = float(before.max())
    new = low + (high - low) * blend
    out = []
    for i in np.argsort(-new, kind="stable"):
        c = copy.copy(top[i])
        c.score = float(new[i]) if new[i] > 0 else float(before[i])
        out.append(c)
    return out + ranked[n:]


def summary(tally: Tally) -> dict[str, float]:
    s = tally.summary()
    return {
        "R@1": s["1-4"]["recall@1"],
        "R@5": s["1-4"]["recall@5"],
        "R@10": s["1-4"]["recall@10"],
        "R@500w": s["1-4"]["recall@500w"],
        "fp@10": s["1-4"]["footprint@10"],
        "multi-hop R@10": s.get("1", {}).get("recall@10", 0.0),
        "n": s["1-4"]["n"],
    }


def evaluate(retriever: Retriever, asked: list[Asked], n: int, weight: float) -> dict[str, Tally]:
    """Tallies per conversation for one (N, a)."""
    tallies: dict[str, Tally] = {}
    for a in asked:
        ranked = reorder(a.ranked, a.extra, n, weight) if a.extra is not None else a.ranked
        results = retriever._results(a.request, a.reads, ranked, a.timeline)
        tallies.setdefault(a.tenant, Tally()).add(
            a.question.category, score_results(results, a.question.gold)
        )
    return tallies


def merged(tallies: dict[str, Tally], tenants: set[str]) -> Tally:
    """One tally over the given conversations (micro-averaged, as ``bench locomo``)."""
    out = Tally()
    for tenant in sorted(tenants & tallies.keys()):
        tally = tallies[tenant]
        for group, sums in tally.sums.items():
            bucket = out.sums.setdefault(group, {})
            for name, value in sums.items():
                bucket[name] = bucket.get(name, 0.0) + value
            out.counts[group] = out.counts.get(group, 0) + tally.counts[group]
    return out


def fit_halves(
    table: dict[tuple[int, float], dict[str, Tally]], halves: tuple[set[str], set[str]]
) -> list[dict[str, Any]]:
    """For each half: the (N, a) with the best R@10 there (ties: the smaller a), and what it
    gives on the other half next to a = 0 (the node as it is)."""
    rows = []
    for fit, test in (halves, halves[::-1]):
        best = max(table, key=lambda k: (summary(merged(table[k], fit))["R@10"], -k[1], -k[0]))
        rows.append(
            {
                "fitted_on": sorted(fit),
                "N": best[0],
                "a": best[1],
                "held_out": summary(merged(table[best], test)),
                "held_out_baseline": summary(merged(table[(best[0], 0.0)], test)),
            }
        )
    return rows


def ask_all(retriever: RecordingRetriever, samples: list[dict[str, Any]]) -> list[Asked]:
    asked = []
    for sample in samples:
        events = conversation_events(sample)
        for q in scorable_questions(sample, {e["event_id"] for e in events}):
            retriever.retrieve(RetrieveRequest(sample["sample_id"], q.text, top_k=TOP_K))
            assert retriever.last is not None
            asked.append(Asked(sample["sample_id"], q, *retriever.last))
    return asked


def score_all(asked: list[Asked], scorer: Scorer | None, depth: int) -> float:
    """Fill ``extra``; CPU milliseconds per question spent in the scorer (this thread)."""
    started = time.thread_time()
    for a in asked:
        if scorer is None:
            a.extra = oracle(a, depth)
        else:
            texts = [c.content for c in a.ranked[:depth]]
            a.extra = np.asarray(scorer(a.question.text, texts), dtype=np.float64) if texts else np.zeros(0)
    return (time.thread_time() - started) * 1000 / max(1, len(asked))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, help="data dir of the node `bench locomo` filled")
    parser.add_argument("--locomo", required=True, help="locomo10.json, read in place")
    parser.add_argument("--scorer", default="oracle", help="oracle, nanoranker or module:function")
    parser.add_argument("--depth", type=int, nargs="+", default=list(DEPTHS), help="values of N")
    parser.add_argument("--weight", type=float, nargs="+", default=list(WEIGHTS), help="values of a")


def run_rescore(args: argparse.Namespace) -> int:
    print(json.dumps({"load_before": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    scorer = load_scorer(args.scorer)
    with open_data_dir(args.data_dir) as opened:
        embedder, reader = opened.embedder, opened.reader
        v = parse_variant("", embedder.model)
        lexicon = tenant_lexicon(reader, embedder, v.retrieval, background=False)
        retriever = RecordingRetriever(
            reader, opened.indexer, embedder, v.weights, rerank=v.rerank, lexicon=lexicon
        )
        asked = ask_all(retriever, load_samples(args.locomo))
        cpu_ms = score_all(asked, scorer, max(args.depth))
        print(json.dumps({"scorer": args.scorer, "scorer_cpu_ms_per_question": round(cpu_ms, 2)}), flush=True)
        table = {
            (n, w): evaluate(retriever, asked, n, w) for n, w in product(args.depth, [0.0, *args.weight])
        }
        tenants = sorted({a.tenant for a in asked})
        for (n, w), tallies in table.items():
            if w > 0 or n == args.depth[0]:
                print(json.dumps({"N": n, "a": w, **summary(merged(tallies, set(tenants)))}), flush=True)
        if len(tenants) > 1:  # a fit needs a conversation to fit on and one to report on
            for row in fit_halves(table, (set(tenants[0::2]), set(tenants[1::2]))):
                print(json.dumps(row), flush=True)
    print(json.dumps({"load_after": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    return 0
