"""A tenant's memory graph: active L1 memories (current, not archived) as nodes and their
edges (weight = min(1, sum of the edge's kinds)) between them, as a symmetric scipy CSR
matrix over the memory ids in key order (a networkx ``Graph`` is built on demand).

``TenantGraph`` keeps one tenant's graph and refreshes it by difference: every pass still
reads the tenant's memory and edge keys (the state machine keeps no per-edge change feed),
but only records whose bytes changed are decoded, so a pass after a small change costs a
RocksDB scan, not a rebuild. It also reports which memories changed (``touched``): the
frontier of an incremental community pass.

Projections are cached per tenant under the tenant's ``graph_gen``: the Raft index of the
last entry that wrote one of its memories or edges (set by the state machine; unique, even
across a tenant's deletion). A pass over a tenant that did not change reuses the graph (and
its analysis) without reading RocksDB.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from memorose import codec
from memorose.storage import keys
from memorose.storage.reader import StateReader

if TYPE_CHECKING:  # networkx (~20 MiB resident) and scipy.sparse (~22 MiB) are imported
    import networkx as nx  # by the first pass, not at start
    import scipy.sparse as sp


@dataclass(frozen=True)
class Node:
    """What synthesis needs of a memory (no embedding: the graph already says who is near)."""

    memory_id: str
    stream_id: str
    content: str
    valid_from: float
    version: int
    source_event_ids: tuple[str, ...]


@dataclass
class Projection:
    """One generation of a tenant's graph; never changed once built."""

    tenant_id: str
    generation: int
    changes: int
    deletes: int
    #: Active memories in key order; row ``i`` of ``matrix`` is ``ids[i]``.
    ids: list[str]
    #: Symmetric weighted adjacency (float64 CSR, sorted indices, no self-loops).
    matrix: sp.csr_array
    nodes: dict[str, Node]
    #: Memories whose record or edges changed since the previous projection of the same
    #: ``TenantGraph`` (None: no previous one; everything is new).
    touched: set[str] | None = None
    #: Derived results cached with the graph (the analysis of a given resolution and seed).
    derived: dict[Any, Any] = field(default_factory=dict)
    #: What passes over later generations of the same tenant reuse (``TenantGraph.memo``).
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def index(self) -> dict[str, int]:
        cached = self.derived.get("index")
        if cached is None:
            cached = self.derived["index"] = {m: i for i, m in enumerate(self.ids)}
        return cached  # type: ignore[no-any-return]

    @property
    def graph(self) -> nx.Graph:
        """The networkx graph (nodes in key order, edges row by row): built on first use."""
        cached = self.derived.get("graph")
        if cached is None:
            cached = self.derived["graph"] = to_networkx(self.ids, self.matrix)
        return cached  # type: ignore[no-any-return]

    def number_of_edges(self) -> int:
        return int(self.matrix.nnz // 2)


def to_networkx(labels: list[Any], matrix: sp.csr_array) -> nx.Graph:
    """An undirected graph of the upper triangle of a symmetric matrix (diagonal entries
    become self-loops of half the entry, so weighted degrees equal the row sums)."""
    import networkx as nx

    graph: nx.Graph = nx.Graph()
    graph.add_nodes_from(labels)
    coo = matrix.tocoo()
    rows, cols, weights = coo.row.tolist(), coo.col.tolist(), coo.data.tolist()
    graph.add_weighted_edges_from(
        (labels[r], labels[c], w if r != c else w / 2)
        for r, c, w in zip(rows, cols, weights, strict=True)
        if r <= c
    )
    return graph


def graph_generation(reader: StateReader, tenant_id: str) -> tuple[int, int, int]:
    """(graph_gen, graph_changes, deletes) of a tenant."""
    record = reader.tenant_or_empty(tenant_id)
    return (
        int(record.get("graph_gen", 0)),
        int(record.get("graph_changes", 0)),
        int(record.get("deletes", 0)),
    )


def is_active(record: dict[str, Any]) -> bool:
    return not record.get("archived") and record.get("valid_to") is None and not record.get("superseded_by")


def _node(record: dict[str, Any]) -> Node:
    return Node(
        record["memory_id"],
        record["stream_id"],
        record["content"],
        float(record["valid_from"]),
        int(record.get("version", 1)),
        tuple(record["source_event_ids"]),
    )


def _edge_weight(raw: bytes) -> float:
    return min(1.0, sum(codec.unpack(raw)["kinds"].values()))


class TenantGraph:
    """One tenant's graph, refreshed from RocksDB by difference (see the module docstring).

    Memories are compared by the hash of their stored bytes, edges by the hash of each
    source's block of edge keys (edges are keyed source/target, so a source's edges are
    contiguous). A colliding 64-bit hash would hide one change until the record changes
    again or the graph is rebuilt; ``ProjectionCache`` rebuilds on eviction and restart.
    """

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        #: Held while refreshing or analysing: both read and write the state below.
        self.lock = threading.Lock()
        self.projection: Projection | None = None
        self.nodes: dict[str, Node] = {}
        #: Every stored edge with a positive weight, by source (active or not): target
        #: numbers (``_number``) and weights, as arrays, so the matrix is built in numpy.
        self.out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        #: A number for every memory id seen (never reused while this object lives).
        self._number: dict[str, int] = {}
        self._names: list[str] = []
        self._memory_hash: dict[str, int] = {}
        self._block_hash: dict[str, int] = {}
        #: What later passes need of earlier ones (the analysis keeps its partition here).
        self.memo: dict[Any, Any] = {}
        #: Memories touched since the last analysis took them (None: unknown, e.g. the
        #: first read; the next analysis is then a full pass).
        self.unanalysed: set[str] | None = None

    def refresh(self, reader: StateReader) -> Projection:
        """The projection of the tenant's current generation (call with ``lock`` held).

        The counters are read first: a change that lands during the scan advances them, so
        the next pass sees a new generation and reads again.
        """
        generation, changes, deletes = graph_generation(reader, self.tenant_id)
        if self.projection is not None and self.projection.generation == generation:
            return self.projection
        touched = self._refresh_memories(reader)
        touched |= self._refresh_edges(reader)
        for memory_id in list(touched):  # an archived memory's edges stay: its neighbours moved too
            if memory_id not in self.nodes:
                touched.update(self._targets(memory_id))
        ids = sorted(self.nodes)
        matrix = self._matrix(ids)
        first = self.projection is None
        if not first and self.unanalysed is not None:
            self.unanalysed |= touched
        self.projection = Projection(
            self.tenant_id,
            generation,
            changes,
            deletes,
            ids,
            matrix,
            dict(self.nodes),
            None if first else touched,
            memo=self.memo,
        )
        return self.projection

    def _refresh_memories(self, reader: StateReader) -> set[str]:
        touched: set[str] = set()
        prefix = keys.tenant_prefix(keys.MEMORY, self.tenant_id)
        skip = len(prefix)
        seen: set[str] = set()
        hashes = self._memory_hash
        for key, raw in reader.store.scan(prefix):
            memory_id = key[skip:].decode()
            seen.add(memory_id)
            digest = hash(raw)
            if hashes.get(memory_id) == digest:
                continue
            hashes[memory_id] = digest
            record = codec.unpack(raw)
            node = _node(record) if is_active(record) else None
            if node != self.nodes.get(memory_id):
                touched.add(memory_id)
                if node is None:
                    del self.nodes[memory_id]
                else:
                    self.nodes[memory_id] = node
        for memory_id in set(hashes) - seen:
            del hashes[memory_id]
            if self.nodes.pop(memory_id, None) is not None:
                touched.add(memory_id)
        return touched

    def _refresh_edges(self, reader: StateReader) -> set[str]:
        touched: set[str] = set()
        prefix = keys.tenant_prefix(keys.EDGE, self.tenant_id)
        skip = len(prefix)
        seen: set[str] = set()
        source: bytes | None = None
        block: list[bytes] = []
        for key, raw in reader.store.scan(prefix):
            rest = key[skip:]
            this = rest[: rest.index(b"/")]
            if this != source:
                if source is not None:
                    self._apply_block(source.decode(), block, seen, touched)
                source, block = this, []
            block.append(rest)
            block.append(raw)
        if source is not None:
            self._apply_block(source.decode(), block, seen, touched)
        for gone in set(self._block_hash) - seen:
            del self._block_hash[gone]
            touched.add(gone)
            touched.update(self._targets(gone))
            self.out.pop(gone, None)
        return touched

    def _targets(self, source: str) -> dict[str, float]:
        numbers, weights = self.out.get(source, _NO_EDGES)
        names = self._names
        return {names[t]: w for t, w in zip(numbers.tolist(), weights.tolist(), strict=True)}

    def _numbered(self, memory_id: str) -> int:
        number = self._number.get(memory_id)
        if number is None:
            number = self._number[memory_id] = len(self._names)
            self._names.append(memory_id)
        return number

    def _apply_block(self, source: str, block: list[bytes], seen: set[str], touched: set[str]) -> None:
        seen.add(source)
        digest = hash(tuple(block))
        if self._block_hash.get(source) == digest:
            return
        self._block_hash[source] = digest
        start = len(source) + 1
        targets = {}
        for i in range(0, len(block), 2):
            weight = _edge_weight(block[i + 1])
            if weight > 0:
                targets[block[i][start:].decode()] = weight
        before = self._targets(source)
        changed = {t for t in before.keys() | targets.keys() if before.get(t) != targets.get(t)}
        if changed:
            touched.add(source)
            touched.update(changed)
        if targets:
            self._numbered(source)
            numbers = np.fromiter((self._numbered(t) for t in targets), dtype=np.int64, count=len(targets))
            self.out[source] = (numbers, np.fromiter(targets.values(), dtype=float, count=len(targets)))
        else:
            self.out.pop(source, None)

    def _matrix(self, ids: list[str]) -> sp.csr_array:
        """Pairs once (source < target, the record the original projection used), both
        memories active, mirrored into a symmetric matrix. Rows are positions in ``ids``
        (sorted), so source < target is a comparison of positions."""
        import scipy.sparse as sp

        n = len(ids)
        if not self.out:
            return sp.csr_array((n, n))
        # Number every id first: a memory with no edge yet gets its number here, and the
        # position table must cover it (sized before, it was one short: IndexError, a 500).
        numbers = np.fromiter((self._numbered(m) for m in ids), dtype=np.int64, count=n)
        position = np.full(len(self._names), -1, dtype=np.int64)
        position[numbers] = np.arange(n)
        blocks = list(self.out.items())
        sources = np.fromiter((self._number[s] for s, _ in blocks), dtype=np.int64, count=len(blocks))
        lengths = np.fromiter((len(t) for _, (t, _) in blocks), dtype=np.int64, count=len(blocks))
        rows = position[np.repeat(sources, lengths)]
        cols = position[np.concatenate([t for _, (t, _) in blocks])]
        weights = np.concatenate([w for _, (_, w) in blocks])
        keep = (rows >= 0) & (cols >= 0) & (rows < cols)
        r, c, w = rows[keep], cols[keep], weights[keep]
        both = (np.concatenate([r, c]), np.concatenate([c, r]))
        matrix = sp.csr_array((np.concatenate([w, w]), both), shape=(n, n))
        matrix.sort_indices()
        return matrix


_NO_EDGES = (np.zeros(0, dtype=np.int64), np.zeros(0))


def project(reader: StateReader, tenant_id: str) -> Projection:
    """Read the tenant's graph from scratch. Nodes are in key order, so the same state
    always gives the same graph (Louvain's result depends on insertion order)."""
    graph = TenantGraph(tenant_id)
    return graph.refresh(reader)


class ProjectionCache:
    """The graphs of the most recently used tenants, refreshed by difference.

    Bounded by tenants and by memories in all (a 100K-memory graph with its analysis holds
    a few hundred MB): the least recently used go first, the newest always stays. An
    evicted tenant is read from scratch next time (and its next analysis is a full pass).
    """

    def __init__(self, reader: StateReader, max_tenants: int = 8, max_nodes: int = 200_000) -> None:
        self.reader = reader
        self.max_tenants = max_tenants
        self.max_nodes = max_nodes
        self._items: OrderedDict[str, TenantGraph] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def tenant(self, tenant_id: str) -> TenantGraph:
        """The tenant's graph holder (created empty if new; its lock guards refreshes)."""
        with self._lock:
            graph = self._items.get(tenant_id)
            if graph is None:
                graph = self._items[tenant_id] = TenantGraph(tenant_id)
            self._items.move_to_end(tenant_id)
            while len(self._items) > 1 and (
                len(self._items) > self.max_tenants
                or sum(len(g.nodes) for g in self._items.values()) > self.max_nodes
            ):
                self._items.popitem(last=False)
            return graph

    def get(self, tenant_id: str) -> Projection:
        graph = self.tenant(tenant_id)
        with graph.lock:
            return self.refresh(graph)

    def refresh(self, graph: TenantGraph) -> Projection:
        """The current projection of ``graph`` (call with ``graph.lock`` held)."""
        before = graph.projection
        projection = graph.refresh(self.reader)
        if projection is before:
            self.hits += 1
        else:
            self.misses += 1
        self.tenant(graph.tenant_id)  # re-check the bounds now that its size is known
        return projection

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
