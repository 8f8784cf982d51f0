"""Arbitration quality on a labelled corpus of (old memory, new fact) pairs.

Each pair runs through the real consolidation planner: the old text is consolidated into a
memory, then the new one is planned with that memory as its only candidate. The decision
(supersede / reinforce / merge / create) is compared with the label: an update should
supersede, a duplicate reinforce, a distinct fact about the same subject or a fact about
another subject create. ``memorose bench arbitration`` prints the table that
docs/consolidation.md quotes; tests/unit/test_arbitration_corpus.py holds the floor.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memorose.config import ConsolidationSettings
from memorose.consolidation.planner import ConsolidationPlanner
from memorose.models import Event, Memory
from memorose.providers.embeddings import Embedder, load_embedder

DATA = Path(__file__).resolve().parent / "data"
#: The pairs the offline rules were shaped on, and pairs written afterwards, never tuned on.
CORPUS = DATA / "arbitration_pairs.json"
HELD_OUT = DATA / "arbitration_heldout.json"
EXPECTED = {"update": "supersede", "duplicate": "reinforce", "distinct": "create", "other": "create"}
DECISIONS = ("supersede", "reinforce", "merge", "create")


class _OneMemory:
    """A candidate source holding the memories planned so far (no index needed)."""

    def __init__(self) -> None:
        self.memories: list[Memory] = []

    def similar(self, tenant_id: str, text: str, vector: np.ndarray, k: int) -> list[Memory]:
        return list(self.memories[:k])


@dataclass
class Outcome:
    kind: str
    old: str
    new: str
    expected: str
    decision: str
    reason: str


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def scores(self) -> dict[str, dict[str, float]]:
        """Per decision: precision, recall and support (pairs expected to take it)."""
        out = {}
        for d in DECISIONS:
            predicted = [o for o in self.outcomes if o.decision == d]
            expected = [o for o in self.outcomes if o.expected == d]
            hits = sum(1 for o in predicted if o.expected == d)
            out[d] = {
                "precision": hits / len(predicted) if predicted else float("nan"),
                "recall": hits / len(expected) if expected else float("nan"),
                "predicted": len(predicted),
                "support": len(expected),
            }
        return out

    def accuracy(self) -> float:
        return sum(o.decision == o.expected for o in self.outcomes) / max(1, len(self.outcomes))

    def confusion(self) -> dict[str, Counter[str]]:
        table: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            table.setdefault(o.kind, Counter())[o.decision] += 1
        return table


def load_pairs(path: Path = CORPUS) -> list[dict[str, str]]:
    pairs: list[dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))["pairs"]
    return pairs


def decide(embedder: Embedder, old: str, new: str, settings: ConsolidationSettings) -> tuple[str, str]:
    """The planner's decision for ``new`` given ``old`` as an existing memory."""
    source = _OneMemory()
    planner = ConsolidationPlanner(embedder, settings, candidates=source)
    first = planner.plan("t", [Event("t", "s", "old", 1, old, 1000.0, 1000.0)], 1000.0)
    source.memories = [Memory.from_dict(op["memory"]) for op in first.ops if op["op"] == "create"]
    second = planner.plan("t", [Event("t", "s", "new", 2, new, 2000.0, 2000.0)], 2000.0)
    if not second.ops:
        return "rejected", next(iter(second.rejected.values()), "")
    op = second.ops[0]
    return str(op["op"]), str(op.get("reason", ""))


def evaluate(embedder: Embedder, pairs: list[dict[str, str]] | None = None) -> Report:
    settings = ConsolidationSettings()
    report = Report()
    for pair in pairs if pairs is not None else load_pairs():
        decision, reason = decide(embedder, pair["old"], pair["new"], settings)
        expected = EXPECTED[pair["kind"]]
        report.outcomes.append(Outcome(pair["kind"], pair["old"], pair["new"], expected, decision, reason))
    return report


def markdown(report: Report, model: str) -> str:
    lines = [
        f"Embedder `{model}`, {len(report.outcomes)} pairs, accuracy {report.accuracy():.2f}.",
        "",
        "| decision | expected (support) | predicted | precision | recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for d, s in report.scores().items():
        lines.append(
            f"| {d} | {s['support']} | {s['predicted']} | {_f(s['precision'])} | {_f(s['recall'])} |"
        )
    lines += ["", "| pair kind | " + " | ".join(DECISIONS) + " |", "|---|" + "---:|" * len(DECISIONS)]
    for kind, counts in report.confusion().items():
        lines.append(f"| {kind} | " + " | ".join(str(counts.get(d, 0)) for d in DECISIONS) + " |")
    return "\n".join(lines)


def _f(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedder", default="local", help="local or hashing")
    parser.add_argument("--errors", action="store_true", help="list the pairs decided wrongly")
    parser.add_argument("--held-out", action="store_true", help="the held-out pairs instead")


def run_arbitration_bench(args: argparse.Namespace) -> int:
    embedder = load_embedder(args.embedder)
    report = evaluate(embedder, load_pairs(HELD_OUT if args.held_out else CORPUS))
    print(markdown(report, embedder.model))
    if args.errors:
        for o in report.outcomes:
            if o.decision != o.expected:
                print(f"- [{o.kind}] {o.old!r} -> {o.new!r}: {o.decision} ({o.reason})")
    return 0
