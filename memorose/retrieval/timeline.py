"""Per-tenant timeline of memories (stream, valid time), for finding a memory's neighbours.

In a conversation a statement often only makes sense next to the one before it ("They were
awestruck" answers "how did the kids like the memorial?"). Retrieval therefore looks at the
memories just before and after a strong match. RocksDB has no index by valid time, so this is
a derived in-memory structure, kept by the indexer like the other derived indexes
(``storage/indexer.py``): loaded from the records it already decodes at start-up (or in a
rebuild) and changed with every memory change it follows. A tenant's first query therefore
finds its timeline ready; it used to decode all of the tenant's records to build it (about
15 ms per 1,000 memories: most of a cold tenant's query, docs/retrieval.md "Timeline").

A timeline holds what neighbours need, as numpy columns in timeline order (id bytes,
stream code, valid time) plus the id order for lookups, and what ranking reads of each
memory (``Facts``: whether it is current, its speaker, whether it is dated, its analysed
terms packed by ``terms.py``), so that ranking reads no record: ~200 bytes per memory
with 26-byte ids, one Python object (the packed terms) per memory. Changes are queued per
tenant and merged (O(n) copies, no re-sort) by the indexer at the end of its cycle while
that is cheap, otherwise by the first query that needs them. Like the other indexes it may
trail RocksDB by a cycle: ranking may see a fact a cycle old, and the results are re-read
and re-checked before they are returned (``search.Retriever._confirmed``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from memorose.retrieval.query import is_dated
from memorose.retrieval.terms import pack


class Facts(NamedTuple):
    """What ranking reads of a memory besides its place (``search.Retriever``)."""

    current: bool  # not superseded (``Memory.is_current``)
    speaker: str  # ``metadata.speaker``, "" when none
    dated: bool  # its content carries a time expression (``query.is_dated``)
    terms: bytes  # its analysed terms (``terms.pack``)
    #: ``text_digest`` of its content: what the facts of a text are kept under on disk
    #: between runs (``storage/facts_cache.py``); 0: not known.
    digest: int = 0


#: (memory id, stream id, valid_from, ranking facts) of one searchable memory.
Entry = tuple[str, str, float, Facts]
#: What a change leaves of a memory: (stream id, valid_from, facts), or None (gone or archived).
Place = tuple[str, float, Facts] | None


class _Codes:
    """Names -> small integer codes, extending a given table."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = list(names)
        self._codes = {name: code for code, name in enumerate(names)}

    def code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self._names)
            self._names.append(name)
        return code

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._names)


#: The indexer merges a tenant's queued changes at the end of its cycle when the timeline
#: has at most this many entries (a merge then costs up to ~10-15 ms on the loaded 2-core
#: machine: O(n) copies) or the queue has grown past an eighth of it; a larger tenant with a
#: few changes is merged by its next query instead.
EAGER_MERGE_MAX = 200_000


@dataclass(frozen=True, eq=False)
class TenantTimeline:
    """One tenant's timeline (immutable: shared by the queries that took it)."""

    ids: np.ndarray  # memory ids as bytes, sorted by (stream, valid_from, id)
    streams: np.ndarray  # int32 codes into ``stream_names``, same order
    valid_from: np.ndarray  # float64, same order
    by_id: np.ndarray  # int32 positions in id order (``searchsorted`` with ``sorter``)
    stream_names: tuple[str, ...]
    # Ranking facts (``Facts``), same order:
    current: np.ndarray  # bool
    speakers: np.ndarray  # int32 codes into ``speaker_names``
    dated: np.ndarray  # bool
    terms: np.ndarray  # object: packed terms (bytes)
    speaker_names: tuple[str, ...]
    digests: np.ndarray  # uint64 ``Facts.digest``

    @classmethod
    def build(
        cls, entries: Iterable[Entry], stream_names: tuple[str, ...] = (), speaker_names: tuple[str, ...] = ()
    ) -> TenantTimeline:
        streams = _Codes(stream_names)
        speakers = _Codes(speaker_names)
        ids: list[bytes] = []
        stream_codes: list[int] = []
        times: list[float] = []
        current: list[bool] = []
        speaker_codes: list[int] = []
        dated: list[bool] = []
        terms: list[bytes] = []
        digests: list[int] = []
        for memory_id, stream_id, valid_from, facts in entries:
            ids.append(memory_id.encode())
            stream_codes.append(streams.code(stream_id))
            times.append(valid_from)
            current.append(facts.current)
            speaker_codes.append(speakers.code(facts.speaker))
            dated.append(facts.dated)
            terms.append(facts.terms)
            digests.append(facts.digest)
        packed = np.empty(len(terms), dtype=object)
        packed[:] = terms
        columns = (
            np.array(ids, dtype=bytes),
            np.array(stream_codes, dtype=np.int32),
            np.array(times, dtype=np.float64),
            np.array(current, dtype=bool),
            np.array(speaker_codes, dtype=np.int32),
            np.array(dated, dtype=bool),
            packed,
            np.array(digests, dtype=np.uint64),
        )
        order = np.lexsort((columns[0], columns[2], columns[1]))
        ids_, streams_, times_, current_, speakers_, dated_, terms_, digests_ = (c[order] for c in columns)
        by_id = np.argsort(ids_, kind="stable").astype(np.int32)
        return cls(
            ids_,
            streams_,
            times_,
            by_id,
            streams.names,
            current_,
            speakers_,
            dated_,
            terms_,
            speakers.names,
            digests_,
        )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        fixed = (
            self.ids,
            self.streams,
            self.valid_from,
            self.by_id,
            self.current,
            self.speakers,
            self.dated,
            self.digests,
        )
        return int(sum(c.nbytes for c in fixed) + self.terms.nbytes + sum(len(t) + 33 for t in self.terms))

    def rows_of(self, memory_ids: list[str]) -> list[int]:
        """Row of each memory in the columns, -1 where it is not in the timeline."""
        return [int(p) for p in self._find(np.array([m.encode() for m in memory_ids], dtype=bytes)).tolist()]

    def facts(self, row: int) -> Facts:
        return Facts(
            bool(self.current[row]),
            self.speaker_names[int(self.speakers[row])],
            bool(self.dated[row]),
            self.terms[row],
            int(self.digests[row]),
        )

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """Position of each id (bytes) in timeline order, -1 where absent."""
        n = len(self.ids)
        if n == 0 or len(keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ids, keys, sorter=self.by_id), n - 1)
        positions = self.by_id[at].astype(np.int64)
        return np.where(self.ids[positions] == keys, positions, -1)

    def place_of(self, memory_ids: list[str]) -> list[Place]:
        """(stream, valid_from, facts) of each memory, None where it is not in the timeline."""
        positions = self.rows_of(memory_ids)
        return [
            None
            if p < 0
            else (self.stream_names[int(self.streams[p])], float(self.valid_from[p]), self.facts(p))
            for p in positions
        ]

    def merged(self, changes: dict[str, Place]) -> TenantTimeline:
        """A new timeline with ``changes`` applied: O(n) copies and O(k log n) searches for k
        changes (a re-sort of a 100K timeline took ~60 ms on the loaded machine)."""
        keys = np.array([m.encode() for m in changes], dtype=bytes)
        found = self._find(keys)
        keep = np.ones(len(self.ids), dtype=bool)
        keep[found[found >= 0]] = False
        added = TenantTimeline.build(
            ((m, *place) for m, place in changes.items() if place is not None),
            self.stream_names,
            self.speaker_names,
        )
        width = np.result_type(self.ids, added.ids)  # compared at one width: no key truncated
        ids, added_ids = self.ids[keep].astype(width, copy=False), added.ids.astype(width, copy=False)
        streams, times = self.streams[keep], self.valid_from[keep]
        at = _insert_positions(streams, times, ids, added.streams, added.valid_from, added_ids)
        # Id order: the kept rows keep theirs (renumbered past the removed rows and moved by
        # the rows inserted before them); each added id is inserted at its rank.
        renumber = np.cumsum(keep) - 1
        kept_by_id = renumber[self.by_id[keep[self.by_id]]]
        rank = np.searchsorted(ids[kept_by_id], added_ids[added.by_id])
        by_id = np.insert(
            kept_by_id + np.searchsorted(at, kept_by_id, side="right"),
            rank,
            (at + np.arange(len(at)))[added.by_id],
        )

        def inserted(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
            return np.insert(mine[keep], at, theirs)

        return TenantTimeline(
            np.insert(ids, at, added_ids),
            np.insert(streams, at, added.streams),
            np.insert(times, at, added.valid_from),
            by_id.astype(np.int32),
            added.stream_names,
            inserted(self.current, added.current),
            inserted(self.speakers, added.speakers),
            inserted(self.dated, added.dated),
            inserted(self.terms, added.terms),
            added.speaker_names,
            inserted(self.digests, added.digests),
        )

    def neighbours(self, memory_id: str, span: int, max_gap_s: float) -> list[tuple[str, int]]:
        """(memory id, signed distance) of up to ``span`` memories on each side, same stream,
        each within ``max_gap_s`` of the previous one (the same episode)."""
        n = len(self.ids)
        if n == 0:
            return []
        key = memory_id.encode()
        at = int(np.searchsorted(self.ids, key, sorter=self.by_id))
        position = int(self.by_id[min(at, n - 1)])
        if self.ids[position] != key:
            return []
        lo, hi = max(0, position - span), min(n, position + span + 1)
        return _walk(
            self.streams[lo:hi].tolist(),
            self.valid_from[lo:hi].tolist(),
            self.ids[lo:hi].tolist(),
            position - lo,
            span,
            max_gap_s,
        )

    def neighbours_many(
        self, memory_ids: list[str], span: int, max_gap_s: float
    ) -> dict[str, list[tuple[str, int]]]:
        """``neighbours`` of several memories in one lookup (a query asks for ~150)."""
        n = len(self.ids)
        out: dict[str, list[tuple[str, int]]] = {m: [] for m in memory_ids}
        memory_ids = list(out)  # each once
        if n == 0 or not memory_ids:
            return out
        positions = self._find(np.array([m.encode() for m in memory_ids], dtype=bytes))
        hit = positions >= 0
        if not hit.any():
            return out
        # A window of 2 * span + 1 rows around each hit; stream -1 beyond either end.
        window = positions[hit][:, None] + np.arange(-span, span + 1)
        inside = (window >= 0) & (window < n)
        window = np.clip(window, 0, n - 1)
        streams = np.where(inside, self.streams[window], -1)
        times = self.valid_from[window]
        # ``_walk`` for all rows at once: a step is taken while the stream is the centre's
        # and the gap to the previous step is within ``max_gap_s``; columns in its order
        # (-1, -2, ..., 1, 2, ...), so the neighbours come out as it lists them.
        same = streams == streams[:, span : span + 1]
        close = np.abs(np.diff(times, axis=1)) <= max_gap_s  # column j: rows j and j + 1
        steps = []
        for side in (-1, 1):
            ok = np.ones(len(window), dtype=bool)
            for distance in range(1, span + 1):
                column = span + side * distance
                ok = ok & same[:, column] & close[:, min(column, column - side)]
                steps.append(ok)
        rows, columns = np.nonzero(np.stack(steps, axis=1))
        offsets = np.array([side * d for side in (-1, 1) for d in range(1, span + 1)])[columns]
        found = [m for m, h in zip(memory_ids, hit.tolist(), strict=True) if h]
        names = [name.decode() for name in self.ids[window[rows, span + offsets]].tolist()]
        for row, name, offset in zip(rows.tolist(), names, offsets.tolist(), strict=True):
            out[found[row]].append((name, offset))
        return out


def _insert_positions(
    streams: np.ndarray,
    times: np.ndarray,
    ids: np.ndarray,
    new_streams: np.ndarray,
    new_times: np.ndarray,
    new_ids: np.ndarray,
) -> np.ndarray:
    """For rows sorted by (stream, time, id), how many sort before each new row. numpy orders
    complex numbers lexicographically (real, then imaginary), so (stream, time) is one
    vectorised search; only rows tied on both look at ids. The new rows are sorted too, so
    the answers are non-decreasing and ``np.insert`` keeps the new rows' order."""
    pairs = streams.astype(np.float64) + 1j * times
    new_pairs = new_streams.astype(np.float64) + 1j * new_times
    at = np.searchsorted(pairs, new_pairs, side="left")
    tied_end = np.searchsorted(pairs, new_pairs, side="right")
    for j in np.nonzero(tied_end > at)[0].tolist():
        at[j] += np.searchsorted(ids[at[j] : tied_end[j]], new_ids[j])
    return at


def _walk(
    streams: list[int], times: list[float], ids: list[bytes], centre: int, span: int, max_gap_s: float
) -> list[tuple[str, int]]:
    """The episode around ``centre`` in a window of rows: up to ``span`` rows each way, while
    the stream is the centre's (-1: beyond the timeline) and no gap exceeds ``max_gap_s``."""
    out: list[tuple[str, int]] = []
    for step in (-1, 1):
        prev_time = times[centre]
        for distance in range(1, span + 1):
            j = centre + step * distance
            if (
                not 0 <= j < len(ids)
                or streams[j] != streams[centre]
                or abs(times[j] - prev_time) > max_gap_s
            ):
                break
            out.append((ids[j].decode(), step * distance))
            prev_time = times[j]
    return out


EMPTY = TenantTimeline.build(())


class Timeline:
    """Every tenant's timeline, kept by the indexer (thread-safe: the indexer thread writes,
    query threads read)."""

    def __init__(self) -> None:
        self._built: dict[str, TenantTimeline] = {}
        self._pending: dict[str, dict[str, Place]] = {}
        self._lock = threading.Lock()

    def replace(self, tenant_id: str, entries: Iterable[Entry]) -> None:
        """The tenant's whole timeline (a load at start-up or a rebuild)."""
        built = TenantTimeline.build(entries)
        with self._lock:
            self._built[tenant_id] = built
            self._pending.pop(tenant_id, None)

    def drop(self, tenant_id: str) -> None:
        with self._lock:
            self._built.pop(tenant_id, None)
            self._pending.pop(tenant_id, None)

    def retain(self, tenant_ids: set[str]) -> None:
        """Forget every tenant not in ``tenant_ids`` (after a full rebuild)."""
        with self._lock:
            for tenant_id in [t for t in self._built if t not in tenant_ids]:
                del self._built[tenant_id]
            for tenant_id in [t for t in self._pending if t not in tenant_ids]:
                del self._pending[tenant_id]

    def update(self, tenant_id: str, changes: dict[str, Place]) -> None:
        """Queue the tenant's changed memories. Changes that move nothing (an access count,
        an importance) are dropped here: retrieval touches every memory it returns, and a
        large tenant must not re-sort after every query."""
        with self._lock:
            built = self._built.get(tenant_id, EMPTY)
            pending = self._pending.get(tenant_id, {})
        unqueued = [m for m in changes if m not in pending]
        current = dict(zip(unqueued, built.place_of(unqueued), strict=True))
        current.update((m, pending[m]) for m in changes if m in pending)
        moved = {m: place for m, place in changes.items() if place != current[m]}
        if moved:
            with self._lock:
                self._pending.setdefault(tenant_id, {}).update(moved)

    def settle(self, tenant_ids: Iterable[str]) -> None:
        """Merge the queued changes of these tenants where that is cheap (the indexer, after
        a cycle); the rest wait for their tenant's next query."""
        for tenant_id in tenant_ids:
            with self._lock:
                pending = self._pending.get(tenant_id)
                size = len(self._built.get(tenant_id, EMPTY))
                if pending and (size + len(pending) <= EAGER_MERGE_MAX or len(pending) * 8 > size):
                    self._merge(tenant_id)

    def _merge(self, tenant_id: str) -> TenantTimeline:
        """Apply the tenant's queued changes (under the lock)."""
        built = self._built.get(tenant_id, EMPTY)
        pending = self._pending.pop(tenant_id, None)
        if pending:
            built = self._built[tenant_id] = built.merged(pending)
        return built

    def of(self, tenant_id: str) -> TenantTimeline:
        """The tenant's current timeline: a query takes it once and looks up every
        candidate's neighbours in it."""
        with self._lock:
            return self._merge(tenant_id)

    def size(self, tenant_id: str) -> int:
        """Memories in the tenant's timeline as last merged (queued changes not counted):
        cheap, for choosing a small tenant's path."""
        with self._lock:
            return len(self._built.get(tenant_id, EMPTY))

    def neighbours(
        self, tenant_id: str, memory_id: str, span: int, max_gap_s: float
    ) -> list[tuple[str, int]]:
        """``TenantTimeline.neighbours`` in the tenant's current timeline."""
        return self.of(tenant_id).neighbours(memory_id, span, max_gap_s)

    def all(self) -> list[TenantTimeline]:
        """Every tenant's current timeline (queued changes merged)."""
        with self._lock:
            return [self._merge(tenant_id) for tenant_id in dict.fromkeys([*self._built, *self._pending])]

    def rows(self) -> int:
        """Memories in every tenant's timeline as last merged (queued changes not counted)."""
        with self._lock:
            return sum(len(t) for t in self._built.values())

    def nbytes(self) -> int:
        """Bytes held by the timelines' columns (queued changes not counted)."""
        with self._lock:
            return sum(t.nbytes for t in self._built.values())


def text_digest(content: str) -> int:
    """A 64-bit digest of a memory's text (BLAKE2b), never 0: the key its facts are kept
    under on disk between runs."""
    return int.from_bytes(hashlib.blake2b(content.encode(), digest_size=8).digest(), "little") or 1


def speaker_of(metadata: object) -> str:
    speaker = metadata.get("speaker", "") if isinstance(metadata, dict) else ""
    return str(speaker)


def facts_of(
    content: str,
    metadata: object,
    current: bool,
    tokens: list[str] | None = None,
    digest: int | None = None,
) -> Facts:
    """A searchable memory's ranking facts; ``tokens``: its analysed text, when the caller
    has it (the indexer analyses each text once, for Tantivy and for these)."""
    digest = text_digest(content) if digest is None else digest
    return Facts(current, speaker_of(metadata), is_dated(content), pack(content, tokens), digest)
