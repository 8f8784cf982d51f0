"""Graph expansion of retrieval results along memory edges (``graph_depth``).

Direct hits keep their places; neighbours reached through edges are appended after them
(at most ``top_k`` of them), each marked ``via: "graph"`` with its distance and the edge
that reached it, scored parent score x edge weight x 0.5 per hop. Neighbours pass the same
temporal filter as direct hits, so a superseded fact is not brought back by its
``supersedes`` edge unless the request asked for history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memorose.models import Memory
from memorose.storage.reader import StateReader

#: Strongest edges followed from each memory per hop.
MAX_NEIGHBOURS = 8
HOP_DECAY = 0.5


def expand(
    reader: StateReader,
    tenant_id: str,
    results: list[dict[str, Any]],
    depth: int,
    limit: int,
    admit: Callable[[Memory], bool],
) -> list[dict[str, Any]]:
    seen = {r["id"] for r in results}
    frontier = [(r["id"], float(r.get("score") or 0.0)) for r in results if r.get("layer") == "L1"]
    extra: list[dict[str, Any]] = []
    for hop in range(1, depth + 1):
        reached: list[tuple[str, float]] = []
        for memory_id, score in frontier:
            edges = sorted(reader.edges_of(tenant_id, memory_id), key=lambda e: (-e.weight, e.target))
            for edge in edges[:MAX_NEIGHBOURS]:
                if edge.target in seen:
                    continue
                memory = reader.memory(tenant_id, edge.target)
                if memory is None or not admit(memory):
                    continue
                seen.add(edge.target)
                item_score = score * edge.weight * HOP_DECAY
                item = memory.public()
                item.update(
                    score=round(item_score, 6),
                    via="graph",
                    graph_distance=hop,
                    edge={"from": memory_id, "weight": round(edge.weight, 6), "kinds": sorted(edge.kinds)},
                )
                extra.append(item)
                reached.append((edge.target, item_score))
        frontier = reached
    extra.sort(key=lambda r: (-r["score"], r["id"]))
    return results + extra[:limit]
