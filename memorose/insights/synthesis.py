"""One insight per community: a label and a summary.

Offline (the default, and the fallback): the label is the community's most distinctive
terms by c-TF-IDF (each community is one "document"; a term weighs its share of the
community's memories times log(1 + average terms per community / its frequency across all
communities), so words every topic uses, like the speakers' names, sink). The summary
quotes the community's most central memories (PageRank), each through the extractive
compressor so names, numbers and dates survive, after the community's time span.

With an LLM (Gemini): the provider writes the label and summary from the community's most
central memories; if it fails, the offline text is used and the fallback recorded.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from memorose.consolidation.compression import compress
from memorose.consolidation.text import split_speaker
from memorose.insights.communities import Community
from memorose.insights.projection import Node
from memorose.providers.llm.base import LLMError, LLMProvider, Usage
from memorose.retrieval.text import STOPWORDS, stem

_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)
LABEL_TERMS = 3
KEPT_TERMS = 8


@dataclass
class Text:
    label: str
    summary: str
    terms: list[str]
    synthesis: dict[str, Any] = field(default_factory=dict)
    #: False for a stored text kept because its community did not change.
    fresh: bool = True


def _terms(content: str) -> dict[str, str]:
    """Stemmed content terms of a memory -> the surface form seen (speaker prefix removed)."""
    _, body = split_speaker(content)
    out: dict[str, str] = {}
    for token in _TOKEN_RE.findall(body):
        lower = token.lower()
        if len(lower) < 3 or lower in STOPWORDS or lower.isdigit() or len(lower) > 40:
            continue
        out.setdefault(stem(lower), token)
    return out


#: A community's term counts: stemmed term -> members using it, and its surface forms.
TermCounts = tuple[Counter[str], dict[str, Counter[str]]]


def count_terms(members: Sequence[str], nodes: dict[str, Node]) -> TermCounts:
    counter: Counter[str] = Counter()
    forms: dict[str, Counter[str]] = {}
    for memory_id in members:
        for key, surface in _terms(nodes[memory_id].content).items():
            counter[key] += 1
            forms.setdefault(key, Counter())[surface] += 1
    return counter, forms


def distinctive_terms(
    communities: Sequence[Sequence[str]],
    nodes: dict[str, Node],
    top: int = KEPT_TERMS,
    *,
    cache: dict[str, TermCounts] | None = None,
    cache_keys: Sequence[str] | None = None,
) -> list[list[str]]:
    """c-TF-IDF: the ``top`` most distinctive terms (display forms) of each community.

    With ``cache`` and ``cache_keys`` (one key per community that changes whenever its
    members or their versions do), a community's counts are reused from the last call: a
    pass after a small change reads the text of the changed communities only. The cache is
    left holding this call's communities."""
    counted: list[TermCounts] = []
    fresh: dict[str, TermCounts] = {}
    for i, members in enumerate(communities):
        key = cache_keys[i] if cache is not None and cache_keys is not None else None
        counts = cache.get(key) if cache is not None and key is not None else None
        if counts is None:
            counts = count_terms(members, nodes)
        if key is not None:
            fresh[key] = counts
        counted.append(counts)
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    total: Counter[str] = Counter()
    forms: dict[str, Counter[str]] = {}
    for counter, own in counted:
        total.update(counter)
        for key, surfaces in own.items():
            forms.setdefault(key, Counter()).update(surfaces)
    average = sum(total.values()) / max(1, len(counted))
    out = []
    for members, (counter, _) in zip(communities, counted, strict=True):
        size = max(1, len(members))
        scored = sorted(
            counter,
            key=lambda t: (-(counter[t] / size) * math.log(1 + average / total[t]), t),
        )
        out.append([_display(forms[t]) for t in scored[:top]])
    return out


def _display(forms: Counter[str]) -> str:
    """The most frequent surface form; lowercase unless the term is always capitalised."""
    form, _ = min(forms.items(), key=lambda item: (-item[1], item[0]))
    return form if all(f[:1].isupper() for f in forms) else form.lower()


def day(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return f"{moment.day} {moment:%B %Y}"


def offline_text(
    community: Community, terms: list[str], nodes: dict[str, Node], quoted: int, max_chars: int
) -> Text:
    label = ", ".join(terms[:LABEL_TERMS]) or "related memories"
    times = [nodes[m].valid_from for m in community.members]
    first, last = day(min(times)), day(max(times))
    span = first if first == last else f"{first} to {last}"
    head = f"{label} ({community.size} memories, {span}):"
    anchors = community.anchors(quoted)
    budget = max(40, (max_chars - len(head)) // max(1, len(anchors)) - 1)
    quotes = [_quote(nodes[m].content, budget) for m in anchors]
    summary = " ".join([head, *quotes])[:max_chars]
    return Text(label, summary, terms, {"method": "offline"})


def _quote(content: str, budget: int) -> str:
    text = compress(content, None, budget) or " ".join(content.split())
    if len(text) > budget:
        text = text[: budget - 1].rsplit(" ", 1)[0] + "…"
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def llm_text(
    llm: LLMProvider,
    community: Community,
    offline: Text,
    nodes: dict[str, Node],
    shown: int,
    max_chars: int,
    usage: Usage,
) -> Text:
    """The provider's label and summary, or the offline text with the failure recorded."""
    memories = [(nodes[m].content, nodes[m].valid_from) for m in community.anchors(shown)]
    try:
        label, summary = llm.summarize_community(memories, offline.terms, usage)
    except LLMError as exc:
        usage.fallbacks[exc.kind] += 1
        synthesis = {"method": "offline", "fallback": exc.kind, "failed": llm.name}
        return Text(offline.label, offline.summary, offline.terms, synthesis)
    return Text(
        label.strip()[:120] or offline.label,
        summary.strip()[:max_chars],
        offline.terms,
        {"method": llm.name, "memories_shown": len(memories)},
    )
