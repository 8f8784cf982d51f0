"""Ranking ablations over a data directory that `memorose bench locomo --url` filled.

Stop the node first (RocksDB is opened here). The same retrieval code as the node runs
in-process, so variants differ only in their weights; no HTTP. Query embeddings are cached
by the local embedder, so every variant after the first costs only the ranking.

    memorose bench ablation --data-dir /tmp/lm-local \
        --locomo ../shared/data/locomo/locomo10.json --variant cosine=1 --variant cosine=2
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.locomo import (
    TOP_K,
    Tally,
    conversation_events,
    load_samples,
    scorable_questions,
    score_results,
)
from memorose.config import RetrievalSettings, Settings, load_settings
from memorose.providers.embeddings.base import Embedder
from memorose.providers.factory import build_embedder
from memorose.retrieval.lexicon import tenant_lexicon
from memorose.retrieval.rerank import DEFAULT_WEIGHTS, RankWeights, default_cosine_weight
from memorose.retrieval.search import Retriever, RetrieveRequest
from memorose.storage.indexer import Indexer
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore


@dataclass(frozen=True)
class Variant:
    weights: RankWeights
    rerank: bool
    retrieval: RetrievalSettings  # the lexicon's settings (expansion, expansion_threshold)


def parse_variant(text: str, model: str) -> Variant:
    """'cosine=2,episode=0.3' -> weights; 'rerank=0' turns the re-ranker off;
    'expansion=0' / 'expansion_threshold=0.6' set the query expansion (retrieval/lexicon.py).
    Unnamed values are the node's defaults for ``model``."""
    weights, rerank = replace(DEFAULT_WEIGHTS, cosine=default_cosine_weight(model)), True
    retrieval = RetrievalSettings()
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name == "rerank":
            rerank = value not in ("0", "false")
        elif name == "expansion":
            retrieval = retrieval.model_copy(update={"expansion_weight": float(value)})
        elif name == "expansion_threshold":
            retrieval = retrieval.model_copy(update={"expansion_threshold": float(value)})
        else:
            weights = replace(weights, **{name: float(value)})
    return Variant(weights, rerank, retrieval)


def run(retriever: Retriever, samples: list[dict[str, Any]]) -> dict[str, Any]:
    tally, took = Tally(), []
    for sample in samples:
        events = conversation_events(sample)
        for q in scorable_questions(sample, {e["event_id"] for e in events}):
            started = time.perf_counter()
            answer = retriever.retrieve(RetrieveRequest(sample["sample_id"], q.text, top_k=TOP_K))
            took.append((time.perf_counter() - started) * 1000)
            tally.add(q.category, score_results(answer["results"], q.gold))
    took.sort()
    return {"summary": tally.summary(), "p50_ms": took[len(took) // 2], "p95_ms": took[int(0.95 * len(took))]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, help="data dir of the node `bench locomo` filled")
    parser.add_argument("--locomo", required=True, help="locomo10.json, read in place")
    parser.add_argument("--variant", action="append", default=[], help="e.g. cosine=2 or rerank=0")


@dataclass
class OpenDataDir:
    """A stopped node's data dir opened in-process, as the node opens it (read-only use)."""

    settings: Settings
    embedder: Embedder
    reader: StateReader
    indexer: Indexer


@contextmanager
def open_data_dir(data_dir: str) -> Iterator[OpenDataDir]:
    """RocksDB, the indexes and the configured embedder of a data dir that ``bench locomo``
    filled; closed after (the Tantivy writer's lock released, so it can be opened again)."""
    settings = load_settings(data_dir=data_dir)
    embedder = build_embedder(settings)
    store = RocksStore(Path(data_dir) / "rocks")
    indexer: Indexer | None = None
    try:
        reader = StateReader(store)
        indexer = Indexer(
            reader,
            Path(data_dir) / "index",
            dim=embedder.dim,
            ann_threshold=settings.index.ann_threshold,
            model=embedder.model,
        )
        indexer.open()
        yield OpenDataDir(settings, embedder, reader, indexer)
    finally:
        if indexer is not None:
            indexer.stop()
        store.close()


def run_ablation(args: argparse.Namespace) -> int:
    with open_data_dir(args.data_dir) as opened:
        embedder, reader = opened.embedder, opened.reader
        samples = load_samples(args.locomo)
        for variant in args.variant or [""]:
            v = parse_variant(variant, embedder.model)
            lexicon = tenant_lexicon(reader, embedder, v.retrieval, background=False)
            retriever = Retriever(
                reader, opened.indexer, embedder, v.weights, rerank=v.rerank, lexicon=lexicon
            )
            report = run(retriever, samples)
            s = report["summary"]
            row = {
                "variant": variant or "default",
                "model": embedder.model,
                "R@5": s["1-4"]["recall@5"],
                "R@10": s["1-4"]["recall@10"],
                "R@500w": s["1-4"]["recall@500w"],
                "fp@10": s["1-4"]["footprint@10"],
                "multi-hop R@10": s["1"]["recall@10"],
                "p50_ms": round(report["p50_ms"], 1),
                "p95_ms": round(report["p95_ms"], 1),
            }
            print(json.dumps(row), flush=True)
    return 0
