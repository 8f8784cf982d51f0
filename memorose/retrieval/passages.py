"""Passages: ranked hits that sit next to each other in a conversation become one result.

The re-ranker deliberately lifts a strong match's neighbours (a reply is understood through
what it answers), so the best results often come in runs of adjacent memories of one
episode. Returned one by one they fill the ``top_k`` slots with one exchange and push out
other episodes, which questions spanning several sessions need. Grouped, a run is read as
the excerpt it is ("Maria: What other classes have you done? / John: Weight training ...")
and the slots go further.

A passage is a contiguous stretch of at most ``max_span`` memories of one stream and
episode (timeline neighbours, ``timeline.py``), built greedily in rank order over the first
``depth`` hits: a hit that matches the query's words and scores at least ``min_ratio`` of a
passage's best joins it if the stretch stays within the span, else it starts a new one.
Memories between two grouped hits are filled in, so a passage never skips a turn. Its result is that of its
best hit, with the ``content`` of every member in time order, the union of their
``source_event_ids`` and ``passage``: the member ids. A passage of one memory is the memory's
plain result, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memorose.retrieval.rerank import Candidate
from memorose.storage.fulltext import KIND_MEMORY

#: Memories per passage by default: a question and its answer plus one turn around them.
MAX_SPAN = 3
#: A hit joins a passage only if it matches the query's words (or its feedback terms) and
#: scores at least this fraction of the passage's best hit: neighbours lifted only by their
#: context would otherwise glue unrelated memories of the same episode to a match.
MIN_RATIO = 0.5


@dataclass
class Passage:
    #: memory id -> offset from the first hit, for the memories around it within reach.
    window: dict[str, int]
    hits: dict[int, Candidate] = field(default_factory=dict)
    fillers: dict[int, Candidate] = field(default_factory=dict)

    @property
    def best(self) -> Candidate:
        return self.hits[min(self.hits, key=lambda o: (-self.hits[o].score, o))]

    def extent(self, offset: int) -> int:
        """Memories the passage would cover with ``offset`` added."""
        offsets = [*self.hits, offset]
        return max(offsets) - min(offsets) + 1

    def members(self) -> list[Candidate]:
        merged = {**self.fillers, **self.hits}
        return [merged[o] for o in sorted(merged)]


def group(
    ranked: list[Candidate],
    limit: int,
    max_span: int,
    depth: int,
    window_of: Callable[[Candidate], dict[str, int]],
    min_ratio: float = MIN_RATIO,
) -> list[Passage]:
    """The first ``limit`` passages of ``ranked`` (best first). Only the first ``depth`` hits
    may join a passage, so passages do not depend on ``limit`` (``top_k``): a shorter answer
    is a prefix of a longer one. ``window_of(c)``: ids of the memories within ``max_span - 1``
    places of ``c`` in its episode -> signed distance."""
    passages: list[Passage] = []
    for rank, c in enumerate(ranked):
        if len(passages) == limit and rank >= depth:
            break
        memory_id = _memory_id(c)
        if (
            rank < depth
            and max_span > 1
            and memory_id is not None
            and _join(passages, memory_id, c, max_span, min_ratio)
        ):
            continue
        if len(passages) < limit:
            window = window_of(c) if rank < depth and max_span > 1 and memory_id is not None else {}
            passages.append(Passage({**window, **({memory_id: 0} if memory_id else {})}, {0: c}))
    return passages


def _join(passages: list[Passage], memory_id: str, c: Candidate, max_span: int, min_ratio: float) -> bool:
    for p in passages:
        offset = p.window.get(memory_id)
        if offset is None or offset in p.hits or p.extent(offset) > max_span:
            continue
        if c.feature("bm25") > 0 and c.score >= min_ratio * p.best.score:
            p.hits[offset] = c
            return True
    return False


def fill(passages: list[Passage], load_many: Callable[[list[str]], dict[str, Candidate]]) -> None:
    """Load the memories between the hits of each passage (skipped when not admitted), all
    in one ``load_many`` call (memory ids -> the candidates that exist and are admitted)."""
    hits = {c.key for p in passages for c in p.hits.values()}
    wanted: list[tuple[Passage, int, str]] = []
    for p in passages:
        if len(p.hits) < 2:
            continue
        by_offset = {o: m for m, o in p.window.items()}
        for offset in range(min(p.hits) + 1, max(p.hits)):
            if offset not in p.hits and offset in by_offset:
                wanted.append((p, offset, by_offset[offset]))
    if not wanted:
        return
    loaded = load_many(list(dict.fromkeys(memory_id for _, _, memory_id in wanted)))
    for p, offset, memory_id in wanted:
        candidate = loaded.get(memory_id)
        if candidate is not None and candidate.key not in hits:
            p.fillers[offset] = candidate


def result(p: Passage) -> dict[str, Any]:
    best = p.best
    out = {**best.result, "score": round(best.score, 6)}
    members = p.members()
    if len(members) == 1:
        return out
    sources: dict[str, None] = {}
    for m in members:
        sources.update(dict.fromkeys(m.result.get("source_event_ids") or []))
    out["content"] = "\n".join(m.content for m in members)
    out["source_event_ids"] = list(sources)
    out["passage"] = [m.result["id"] for m in members]
    return out


def _memory_id(c: Candidate) -> str | None:
    kind, ref = c.key if isinstance(c.key, tuple) else (None, None)
    return str(ref) if kind == KIND_MEMORY else None
