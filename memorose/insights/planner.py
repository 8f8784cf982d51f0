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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from memorose import codec, commands
from memorose.config import InsightSettings
from memorose.insights.communities import Analysis, Community, analyze, maintained
from memorose.insights.projection import Node, Projection, ProjectionCache
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
    #: Communities whose text was written in this pass (the others kept their stored text).
    synthesised: int = 0


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
    analysis: Analysis | None = None,
) -> InsightPlan:
    """The command for one pass. ``stored`` is the tenant record (its insight digest),
    ``previous`` the insights stored now, by id; ``analysis`` of ``projection`` (default:
    a full pass)."""
    if analysis is None:
        analysis = analyze(projection, settings.resolution, settings.seed)
    chosen = sorted(
        analysis.insight_communities(settings.min_community_size),
        key=lambda c: (-c.pagerank_mass, c.index),
    )[: settings.max_insights]
    nodes = projection.nodes
    all_terms: list[list[str]] = []

    def terms(c: Community) -> list[str]:
        """c-TF-IDF needs every community: computed once, and only if some text is new."""
        if not all_terms:
            members = [c.members for c in analysis.communities]
            cache = projection.memo.setdefault("terms", {})
            shas = [members_sha(m, nodes) for m in members]
            all_terms.extend(distinctive_terms(members, nodes, cache=cache, cache_keys=shas))
        return all_terms[c.index]

    usage = Usage()
    texts = _texts(chosen, terms, nodes, settings, previous, llm, usage)
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
    synthesised = sum(1 for t in texts if t.fresh)
    return InsightPlan(command, records, changed, analysis, usage, synthesised)


def _texts(
    chosen: list[Community],
    terms: Callable[[Community], list[str]],
    nodes: dict[str, Node],
    s: InsightSettings,
    previous: dict[str, dict[str, Any]],
    llm: LLMProvider | None,
    usage: Usage,
) -> list[Text]:
    offline = [
        _kept(c, nodes, previous, "offline")
        or offline_text(c, terms(c), nodes, s.summary_memories, s.max_summary_chars)
        for c in chosen
    ]
    if llm is None or not s.llm or llm.name == "offline":
        return offline

    def one(i: int) -> tuple[Text, Usage]:
        community, own = chosen[i], Usage()
        before = previous.get(insight_id(community.members))
        unchanged = before and before.get("members_sha") == members_sha(community.members, nodes)
        if unchanged and before and before["synthesis"].get("method") == llm.name:  # no new call
            return Text(before["label"], before["summary"], offline[i].terms, before["synthesis"], False), own
        text = llm_text(llm, community, offline[i], nodes, s.llm_memories, s.max_summary_chars, own)
        return text, own

    with ThreadPoolExecutor(max_workers=LLM_THREADS, thread_name_prefix="insights-llm") as pool:
        answers = list(pool.map(one, range(len(chosen))))
    for _, own in answers:
        usage.add(own)
    return [text for text, _ in answers]


def _kept(
    community: Community, nodes: dict[str, Node], previous: dict[str, dict[str, Any]], method: str
) -> Text | None:
    """The stored text of an unchanged community (same members, same versions) written by
    ``method``: only communities that changed are synthesised again."""
    before = previous.get(insight_id(community.members))
    if before is None or before.get("members_sha") != members_sha(community.members, nodes):
        return None
    if before["synthesis"].get("method") != method or "fallback" in before["synthesis"]:
        return None
    return Text(before["label"], before["summary"], list(before["terms"]), before["synthesis"], False)


def current_analysis(
    cache: ProjectionCache, tenant_id: str, settings: InsightSettings
) -> tuple[Projection, Analysis]:
    """The tenant's projection and its analysis, maintained incrementally between passes
    (``communities.maintained``); serialised per tenant."""
    graph = cache.tenant(tenant_id)
    with graph.lock:
        projection = cache.refresh(graph)
        analysis = maintained(
            graph,
            projection,
            settings.resolution,
            settings.seed,
            full_pass_share=settings.full_pass_share,
            max_frontier_share=settings.max_frontier_share,
        )
    return projection, analysis


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
