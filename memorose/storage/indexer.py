"""Keeps the derived indexes (Tantivy, vectors) current by following the change feed the
state machine writes (``x/<raft index>``), off the Raft thread.

Every change is handled by re-reading the current RocksDB state, so replaying a change is
harmless and the indexes converge to RocksDB whatever the order of crashes. The indexer's
position and, per tenant, the last event seq it has made searchable are kept in
``state.json`` beside the indexes; anything newer is found by the retrieval tail scan.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from memorose.models import Memory
from memorose.priority import lower_this_thread
from memorose.retrieval.text import analyze
from memorose.retrieval.timeline import Entry, Facts, Place, Timeline, facts_of, speaker_of, text_digest
from memorose.runtime import release_free_heap
from memorose.storage import facts_cache, keys
from memorose.storage.facts_cache import FactsCache
from memorose.storage.fulltext import KIND_EVENT, KIND_MEMORY, FullTextIndex
from memorose.storage.reader import MemoryHead, StateReader
from memorose.storage.vectors import VectorIndex

log = logging.getLogger(__name__)
_T = TypeVar("_T")

STATE_VERSION = 1
_CHANGES_PER_CYCLE = 2000
#: Memories decoded at a time when a tenant's indexes are loaded or rebuilt: a whole 100K
#: tenant at once (300 MB of ``Memory`` objects) left ~170 MB of freed heap behind.
LOAD_CHUNK = 2048
#: Least time from one indexing cycle to the next while changes keep coming. Each cycle
#: ends in a Tantivy commit, and a commit (segment files, fsync, reload, the merges it
#: leads to) costs Tantivy's own threads more than the documents in it: at one commit per
#: 1,000-event ingest entry they spent ~28 us per event, at one per 4,000 ~13 us
#: (docs/replication.md). An idle feed and a waiter (``wait_for``) do not wait; events not
#: yet committed stay searchable through the retrieval tail scan.
MIN_CYCLE_INTERVAL_S = 0.2
#: An idle indexer sleeps until the state machine reports a change record
#: (``changes_written``) or a waiter hurries it, looking anyway this often: the wake-up
#: replaces a 10 ms poll, whose iterator per look held the store's lock 100 times a second
#: against the queries' reads (6-7 % of a serving node's busy samples, docs/benchmarks.md).
IDLE_LOOK_S = 0.25
#: The facts cache (facts_cache.py) is written again by the idle indexer once this share of
#: the timelines' rows was indexed since it was last written, or once this long has passed
#: with any indexed; at stop only while the timelines hold at most ``FACTS_STOP_ROWS`` (a
#: node's stop is bounded to ~1 s; 1M rows take a second or two to write).
FACTS_SAVE_SHARE = 0.1
FACTS_SAVE_AFTER_S = 600.0
FACTS_STOP_ROWS = 200_000


def is_searchable(memory: Memory | MemoryHead) -> bool:
    """Indexed: everything not archived. Superseded memories stay in the indexes so that
    ``as_of`` and ``enable_arbitration=false`` can find them; retrieval filters them out by
    default (``retrieval.temporal``)."""
    return not memory.archived


def is_searchable_record(record: dict[str, Any]) -> bool:
    """``is_searchable`` of a stored memory record, without building the ``Memory``."""
    return not record.get("archived", False)


class Indexer:
    def __init__(
        self, reader: StateReader, root: Path, *, dim: int, ann_threshold: int, model: str | None = None
    ) -> None:
        self.reader = reader
        #: The embedding model whose vectors the vector index holds (None: any of ``dim``).
        self.model = model
        #: Per tenant, searchable memories whose vector is of another model or dimension:
        #: kept out of the vector index (BM25 still finds them) until ``admin reembed``.
        self.stale_vectors: dict[str, set[str]] = {}
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.fulltext = FullTextIndex(root / "tantivy")
        self.vectors = VectorIndex(
            root / "lance", dim=dim, ann_threshold=ann_threshold, exact_vectors=self.stored_vectors
        )
        self._state_path = root / "state.json"
        #: The timelines' text facts of the last run (facts_cache.py): read while a start-up
        #: loads the timelines, then let go.
        self._facts_path = root / "facts"
        self._known: FactsCache | None = None
        #: Memories indexed since the facts cache was last written (``_save_facts_if_due``).
        self._facts_unsaved = 0
        self._facts_saved_at = time.monotonic()
        self.position = 0  # last Raft index whose changes are searchable
        self.rebuilds = 0
        self._indexed_seq: dict[str, int] = {}
        #: Per tenant, the highest event seq that may already be a Tantivy document: newer
        #: events are added without a delete-by-term (replays and rebuild overlaps still
        #: replace, so a document is never doubled).
        self._added_seq: dict[str, int] = {}
        self._rebuild_requested = threading.Event()
        self._tenant_rebuilds: set[str] = set()
        self._progress = threading.Condition()
        self._stop = threading.Event()
        #: Set by ``wait_for``: the next cycle starts without waiting out the interval.
        self._hurry = threading.Event()
        #: Set when something may be waiting in the change feed: wakes an idle indexer.
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        #: Every tenant's timeline of memories (retrieval's neighbours), kept here like the
        #: other derived indexes so that a tenant's first query finds it built.
        self.timeline = Timeline()
        #: Called after each indexing cycle with the tenants whose memories changed in it
        #: (the retrieval lexicon refreshes from it).
        self.on_cycle: Callable[[set[str]], None] | None = None

    def stored_vectors(self, tenant_id: str, memory_ids: list[str]) -> dict[str, np.ndarray]:
        """float32 vectors from RocksDB (multi-get): what a tenant promoted to LanceDB is
        indexed with (the in-memory matrix keeps only int8 codes)."""
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(memory_ids), 4096):
            found = self.reader.memories_many(tenant_id, memory_ids[start : start + 4096])
            for memory_id, memory in found.items():
                if memory.in_space(self.model, self.vectors.dim):
                    out[memory_id] = memory.vector()
        return out

    # -- lifecycle -----------------------------------------------------------------------
    def open(self) -> None:
        """Load state, rebuild if it is missing or ahead of RocksDB, then catch up."""
        state = self._load_state()
        if state is None or state["position"] > self.reader.store.applied_index():
            self.rebuild()
        else:
            self.position = state["position"]
            self._indexed_seq = dict(state["tenants"])
            # Changes past the saved position may have been committed to Tantivy before a
            # crash: anything applied may be in the index already.
            self._added_seq = {
                t: self.reader.tenant_or_empty(t)["next_seq"] - 1 for t in self.reader.tenant_ids()
            }
            self.vectors.open_existing()
            self._known = FactsCache.load(self._facts_path)
            self._load_small_tenant_vectors()
            self._load_large_tenant_timelines()
            known, self._known = self._known, None
            self._facts_unsaved = known.misses  # written by the idle indexer if that is many
        self.catch_up()
        release_free_heap()  # what the startup load freed goes back to the system

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="memorose-indexer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop following; a rebuild still running after ``timeout`` is abandoned (the
        indexes are derived: the next start resumes or rebuilds them)."""
        self._stop.set()
        self._hurry.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                log.warning("the indexer did not stop within %.1f s; abandoned", timeout)
                return
        self.fulltext.close()
        if self._facts_unsaved and self.timeline.rows() <= FACTS_STOP_ROWS:
            self._save_facts()

    def request_rebuild(self, tenant_id: str | None = None) -> None:
        """Everything (after a snapshot install replaced RocksDB wholesale, or an operator's
        reindex), or one tenant's indexes (a scoped ``admin reindex``); done by the indexer thread."""
        if tenant_id is None:
            self._rebuild_requested.set()
        else:
            with self._progress:
                self._tenant_rebuilds.add(tenant_id)
        self._changed.set()

    def changes_written(self) -> None:
        """The state machine wrote a change record: an idle indexer looks now (called on the
        Raft thread after each apply that wrote one; cheap and never blocking)."""
        self._changed.set()

    def _run(self) -> None:
        lower_this_thread()  # index building yields the CPU to the Raft tick thread
        while not self._stop.is_set():
            try:
                if self._rebuild_requested.is_set():
                    self._rebuild_requested.clear()
                    self.rebuild()
                self._rebuild_requested_tenants()
                started = time.monotonic()
                self._hurry.clear()
                self._changed.clear()  # before looking: a change written after this wakes the next wait
                worked = self.cycle()
                self.vectors.maintain()
                if not worked:
                    self._save_facts_if_due()
            except Exception:
                if self._stop.is_set():  # the node is closing the stores under us
                    return
                log.exception("indexer cycle failed; retrying")
                worked = False
                self._stop.wait(0.5)
            if not worked:
                self._changed.wait(IDLE_LOOK_S)
            else:  # more changes are likely on their way: gather them into one commit
                self._hurry.wait(started + MIN_CYCLE_INTERVAL_S - time.monotonic())

    # -- state ---------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self._state_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return state if state.get("version") == STATE_VERSION else None

    def _save_state(self) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"version": STATE_VERSION, "position": self.position, "tenants": self._indexed_seq})
        )
        os.replace(tmp, self._state_path)

    def _save_facts_if_due(self) -> None:
        """Write the facts cache when enough was indexed since it was last written (the
        indexer is idle: a bulk load has settled)."""
        if not self._facts_unsaved:
            return
        many = self._facts_unsaved >= FACTS_SAVE_SHARE * self.timeline.rows()
        if many or time.monotonic() - self._facts_saved_at >= FACTS_SAVE_AFTER_S:
            self._save_facts()

    def _save_facts(self) -> None:
        """Write the timelines' text facts for the next start-up (a cache: a failure costs
        that start-up the analysis, nothing else)."""
        try:
            count = facts_cache.write(self._facts_path, self.timeline.all())
        except OSError as exc:
            log.warning("facts cache not written (%s)", exc)
            return
        self._facts_unsaved = 0
        self._facts_saved_at = time.monotonic()
        log.info("facts of %d texts kept for the next start-up", count)

    def stale_vector_count(self, tenant_id: str | None = None) -> int:
        """Memories waiting for a vector of the current model (all tenants when None)."""
        if tenant_id is not None:
            return len(self.stale_vectors.get(tenant_id, ()))
        return sum(len(ids) for ids in list(self.stale_vectors.values()))

    def indexed_seq(self, tenant_id: str) -> int:
        """Events of this tenant up to this seq are in Tantivy (or consolidated)."""
        return self._indexed_seq.get(tenant_id, 0)

    # -- following the change feed ---------------------------------------------------------
    def catch_up(self) -> None:
        while self.cycle():
            pass

    def cycle(self) -> bool:
        """Index one chunk of changes; False when there was nothing to do."""
        changes = list(self.reader.changes(self.position, limit=_CHANGES_PER_CYCLE))
        if not changes:
            return False
        dirty: dict[tuple[str, str], None] = {}
        indexed: dict[str, int] = {}
        for _, entries in changes:
            for change in entries:
                self._apply_change(change, dirty, indexed)
        self._refresh_memories(dirty)
        self.fulltext.commit()
        self.timeline.settle({tenant_id for tenant_id, _ in dirty})
        last = changes[-1][0]
        with self._progress:
            # Only now are the events searchable: until here the retrieval tail scan covers them.
            for tenant_id, seq in indexed.items():
                self._indexed_seq[tenant_id] = max(self._indexed_seq.get(tenant_id, 0), seq)
            self.position = last
            self._progress.notify_all()
        self._save_state()
        # The consumed part of the feed is local bookkeeping, not replicated state.
        self.reader.store.delete_range(keys.CHANGES, keys.change(last + 1))
        if self.on_cycle is not None:
            self.on_cycle({tenant_id for tenant_id, _ in dirty})
        return True

    def _apply_change(
        self, change: list[Any], dirty: dict[tuple[str, str], None], indexed: dict[str, int]
    ) -> None:
        kind, tenant_id = change[0], change[1]
        if kind == "events":
            self._index_events(tenant_id, change[2], change[3])
            indexed[tenant_id] = max(indexed.get(tenant_id, 0), change[3])
        elif kind == "consolidated":
            self.fulltext.delete_events(tenant_id, change[2] + 1, change[3])
        elif kind in ("memory+", "memory-"):
            dirty[(tenant_id, change[2])] = None
        elif kind == "tenant-":
            self.fulltext.delete_tenant(tenant_id)
            self.vectors.drop_tenant(tenant_id)
            self.stale_vectors.pop(tenant_id, None)
            self._indexed_seq.pop(tenant_id, None)
            self._added_seq.pop(tenant_id, None)  # the delete precedes any later add
            self.timeline.drop(tenant_id)
            indexed.pop(tenant_id, None)
            for key in [k for k in dirty if k[0] == tenant_id]:
                del dirty[key]

    def _index_events(self, tenant_id: str, first: int, last: int) -> None:
        """Index every event of the range, even if already consolidated: the matching
        "consolidated" change comes later in the feed and removes them. Skipping them here
        would leave a window in which neither the events nor their memories are searchable."""
        added = self._added_seq.get(tenant_id, 0)
        for event in self.reader.event_records(tenant_id, after_seq=first - 1, limit=last - first + 1):
            seq = event["seq"]
            write = self.fulltext.add if seq > added else self.fulltext.upsert
            write(KIND_EVENT, tenant_id, event["stream_id"], str(seq), event["content"], seq)
        self._added_seq[tenant_id] = max(added, last)

    def _refresh_memories(self, dirty: dict[tuple[str, str], None]) -> None:
        # One multi-get per tenant: a cycle after a round of consolidation holds a few
        # thousand memories of tens of tenants (docs/consolidation.md, "Many small tenants").
        ids_by_tenant: dict[str, list[str]] = {}
        for tenant_id, memory_id in dirty:
            ids_by_tenant.setdefault(tenant_id, []).append(memory_id)
        for tenant_id, memory_ids in ids_by_tenant.items():
            found = self.reader.memories_many(tenant_id, memory_ids)
            searchable: list[Memory] = []
            places: dict[str, Place] = {}
            for memory_id in memory_ids:
                memory = found.get(memory_id)
                if memory is not None and is_searchable(memory):
                    tokens = analyze(memory.content)  # once: Tantivy's document and the facts
                    self.fulltext.upsert(KIND_MEMORY, tenant_id, memory.stream_id, memory_id, tokens)
                    searchable.append(memory)
                    places[memory_id] = (memory.stream_id, memory.valid_from, _facts(memory, tokens))
                    self._facts_unsaved += 1
                else:
                    places[memory_id] = None
                    self.fulltext.delete(KIND_MEMORY, tenant_id, memory_id)
                    self.vectors.remove(tenant_id, memory_id)
                    self.stale_vectors.get(tenant_id, set()).discard(memory_id)
            if searchable:
                self._load_vectors(tenant_id, searchable)
            self.timeline.update(tenant_id, places)

    def wait_for(self, raft_index: int, timeout: float) -> bool:
        """Block until changes up to ``raft_index`` are searchable."""
        deadline = time.monotonic() + timeout
        self._hurry.set()
        self._changed.set()
        with self._progress:
            while self.position < raft_index and self.reader.store.applied_index() >= raft_index:
                if not self._feed_pending_after(self.position, raft_index):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
        return True

    def searchable_index(self) -> int:
        """The Raft index up to which everything applied is searchable. Entries that change
        nothing searchable (touches, barriers) write no change record, so with nothing left
        in the feed the indexes are current up to the applied index."""
        applied = self.reader.store.applied_index()
        position = self.position
        return applied if not self._feed_pending_after(position, applied) else position

    def _feed_pending_after(self, position: int, upto: int) -> bool:
        return any(index <= upto for index, _ in self.reader.changes(position, limit=1))

    # -- rebuild -------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Recreate every derived index from RocksDB (``memorose admin reindex``)."""
        started = time.monotonic()
        position = self.reader.store.applied_index()
        self.fulltext.clear()
        self.vectors.clear()
        self.stale_vectors = {}
        self._indexed_seq = {}
        self._added_seq = {}
        tenant_ids = self.reader.tenant_ids()
        for tenant_id in tenant_ids:
            self._rebuild_tenant(tenant_id)
        self.timeline.retain(set(tenant_ids))
        self.fulltext.commit()
        with self._progress:
            self.position = position
            self._progress.notify_all()
        self._save_state()
        self._facts_unsaved = self.timeline.rows()  # every text was analysed: keep them
        self.rebuilds += 1
        release_free_heap()
        log.info("derived indexes rebuilt in %.1fs", time.monotonic() - started)

    def _rebuild_requested_tenants(self) -> None:
        with self._progress:
            tenants, self._tenant_rebuilds = self._tenant_rebuilds, set()
        for tenant_id in sorted(tenants):
            self.fulltext.delete_tenant(tenant_id)
            self.vectors.drop_tenant(tenant_id)
            self.stale_vectors.pop(tenant_id, None)
            self._indexed_seq.pop(tenant_id, None)
            self._added_seq.pop(tenant_id, None)
            self.timeline.drop(tenant_id)
            self._rebuild_tenant(tenant_id)
            self.fulltext.commit()
            log.info("derived indexes of tenant %s rebuilt", tenant_id)
        if tenants:
            self._save_state()
            self.rebuilds += 1

    def _rebuild_tenant(self, tenant_id: str) -> None:
        # Pending events first, memories second: a consolidation that lands in between then
        # leaves both in the index (briefly), never neither. The tenant's documents were just
        # deleted (or the index cleared), so these are adds.
        record = self.reader.tenant_or_empty(tenant_id)
        last_seq = 0
        for n, event in enumerate(self.reader.events(tenant_id, after_seq=record["cursor"])):
            self.fulltext.add(
                KIND_EVENT, tenant_id, event.stream_id, str(event.seq), event.content, event.seq
            )
            last_seq = event.seq
            _breathe(n)
        # The feed may still hold changes for these events: they must replace, not double.
        self._added_seq[tenant_id] = max(self._added_seq.get(tenant_id, 0), last_seq)
        self._indexed_seq[tenant_id] = record["next_seq"] - 1
        self.vectors.start_load(tenant_id, record["memories"])
        entries: list[Entry] = []
        for chunk in self._searchable_chunks(tenant_id):
            for n, m in enumerate(chunk):
                tokens = analyze(m.content)  # once: Tantivy's document and the facts
                self.fulltext.add(KIND_MEMORY, tenant_id, m.stream_id, m.memory_id, tokens)
                entries.append((m.memory_id, m.stream_id, m.valid_from, _facts(m, tokens)))
                _breathe(n)
            self._load_vectors(tenant_id, chunk)
        self.vectors.end_load(tenant_id)
        self.timeline.replace(tenant_id, entries)

    def _searchable_chunks(self, tenant_id: str) -> Iterator[list[Memory]]:
        """A tenant's searchable memories, ``LOAD_CHUNK`` at a time, in key order."""
        return _chunks((m for m in self.reader.memories(tenant_id) if is_searchable(m)), LOAD_CHUNK)

    def _load_vectors(self, tenant_id: str, memories: list[Memory]) -> None:
        # A vector of another model or dimension (embedding model changed, not yet
        # re-embedded) never joins the index: one index, one vector space. That memory stays
        # findable through BM25 until `admin reembed`.
        fitting = [m for m in memories if m.in_space(self.model, self.vectors.dim)]
        stale = self.stale_vectors.setdefault(tenant_id, set())
        for m in memories:
            if m.in_space(self.model, self.vectors.dim):
                stale.discard(m.memory_id)
            else:
                stale.add(m.memory_id)
                self.vectors.remove(tenant_id, m.memory_id)
        if not fitting:
            return
        self.vectors.upsert(
            tenant_id,
            [m.memory_id for m in fitting],
            [m.stream_id for m in fitting],
            np.stack([m.vector() for m in fitting]),
        )

    def _load_small_tenant_vectors(self) -> None:
        """In-memory matrices do not survive a restart; reload them from RocksDB, streamed
        a chunk at a time into a matrix allocated once."""
        for tenant_id in self.reader.tenant_ids():
            if not self.vectors.is_large(tenant_id):
                self.vectors.start_load(tenant_id, self.reader.tenant_or_empty(tenant_id)["memories"])
                entries: list[Entry] = []
                for chunk in self._searchable_chunks(tenant_id):
                    self._load_vectors(tenant_id, chunk)
                    entries.extend(self._loaded_entries([_loaded_memory(m) for m in chunk]))
                self.vectors.end_load(tenant_id)
                self.timeline.replace(tenant_id, entries)  # from the records decoded anyway

    def _load_large_tenant_timelines(self) -> None:
        """Timelines of the tenants whose vectors stay in LanceDB (not decoded at start-up):
        a few fields of each stored record, without building ``Memory`` objects."""
        for tenant_id in self.reader.tenant_ids():
            if self.vectors.is_large(tenant_id):
                entries: list[Entry] = []
                records = (r for r in self.reader.memory_records(tenant_id) if is_searchable_record(r))
                for chunk in _chunks(records, LOAD_CHUNK):
                    entries.extend(self._loaded_entries([_loaded_record(r) for r in chunk]))
                self.timeline.replace(tenant_id, entries)

    def _loaded_entries(self, memories: list[Loaded]) -> list[Entry]:
        """Timeline entries of searchable memories being loaded: what depends on the text
        alone from the facts cache of the last run where it has it, else analysed."""
        digests = [text_digest(m[3]) for m in memories]
        known = self._known.lookup(digests) if self._known is not None else [None] * len(memories)
        return [
            (
                memory_id,
                stream_id,
                valid_from,
                facts_of(content, metadata, current, digest=digest)
                if k is None
                else Facts(current, speaker_of(metadata), k[0], k[1], digest),
            )
            for (memory_id, stream_id, valid_from, content, metadata, current), digest, k in zip(
                memories, digests, known, strict=True
            )
        ]


def _facts(memory: Memory, tokens: list[str] | None = None) -> Facts:
    return facts_of(memory.content, memory.metadata, memory.is_current, tokens)


#: A memory being loaded into the timeline: (id, stream, valid_from, content, metadata,
#: current), from a ``Memory`` or from a stored record's fields.
Loaded = tuple[str, str, float, str, object, bool]


def _loaded_memory(m: Memory) -> Loaded:
    return m.memory_id, m.stream_id, m.valid_from, m.content, m.metadata, m.is_current


def _loaded_record(r: dict[str, Any]) -> Loaded:
    return (
        r["memory_id"],
        r["stream_id"],
        r["valid_from"],
        r["content"],
        r.get("metadata"),
        _is_current_record(r),
    )


def _is_current_record(record: dict[str, Any]) -> bool:
    """``Memory.is_current`` of a stored memory record."""
    return record.get("valid_to") is None and record.get("superseded_by") is None


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _breathe(n: int, every: int = 256) -> None:
    """A rebuild after a snapshot install is minutes of Python on the node's GIL; sleeping
    a moment every few hundred documents lets the Raft tick thread run, so the rebuild
    does not cost heartbeats (tick stalls of seconds, then elections, were seen)."""
    if n % every == every - 1:
        time.sleep(0.002)
