"""Per-tenant timeline of memories (stream, valid time), for finding a memory's neighbours.

In a conversation a statement often only makes sense next to the one before it ("They were
awestruck" answers "how did the kids like the memorial?"). Retrieval therefore looks at the
memories just before and after a strong match. RocksDB has no index by valid time, so this is
a derived in-memory structure, rebuilt lazily when the tenant's counters move (new memories,
deletions, consolidation). A stale entry is harmless: candidates are re-read and re-checked
(``is_searchable``) before they are ranked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from memorose.storage.indexer import is_searchable
from memorose.storage.reader import StateReader

MAX_TENANTS = 256  # cached timelines (least recently used are dropped)


@dataclass(frozen=True)
class TenantTimeline:
    """One tenant's timeline as built at one version (immutable: shared by queries)."""

    version: tuple[int, int, int]
    order: list[tuple[str, float, str]]  # (stream, valid_from, memory id), sorted
    position: dict[str, int]

    def neighbours(self, memory_id: str, span: int, max_gap_s: float) -> list[tuple[str, int]]:
        """(memory id, signed distance) of up to ``span`` memories on each side, same stream,
        each within ``max_gap_s`` of the previous one (the same episode)."""
        index = self.position.get(memory_id)
        if index is None:
            return []
        stream, _, _ = self.order[index]
        out: list[tuple[str, int]] = []
        for step in (-1, 1):
            prev_time = self.order[index][1]
            for distance in range(1, span + 1):
                j = index + step * distance
                if not 0 <= j < len(self.order):
                    break
                other_stream, valid_from, other_id = self.order[j]
                if other_stream != stream or abs(valid_from - prev_time) > max_gap_s:
                    break
                out.append((other_id, step * distance))
                prev_time = valid_from
        return out


class Timeline:
    def __init__(self, reader: StateReader) -> None:
        self.reader = reader
        self._cache: OrderedDict[str, TenantTimeline] = OrderedDict()
        self._lock = threading.Lock()

    def _version(self, tenant_id: str) -> tuple[int, int, int]:
        record = self.reader.tenant_or_empty(tenant_id)
        return int(record["memories"]), int(record["cursor"]), int(record["next_seq"])

    def of(self, tenant_id: str) -> TenantTimeline:
        """The tenant's current timeline (one RocksDB read to check its version): a query
        takes it once and looks up every candidate's neighbours in it."""
        version = self._version(tenant_id)
        with self._lock:
            cached = self._cache.get(tenant_id)
            if cached is not None and cached.version == version:
                self._cache.move_to_end(tenant_id)
                return cached
        order = sorted(
            (m.stream_id, m.valid_from, m.memory_id)
            for m in self.reader.memories(tenant_id)
            if is_searchable(m)
        )
        built = TenantTimeline(version, order, {entry[2]: i for i, entry in enumerate(order)})
        with self._lock:
            self._cache[tenant_id] = built
            self._cache.move_to_end(tenant_id)
            while len(self._cache) > MAX_TENANTS:
                self._cache.popitem(last=False)
        return built

    def neighbours(
        self, tenant_id: str, memory_id: str, span: int, max_gap_s: float
    ) -> list[tuple[str, int]]:
        """``TenantTimeline.neighbours`` in the tenant's current timeline."""
        return self.of(tenant_id).neighbours(memory_id, span, max_gap_s)
