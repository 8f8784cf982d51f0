"""LoCoMo with insights (``memorose bench insights --locomo PATH``): insights per
conversation, and whether ``include_insights`` helps recall, multi-hop above all.

Protocol: ``shared/benchmarks/LOCOMO_R.md`` as run by ``memorose bench locomo`` (same
ingest, consolidation, questions and scoring), plus one insight pass per conversation
(``POST /api/v1/insights/refresh``). Every question is asked twice, without and with
``include_insights``; with it, the insights lead the list and take rank slots, and an
insight covers every turn in its ``source_event_ids`` (the footprint columns show what
that costs). "R@10 + insights" counts the insights on top of the 10 memories instead.
"""

from __future__ import annotations

import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.locomo import (
    CATEGORIES,
    TOP_K,
    NodeApi,
    Tally,
    consolidate,
    conversation_events,
    ingest_conversation,
    load_samples,
    local_node,
    scorable_questions,
    score_results,
)


def _ask(api: NodeApi, tenant: str, text: str, include: bool) -> list[dict[str, Any]]:
    body = {"tenant_id": tenant, "query": text, "top_k": TOP_K, "include_insights": include}
    results: list[dict[str, Any]] = api.call("POST", "/api/v1/retrieve", body)["results"]
    return results


def _additive(results: list[dict[str, Any]], gold: frozenset[str], k: int) -> tuple[float, float]:
    """(recall, footprint) of the insights plus the top ``k`` memories."""
    insights = [r for r in results if r.get("layer") == "L2"]
    rest = [r for r in results if r.get("layer") != "L2"][:k]
    covered = {e for r in insights + rest for e in r.get("source_event_ids") or []}
    return len(gold & covered) / len(gold), float(len(covered))


def _plain_at(results: list[dict[str, Any]], gold: frozenset[str], k: int) -> tuple[float, float]:
    """(recall, footprint) of the top ``k`` results: plain retrieval at a footprint like the
    insights' own."""
    covered = {e for r in results[:k] for e in r.get("source_event_ids") or []}
    return len(gold & covered) / len(gold), float(len(covered))


def run(data: str, limit: int = 0) -> dict[str, Any]:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    samples = load_samples(data)[: limit or None]
    plain, with_insights = Tally(), Tally()
    conversations = []
    with local_node() as (url, key):
        api = NodeApi(url, key)
        for n, sample in enumerate(samples, 1):
            tenant = sample["sample_id"]
            events = conversation_events(sample)
            questions = scorable_questions(sample, {e["event_id"] for e in events})
            ingest_conversation(api, tenant, events)
            _, memories = consolidate(api, tenant)
            refresh = api.call("POST", "/api/v1/insights/refresh", {"tenant_id": tenant, "wait": True})
            listed = api.call("GET", "/api/v1/insights", tenant_id=tenant, limit=1000)["insights"]
            analysis = api.call("GET", "/api/v1/graph/analysis", tenant_id=tenant, limit=1)
            sizes = [i["size"] for i in listed]
            chosen = 0
            for q in questions:
                base = _ask(api, tenant, q.text, False)
                plain_scores = score_results(base, q.gold)
                plain_scores["recall@40"], plain_scores["footprint@40"] = _plain_at(base, q.gold, 40)
                plain.add(q.category, plain_scores)
                results = _ask(api, tenant, q.text, True)
                scores = score_results(results, q.gold)
                chosen += sum(1 for r in results if r.get("layer") == "L2")
                scores["recall@10+ins"], scores["footprint@10+ins"] = _additive(results, q.gold, 10)
                with_insights.add(q.category, scores)
            conversations.append(
                {
                    "tenant": tenant,
                    "turns": len(events),
                    "memories": memories,
                    "graph_nodes": analysis["nodes"],
                    "graph_edges": analysis["edges"],
                    "communities": analysis["communities_total"],
                    "modularity": analysis["modularity"],
                    "insights": len(listed),
                    "insight_size_median": statistics.median(sizes) if sizes else 0,
                    "insight_size_max": max(sizes, default=0),
                    "pass_ms": refresh.get("took_ms"),
                    "insights_per_query": round(chosen / max(1, len(questions)), 2),
                }
            )
            print(f"[{n}/{len(samples)}] {conversations[-1]}", file=sys.stderr, flush=True)
        api.close()
    return {
        "plain": plain.summary(),
        "with_insights": with_insights.summary(),
        "conversations": conversations,
    }


def markdown(report: dict[str, Any]) -> str:
    f = lambda v: f"{v:.3f}".removeprefix("0")  # noqa: E731
    lines = [
        "| categories | n | R@5 plain -> with | R@10 plain | R@10 with insights | R@10 + insights "
        "| footprint@10 plain (with) | footprint@10 + insights | R@40 plain (footprint) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group, row in report["plain"].items():
        w = report["with_insights"][group]
        label = "1-4" if group == "1-4" else f"{group} {CATEGORIES[int(group)]}"
        cells = [
            f"{f(row['recall@5'])} -> {f(w['recall@5'])}",
            f(row["recall@10"]),
            f(w["recall@10"]),
            f(w["recall@10+ins"]),
            f"{row['footprint@10']:.1f} ({w['footprint@10']:.1f})",
            f"{w['footprint@10+ins']:.1f}",
            f"{f(row['recall@40'])} ({row['footprint@40']:.1f})",
        ]
        lines.append(f"| {label} | {row['n']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(data: str, out: str, limit: int = 0) -> dict[str, Any]:
    import json

    report = run(data, limit)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    return report
