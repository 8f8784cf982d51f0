"""One insight pass over a tenant, on the leader: projection -> communities -> synthesis ->
the ``insights`` command. Everything non-deterministic (Louvain's partition, the LLM's
text, the clock) is settled here; the state machine only stores the result.

Insight ids derive from the member set, so an unchanged community keeps its id (and its
``created_at``), and an LLM summary is reused while its members and their versions are
unchanged. The digest covers everything but times and generations: when a pass finds
exactly what is stored, the command carries no records and only advances the generation.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from memorose import codec, commands
from memorose.config import InsightSettings
from memorose.insights.communities import Analysis, Community, analyze
from memorose.insights.projection import Node, Projection
from memorose.insights.synthesis import Text, distinctive_terms, llm_text, offline_text
from memorose.providers.llm.base import LLMProvider, Usage

#: Record fields left out of the digest: when and from which generation, not what.
_UNDIGESTED = ("created_at", "computed_at", "generation")
LLM_THREADS = 4


@dataclass
class InsightPlan:
    command: dict[str, Any]
    records: list[dict[str, Any]]
    changed: bool
    analysis: Analysis
    usage: Usage = field(default_factory=Usage)


def insight_id(members: tuple[str, ...]) -> str:
    return "ins-" + hashlib.sha256("\n".join(sorted(members)).encode()).hexdigest()[:16]


def members_sha(members: tuple[str, ...], nodes: dict[str, Node]) -> str:
    text = "\n".join(f"{m}@{nodes[m].version}" for m in sorted(members))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def digest(records: list[dict[str, Any]]) -> str:
    stripped = [{k: v for k, v in r.items() if k not in _UNDIGESTED} for r in records]
    return hashlib.sha256(codec.pack(stripped)).hexdigest()


def plan_insights(
    projection: Projection,
    settings: InsightSettings,
    now: float,
    *,
    stored: dict[str, Any],
    previous: dict[str, dict[str, Any]],
    llm: LLMProvider | None = None,
) -> InsightPlan:
    """The command for one pass. ``stored`` is the tenant record (its insight digest),
    ``previous`` the insights stored now, by id."""
    analysis = analyze(projection, settings.resolution, settings.seed)
    chosen = sorted(
        analysis.insight_communities(settings.min_community_size),
        key=lambda c: (-c.pagerank_mass, c.index),
    )[: settings.max_insights]
    nodes = projection.nodes
    all_terms = distinctive_terms([c.members for c in analysis.communities], nodes)
    usage = Usage()
    texts = _texts(chosen, [all_terms[c.index] for c in chosen], nodes, settings, previous, llm, usage)
    records = [
        _record(projection, c, text, previous.get(insight_id(c.members)), now)
        for c, text in zip(chosen, texts, strict=True)
    ]
    result_digest = digest(records)
    changed = result_digest != stored.get("insights_digest")
    command = commands.insights(
        projection.tenant_id,
        projection.generation,
        projection.changes,
        projection.deletes,
        result_digest,
        now,
        records if changed else None,
        epoch=int(stored.get("epoch", 0)),
    )
    return InsightPlan(command, records, changed, analysis, usage)


def _texts(
    chosen: list[Community],
    terms: list[list[str]],
    nodes: dict[str, Node],
    s: InsightSettings,
    previous: dict[str, dict[str, Any]],
    llm: LLMProvider | None,
    usage: Usage,
) -> list[Text]:
    offline = [
        offline_text(c, t, nodes, s.summary_memories, s.max_summary_chars)
        for c, t in zip(chosen, terms, strict=True)
    ]
    if llm is None or not s.llm or llm.name == "offline":
        return offline

    def one(i: int) -> tuple[Text, Usage]:
        community, own = chosen[i], Usage()
        before = previous.get(insight_id(community.members))
        unchanged = before and before.get("members_sha") == members_sha(community.members, nodes)
        if unchanged and before and before["synthesis"].get("method") == llm.name:  # no new call
            return Text(before["label"], before["summary"], offline[i].terms, before["synthesis"]), own
        text = llm_text(llm, community, offline[i], nodes, s.llm_memories, s.max_summary_chars, own)
        return text, own

    with ThreadPoolExecutor(max_workers=LLM_THREADS, thread_name_prefix="insights-llm") as pool:
        answers = list(pool.map(one, range(len(chosen))))
    for _, own in answers:
        usage.add(own)
    return [text for text, _ in answers]


def _record(
    projection: Projection, c: Community, text: Text, before: dict[str, Any] | None, now: float
) -> dict[str, Any]:
    nodes = projection.nodes
    events: dict[str, None] = {}
    for m in c.members:
        events.update(dict.fromkeys(nodes[m].source_event_ids))
    times = [nodes[m].valid_from for m in c.members]
    return {
        "insight_id": insight_id(c.members),
        "tenant_id": projection.tenant_id,
        "label": text.label,
        "summary": text.summary,
        "terms": text.terms,
        "score": round(c.pagerank_mass, 6),
        "density": round(c.density, 6),
        "size": c.size,
        "member_ids": list(c.members),
        "anchor_ids": list(c.anchors(3)),
        "source_event_ids": list(events),
        "stream_ids": sorted({nodes[m].stream_id for m in c.members}),
        "first_at": min(times),
        "last_at": max(times),
        "members_sha": members_sha(c.members, nodes),
        "synthesis": text.synthesis,
        "generation": projection.generation,
        "created_at": before["created_at"] if before else now,
        "computed_at": now,
    }
