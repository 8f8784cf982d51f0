"""The RocksDB key layout. Everything replicated lives in one keyspace so that one
WriteBatch per Raft entry is atomic. Ids are validated (no '/') before they get here.

    m/applied_index               u64 big-endian: last Raft index applied
    t/<tenant>                    tenant record: counters, next seq, consolidation cursor
    e/<tenant>/<seq:016x>         L0 event, in ingest order
    i/<tenant>/<event_id>         seq of an event id (idempotency key, lookup)
    M/<tenant>/<memory_id>        L1 memory (embedding as float16, or float32 if older)
    A/<tenant>/<memory_id>        a memory's access state since its record was last written
                                  (access_count, last_accessed_at, importance): retrieval
                                  feedback rewrites these few bytes, not the whole record
    g/<tenant>/<src>/<dst>        memory edge (adjacency; stored under both endpoints)
    h/<tenant>/<memory_id>/<v:08x> one version of a memory (history, why it changed)
    j/<tenant>/<event_id>         why consolidation rejected an event (the event stays in e/)
    s/<tenant>/<stream>           newest memory of a stream (temporal adjacency edges)
    n/<tenant>/<insight_id>       L2 insight (summary, label, members, provenance)
    N/<tenant>/<memory_id>        the insight citing a memory (a memory is in at most one)
    k/<sha256(key)>               tenant API key record (only the hash is stored)
    x/<raft_index:016x>           change feed for the derived-index indexer
"""

from __future__ import annotations

APPLIED_INDEX = b"m/applied_index"
TENANT = b"t/"
EVENT = b"e/"
EVENT_ID = b"i/"
MEMORY = b"M/"
ACCESS = b"A/"
API_KEY = b"k/"
CHANGES = b"x/"
EDGE = b"g/"
HISTORY = b"h/"
REJECTED = b"j/"
STREAM_TAIL = b"s/"
INSIGHT = b"n/"
INSIGHT_MEMBER = b"N/"

#: Prefixes holding one tenant's replicated state (used by delete and digest).
TENANT_PREFIXES = (
    EVENT,
    EVENT_ID,
    MEMORY,
    ACCESS,
    EDGE,
    HISTORY,
    REJECTED,
    STREAM_TAIL,
    INSIGHT,
    INSIGHT_MEMBER,
)


def tenant(tenant_id: str) -> bytes:
    return TENANT + tenant_id.encode()


def tenant_prefix(prefix: bytes, tenant_id: str) -> bytes:
    return prefix + tenant_id.encode() + b"/"


def event(tenant_id: str, seq: int) -> bytes:
    return tenant_prefix(EVENT, tenant_id) + f"{seq:016x}".encode()


def seq_of_event_key(key: bytes) -> int:
    return int(key.rsplit(b"/", 1)[1], 16)


def event_id(tenant_id: str, eid: str) -> bytes:
    return tenant_prefix(EVENT_ID, tenant_id) + eid.encode()


def memory(tenant_id: str, memory_id: str) -> bytes:
    return tenant_prefix(MEMORY, tenant_id) + memory_id.encode()


def access(tenant_id: str, memory_id: str) -> bytes:
    return tenant_prefix(ACCESS, tenant_id) + memory_id.encode()


def edge(tenant_id: str, source: str, target: str) -> bytes:
    return tenant_prefix(EDGE, tenant_id) + f"{source}/{target}".encode()


def edges_of(tenant_id: str, memory_id: str) -> bytes:
    """Prefix of every edge leaving ``memory_id``."""
    return tenant_prefix(EDGE, tenant_id) + memory_id.encode() + b"/"


def split_edge_key(key: bytes) -> tuple[str, str]:
    source, target = key.decode().split("/")[2:4]
    return source, target


def history(tenant_id: str, memory_id: str, version: int) -> bytes:
    return history_of(tenant_id, memory_id) + f"{version:08x}".encode()


def history_of(tenant_id: str, memory_id: str) -> bytes:
    return tenant_prefix(HISTORY, tenant_id) + memory_id.encode() + b"/"


def rejected(tenant_id: str, eid: str) -> bytes:
    return tenant_prefix(REJECTED, tenant_id) + eid.encode()


def stream_tail(tenant_id: str, stream_id: str) -> bytes:
    return tenant_prefix(STREAM_TAIL, tenant_id) + stream_id.encode()


def insight(tenant_id: str, insight_id: str) -> bytes:
    return tenant_prefix(INSIGHT, tenant_id) + insight_id.encode()


def insight_member(tenant_id: str, memory_id: str) -> bytes:
    return tenant_prefix(INSIGHT_MEMBER, tenant_id) + memory_id.encode()


def api_key(key_hash: str) -> bytes:
    return API_KEY + key_hash.encode()


def change(raft_index: int) -> bytes:
    return CHANGES + f"{raft_index:016x}".encode()


def index_of_change_key(key: bytes) -> int:
    return int(key[len(CHANGES) :], 16)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])
