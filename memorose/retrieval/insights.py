"""Insights in retrieval (``include_insights``): the L2 insights relevant to a query.

An insight is relevant when the memories it was distilled from are among the hits: each hit
(each memory of a passage) adds 1 / (1 + rank) to the insight citing it (one point lookup
per memory), and query terms
found in the insight's label and terms add a little, so a topic named outright is found even
when its memories rank lower. The chosen insights lead the results, marked ``layer: "L2"``;
the L1/L0 results follow unchanged. An insight describes the tenant's current memories, so
none is added to an ``as_of`` query.
"""

from __future__ import annotations

from typing import Any

from memorose.models import iso
from memorose.retrieval.text import query_terms
from memorose.storage.reader import StateReader

TERM_WEIGHT = 0.25


def relevant(
    reader: StateReader,
    tenant_id: str,
    query: str,
    results: list[dict[str, Any]],
    stream_id: str | None,
    n: int,
) -> list[dict[str, Any]]:
    """At most ``n`` insights, best first, in the shape of retrieval results."""
    scores: dict[str, float] = {}
    for rank, result in enumerate(results):
        if result.get("layer") != "L1":
            continue
        for memory_id in result.get("passage") or [result["id"]]:  # a passage: all its memories
            insight_id = reader.insight_of(tenant_id, memory_id)
            if insight_id is not None:
                scores[insight_id] = scores.get(insight_id, 0.0) + 1.0 / (1 + rank)
    terms = set(query_terms(query))
    out = []
    for insight in reader.insights(tenant_id):
        if stream_id is not None and stream_id not in insight["stream_ids"]:
            continue
        named = terms & set(query_terms(" ".join([insight["label"], *insight["terms"]])))
        score = scores.get(insight["insight_id"], 0.0) + TERM_WEIGHT * len(named)
        if score > 0:
            out.append((score, insight))
    out.sort(key=lambda item: (-item[0], item[1]["insight_id"]))
    return [
        {**public(insight), "score": round(score, 6), "importance": insight["score"]}
        for score, insight in out[:n]
    ]


def attach(
    reader: StateReader,
    tenant_id: str,
    query: str,
    results: list[dict[str, Any]],
    stream_id: str | None,
    n: int,
) -> list[dict[str, Any]]:
    return relevant(reader, tenant_id, query, results, stream_id, n) + results


def public(insight: dict[str, Any]) -> dict[str, Any]:
    """The API view of an insight (``GET /api/v1/insights`` and retrieval results)."""
    return {
        "id": insight["insight_id"],
        "layer": "L2",
        "tenant_id": insight["tenant_id"],
        "label": insight["label"],
        "summary": insight["summary"],
        "content": insight["summary"],
        "score": insight["score"],
        "size": insight["size"],
        "member_ids": list(insight["member_ids"]),
        "anchor_ids": list(insight["anchor_ids"]),
        "source_event_ids": list(insight["source_event_ids"]),
        "stream_ids": list(insight["stream_ids"]),
        "terms": list(insight["terms"]),
        "first_at": iso(insight["first_at"]),
        "last_at": iso(insight["last_at"]),
        "generation": insight["generation"],
        "created_at": iso(insight["created_at"]),
        "computed_at": iso(insight["computed_at"]),
        "synthesis": insight["synthesis"],
    }
