"""Per-tenant vector search. Never a scan of a shared table.

Small tenants: a scan of an in-memory int8 matrix of that tenant's vectors (SIMD dot
products, outside the lock and the GIL); retrieval's cosine feature reads the same rows,
widened (``held_rows``). Tenants past ``ann_threshold`` memories: a LanceDB table of their
own with an IVF_HNSW_SQ index; retrieval scores its candidates with the vectors of their
records. Both are derived from RocksDB and rebuilt from it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import simsimd

if TYPE_CHECKING:  # pyarrow (~25 MiB resident) is imported only with LanceDB
    import pyarrow as pa

log = logging.getLogger(__name__)

Hit = tuple[str, float]  # (memory id, cosine similarity)

#: Versions of a tenant's LanceDB table older than this are deleted when it is optimised.
#: The table is a derived index, so its history is useless; LanceDB's default (7 days) left
#: every superseded fragment on disk (3x the live size at 100K vectors, docs/benchmarks.md).
#: Not zero: a search that started on the previous version must still find its files.
KEEP_OLD_VERSIONS = timedelta(seconds=10)


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes with one float32 scale per row (``vector ~ codes * scale``):
    a quarter of float32's bytes, cosine error below 0.003 for unit vectors of 384 dims."""
    vectors = np.atleast_2d(np.asarray(vectors, np.float32))
    scales = np.abs(vectors).max(axis=1) / 127.0
    scales[scales == 0] = 1.0
    codes = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales.astype(np.float32)


@dataclass(frozen=True)
class _Snapshot:
    """What one search reads, never changed once published: searches run without the lock
    (and in parallel: the product releases the GIL) while the indexer writes on."""

    ids: list[str]  # only ids[:n] are read; the writer appends beyond n or copies first
    codes: np.ndarray
    scales: np.ndarray
    streams: np.ndarray  # int32 code of each row's stream
    stream_codes: dict[str, int]  # grows only
    n: int

    def approximate(self, query: np.ndarray, stream_id: str | None) -> np.ndarray:
        """int8 dot products of every row with the query (SIMD, no GIL), as cosines."""
        query_codes, query_scale = quantize(query)
        dots = np.asarray(simsimd.cdist(query_codes, self.codes[: self.n], metric="dot"), np.float64)
        # In place: the same products as ``dots * scales * query_scale``, no temporaries.
        scores = dots.reshape(-1)
        scores *= self.scales[: self.n]
        scores *= float(query_scale[0])
        if stream_id is not None:
            code = self.stream_codes.get(stream_id)
            scores[self.streams[: self.n] != code] = -np.inf
        return scores


@dataclass
class _Matrix:
    """Int8 rows of one tenant, grown by a quarter at a time; deletes swap the last row in.

    Copy-on-write towards searches: ``snapshot`` publishes the current arrays; a later
    in-place change of a published row (an update, a delete) first copies them, while
    appends write beyond the published ``n`` and need no copy."""

    dim: int
    ids: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    stream_codes: dict[str, int] = field(default_factory=dict)
    codes: np.ndarray = field(init=False)
    scales: np.ndarray = field(init=False)
    streams: np.ndarray = field(init=False)
    _published: _Snapshot | None = field(default=None, init=False)
    _shared_rows: int = field(default=0, init=False)  # rows a published snapshot may read

    def __post_init__(self) -> None:
        self.codes = np.zeros((0, self.dim), np.int8)
        self.scales = np.zeros(0, np.float32)
        self.streams = np.zeros(0, np.int32)

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` rows: a load into an empty matrix (startup, rebuild) allocates
        what it needs; a matrix that grows keeps growing with slack (amortised copies)."""
        if rows > self.codes.shape[0]:
            self._grow(rows, slack=bool(self.ids))

    def _grow(self, rows: int, slack: bool = True) -> None:
        # A quarter of slack, not doubling: at 100K rows the spare capacity was 50 MB.
        capacity = max(16, rows + rows // 4 if slack else rows)
        codes = np.zeros((capacity, self.dim), np.int8)
        scales = np.ones(capacity, np.float32)
        streams = np.zeros(capacity, np.int32)
        n = len(self.ids)
        codes[:n], scales[:n], streams[:n] = self.codes[:n], self.scales[:n], self.streams[:n]
        self.codes, self.scales, self.streams = codes, scales, streams
        self.ids = list(self.ids)
        self._shared_rows = 0  # fresh arrays and list: nothing published reads them

    def fit(self) -> None:
        """Drop spare capacity beyond a quarter (a load reserved for memories it then
        skipped: archived, or of another model)."""
        n = len(self.ids)
        if self.codes.shape[0] > max(16, n + n // 4):
            self._grow(n, slack=False)

    def _unshare(self) -> None:
        """Copy the arrays (and the id list) a published snapshot still reads."""
        if self._shared_rows:
            self.codes, self.scales, self.streams = self.codes.copy(), self.scales.copy(), self.streams.copy()
            self.ids = list(self.ids)
            self._shared_rows = 0

    def upsert(self, memory_id: str, stream_id: str, codes: np.ndarray, scale: float) -> None:
        row = self.rows.get(memory_id)
        if row is not None and self._unchanged(row, stream_id, codes, scale):
            return  # a re-index that changed no vector (an access count, an importance)
        if row is None:
            row = len(self.ids)
            if row >= self.codes.shape[0]:
                self._grow(row + 1)
            self.ids.append(memory_id)
            self.rows[memory_id] = row
        elif row < self._shared_rows:
            self._unshare()
        self.codes[row], self.scales[row] = codes, scale
        self.streams[row] = self.stream_codes.setdefault(stream_id, len(self.stream_codes))
        self._published = None

    def _unchanged(self, row: int, stream_id: str, codes: np.ndarray, scale: float) -> bool:
        """The row already holds this vector and stream: rewriting it would only force a
        copy of the published arrays (every retrieve's access touches re-index memories)."""
        return (
            float(self.scales[row]) == scale
            and self.stream_codes.get(stream_id) == int(self.streams[row])
            and bool(np.array_equal(self.codes[row], codes))
        )

    def remove(self, memory_id: str) -> None:
        row = self.rows.pop(memory_id, None)
        if row is None:
            return
        self._unshare()
        last = len(self.ids) - 1
        if row != last:
            moved = self.ids[last]
            self.ids[row] = moved
            self.codes[row], self.scales[row], self.streams[row] = (
                self.codes[last],
                self.scales[last],
                self.streams[last],
            )
            self.rows[moved] = row
        self.ids.pop()
        self._published = None

    def snapshot(self) -> _Snapshot:
        """The current rows as an immutable view (cheap: no copy). Call under the lock."""
        if self._published is None:
            n = len(self.ids)
            self._published = _Snapshot(self.ids, self.codes, self.scales, self.streams, self.stream_codes, n)
            self._shared_rows = max(self._shared_rows, n)
        return self._published

    def stream_ids(self) -> list[str]:
        names = {code: name for name, code in self.stream_codes.items()}
        return [names[int(c)] for c in self.streams[: len(self.ids)]]

    def float_rows(self) -> np.ndarray:
        n = len(self.ids)
        return self.codes[:n].astype(np.float32) * self.scales[:n, None]

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scales.nbytes + self.streams.nbytes)


#: Exact (float32) vectors of some memories of a tenant (from RocksDB), for the rows a
#: tenant's LanceDB table is built from; absent ids are gone.
ExactVectors = Callable[[str, list[str]], dict[str, np.ndarray]]


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, largest first (ties: lower index first), without
    sorting all of them."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.intp)
    top = np.argpartition(scores, n - k)[n - k :] if k < n else np.arange(n)
    top.sort()  # ties in row order
    return top[np.argsort(-scores[top], kind="stable")]


#: ``top_hits`` narrows a scan of at least this many rows to the rows at or above a
#: threshold first (``_at_least_kth``): a partition of 100K float64 scores cost ~0.9 ms per
#: query, half the int8 product itself.
NARROW_ROWS = 16_384
#: Blocks per wanted row whose maxima set that threshold: more blocks, a tighter threshold
#: (fewer rows kept) for a longer pass over the maxima.
NARROW_BLOCKS_PER_ROW = 4


def _at_least_kth(scores: np.ndarray, k: int) -> np.ndarray | None:
    """Rows (ascending) whose score is at least a lower bound of the k-th largest (every
    finite row when that bound is -inf), or None when it is not usable (a NaN). The bound:
    the k-th largest of the maxima of ``NARROW_BLOCKS_PER_ROW * k`` disjoint blocks of rows,
    since k distinct rows (the maxima of k blocks) score at least that much. One pass over
    the scores, no sort."""
    n = scores.shape[0]
    size = -(-n // (NARROW_BLOCKS_PER_ROW * k))
    maxima = np.maximum.reduceat(scores, np.arange(0, n, size))
    if maxima.shape[0] < k or np.isnan(maxima).any():
        return None
    bound = np.partition(maxima, maxima.shape[0] - k)[maxima.shape[0] - k]
    if bound == -np.inf:  # fewer than k blocks hold a row of the stream asked for
        return np.flatnonzero(scores > bound)  # its rows: every finite score
    rows = np.flatnonzero(scores >= bound)
    return rows if rows.shape[0] >= k else None


def top_hits(ids: list[str], scores: np.ndarray, k: int) -> list[Hit]:
    """The ``k`` best finite scores, best first (ties: row order). A large scan keeps only
    the rows that can be among them (``_at_least_kth``) and ranks those; where rows tie
    across the k-th place (rare) the partition of all rows picks which get in, as it did
    before the shortcut, so the hits are the same."""
    top = None
    rows = _at_least_kth(scores, k) if k > 0 and scores.shape[0] >= NARROW_ROWS else None
    if rows is not None:
        ranked = rows[np.argsort(-scores[rows], kind="stable")]
        if ranked.shape[0] <= k or scores[ranked[k - 1]] != scores[ranked[k]]:
            top = ranked[:k]
    if top is None:
        top = top_indices(scores, k)
    values = scores[top]
    finite = np.isfinite(values)
    if not finite.all():
        top, values = top[finite], values[finite]
    return [(ids[i], v) for i, v in zip(top.tolist(), values.tolist(), strict=True)]


#: Rows of a tenant's matrix scored per block by ``search_many``: bounds the score matrix
#: (queries x block).
SEARCH_BLOCK_ROWS = 16_384


def _top_in_block(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best scores of every row (unordered)."""
    if scores.shape[1] <= k:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


class VectorIndex:
    def __init__(
        self, path: Path, *, dim: int, ann_threshold: int, exact_vectors: ExactVectors | None = None
    ) -> None:
        self.path = path
        #: Where promotion to LanceDB reads float32 vectors (None: the dequantised rows).
        self.exact_vectors = exact_vectors
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
        if not any(self.path.glob("tenant_*")):
            return  # no table: LanceDB (and pyarrow) stay unimported
        db = self._lance()
        for name in db.table_names():
            if name.startswith("tenant_"):
                self._tables[name[len("tenant_") :]] = db.open_table(name)

    def is_large(self, tenant_id: str) -> bool:
        return tenant_id in self._tables

    def _schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema(
            [("id", pa.string()), ("stream", pa.string()), ("vector", pa.list_(pa.float32(), self.dim))]
        )

    def _to_arrow(self, ids: list[str], streams: list[str], vectors: np.ndarray) -> pa.Table:
        import pyarrow as pa

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
            data=self._to_arrow(matrix.ids[:n], matrix.stream_ids(), self._exact_rows(tenant_id, matrix)),
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
        from lancedb.index import IvfHnswSq  # lancedb is imported once a tenant needs it

        partitions = max(1, int(np.sqrt(n) / 2))
        table.create_index("vector", config=IvfHnswSq(distance_type="cosine", num_partitions=partitions))

    # -- writes (indexer thread) ---------------------------------------------------------
    def upsert(self, tenant_id: str, ids: list[str], streams: list[str], vectors: np.ndarray) -> None:
        """Insert or replace several vectors of one tenant (batched: LanceDB adds are costly)."""
        if not ids:
            return
        with self._lock:
            table = self._tables.get(tenant_id)
            if table is None:
                matrix = self._matrices.setdefault(tenant_id, _Matrix(self.dim))
                codes, scales = quantize(vectors)
                matrix.reserve(len(matrix.ids) + sum(1 for i in ids if i not in matrix.rows))
                for memory_id, stream_id, row, scale in zip(ids, streams, codes, scales, strict=True):
                    matrix.upsert(memory_id, stream_id, row, float(scale))
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

    def start_load(self, tenant_id: str, expected_rows: int) -> None:
        """Drop a tenant's vectors and make room for ``expected_rows`` (its memory count) in
        a fresh matrix: a load then streamed in chunks through ``upsert`` allocates the
        matrix once, exactly, instead of growing it with slack chunk by chunk."""
        with self._lock:
            self.drop_tenant(tenant_id)
            if expected_rows > self.ann_threshold:
                return  # promoted to LanceDB as the load crosses the threshold
            matrix = self._matrices[tenant_id] = _Matrix(self.dim)
            matrix.reserve(expected_rows)

    def end_load(self, tenant_id: str) -> None:
        """After a ``start_load``: release what the reservation did not use."""
        with self._lock:
            matrix = self._matrices.get(tenant_id)
            if matrix is not None and not matrix.ids:
                del self._matrices[tenant_id]
            elif matrix is not None:
                matrix.fit()

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

    def _exact_rows(self, tenant_id: str, matrix: _Matrix) -> np.ndarray:
        """float32 rows of a matrix (for LanceDB): from RocksDB, else dequantised."""
        rows = matrix.float_rows()
        if self.exact_vectors is not None:
            exact = self.exact_vectors(tenant_id, matrix.ids[: rows.shape[0]])
            for i, memory_id in enumerate(matrix.ids[: rows.shape[0]]):
                vector = exact.get(memory_id)
                if vector is not None and vector.shape == (self.dim,):
                    rows[i] = vector
        return rows

    # -- reads ---------------------------------------------------------------------------
    def search(self, tenant_id: str, query: np.ndarray, k: int, *, stream_id: str | None = None) -> list[Hit]:
        """The ``k`` memories most similar to ``query`` by the int8 codes (cosine error
        < 0.003), best first, with no RocksDB read: retrieval's second stage scores the
        candidates that enter again (``held_rows``), consolidation compares them itself."""
        with self._lock:
            table = self._tables.get(tenant_id)
            matrix = self._matrices.get(tenant_id)
            snapshot = matrix.snapshot() if matrix is not None and table is None else None
        if table is not None:
            return self._search_lance(table, query, k, stream_id)
        if snapshot is None or snapshot.n == 0 or k <= 0:
            return []
        approximate = snapshot.approximate(np.asarray(query, np.float32), stream_id)
        return top_hits(snapshot.ids, approximate, k)

    def search_many(self, tenant_id: str, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """The k nearest memories of each query row, int8 order and scores (as ``search``
        without ``exact_vectors``): a consolidation batch asks for all its facts at once, so
        a small tenant is scanned once per block of rows (one SIMD product for all the
        queries) instead of once per fact. Runs on a snapshot, outside the lock."""
        with self._lock:
            table = self._tables.get(tenant_id)
            matrix = self._matrices.get(tenant_id)
            snapshot = matrix.snapshot() if matrix is not None and table is None else None
        if table is not None:
            return [self._search_lance(table, q, k, None) for q in queries]
        if snapshot is None or snapshot.n == 0 or k <= 0 or len(queries) == 0:
            return [[] for _ in queries]
        query_codes, query_scales = quantize(np.asarray(queries, np.float32))
        found: list[list[Hit]] = [[] for _ in queries]
        for start in range(0, snapshot.n, SEARCH_BLOCK_ROWS):
            stop = min(snapshot.n, start + SEARCH_BLOCK_ROWS)
            block = snapshot.codes[start:stop]
            dots = np.asarray(simsimd.cdist(query_codes, block, metric="dot"), np.float64)
            scores = dots * snapshot.scales[start:stop][None, :] * query_scales[:, None]
            for row, columns in enumerate(_top_in_block(scores, k)):
                found[row].extend((snapshot.ids[start + c], float(scores[row, c])) for c in columns)
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

    def held_rows(self, tenant_id: str, memory_ids: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """The rows of these memories in the tenant's int8 matrix, widened to float32
        (``codes * scale``), and which of them it holds (a memory whose vector is of another
        model is not there): what ranking's cosine feature reads instead of the float16
        vectors of the records (cosine error < 0.003 for unit vectors, docs/retrieval.md).
        None for a tenant in LanceDB, whose vectors are only in the records."""
        with self._lock:
            if tenant_id in self._tables:
                return None
            matrix = self._matrices.get(tenant_id)
            if matrix is None:
                return np.zeros((len(memory_ids), self.dim), np.float32), np.zeros(len(memory_ids), bool)
            rows = [matrix.rows.get(m, -1) for m in memory_ids]
            snapshot = matrix.snapshot()
        picked = np.asarray(rows, np.int64)
        held = picked >= 0
        out = np.zeros((len(memory_ids), self.dim), np.float32)
        if held.any():
            # Outside the lock: the snapshot's rows never change in place (copy-on-write).
            at = picked[held]
            out[held] = snapshot.codes[at] * snapshot.scales[at, None]
        return out, held

    def count(self, tenant_id: str) -> int:
        with self._lock:
            table = self._tables.get(tenant_id)
            if table is not None:
                return int(table.count_rows())  # type: ignore[attr-defined]
            matrix = self._matrices.get(tenant_id)
            return len(matrix.ids) if matrix else 0

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(m.nbytes for m in self._matrices.values())
