"""Communities of a memory graph (Louvain, fixed seed) with PageRank and centrality.

Two ways to the partition (docs/insights.md, "Incremental communities"):

- **full**: igraph's Louvain (``community_multilevel``, the same algorithm as
  python-louvain, in C: 10-15x faster at 100K memories, the same modularity) from
  singletons, its random number generator seeded for the call. The projection orders nodes
  by key and the seed is fixed, so one graph always gives one partition.
- **incremental**: the previous partition is kept; the memories that changed (new or
  removed memories and both ends of every changed edge: the frontier) are set free,
  every other community is collapsed into one weighted node (its internal weight as a
  self-loop, so modularity is unchanged), and python-louvain's
  ``best_partition(partition=...)`` starts from the previous partition on that small
  graph. Same graph, previous partition and seed: same result.

Communities are numbered by size (largest first), ties by their smallest memory id, so
numbering does not depend on Louvain's labels. A community's anchors are its members with
the highest PageRank: the memories the rest of the community points at. PageRank, degree
centrality and strength are computed on the sparse matrix (numpy), not in Python loops.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from memorose.insights.projection import Projection, TenantGraph, to_networkx

if TYPE_CHECKING:  # scipy.sparse is imported by the first pass (projection.py)
    import scipy.sparse as sp

PAGERANK_ALPHA = 0.85
PAGERANK_TOL = 1e-6
PAGERANK_MAX_ITER = 100
_IGRAPH_RANDOM = threading.Lock()


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
    #: Degree centrality (networkx's definition): share of the other memories a memory is linked to.
    centrality: dict[str, float]
    #: Weighted degree (sum of edge weights).
    strength: dict[str, float] = field(default_factory=dict)
    #: Seconds spent in each step (louvain, pagerank, centrality): for benchmarks.
    timings: dict[str, float] = field(default_factory=dict)
    #: "full" or "incremental".
    method: str = "full"
    #: Memories set free by an incremental pass (0 for a full pass).
    frontier: int = 0
    #: PageRank in ``Projection.ids`` order: the next pass starts its power iteration there.
    pagerank_vector: np.ndarray | None = None

    def insight_communities(self, min_size: int) -> list[Community]:
        return [c for c in self.communities if c.size >= min_size]


def analyze(projection: Projection, resolution: float = 1.0, seed: int = 42) -> Analysis:
    """A full pass: partition, PageRank and centrality, cached on the projection (where
    ``maintained`` already analysed this projection, its result, which may be incremental)."""
    key = ("analysis", resolution, seed)
    cached = projection.derived.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    clock = time.perf_counter()
    labels = full_labels(projection, resolution, seed)
    analysis = _finish(projection, labels, {"louvain": time.perf_counter() - clock}, "full", 0, None)
    projection.derived[key] = analysis
    return analysis


def analyze_incremental(
    projection: Projection,
    before: Analysis,
    touched: set[str],
    resolution: float = 1.0,
    seed: int = 42,
    max_frontier_share: float = 0.3,
) -> Analysis | None:
    """Start from ``before`` (an analysis of an earlier generation of the same tenant);
    None when the frontier is more than ``max_frontier_share`` of the graph (do a full pass)."""
    clock = time.perf_counter()
    found = incremental_labels(projection, before.partition, touched, resolution, seed, max_frontier_share)
    if found is None:
        return None
    labels, frontier = found
    timings = {"louvain": time.perf_counter() - clock}
    return _finish(projection, labels, timings, "incremental", frontier, _aligned(projection, before))


def full_labels(projection: Projection, resolution: float, seed: int) -> np.ndarray:
    """Louvain from singletons (igraph; its generator is process-wide, hence the lock)."""
    import igraph  # imported by the first pass: a node that runs none never holds it
    import scipy.sparse as sp

    n = len(projection.ids)
    if projection.matrix.nnz == 0:
        return np.arange(n, dtype=np.int64)
    upper = sp.triu(projection.matrix, k=1, format="coo")
    graph = igraph.Graph(n=n, edges=np.column_stack([upper.row, upper.col]).tolist(), directed=False)
    graph.es["weight"] = upper.data.tolist()
    with _IGRAPH_RANDOM:
        igraph.set_random_number_generator(random.Random(seed))
        try:
            found = graph.community_multilevel(weights="weight", resolution=resolution)
        finally:
            igraph.set_random_number_generator(random)
    return np.asarray(found.membership, dtype=np.int64)


def incremental_labels(
    projection: Projection,
    previous: dict[str, int],
    touched: set[str],
    resolution: float,
    seed: int,
    max_frontier_share: float,
) -> tuple[np.ndarray, int] | None:
    """Labels per row of the projection, and the size of the frontier (see the module docstring)."""
    import scipy.sparse as sp  # imported by the first pass (projection.py)

    ids, matrix, n = projection.ids, projection.matrix, len(projection.ids)
    prev = np.fromiter((previous.get(m, -1) for m in ids), dtype=np.int64, count=n)
    free = prev < 0  # new memories ...
    index = projection.index
    # ... and every memory whose record or edges changed (both ends of a changed edge;
    # the former neighbours of a removed memory): see ``TenantGraph.refresh``.
    free[np.fromiter((index[m] for m in touched if m in index), dtype=np.int64)] = True
    frontier = int(free.sum())
    if frontier > max_frontier_share * n:
        return None
    if frontier == 0:
        return prev, 0
    kept_labels, kept = np.unique(prev[~free], return_inverse=True)
    blocks = len(kept_labels)
    aggregate = np.empty(n, dtype=np.int64)
    aggregate[~free] = kept
    aggregate[free] = blocks + np.arange(frontier)
    size = blocks + frontier
    membership = sp.csr_array((np.ones(n), (np.arange(n), aggregate)), shape=(n, size))
    collapsed = (membership.T @ matrix @ membership).tocsr()
    collapsed.sum_duplicates()
    collapsed.sort_indices()
    start = dict(enumerate(range(blocks)))
    position = {int(label): i for i, label in enumerate(kept_labels.tolist())}
    fresh = size + int(prev.max(initial=0)) + 1
    for offset, row in enumerate(np.flatnonzero(free).tolist()):
        label = int(prev[row])
        if label < 0:  # a new memory starts alone
            start[blocks + offset], fresh = fresh, fresh + 1
        else:  # back in its old community (a collapsed block, or its old label)
            start[blocks + offset] = position.get(label, size + label)
    graph = to_networkx(list(range(size)), collapsed)
    if graph.number_of_edges() == 0:
        return np.arange(n, dtype=np.int64), frontier
    import community as louvain  # python-louvain, imported by the first incremental pass

    found = louvain.best_partition(
        graph, partition=start, weight="weight", resolution=resolution, random_state=seed
    )
    moved = np.fromiter((found[k] for k in range(size)), dtype=np.int64, count=size)
    return moved[aggregate], frontier


def pagerank(matrix: sp.csr_array, start: np.ndarray | None = None) -> np.ndarray:
    """Weighted PageRank as networkx computes it (alpha 0.85, dangling mass spread evenly,
    l1 tolerance n * 1e-6), from ``start`` when given (the previous pass's vector)."""
    import scipy.sparse as sp

    n = matrix.shape[0]
    if n == 0:
        return np.zeros(0)
    out = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.zeros(n)
    scale[out != 0] = 1.0 / out[out != 0]
    walk = (sp.dia_array((scale, 0), shape=(n, n)) @ matrix).tocsr()
    uniform = np.full(n, 1.0 / n)
    x = uniform.copy() if start is None or start.sum() <= 0 else start / start.sum()
    dangling = out == 0
    for _ in range(PAGERANK_MAX_ITER):
        last = x
        x = PAGERANK_ALPHA * (x @ walk + x[dangling].sum() * uniform) + (1 - PAGERANK_ALPHA) * uniform
        if np.abs(x - last).sum() < n * PAGERANK_TOL:
            break
    return np.asarray(x)


def _aligned(projection: Projection, before: Analysis) -> np.ndarray:
    """The previous PageRank in this projection's row order (new memories: the mean)."""
    mean = 1.0 / max(1, len(projection.ids))
    return np.fromiter(
        (before.pagerank.get(m, mean) for m in projection.ids), dtype=float, count=len(projection.ids)
    )


def _finish(
    projection: Projection,
    labels: np.ndarray,
    timings: dict[str, float],
    method: str,
    frontier: int,
    start: np.ndarray | None,
) -> Analysis:
    ids, matrix, n = projection.ids, projection.matrix, len(projection.ids)
    edges = projection.number_of_edges()
    if n == 0:
        return Analysis(projection.generation, 0, 0, 0.0, [], {}, {}, {}, {}, timings, method, frontier)
    clock = time.perf_counter()
    ranks = pagerank(matrix, start) if edges else np.full(n, 1.0 / n)
    timings["pagerank"] = time.perf_counter() - clock
    clock = time.perf_counter()
    _, dense = np.unique(labels, return_inverse=True)
    sizes = np.bincount(dense)
    first = np.full(len(sizes), n, dtype=np.int64)
    np.minimum.at(first, dense, np.arange(n))
    order = np.lexsort((first, -sizes))  # largest first, ties by smallest member id
    number = np.empty(len(sizes), dtype=np.int64)
    number[order] = np.arange(len(sizes))
    community = number[dense]
    strength = np.asarray(matrix.sum(axis=1)).ravel()
    coo = matrix.tocoo()
    inside = community[coo.row] == community[coo.col]
    internal = np.bincount(community[coo.row[inside]], weights=coo.data[inside], minlength=len(sizes)) / 2
    degree = np.bincount(community, weights=strength, minlength=len(sizes))
    total = strength.sum() / 2
    modularity = float(np.sum(internal / total - (degree / (2 * total)) ** 2)) if total > 0 else 0.0
    mass = np.bincount(community, weights=ranks, minlength=len(sizes))
    id_order = np.arange(n)  # ids are sorted, so the row number orders ties by id
    rows = np.lexsort((id_order, -ranks, community))
    bounds = np.searchsorted(community[rows], np.arange(len(sizes) + 1))
    communities = []
    for index in range(len(sizes)):
        members = tuple(ids[r] for r in rows[bounds[index] : bounds[index + 1]].tolist())
        count = len(members)
        density = float(internal[index] / (count * (count - 1) / 2)) if count > 1 else 0.0
        communities.append(Community(index, members, float(mass[index]), density))
    degrees = np.diff(matrix.indptr)
    centrality = degrees / (n - 1) if n > 1 else np.ones(n)
    timings["centrality"] = time.perf_counter() - clock
    return Analysis(
        projection.generation,
        n,
        edges,
        modularity,
        communities,
        dict(zip(ids, community.tolist(), strict=True)),
        dict(zip(ids, ranks.tolist(), strict=True)),
        dict(zip(ids, centrality.tolist(), strict=True)),
        dict(zip(ids, strength.tolist(), strict=True)),
        timings,
        method,
        frontier,
        ranks,
    )


def maintained(
    graph: TenantGraph,
    projection: Projection,
    resolution: float,
    seed: int,
    *,
    full_pass_share: float,
    max_frontier_share: float,
) -> Analysis:
    """The analysis of ``projection`` (the current one of ``graph``; call with ``graph.lock``
    held): incremental from the last analysis where one exists with the same parameters and
    the memories changed since the last full pass are under ``full_pass_share`` of the graph;
    a full pass otherwise."""
    key = ("analysis", resolution, seed)
    cached = projection.derived.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    last = graph.memo.get(key)
    touched, graph.unanalysed = graph.unanalysed, set()
    analysis = None
    if last is not None and touched is not None:
        before, since_full = last
        since_full += len(touched)
        if since_full <= full_pass_share * max(1, len(projection.ids)):
            analysis = analyze_incremental(projection, before, touched, resolution, seed, max_frontier_share)
    if analysis is None:
        analysis, since_full = analyze(projection, resolution, seed), 0
    projection.derived[key] = analysis
    graph.memo[key] = (analysis, since_full)
    return analysis
