"""A tenant's memory graph as a networkx ``Graph``: active L1 memories (current, not
archived) as nodes and their edges (weight = min(1, sum of the edge's kinds)) between them.

Projections are cached per tenant under the tenant's ``graph_gen``: the Raft index of the
last entry that wrote one of its memories or edges (set by the state machine; unique, even
across a tenant's deletion). A pass over a tenant that did not change reuses the graph (and
its analysis) without reading RocksDB.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from memorose import codec
from memorose.storage import keys
from memorose.storage.reader import StateReader


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
    tenant_id: str
    generation: int
    changes: int
    deletes: int
    graph: nx.Graph
    nodes: dict[str, Node]
    #: Derived results cached with the graph (the analysis of a given resolution and seed).
    derived: dict[Any, Any] = field(default_factory=dict)


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


def project(reader: StateReader, tenant_id: str) -> Projection:
    """Read the tenant's graph. Nodes and edges are added in key order, so the same state
    always gives the same graph (Louvain's result depends on insertion order).

    The counters are read first: a change that lands during the scan advances them, so the
    next pass sees a new generation and projects again.
    """
    generation, changes, deletes = graph_generation(reader, tenant_id)
    store = reader.store
    graph: nx.Graph = nx.Graph()
    nodes: dict[str, Node] = {}
    for _, raw in store.scan(keys.tenant_prefix(keys.MEMORY, tenant_id)):
        record = codec.unpack(raw)
        if not is_active(record):
            continue
        node = Node(
            record["memory_id"],
            record["stream_id"],
            record["content"],
            float(record["valid_from"]),
            int(record.get("version", 1)),
            tuple(record["source_event_ids"]),
        )
        nodes[node.memory_id] = node
        graph.add_node(node.memory_id)
    prefix = keys.tenant_prefix(keys.EDGE, tenant_id)
    for key, raw in store.scan(prefix):
        source, _, target = key[len(prefix) :].decode().partition("/")
        if source < target and source in nodes and target in nodes:
            weight = min(1.0, sum(codec.unpack(raw)["kinds"].values()))
            if weight > 0:
                graph.add_edge(source, target, weight=weight)
    return Projection(tenant_id, generation, changes, deletes, graph, nodes)


class ProjectionCache:
    """The latest projection of the most recently used tenants, keyed by generation.

    Bounded by tenants and by memories in all (a 100K-memory graph with its analysis holds
    a few hundred MB): the least recently used go first, the newest always stays.
    """

    def __init__(self, reader: StateReader, max_tenants: int = 8, max_nodes: int = 200_000) -> None:
        self.reader = reader
        self.max_tenants = max_tenants
        self.max_nodes = max_nodes
        self._items: OrderedDict[str, Projection] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, tenant_id: str) -> Projection:
        generation = graph_generation(self.reader, tenant_id)[0]
        with self._lock:
            cached = self._items.get(tenant_id)
            if cached is not None and cached.generation == generation:
                self._items.move_to_end(tenant_id)
                self.hits += 1
                return cached
            self.misses += 1
        projection = project(self.reader, tenant_id)
        with self._lock:
            self._items[tenant_id] = projection
            self._items.move_to_end(tenant_id)
            while len(self._items) > 1 and (
                len(self._items) > self.max_tenants
                or sum(len(p.nodes) for p in self._items.values()) > self.max_nodes
            ):
                self._items.popitem(last=False)
        return projection

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
