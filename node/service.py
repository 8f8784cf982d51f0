"""The node: wires RocksDB, the Raft object, the indexer, retrieval and the workers.

The HTTP layer calls these methods; they validate nothing about HTTP and know nothing of
aiohttp. Reads are served from the local replica; writes go through Raft.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from memorose import commands
from memorose.config import Settings
from memorose.consolidation.candidates import IndexCandidates
from memorose.consolidation.planner import ConsolidationPlanner
from memorose.errors import Conflict, InvalidInput, NotFound, TenantMoved, Unavailable
from memorose.models import Event, Memory, iso
from memorose.providers.factory import build_embedder, build_llm
from memorose.retrieval.lexicon import tenant_lexicon
from memorose.retrieval.rerank import DEFAULT_WEIGHTS, default_cosine_weight
from memorose.retrieval.search import Retriever, RetrieveRequest
from memorose.runtime import rocksdb_open_files
from memorose.statemachine import content_sha
from memorose.storage.indexer import Indexer
from memorose.storage.reader import StateReader, hash_key
from memorose.storage.rocks import RocksStore, RocksTuning
from node.batcher import IngestBatcher
from node.heap import HeapSettler
from node.insight_worker import Insights
from node.maintenance import ForgettingWorker, TouchBuffer, TouchFlusher
from node.proposer import Proposer
from node.raft import LEADER, RaftNode
from node.workers import ConsolidationWorker

log = logging.getLogger(__name__)


def _secret_file(path: Path, prefix: str) -> str:
    """Read a generated secret, or create it (mode 0600) on first start."""
    if path.exists():
        return path.read_text().strip()
    value = prefix + secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


class NodeService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.admin_key = settings.admin_key or _secret_file(self.data_dir / "admin_key", "adm_")
        self.admin_key_generated = settings.admin_key is None
        #: When this node last changed Raft role (wall clock): the dashboard's "last election".
        self.role_since = time.time()
        # Config validation already requires a shared password whenever the node has peers;
        # a lone node generates its own so that its Raft port is never unauthenticated.
        self.raft_password = settings.raft_password or _secret_file(self.data_dir / "raft_password", "")
        self.store = RocksStore(
            self.data_dir / "rocks",
            sync_writes=settings.raft_tuning.sync_apply,
            tuning=RocksTuning(**settings.storage.model_dump(), max_open_files=rocksdb_open_files()),
        )
        self.reader = StateReader(self.store)
        #: The leader's clock for everything it stamps into commands (tests replace it).
        self.clock: Any = time.time
        self.embedder = build_embedder(settings)
        self.llm = build_llm(settings)
        self.indexer = Indexer(
            self.reader,
            self.data_dir / "index",
            dim=self.embedder.dim,
            ann_threshold=settings.index.ann_threshold,
            model=self.embedder.model,
        )
        self.retriever = Retriever(
            self.reader,
            self.indexer,
            self.embedder,
            replace(DEFAULT_WEIGHTS, cosine=self._cosine_weight()),
            rerank=settings.retrieval.rerank,
            lexicon=tenant_lexicon(self.reader, self.embedder, settings.retrieval),
        )
        if self.retriever.lexicon is not None:
            self.indexer.on_cycle = self.retriever.lexicon.refresh
        self.planner = ConsolidationPlanner(
            self.embedder,
            settings.consolidation,
            llm=self.llm,
            llm_arbitration=settings.llm.arbitration,
            candidates=IndexCandidates(self.reader, self.indexer),
            stream_tail=self.reader.stream_tail,
        )
        self.touches = TouchBuffer()
        self.touches_dropped = 0
        self.touch_flusher: TouchFlusher | None = None
        self.forgetting: ForgettingWorker | None = None
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="memorose-read")
        self.started_at = time.time()
        self.raft: RaftNode | None = None
        self.proposer: Proposer | None = None
        self.batcher: IngestBatcher | None = None
        self.worker: ConsolidationWorker | None = None
        self._consolidated = asyncio.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.insights = Insights(self)
        self.heap = HeapSettler(settings.runtime)

    def _cosine_weight(self) -> float:
        configured = self.settings.retrieval.cosine_weight
        return configured if configured is not None else default_cosine_weight(self.embedder.model)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        load = getattr(self.embedder, "load", None)
        if load is not None:  # a missing or altered model stops the node now, not mid-batch
            await asyncio.to_thread(load)
        await asyncio.to_thread(self.indexer.open)
        self.indexer.start()
        self._loop = asyncio.get_running_loop()
        self.raft = RaftNode(
            self.settings.raft_address,
            self.settings.peer_map(),
            self.store,
            self.settings.raft_tuning,
            self.data_dir / "raft",
            self.raft_password,
            bind_address=self.settings.raft,
            self_url=self.settings.public_url,
            on_snapshot_installed=self.indexer.request_rebuild,
            on_state_changed=self._on_raft_state_changed,
        )
        self.raft.machine.on_changes = self.indexer.changes_written
        self.proposer = Proposer(self.raft, self.settings.raft_tuning.commit_timeout_secs)
        self.batcher = IngestBatcher(self.proposer, time.time)
        self.batcher.start()
        self.worker = ConsolidationWorker(
            self.reader,
            self.planner,
            self.proposer,
            interval=self.settings.consolidation.interval_secs,
            batch_size=self.settings.consolidation.batch_size,
            auto=self.settings.consolidation.auto,
            round_events=self.settings.consolidation.round_events,
            is_leader=self.is_leader,
            clock=lambda: self.clock(),
        )
        self.worker.before_plan = self._await_indexed
        self.worker.start()
        self._start_maintenance(self.proposer)
        self.insights.start()
        self.heap.start()

    async def stop(self) -> None:
        """Graceful stop, bounded (about a second): Raft goes first so that the
        peers see this node leave at once and elect a new leader without waiting out a
        timeout; background work is cancelled, not awaited to completion. Everything it
        abandons is either replicated already or derived (rebuilt at the next start)."""
        if self.raft is not None:
            self.raft.destroy()
            await asyncio.to_thread(self._wait_raft_stopped, 0.6)
        stopping = [self.insights.stop(), self.heap.stop()]
        stopping += [task.stop() for task in (self.touch_flusher, self.forgetting) if task is not None]
        stopping += [part.stop() for part in (self.worker, self.batcher) if part is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*stopping, return_exceptions=True), 0.3)
        except TimeoutError:
            log.warning("background work did not stop within 0.3 s; abandoned")
        await asyncio.to_thread(self.indexer.stop, 0.3)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def _wait_raft_stopped(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.raft is not None and self.raft.tick_thread_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def is_leader(self) -> bool:
        return self.raft is not None and self.raft.is_leader()

    def _on_raft_state_changed(self, old: int, new: int) -> None:
        """PySyncObj's tick thread: hand the change to the event loop."""
        self.role_since = time.time()
        if old == LEADER and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._leadership_lost)

    def _leadership_lost(self) -> None:
        log.warning("lost Raft leadership; stopping leader-only workers")
        if self.worker is not None:
            self.worker.on_leadership_lost()

    def ready(self) -> bool:
        return self.raft is not None and self.raft.leader_address() is not None

    def _require_raft(self) -> tuple[RaftNode, Proposer, IngestBatcher, ConsolidationWorker]:
        if self.raft is None or self.proposer is None or self.batcher is None or self.worker is None:
            raise Unavailable("node is starting")
        return self.raft, self.proposer, self.batcher, self.worker

    async def _read(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def run_read(self, fn: Any, *args: Any) -> Any:
        """Run a blocking read on the read pool (keeps the event loop free)."""
        return await self._read(fn, *args)

    async def wait_indexed(self) -> None:
        """Wait until search indexes cover everything applied here so far."""
        await self._await_indexed()

    # -- writes --------------------------------------------------------------------------
    async def ingest(self, tenant_id: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        _, _, batcher, worker = self._require_raft()
        answers: Any = await batcher.submit(tenant_id, events)
        if isinstance(answers, dict):  # the state machine refused: the tenant is moving or moved
            if answers["refused"] == "moved":
                raise TenantMoved(answers["moved_to"])
            raise Unavailable(
                "this tenant is being moved to another shard; retry shortly", code="tenant_moving"
            )
        if self.settings.consolidation.auto and self._pending_over_batch(tenant_id):
            worker.trigger()
        return list(answers)

    def check_tenant_here(self, tenant_id: str) -> None:
        """Raise TenantMoved if this tenant lives on another shard now."""
        record = self.reader.tenant(tenant_id)
        if record is not None and record.get("state") == "moved":
            raise TenantMoved(record.get("moved_to", []))

    async def set_tenant_state(
        self, tenant_id: str, state: str, moved_to: list[str], purge: bool
    ) -> dict[str, Any]:
        result = await self.propose(commands.tenant_state(tenant_id, state, moved_to, purge))
        if not result.get("ok"):
            raise InvalidInput(result.get("error", {}).get("message", "refused"))
        await self._await_indexed()
        return {"tenant_id": tenant_id, "state": state, "moved_to": moved_to if state == "moved" else []}

    async def import_keys(self, tenant_id: str, records: list[dict[str, Any]]) -> int:
        for record in records:
            await self.propose(
                commands.issue_key(tenant_id, record["key_hash"], record["key_id"], record["created_at"])
            )
        return len(records)

    def _pending_over_batch(self, tenant_id: str) -> bool:
        record = self.reader.tenant_or_empty(tenant_id)
        return record["next_seq"] - 1 - record["cursor"] >= self.settings.consolidation.batch_size

    async def propose(self, command: dict[str, Any]) -> dict[str, Any]:
        _, proposer, _, _ = self._require_raft()
        return await proposer.propose(command)

    async def delete_memory(self, tenant_id: str, memory_id: str, purge_events: bool = False) -> int:
        result = await self.propose(commands.delete_memory(tenant_id, memory_id, purge_events=purge_events))
        if not result.get("ok"):
            raise NotFound(f"memory {memory_id!r} not found")
        self.insights.changed(tenant_id)
        await self._await_indexed()
        return int(result.get("purged_events", 0))

    async def delete_tenant(self, tenant_id: str) -> bool:
        result = await self.propose(commands.delete_tenant(tenant_id))
        await self._await_indexed()
        return bool(result.get("existed"))

    async def issue_key(self, tenant_id: str) -> dict[str, Any]:
        secret = "mk_" + secrets.token_urlsafe(32)
        key_id = "key-" + uuid.uuid4().hex[:12]
        await self.propose(commands.issue_key(tenant_id, hash_key(secret), key_id, time.time()))
        return {"tenant_id": tenant_id, "key_id": key_id, "api_key": secret}

    async def revoke_key(self, tenant_id: str, key_id: str) -> dict[str, Any]:
        """Replicated, so the key stops authenticating on every replica once applied there."""
        result = await self.propose(commands.revoke_key(tenant_id, key_id))
        if not result.get("ok"):
            raise NotFound(f"tenant {tenant_id!r} has no key {key_id!r}")
        return {"tenant_id": tenant_id, "key_id": key_id, "revoked": True}

    async def consolidate(self, tenant_id: str, wait: bool, timeout: float = 120.0) -> dict[str, Any]:
        """Consolidate everything of this tenant acknowledged before the call."""
        _, _, _, worker = self._require_raft()
        target = self.reader.tenant_or_empty(tenant_id)["next_seq"] - 1
        if not wait:
            worker.trigger()
            return {"tenant_id": tenant_id, "target_seq": target, "done": False}
        try:
            await asyncio.wait_for(worker.consolidate_tenant(tenant_id, upto_seq=target), timeout)
        except TimeoutError:
            # Not an error: a slow embedder on a busy machine needs more than one call.
            # The answer says how far it got; the caller asks again.
            record = self.reader.tenant_or_empty(tenant_id)
            return {"tenant_id": tenant_id, "target_seq": target, "cursor": record["cursor"], "done": False}
        await self._await_indexed()
        record = self.reader.tenant_or_empty(tenant_id)
        return {"tenant_id": tenant_id, "target_seq": target, "cursor": record["cursor"], "done": True}

    async def _await_indexed(self, timeout: float = 30.0) -> None:
        """Wait until the derived indexes reflect everything applied so far."""
        index = self.store.applied_index()
        ok = await asyncio.to_thread(self.indexer.wait_for, index, timeout)
        if not ok:
            raise Unavailable("indexes are catching up; retry shortly", retry_after=1.0)

    # -- reads ---------------------------------------------------------------------------
    async def retrieve(self, req: RetrieveRequest) -> dict[str, Any]:
        answer: dict[str, Any] = await self._read(self.retriever.retrieve, req)
        self._record_access(req.tenant_id, answer["results"])
        return answer

    def memory(self, tenant_id: str, memory_id: str) -> Memory:
        memory = self.reader.memory(tenant_id, memory_id)
        if memory is None:
            raise NotFound(f"memory {memory_id!r} not found")
        return memory

    def memories(
        self,
        tenant_id: str,
        stream_id: str | None,
        limit: int,
        after: str | None,
        admit: Callable[[Memory], bool] | None = None,
    ) -> list[Memory]:
        """Up to ``limit`` memories after ``after`` (by id) that pass the filters; may read many."""
        out: list[Memory] = []
        for memory in self.reader.memories(tenant_id, after_id=after):
            if (stream_id is None or memory.stream_id == stream_id) and (admit is None or admit(memory)):
                out.append(memory)
                if len(out) >= limit:
                    break
        return out

    def events(self, tenant_id: str, stream_id: str | None, after: int, limit: int) -> list[Event]:
        out: list[Event] = []
        for event in self.reader.events(tenant_id, after_seq=after):
            if stream_id is None or event.stream_id == stream_id:
                out.append(event)
                if len(out) >= limit:
                    break
        return out

    def tenant_status(self, tenant_id: str) -> dict[str, Any]:
        record = self.reader.tenant_or_empty(tenant_id)
        total = record["next_seq"] - 1
        return {
            "tenant_id": tenant_id,
            "l0_events": record["events"],
            "l1_memories": record["memories"],
            "pending_events": total - record["cursor"],
            "stale_vectors": self.indexer.stale_vector_count(tenant_id),
            "consolidation_cursor": record["cursor"],
            "state": record.get("state", "active"),
        }

    def cluster_status(self) -> dict[str, Any]:
        raft = self.raft
        base = {
            "node_id": self.settings.node_id,
            "raft_address": self.settings.raft_address,
            "url": self.settings.public_url,
            "http_address": self.settings.http,
        }
        if raft is None:
            return {**base, "role": "starting", "leader": None, "leader_url": None, "peers": []}
        status = raft.getStatus()
        match = raft.match_index() if raft.is_leader() else {}
        commit = int(status.get("commit_idx") or 0)
        peers = []
        for member in raft.members():
            entry = {**member, "state": "connected" if member["connected"] else "disconnected"}
            if raft.is_leader():
                entry["match_index"] = match.get(member["raft_address"], 0)
                entry["lag"] = max(0, commit - entry["match_index"])
            peers.append(entry)
        return {
            **base,
            "role": raft.role(),
            "role_since": round(self.role_since, 3),
            "term": status.get("raft_term", 0),
            "leader": raft.leader_address(),
            "leader_id": raft.leader_address(),
            "leader_url": raft.leader_url(),
            "has_quorum": bool(status.get("has_quorum")),
            "commit_index": commit,
            "last_log_index": raft.last_log_index(),
            "raft_applied_index": raft.raftLastApplied,
            "applied_index": self.store.applied_index(),
            "indexed_index": self.indexer.searchable_index(),
            "embedding_model": self.embedder.model,
            "stale_vectors": self.indexer.stale_vector_count(),
            "log_entries": status.get("log_len", 0),
            "elections": raft.elections,
            "leader_changes": raft.leader_changes,
            "snapshots": dict(raft.snapshot_stats),
            "dump_unshared_bytes": raft.dump_unshared_bytes,
            "journal_fsyncs": raft.fsyncs,
            "journal_fsync_max_ms": round(raft.fsync_max_s * 1000, 1),
            "max_tick_gap_ms": round(raft.max_tick_gap_s * 1000, 1),
            "tick_stalls_over_500ms": raft.long_ticks,
            "raft_transport": raft.transport_stats(),
            "commit_latency_ms": self._commit_latency(),
            "peers": peers,
        }

    def _commit_latency(self) -> dict[str, float]:
        """Recent propose -> applied-on-leader latencies of this node (ms)."""
        recent = sorted(self.proposer.latencies[-1000:]) if self.proposer is not None else []
        if not recent:
            return {}
        return {
            "p50": round(recent[len(recent) // 2] * 1000, 2),
            "p99": round(recent[int(len(recent) * 0.99)] * 1000, 2),
            "samples": len(recent),
        }

    # -- replication -------------------------------------------------------------------------
    async def read_barrier(self, consistency: str) -> None:
        """Make a read at ``consistency`` safe to serve from this node.

        eventual: this replica as it is. leader: this node must believe it leads (else a 307
        to the leader); it may be stale for up to one election timeout after a partition.
        linearizable: a no-op goes through the log and is applied here before the read.
        """
        if consistency == "eventual":
            return
        raft, proposer, _, _ = self._require_raft()
        if consistency == "leader":
            if not raft.is_leader():
                raise proposer.not_leader()
            return
        await proposer.barrier()

    def digest(self, tenant_id: str) -> dict[str, Any]:
        """Hash of a tenant's replicated state and the applied index it was taken at."""
        for _ in range(5):  # optimistic: no write may land while hashing
            before = self.store.applied_index()
            value = self.reader.tenant_digest(tenant_id)
            if self.store.applied_index() == before:
                return {"tenant_id": tenant_id, "applied_index": before, "digest": value}
        with self.store.writes_paused():
            index = self.store.applied_index()
            return {
                "tenant_id": tenant_id,
                "applied_index": index,
                "digest": self.reader.tenant_digest(tenant_id),
            }

    async def add_member(self, raft_address: str, url: str) -> dict[str, Any]:
        raft, proposer, _, _ = self._require_raft()
        await proposer.change_membership(lambda cb: raft.add_member(raft_address, url, cb))
        return {"added": raft_address, "members": raft.members()}

    async def remove_member(self, raft_address: str) -> dict[str, Any]:
        raft, proposer, _, _ = self._require_raft()
        if raft_address == self.settings.raft_address:
            raise Conflict("the leader cannot remove itself; transfer leadership or ask another node")
        await proposer.change_membership(lambda cb: raft.remove_member(raft_address, cb))
        return {"removed": raft_address, "members": raft.members()}

    def authenticate(self, secret: str) -> str | None:
        """The tenant a key is bound to, '*' for the admin key, None if unknown."""
        if secrets.compare_digest(secret, self.admin_key):
            return "*"
        record = self.reader.api_key(secret)
        return record["tenant_id"] if record else None

    async def reindex(self, tenant_id: str | None = None) -> dict[str, Any]:
        """Rebuild the derived indexes of every tenant, or of one (``tenant_id``)."""
        started = time.perf_counter()
        before = self.indexer.rebuilds
        self.indexer.request_rebuild(tenant_id)
        deadline = time.monotonic() + 600
        while self.indexer.rebuilds == before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self._await_indexed()
        return {"rebuilt": True, "took_ms": round((time.perf_counter() - started) * 1000, 1)}

    # -- consolidation pipeline: feedback, forgetting, history, graph (issue 4) ------------
    def _start_maintenance(self, proposer: Proposer) -> None:
        f = self.settings.forgetting
        self.touch_flusher = TouchFlusher(
            self.touches,
            proposer,
            interval=f.touch_flush_secs,
            boost=f.access_boost,
            is_leader=self.is_leader,
            clock=lambda: self.clock(),
        )
        self.touch_flusher.start()
        self.forgetting = ForgettingWorker(
            self.reader, proposer, f, is_leader=self.is_leader, clock=lambda: self.clock()
        )
        self.forgetting.start()

    def _record_access(self, tenant_id: str, results: list[dict[str, Any]]) -> None:
        """Feedback for the next Touch; dropped on followers (see node/maintenance.py)."""
        ids = [r["id"] for r in results if r.get("layer") == "L1"]
        if not ids:
            return
        if self.is_leader():
            self.touches.record(tenant_id, ids)
        else:
            self.touches_dropped += len(ids)

    def _forgetting(self) -> ForgettingWorker:
        if self.forgetting is None:
            raise Unavailable("node is starting")
        return self.forgetting

    def forget_preview(self, tenant_id: str) -> dict[str, Any]:
        now = self.clock()
        chosen = self._forgetting().preview(tenant_id, now)
        return {
            "tenant_id": tenant_id,
            "now": iso(now),
            "would_archive": [
                {
                    "id": m.memory_id,
                    "content": m.content,
                    "importance": m.importance,
                    "decayed_importance": round(value, 6),
                    "last_accessed_at": iso(m.last_accessed_at),
                }
                for m, value in chosen
            ],
        }

    async def forget_run(self, tenant_id: str) -> dict[str, Any]:
        result = await self._forgetting().run_tenant(tenant_id)
        await self._await_indexed()
        return {"tenant_id": tenant_id, "now": iso(result["now"]), "archived": result["archived"]}

    async def restore_memory(self, tenant_id: str, memory_id: str) -> dict[str, Any]:
        result = await self.propose(commands.restore(tenant_id, memory_id, self.clock()))
        if not result.get("ok"):
            raise NotFound(f"memory {memory_id!r} not found")
        await self._await_indexed()
        return {"id": memory_id, "restored": bool(result.get("restored"))}

    def memory_history(self, tenant_id: str, memory_id: str) -> dict[str, Any]:
        """Every version of the memory and of those it superseded or was superseded by."""
        self.memory(tenant_id, memory_id)
        lineage: list[str] = []
        todo, seen = [memory_id], {memory_id}
        while todo and len(lineage) < 100:
            current = self.reader.memory(tenant_id, todo.pop())
            if current is None:
                continue
            lineage.append(current.memory_id)
            for other in [*current.supersedes, current.superseded_by]:
                if other and other not in seen:
                    seen.add(other)
                    todo.append(other)
        memories = sorted(
            (self.memory(tenant_id, mid) for mid in lineage), key=lambda m: (m.valid_from, m.created_at)
        )
        order = {m.memory_id: i for i, m in enumerate(memories)}
        raw = [(entry, mid) for mid in lineage for entry in self.reader.history(tenant_id, mid)]
        raw.sort(key=lambda item: (item[0]["at"], order[item[1]], item[0]["version"]))
        versions = [
            {
                **entry,
                "memory_id": mid,
                "at": iso(entry["at"]),
                "valid_from": iso(entry["valid_from"]),
                "valid_to": iso(entry["valid_to"]),
            }
            for entry, mid in raw
        ]
        return {"id": memory_id, "lineage": [m.memory_id for m in memories], "versions": versions}

    def graph(self, tenant_id: str, limit: int) -> dict[str, Any]:
        """Memories as nodes and their edges (each undirected pair once, source < target)."""
        memories = list(self.reader.memories(tenant_id, limit=limit + 1))
        truncated = len(memories) > limit
        memories = memories[:limit]
        ids = {m.memory_id for m in memories}
        nodes = [
            {
                "id": m.memory_id,
                "content": m.content,
                "stream_id": m.stream_id,
                "importance": m.importance,
                "access_count": m.access_count,
                "archived": m.archived,
                "superseded": not m.is_current,
                "valid_from": iso(m.valid_from),
                "valid_to": iso(m.valid_to),
            }
            for m in memories
        ]
        edges = [
            e.public()
            for m in memories
            for e in self.reader.edges_of(tenant_id, m.memory_id)
            if e.source < e.target and e.target in ids
        ]
        return {"tenant_id": tenant_id, "nodes": nodes, "edges": edges, "truncated": truncated}

    def rejections(self, tenant_id: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        return [
            {"event_id": event_id, "reason": r["reason"], "at": iso(r["at"])}
            for event_id, r in self.reader.rejected(tenant_id, after=after, limit=limit)
        ]

    def _stale_embeddings(self, tenant_id: str) -> list[Memory]:
        return [
            m
            for m in self.reader.memories(tenant_id)
            if not m.in_space(self.embedder.model, self.embedder.dim)
        ]

    async def reembed(
        self, tenant_id: str | None, dry_run: bool, chunk: int = 64, limit: int | None = None
    ) -> dict[str, Any]:
        """Re-derive embeddings made by another model or dimension (``memorose admin reembed``),
        online: batches of ``chunk`` memories, one command each. ``limit`` bounds the memories
        re-embedded by this call (the CLI steps through a tenant to show progress); ``stale``
        in the report is the count before this call."""
        tenants = [tenant_id] if tenant_id else self.reader.tenant_ids()
        report: dict[str, Any] = {"model": self.embedder.model, "dim": self.embedder.dim, "tenants": {}}
        budget = limit if limit is not None else float("inf")
        for tenant in tenants:
            stale = await asyncio.to_thread(self._stale_embeddings, tenant)
            todo = 0 if dry_run else int(min(len(stale), budget))
            budget -= todo
            updated = 0
            for start in range(0, todo, chunk):
                part = stale[start : min(start + chunk, todo)]
                vectors = await asyncio.to_thread(self.embedder.embed, [m.content for m in part])
                items = [
                    {
                        "memory_id": m.memory_id,
                        "content_sha": content_sha(m.content),
                        "embedding": v.astype("<f4").tobytes(),
                        "embedding_model": self.embedder.model,
                        "embedding_dim": int(v.shape[0]),
                    }
                    for m, v in zip(part, vectors, strict=True)
                ]
                result = await self.propose(commands.reembed(tenant, items, self.clock()))
                updated += int(result.get("updated", 0))
            report["tenants"][tenant] = {"stale": len(stale), "updated": updated}
        if not dry_run:
            await self._await_indexed()
        return report
