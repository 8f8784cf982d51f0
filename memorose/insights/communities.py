"""Communities of a memory graph (python-louvain, fixed seed) with PageRank and centrality.

Louvain's result depends on the random state and on node order; the projection adds nodes
in key order and the seed is fixed, so one graph always gives one partition. Communities
are numbered by size (largest first), ties by their smallest memory id, so numbering does
not depend on Louvain's labels. A community's anchors are its members with the highest
PageRank: the memories the rest of the community points at.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import community as louvain
import networkx as nx

from memorose.insights.projection import Projection


@dataclass(frozen=True)
class Community:
    index: int
    #: Members, highest PageRank first (ties by id).
    members: tuple[str, ...]
    #: The community's share of the graph's PageRank: how central the topic is.
    pagerank_mass: float
    #: Sum of the weights of edges inside the community / number of possible edges.
    density: float

    @property
    def size(self) -> int:
        return len(self.members)

    def anchors(self, n: int) -> tuple[str, ...]:
        return self.members[:n]


@dataclass
class Analysis:
    generation: int
    nodes: int
    edges: int
    modularity: float
    communities: list[Community]
    partition: dict[str, int]
    pagerank: dict[str, float]
    #: Degree centrality (networkx): share of the other memories a memory is linked to.
    centrality: dict[str, float]
    #: Weighted degree (sum of edge weights).
    strength: dict[str, float] = field(default_factory=dict)
    #: Seconds spent in each step (louvain, pagerank, centrality): for benchmarks.
    timings: dict[str, float] = field(default_factory=dict)

    def insight_communities(self, min_size: int) -> list[Community]:
        return [c for c in self.communities if c.size >= min_size]


def analyze(projection: Projection, resolution: float = 1.0, seed: int = 42) -> Analysis:
    """Partition, PageRank and centrality of a projection (cached on it per parameters)."""
    key = ("analysis", resolution, seed)
    cached = projection.derived.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    analysis = _analyze(projection.graph, projection.generation, resolution, seed)
    projection.derived[key] = analysis
    return analysis


def _analyze(graph: nx.Graph, generation: int, resolution: float, seed: int) -> Analysis:
    if graph.number_of_nodes() == 0:
        return Analysis(generation, 0, 0, 0.0, [], {}, {}, {})
    clock = time.perf_counter()
    raw = louvain.best_partition(graph, weight="weight", resolution=resolution, random_state=seed)
    timings = {"louvain": time.perf_counter() - clock}
    clock = time.perf_counter()
    pagerank = nx.pagerank(graph, weight="weight") if graph.number_of_edges() else _uniform(graph)
    timings["pagerank"] = time.perf_counter() - clock
    groups: dict[int, list[str]] = {}
    for memory_id, label in raw.items():
        groups.setdefault(label, []).append(memory_id)
    ordered = sorted(groups.values(), key=lambda members: (-len(members), min(members)))
    communities, partition = [], {}
    for index, members in enumerate(ordered):
        members.sort(key=lambda m: (-pagerank[m], m))
        for m in members:
            partition[m] = index
        mass = sum(pagerank[m] for m in members)
        communities.append(Community(index, tuple(members), mass, _density(graph, members)))
    modularity = louvain.modularity(raw, graph, weight="weight") if graph.number_of_edges() else 0.0
    clock = time.perf_counter()
    centrality = nx.degree_centrality(graph)
    strength = {str(n): float(d) for n, d in graph.degree(weight="weight")}
    timings["centrality"] = time.perf_counter() - clock
    return Analysis(
        generation,
        graph.number_of_nodes(),
        graph.number_of_edges(),
        float(modularity),
        communities,
        partition,
        pagerank,
        centrality,
        strength,
        timings,
    )


def _uniform(graph: nx.Graph) -> dict[str, float]:
    share = 1.0 / graph.number_of_nodes()
    return dict.fromkeys(graph.nodes, share)


def _density(graph: nx.Graph, members: list[str]) -> float:
    n = len(members)
    if n < 2:
        return 0.0
    inside = graph.subgraph(members)
    total = sum(w for _, _, w in inside.edges(data="weight", default=0.0))
    return float(total / (n * (n - 1) / 2))
