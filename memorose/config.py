"""One typed settings object, from a TOML file plus ``MEMOROSE_*`` environment variables.

Precedence, highest first: explicit overrides (CLI flags), environment, TOML file, defaults.
Nested sections map to ``MEMOROSE_<SECTION>__<KEY>`` (for example
``MEMOROSE_CONSOLIDATION__BATCH_SIZE=50``). Validation happens once, at start, and a bad
value stops the process with a message naming the setting.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from memorose.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsolidationSettings(_Section):
    """The L0 -> L1 pipeline (docs/consolidation.md explains each threshold)."""

    interval_secs: float = Field(2.0, gt=0, le=86_400)
    batch_size: int = Field(100, ge=1, le=10_000)
    #: The leader consolidates on its own (every ``interval_secs``, and at once when
    #: ``batch_size`` events are pending). False: only when asked (``POST /consolidate``),
    #: e.g. to keep a bulk load's CPU for the load; events stay searchable meanwhile.
    auto: bool = True
    #: Events per round across tenants: one batch from each of several tenants, planned
    #: together and proposed together (one indexer wait, fsync and index commit for all).
    round_events: int = Field(2000, ge=1, le=100_000)
    #: ``pipeline`` (filter, compress, arbitrate, link) or ``verbatim`` (one memory per event).
    mode: Literal["pipeline", "verbatim"] = "pipeline"
    #: Character entropy (bits/char) below which an event is rejected as noise.
    entropy_threshold: float = Field(2.5, ge=0, le=16)
    #: Cosine above which two memories get a ``similar`` edge.
    similarity_threshold: float = Field(0.7, ge=-1, le=1)
    #: Cosine at or above which a fact only reinforces the memory it repeats.
    reinforce_threshold: float = Field(0.92, ge=0, le=1)
    #: Cosine at or above which a fact is merged into a related memory.
    merge_threshold: float = Field(0.9, ge=0, le=1)
    #: Minimal similarity between a correction ("moved to", "actually") and the memory it replaces.
    supersede_threshold: float = Field(0.3, ge=0, le=1)
    #: Candidates below this similarity are unrelated: the fact is created without arbitration.
    related_threshold: float = Field(0.45, ge=0, le=1)
    #: A merge that would make a memory longer than this creates a new memory instead.
    max_merged_chars: int = Field(600, ge=50, le=20_000)
    #: Extractive compression keeps at most this many characters of a verbose event.
    max_fact_chars: int = Field(400, ge=40, le=20_000)
    #: Existing memories considered per fact (vector top-k plus BM25 top-k).
    candidates: int = Field(8, ge=1, le=100)
    #: Importance a memory gains (fraction of the distance to 1) when a fact reinforces it.
    reinforce_boost: float = Field(0.15, ge=0, le=1)
    #: Weight of the edge between consecutive memories of a stream.
    temporal_edge_weight: float = Field(0.3, ge=0, le=1)
    #: At most this many similarity edges per new memory.
    max_similar_edges: int = Field(5, ge=0, le=100)
    #: A merged memory's vector: ``mean`` (the normalised mean of its parts' vectors, weighted
    #: by their lengths: no model call) or ``embed`` (the merged text through the model again).
    merge_vectors: Literal["mean", "embed"] = "mean"


class ForgettingSettings(_Section):
    enabled: bool = True
    decay_half_life_days: float = Field(30.0, gt=0)
    min_importance: float = Field(0.1, ge=0, le=1)
    #: How often the leader runs a forgetting pass over every tenant.
    interval_secs: float = Field(3600.0, gt=0)
    #: Importance a retrieval adds (fraction of the distance to 1).
    access_boost: float = Field(0.05, ge=0, le=1)
    #: Retrieval feedback is batched into one replicated Touch command this often.
    touch_flush_secs: float = Field(1.0, gt=0, le=3600)


class InsightSettings(_Section):
    """The L2 insight graph (docs/insights.md): Louvain communities of a tenant's memory
    graph, each distilled into an insight by the leader."""

    enabled: bool = True
    #: Every tenant whose graph changed since its last pass gets a pass this often.
    interval_secs: float = Field(300.0, gt=0, le=7 * 86_400)
    #: Between scheduled passes, a tenant gets a pass once this many memories were created,
    #: changed or removed (or a memory an insight cites was superseded, archived or deleted).
    min_changes: int = Field(50, ge=1)
    #: Louvain resolution: above 1 favours smaller communities, below 1 larger ones.
    resolution: float = Field(1.0, gt=0, le=100)
    #: Communities with fewer memories are not insights.
    min_community_size: int = Field(3, ge=2, le=100_000)
    #: Louvain's random state: the same graph always gives the same communities.
    seed: int = Field(42, ge=0, le=2**31 - 1)
    #: At most this many insights per tenant (the highest-scoring communities).
    max_insights: int = Field(100, ge=1, le=10_000)
    #: Most central memories quoted by the offline summary.
    summary_memories: int = Field(3, ge=1, le=20)
    max_summary_chars: int = Field(600, ge=80, le=10_000)
    #: Memories (most central first) shown to the LLM per community.
    llm_memories: int = Field(30, ge=1, le=500)
    #: Let the configured LLM write summaries (falls back to the offline summary).
    llm: bool = True
    #: Insights added to a retrieval with ``include_insights``.
    per_query: int = Field(2, ge=1, le=20)
    #: Passes take at most this share of one core over time: after a pass that cost c CPU
    #: seconds the worker waits c * (1 / share - 1) before the next (refreshes excepted).
    cpu_share: float = Field(0.15, gt=0, le=1)
    #: No pass while a tenant has events not yet consolidated (its graph is about to change)...
    defer_while_pending: bool = True
    #: ... unless its insights have waited this long (a tenant that never goes quiet).
    max_deferral_secs: float = Field(1800.0, gt=0)
    #: Incremental passes until the memories changed since the last full pass reach this
    #: share of the graph; then a full Louvain pass (drift control).
    full_pass_share: float = Field(0.25, ge=0, le=1)
    #: A full pass instead when the changed memories and their neighbours exceed this share.
    max_frontier_share: float = Field(0.3, gt=0, le=1)


class LLMSettings(_Section):
    """Language work (fact extraction, arbitration). ``auto``: Gemini when an API key is set
    (``api_key`` here or ``GOOGLE_API_KEY``), else the offline heuristics."""

    provider: Literal["auto", "offline", "gemini"] = "auto"
    api_key: str | None = None
    model: str = "gemini-2.5-flash"
    #: Another endpoint for the Gemini REST API (a proxy; the tests' local stub).
    base_url: str | None = None
    events_per_call: int = Field(20, ge=1, le=500)
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_initial_secs: float = Field(1.0, ge=0)
    backoff_max_secs: float = Field(30.0, ge=0)
    timeout_secs: float = Field(60.0, gt=0)
    #: Ask the LLM to arbitrate ambiguous facts (otherwise the offline heuristics do).
    arbitration: bool = True


class EmbeddingSettings(_Section):
    """``auto``: Gemini embeddings when a Google API key is set, else the ``local`` model
    (all-MiniLM-L6-v2 int8 ONNX from a pinned data package, docs/retrieval.md). ``hashing``
    is the lightweight offline option (no model, words not meaning). ``openai_compat`` talks
    to any /v1/embeddings endpoint (a local Ollama)."""

    provider: Literal["auto", "local", "hashing", "gemini", "openai_compat"] = "auto"
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    batch_size: int = Field(64, ge=1, le=2048)
    timeout_secs: float = Field(60.0, gt=0)
    #: onnxruntime intra-op threads of the ``local`` model (parallelism belongs across
    #: requests on a small machine, as with BLAS).
    local_threads: int = Field(1, ge=1, le=64)
    #: The ``local`` model's int8 weights stay int8 and its products run in int8 (about a
    #: third of the memory, and faster); False: onnxruntime's float32 folding (+110 MiB).
    local_int8_compute: bool = True
    #: Seconds without an embedding after which the ``local`` model is released (loaded
    #: again on the next use, ~0.1 s); 0 keeps it for the life of the process.
    local_keep_alive_secs: float = Field(300.0, ge=0)
    #: Where the int8 rewrite of the ``local`` model is kept (None: ``$XDG_CACHE_HOME/memorose``).
    local_cache_dir: Path | None = None


class RetrievalSettings(_Section):
    """Ranking (docs/retrieval.md). The defaults are what the LoCoMo figures were measured with."""

    #: Weight of the query-memory cosine in the re-ranker (BM25's weight is 1). None: 1.0
    #: for a sentence model, 0 for the hashing embedder (its cosine restates BM25 with noise).
    cosine_weight: float | None = Field(None, ge=0, le=100)
    #: False: first-stage reciprocal rank fusion only (an ablation baseline, not for use).
    rerank: bool = True
    #: Query expansion by meaning (retrieval/lexicon.py): weight of a tenant word close to a
    #: query word, times their cosine. None: 0.5 for a sentence model, 0 (off) for hashing.
    expansion_weight: float | None = Field(None, ge=0, le=10)
    #: Cosine a tenant word needs with a query word to be added.
    expansion_threshold: float = Field(0.5, ge=0, le=1)


class IndexSettings(_Section):
    #: Tenants with more active memories than this are searched through a LanceDB ANN
    #: index instead of an exact in-memory matrix.
    ann_threshold: int = Field(200_000, ge=1)
    embedding_dim: int = Field(384, ge=8, le=4096)


class StorageSettings(_Section):
    """RocksDB's memory and disk (docs/storage.md, "Memory and disk")."""

    #: Uncompressed data blocks kept in memory, shared by every read (RocksDB's own default
    #: is 32 MiB; the OS page cache still holds the compressed files). 4 MiB: reads at
    #: 100K memories are scattered, so 4, 8, 16 and 64 MiB measured the same read cost.
    block_cache_mib: int = Field(4, ge=1, le=65_536)
    #: One memtable; at most two are resident (one filling, one being flushed). RocksDB's
    #: default, 64 MiB, let a busy node hold up to 128 MiB of writes in memory. 8 MiB:
    #: retrieval's access counts rewrite records, so a serving node's memtables fill too.
    write_buffer_mib: int = Field(8, ge=1, le=4096)
    #: SST compression, applied to files written from then on (older files stay readable).
    #: LZ4 with a per-table dictionary: at 100K memories (local model) the database is 6%
    #: smaller than plain zstd and a multi-get of 250 records ~2x faster (docs/storage.md).
    compression: Literal["zstd", "lz4", "snappy", "none"] = "lz4"
    #: Dictionary sampled from each table's data to compress its blocks against (0: none).
    compression_dict_kib: int = Field(16, ge=0, le=1024)
    #: Target table size. RocksDB buffers a table's data uncompressed until it can sample
    #: the dictionary, so this bounds that buffer during flushes and compactions.
    target_file_mib: int = Field(4, ge=1, le=1024)


class RaftSettings(_Section):
    """PySyncObj tuning and durability. Defaults give millisecond acks on loopback while
    elections stay stable on a loaded 2-core machine (see docs/replication.md)."""

    append_entries_period: float = Field(0.01, gt=0)
    min_timeout: float = Field(1.0, gt=0)
    max_timeout: float = Field(2.0, gt=0)
    tick_period: float = Field(0.005, gt=0)
    #: A leader that has heard from no majority for this long steps down (PySyncObj's
    #: default is 30 s, during which a cut-off leader would keep answering "leader" reads).
    leader_fallback_timeout: float = Field(2.0, gt=0)
    #: Pause between reconnection attempts to a peer (PySyncObj's default is 5 s).
    connection_retry_time: float = Field(0.5, ge=0)
    log_compaction_min_entries: int = Field(20_000, ge=2)
    log_compaction_min_time: float = Field(600.0, gt=0)
    #: Also compact once the applied part of the Raft log holds this many bytes (0: off).
    #: The journal keeps every entry in memory until compaction, so this bounds RSS and
    #: journal disk when entries are big (batch ingest); see docs/replication.md.
    log_compaction_max_bytes: int = Field(64 << 20, ge=0)
    #: Also compact once the snapshot dump holds more than this many bytes (and more than a
    #: quarter of its tables) that the database has compacted away (0: off): the dump shares
    #: its tables with the database until RocksDB rewrites them, so this bounds the second
    #: copy on disk (docs/replication.md, "A dump shares its tables with the database").
    dump_unshared_max_bytes: int = Field(32 << 20, ge=0)
    #: Commands of the newest Raft entries kept in memory; older ones are read back from
    #: the journal file (a follower catching up). Bounds the journal's RSS (docs/replication.md).
    journal_cache_bytes: int = Field(2 << 20, ge=0)
    commit_timeout_secs: float = Field(10.0, gt=0)
    #: fsync the Raft journal before a node acknowledges entries to the leader (and the
    #: leader before it counts itself): an acknowledged write is on disk on a majority.
    fsync_journal: bool = True
    #: fsync every RocksDB write at apply (the journal already makes acks durable; this
    #: only shortens the replay after a power loss). See docs/durability.md.
    sync_apply: bool = False
    # -- the Raft port against peers without the password (docs/security-raft.md) --
    #: Longest frame accepted from an authenticated peer. The largest legitimate frame is a
    #: 1 MiB snapshot chunk, about 1.4 MiB encrypted; below 2 MiB replication could stall.
    max_frame_bytes: int = Field(16 << 20, ge=2 << 20, le=1 << 30)
    #: Longest frame accepted before the handshake completes (its frames are ~200 bytes).
    handshake_frame_bytes: int = Field(64 << 10, ge=1024, le=16 << 20)
    #: A connection that has not completed the encrypted handshake by then is closed.
    handshake_timeout: float = Field(5.0, gt=0, le=3600)
    #: A connection whose pending frame started arriving longer ago than this is closed.
    frame_read_timeout: float = Field(10.0, gt=0, le=3600)
    #: Incoming Raft connections accepted at once from one IP address.
    max_connections_per_ip: int = Field(16, ge=1, le=65535)


class MetricsSettings(_Section):
    """What /metrics may reveal. Tenant ids never become labels unless opted in here, and
    then only the ``tenant_top_n`` worst-lagging tenants at each scrape (bounded series)."""

    tenant_top_n: int = Field(0, ge=0, le=100)
    #: When set, /metrics needs ``Authorization: Bearer <token>`` (the admin key also works).
    token: str | None = Field(None, min_length=16)


class RuntimeSettings(_Section):
    """The Python runtime of a server process (memorose/runtime.py says why)."""

    #: Freeze the objects that survive start-up out of the cycle collector's scans.
    gc_freeze: bool = True
    #: Net allocations between young collections (CPython's default is 700).
    gc_gen0_threshold: int = Field(20_000, ge=100, le=10_000_000)
    #: How often the frozen heap is collected once in full and frozen again (0: never).
    gc_refreeze_secs: float = Field(900.0, ge=0)


class LimitSettings(_Section):
    """What one client can cost a node (docs/security.md says what each protects). A rate
    or quota of 0 means unlimited. Rates and ingest volume apply to tenant keys; the admin
    key (the operator) is exempt from them but not from quotas or the caps."""

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_top_k: int = Field(200, ge=1)
    max_batch_events: int = Field(5_000, ge=1)
    #: Requests per second per tenant (token bucket refill) and the burst above it.
    tenant_requests_per_sec: float = Field(100.0, ge=0)
    tenant_request_burst: int = Field(200, ge=1)
    #: Ingest body bytes per second per tenant, and the burst (at least one largest body).
    tenant_ingest_bytes_per_sec: int = Field(2 * 1024 * 1024, ge=0)
    tenant_ingest_burst_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: Storage quota per tenant: L0 events, L1 memories, L0 bytes (content + metadata).
    tenant_max_events: int = Field(0, ge=0)
    tenant_max_memories: int = Field(0, ge=0)
    tenant_max_bytes: int = Field(0, ge=0)
    #: Requests handled at once (past it: 503 ``overloaded``), and open connections
    #: (past it a new connection gets a 503 and is closed). 0 = no cap.
    max_concurrent_requests: int = Field(256, ge=0)
    max_connections: int = Field(1024, ge=0)
    #: A new connection must finish its request headers within this (else it is closed);
    #: a request body must arrive within ``body_timeout_secs`` (else 408); an idle
    #: keep-alive connection (or one sending its next headers) is closed after
    #: ``keepalive_timeout_secs``.
    header_timeout_secs: float = Field(10.0, gt=0, le=3600)
    body_timeout_secs: float = Field(30.0, gt=0, le=3600)
    keepalive_timeout_secs: float = Field(15.0, gt=0, le=3600)


def _parse_hostport(value: str, name: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{name} must be HOST:PORT, got {value!r}")
    return value


def validate_url_aliases(value: dict[str, str]) -> dict[str, str]:
    """http(s) base URL -> http(s) base URL, without trailing slashes (node and gateway)."""
    for public, internal in value.items():
        if not all(u.startswith(("http://", "https://")) for u in (public, internal)):
            raise ValueError("url_aliases maps http(s) base URLs to http(s) base URLs")
    return {p.rstrip("/"): i.rstrip("/") for p, i in value.items()}


class Settings(BaseSettings):
    """Everything a node needs to start. See docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix="MEMOROSE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    node_id: str = "n1"
    data_dir: Path = Path("./data")
    http: str = "127.0.0.1:8080"
    raft: str = "127.0.0.1:8081"
    #: The Raft address peers know this node by, if it differs from the bind address
    #: ``raft`` (NAT, a proxy in front of the port). It is the node's Raft identity.
    raft_advertise: str | None = None
    #: Other members, each "RAFTHOST:RAFTPORT=http://HTTPHOST:HTTPPORT".
    peers: list[str] = Field(default_factory=list)
    admin_key: str | None = None
    raft_password: str | None = None
    consolidation: ConsolidationSettings = Field(default_factory=lambda: ConsolidationSettings())
    forgetting: ForgettingSettings = Field(default_factory=lambda: ForgettingSettings())
    insights: InsightSettings = Field(default_factory=lambda: InsightSettings())
    llm: LLMSettings = Field(default_factory=lambda: LLMSettings())
    embeddings: EmbeddingSettings = Field(default_factory=lambda: EmbeddingSettings())
    index: IndexSettings = Field(default_factory=lambda: IndexSettings())
    storage: StorageSettings = Field(default_factory=lambda: StorageSettings())
    retrieval: RetrievalSettings = Field(default_factory=lambda: RetrievalSettings())
    raft_tuning: RaftSettings = Field(default_factory=lambda: RaftSettings())
    limits: LimitSettings = Field(default_factory=lambda: LimitSettings())
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings())
    runtime: RuntimeSettings = Field(default_factory=lambda: RuntimeSettings())
    #: The HTTP base URL clients and peers reach this node at (``http`` may be 0.0.0.0
    #: or a container-internal name); shown in cluster status. Default: http://{http}.
    http_advertise: str | None = None
    #: Advertised peer URL -> URL this node opens for it, where the advertised one only works
    #: from outside its network (compose: host ports). Used when the ops dashboard reads
    #: peers; Raft and redirects keep the advertised URLs. MEMOROSE_URL_ALIASES takes JSON.
    url_aliases: dict[str, str] = Field(default_factory=dict)

    @field_validator("url_aliases")
    @classmethod
    def _aliases(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_url_aliases(value)

    @field_validator("http", "raft", "raft_advertise")
    @classmethod
    def _hostport(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _parse_hostport(value, info.field_name)

    @field_validator("http_advertise")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("http_advertise must be an http(s):// base URL")
        return value

    @model_validator(mode="after")
    def _cluster(self) -> Settings:
        if self.peers and not self.raft_password:
            raise ValueError(
                "raft_password (MEMOROSE_RAFT_PASSWORD) is required when the node has peers; "
                "every member of the shard must use the same one"
            )
        own = self.raft_address
        if own in self.peer_map():
            raise ValueError(f"peers must not include this node's own Raft address {own}")
        return self

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").isalnum() or len(value) > 64:
            raise ValueError("node_id must be 1-64 characters of A-Z a-z 0-9 _ -")
        return value

    @field_validator("peers")
    @classmethod
    def _peers(cls, value: list[str]) -> list[str]:
        for peer in value:
            raft, sep, http = peer.partition("=")
            if not sep or not http.startswith(("http://", "https://")):
                raise ValueError(f"peer {peer!r} must look like RAFTHOST:PORT=http://HOST:PORT")
            _parse_hostport(raft, "peer raft address")
        return value

    @property
    def http_host(self) -> str:
        return self.http.rpartition(":")[0]

    @property
    def http_port(self) -> int:
        return int(self.http.rpartition(":")[2])

    @property
    def public_url(self) -> str:
        """The URL this node tells others to use for it."""
        return (self.http_advertise or f"http://{self.http}").rstrip("/")

    @property
    def raft_address(self) -> str:
        """This node's Raft identity: the advertised address, else the bind address."""
        return self.raft_advertise or self.raft

    def google_api_key(self) -> str | None:
        """The Gemini key: ``[llm] api_key``, else GOOGLE_API_KEY / GEMINI_API_KEY."""
        return self.llm.api_key or os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")

    def peer_map(self) -> dict[str, str]:
        """Raft address -> HTTP base URL of every other member."""
        return dict(p.split("=", 1) for p in self.peers)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _CURRENT_TOML is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_CURRENT_TOML))
        return tuple(sources)


_CURRENT_TOML: Path | None = None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings; raise ConfigError with every problem listed."""
    global _CURRENT_TOML
    path = Path(config_file) if config_file else None
    if path is not None:
        read_toml(path)
    clean = {k: v for k, v in overrides.items() if v is not None}
    _CURRENT_TOML = path
    try:
        return Settings(**clean)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {problem(e['msg'])}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems} ({CONFIG_FIX})") from exc
    except SettingsError as exc:  # an environment value that is not valid JSON for a list or table
        detail = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
        hint = f"a list or table takes JSON; {CONFIG_FIX}"
        raise ConfigError(f"invalid environment: {detail} ({hint})") from exc
    finally:
        _CURRENT_TOML = None


def problem(message: str) -> str:
    """A validation message without pydantic's "Value error, " prefix."""
    return message.removeprefix("Value error, ")


#: Where a bad setting can come from, so the operator knows what to change.
CONFIG_FIX = "fix the flag, the MEMOROSE_* environment variable or the config file"


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's tables; ConfigError (not a traceback) when it is missing or unreadable."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist or is not a file: check --config")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}: fix the file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc}): check its permissions") from exc
