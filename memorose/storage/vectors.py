"""Per-tenant vector search. Never a scan of a shared table.

Small tenants: an exact search over an in-memory float32 matrix of that tenant's vectors
(one matrix-vector product). Tenants past ``ann_threshold`` memories: a LanceDB table of
their own with an IVF_HNSW_SQ index. Both are derived from RocksDB and rebuilt from it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

Hit = tuple[str, float]  # (memory id, cosine similarity)

#: Versions of a tenant's LanceDB table older than this are deleted when it is optimised.
#: The table is a derived index, so its history is useless; LanceDB's default (7 days) left
#: every superseded fragment on disk (3x the live size at 100K vectors, docs/benchmarks.md).
#: Not zero: a search that started on the previous version must still find its files.
KEEP_OLD_VERSIONS = timedelta(seconds=10)


@dataclass
class _Matrix:
    """Rows of one tenant, grown by doubling; deletes swap the last row in."""

    dim: int
    ids: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    data: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.data = np.zeros((0, self.dim), np.float32)

    def upsert(self, memory_id: str, stream_id: str, vector: np.ndarray) -> None:
        row = self.rows.get(memory_id)
        if row is None:
            row = len(self.ids)
            if row >= self.data.shape[0]:
                grown = np.zeros((max(16, row * 2), self.dim), np.float32)
                grown[:row] = self.data[:row]
                self.data = grown
            self.ids.append(memory_id)
            self.streams.append(stream_id)
            self.rows[memory_id] = row
        self.data[row] = vector
        self.streams[row] = stream_id

    def remove(self, memory_id: str) -> None:
        row = self.rows.pop(memory_id, None)
        if row is None:
            return
        last = len(self.ids) - 1
        if row != last:
            moved = self.ids[last]
            self.ids[row], self.streams[row] = moved, self.streams[last]
            self.data[row] = self.data[last]
            self.rows[moved] = row
        self.ids.pop()
        self.streams.pop()

    def search(self, query: np.ndarray, k: int, stream_id: str | None) -> list[Hit]:
        n = len(self.ids)
        if n == 0:
            return []
        scores = self.data[:n] @ query
        if stream_id is not None:
            mask = np.fromiter((s == stream_id for s in self.streams), bool, n)
            scores = np.where(mask, scores, -np.inf)
        k = min(k, n)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]


#: Rows of a tenant's matrix scored per block by ``search_many``: bounds the score matrix
#: (queries x block) and how long one block holds the index lock.
SEARCH_BLOCK_ROWS = 16_384


def _top_in_block(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best scores of every row (unordered)."""
    if scores.shape[1] <= k:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


class VectorIndex:
    def __init__(self, path: Path, *, dim: int, ann_threshold: int) -> None:
        self.path = path
        self.dim = dim
        self.ann_threshold = ann_threshold
        self._matrices: dict[str, _Matrix] = {}
        self._lock = threading.RLock()
        self._db: Any = None  # LanceDB connection, opened on first large tenant
        self._tables: dict[str, object] = {}
        self._unindexed: dict[str, int] = {}

    # -- LanceDB -------------------------------------------------------------------------
    def _lance(self):  # type: ignore[no-untyped-def]
        if self._db is None:
            import lancedb  # heavy import, only once a tenant needs it

            self.path.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(str(self.path))
        return self._db

    @staticmethod
    def _table_name(tenant_id: str) -> str:
        return "tenant_" + tenant_id  # tenant ids are validated: [A-Za-z0-9_.-]

    def open_existing(self) -> None:
        """Reattach tables of large tenants that survived a restart."""
        if not self.path.exists():
            return
        db = self._lance()
        for name in db.table_names():
            if name.startswith("tenant_"):
                self._tables[name[len("tenant_") :]] = db.open_table(name)

    def is_large(self, tenant_id: str) -> bool:
        return tenant_id in self._tables

    def _schema(self) -> pa.Schema:
        return pa.schema(
            [("id", pa.string()), ("stream", pa.string()), ("vector", pa.list_(pa.float32(), self.dim))]
        )

    def _to_arrow(self, ids: list[str], streams: list[str], vectors: np.ndarray) -> pa.Table:
        flat = pa.array(vectors.astype(np.float32).reshape(-1))
        return pa.table(
            {
                "id": pa.array(ids, pa.string()),
                "stream": pa.array(streams, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
            },
            schema=self._schema(),
        )

    def _promote(self, tenant_id: str) -> None:
        """Move a tenant that outgrew its matrix into its own LanceDB table with an ANN index.

        Builds without the lock (the indexer thread is the only writer, so the matrix does
        not change meanwhile and keeps serving searches); only the swap takes the lock.
        """
        matrix = self._matrices[tenant_id]
        n = len(matrix.ids)
        table = self._lance().create_table(
            self._table_name(tenant_id),
            data=self._to_arrow(matrix.ids, matrix.streams, matrix.data[:n]),
            mode="overwrite",
        )
        self._build_ann(table, n)
        with self._lock:
            self._matrices.pop(tenant_id, None)
            self._tables[tenant_id] = table
            self._unindexed[tenant_id] = 0
        log.info("tenant %s promoted to a LanceDB ANN index (%d vectors)", tenant_id, n)

    @staticmethod
    def _build_ann(table, n: int) -> None:  # type: ignore[no-untyped-def]
        partitions = max(1, int(np.sqrt(n) / 2))
        table.create_index(
            metric="cosine", index_type="IVF_HNSW_SQ", num_partitions=partitions, vector_column_name="vector"
        )

    # -- writes (indexer thread) ---------------------------------------------------------
    def upsert(self, tenant_id: str, ids: list[str], streams: list[str], vectors: np.ndarray) -> None:
        """Insert or replace several vectors of one tenant (batched: LanceDB adds are costly)."""
        if not ids:
            return
        with self._lock:
            table = self._tables.get(tenant_id)
            if table is None:
                matrix = self._matrices.setdefault(tenant_id, _Matrix(self.dim))
                for memory_id, stream_id, vector in zip(ids, streams, vectors, strict=True):
                    matrix.upsert(memory_id, stream_id, vector)
                if len(matrix.ids) <= self.ann_threshold:
                    return
        # LanceDB writes happen outside the lock (single writer; readers see the previous
        # version), so searches of other tenants never wait for them.
        if table is None:
            self._promote(tenant_id)
            return
        quoted = ", ".join(f"'{i}'" for i in ids)  # memory ids are validated
        table.delete(f"id IN ({quoted})")  # type: ignore[attr-defined]
        table.add(self._to_arrow(ids, streams, vectors))  # type: ignore[attr-defined]
        with self._lock:
            self._unindexed[tenant_id] = self._unindexed.get(tenant_id, 0) + len(ids)

    def bulk_load(self, tenant_id: str, ids: list[str], streams: list[str], vectors: np.ndarray) -> None:
        """Replace a tenant's vectors at once (rebuild)."""
        with self._lock:
            self.drop_tenant(tenant_id)
            self.upsert(tenant_id, ids, streams, vectors)

    def remove(self, tenant_id: str, memory_id: str) -> None:
        with self._lock:
            table = self._tables.get(tenant_id)
            if table is not None:
                table.delete(f"id = '{memory_id}'")  # type: ignore[attr-defined]
            elif tenant_id in self._matrices:
                self._matrices[tenant_id].remove(memory_id)

    def drop_tenant(self, tenant_id: str) -> None:
        with self._lock:
            self._matrices.pop(tenant_id, None)
            if self._tables.pop(tenant_id, None) is not None:
                self._lance().drop_table(self._table_name(tenant_id))

    def clear(self) -> None:
        with self._lock:
            self._matrices.clear()
            self._tables.clear()
            self._db = None
            shutil.rmtree(self.path, ignore_errors=True)

    def maintain(self) -> None:
        """Fold vectors added since the ANN index was built into it, once there are enough.

        Runs on the indexer thread, the only writer, and optimises outside the lock: LanceDB
        readers see the previous version meanwhile, whereas holding the lock stalled every
        search of every tenant for the seconds an optimise takes at 100K vectors.
        """
        with self._lock:
            due = [
                (tenant_id, self._tables[tenant_id])
                for tenant_id, pending in self._unindexed.items()
                if pending > 1000 and tenant_id in self._tables
            ]
            for tenant_id, _ in due:
                self._unindexed[tenant_id] = 0
        for _, table in due:
            table.optimize(cleanup_older_than=KEEP_OLD_VERSIONS)  # type: ignore[attr-defined]

    # -- reads ---------------------------------------------------------------------------
    def search(self, tenant_id: str, query: np.ndarray, k: int, *, stream_id: str | None = None) -> list[Hit]:
        with self._lock:
            table = self._tables.get(tenant_id)
            matrix = self._matrices.get(tenant_id)
        if table is not None:
            return self._search_lance(table, query, k, stream_id)
        if matrix is None:
            return []
        with self._lock:
            return matrix.search(query, k, stream_id)

    def search_many(self, tenant_id: str, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """The k nearest memories of each query row: a consolidation batch asks for all its
        facts at once, so a small tenant is scanned once per block of rows (one matrix
        product) instead of once per fact. The lock is taken per block, so searches of
        other callers interleave; a row moved between blocks can at worst name a
        neighbour twice or miss one (callers re-read the records)."""
        with self._lock:
            table = self._tables.get(tenant_id)
            matrix = self._matrices.get(tenant_id)
        if table is not None:
            return [self._search_lance(table, q, k, None) for q in queries]
        if matrix is None or k <= 0 or len(queries) == 0:
            return [[] for _ in queries]
        queries_t = np.ascontiguousarray(queries, dtype=np.float32).T
        found: list[list[Hit]] = [[] for _ in queries]
        start = 0
        while True:
            with self._lock:
                stop = min(len(matrix.ids), start + SEARCH_BLOCK_ROWS)
                if start >= stop:
                    break
                scores = (matrix.data[start:stop] @ queries_t).T  # queries x rows
                top = _top_in_block(scores, k)
                ids = matrix.ids
                for row, columns in enumerate(top):
                    found[row].extend((ids[start + c], float(scores[row, c])) for c in columns)
            start = stop
        return [sorted(hits, key=lambda h: -h[1])[:k] for hits in found]

    def _search_lance(self, table, query: np.ndarray, k: int, stream_id: str | None) -> list[Hit]:  # type: ignore[no-untyped-def]
        builder = table.search(query.astype(np.float32)).distance_type("cosine").limit(k)
        builder = builder.nprobes(20).ef(max(64, k * 4))
        if stream_id is not None:
            builder = builder.where(f"stream = '{stream_id}'", prefilter=True)
        rows = builder.to_arrow()
        ids = rows.column("id").to_pylist()
        distances = rows.column("_distance").to_pylist()
        return [(i, 1.0 - float(d)) for i, d in zip(ids, distances, strict=True)]

    def count(self, tenant_id: str) -> int:
        with self._lock:
            table = self._tables.get(tenant_id)
            if table is not None:
                return int(table.count_rows())  # type: ignore[attr-defined]
            matrix = self._matrices.get(tenant_id)
            return len(matrix.ids) if matrix else 0

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(m.data.nbytes for m in self._matrices.values())
