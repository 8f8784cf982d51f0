"""Request and response bodies of the HTTP API as pydantic models.

Requests are strict: unknown fields, wrong JSON types (``"10"`` for an integer, ``true`` for
a number), NaN/Infinity and out-of-range values are refused. A ``null`` field means its
default, as it always has. Ids, text, metadata and times are checked by the same functions
as before (``memorose.models``), which raise ``InvalidInput`` with their own message; pydantic
lets that error through unchanged, and ``parse`` turns pydantic's own errors into one too,
so every refusal is still a 400 ``invalid_input`` in the JSON error shape.

Responses are permissive (``extra="allow"``): a newer server may add fields, and an older
SDK must keep working. They document what a client can rely on.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from memorose.errors import InvalidInput
from memorose.models import (
    MAX_CONTENT_CHARS,
    MAX_METADATA_BYTES,
    parse_timestamp,
    validate_event_id,
    validate_memory_id,
    validate_stream_id,
    validate_tenant_id,
    validate_text,
)

#: The id alphabets of ``memorose.models`` as JSON-schema patterns (documentation; the
#: validators below are what decides).
ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$"
EVENT_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$"
MAX_QUERY_CHARS = 4000
#: Ceilings of settings that bound a request (``limits.max_top_k``, ``limits.max_batch_events``):
#: the schema states the defaults; the node checks its configured value.
DEFAULT_MAX_TOP_K = 200
DEFAULT_MAX_BATCH_EVENTS = 5000

M = TypeVar("M", bound=BaseModel)


def _id(check: Any, pattern: str) -> Any:
    return [BeforeValidator(check), WithJsonSchema({"type": "string", "pattern": pattern})]


TenantId = Annotated[str, *_id(validate_tenant_id, ID_PATTERN)]
StreamId = Annotated[str, *_id(validate_stream_id, ID_PATTERN)]
EventId = Annotated[str, *_id(validate_event_id, EVENT_ID_PATTERN)]
MemoryId = Annotated[str, *_id(validate_memory_id, EVENT_ID_PATTERN)]


def _content(value: Any) -> str:
    """Event text: a non-blank string (an empty event is noise that still costs a Raft entry)."""
    text = validate_text("content", value)
    if not text.strip():
        raise InvalidInput("content must not be empty or only whitespace")
    return text


def _query(value: Any) -> str:
    return validate_text("query", value, max_chars=MAX_QUERY_CHARS)


def _timestamp(value: Any) -> float:
    return parse_timestamp(value)


def as_of_time(value: Any) -> float | None:
    """``as_of`` as epoch seconds (None: now); a bad value is a 400 naming the field."""
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except InvalidInput as exc:
        raise InvalidInput(f"as_of: {exc.message}") from None


def _metadata(value: Any) -> dict[str, Any]:
    """Depth, key and value text and the serialised size: what JSON Schema cannot bound."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object")
    _check_json_value(value, depth=0)
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return value


def _check_json_value(value: Any, depth: int) -> None:
    if depth > 8:
        raise InvalidInput("metadata is nested too deeply (max 8)")
    if isinstance(value, dict):
        for key, item in value.items():
            validate_text("metadata key", key, max_chars=256)
            _check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)
    elif isinstance(value, str):
        validate_text("metadata value", value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput("metadata numbers must be finite")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63 - 1:
        raise InvalidInput("metadata integers must fit in 64 bits")


_TIME_SCHEMA = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number", "minimum": 0}]}
Content = Annotated[
    str,
    BeforeValidator(_content),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_CONTENT_CHARS}),
]
QueryText = Annotated[
    str, BeforeValidator(_query), WithJsonSchema({"type": "string", "maxLength": MAX_QUERY_CHARS})
]
Timestamp = Annotated[float, BeforeValidator(_timestamp), WithJsonSchema(_TIME_SCHEMA)]
AsOf = Annotated[float | None, BeforeValidator(as_of_time), WithJsonSchema(_TIME_SCHEMA)]
Metadata = Annotated[
    dict[str, Any],
    BeforeValidator(_metadata),
    WithJsonSchema({"type": "object", "description": "JSON object, at most 8 levels, 16,000 bytes"}),
]


class Request(BaseModel):
    """A request body: strict JSON types, known fields only, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """``null`` means "the default" (a required field stays missing). One call per
        object, not one per field: a batch of 500 events paid 2,500 Python calls here."""
        if not isinstance(data, dict) or None not in data.values():
            return data
        fields = cls.model_fields
        return {
            key: value
            for key, value in data.items()
            if value is not None or key not in fields or fields[key].is_required()
        }


def parse(model: type[M], data: Any, where: str = "body") -> M:
    """``model`` from decoded JSON; every refusal is an ``InvalidInput`` (400)."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_message(model, exc, where)) from None


def _message(model: type[BaseModel], exc: ValidationError, where: str) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    unknown = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        allowed = sorted(model.model_fields)
        return f"unknown field(s) in {where}: {', '.join(unknown)[:200]}; allowed: {allowed}"
    first = errors[0]
    loc = ".".join(map(str, first["loc"])) or where
    if first["type"] == "missing":
        return f"field {loc!r} is required"
    return f"{loc}: {first['msg']}"[:300]


# -- requests ------------------------------------------------------------------------------
class EventIn(Request):
    """One event; ``event_id`` is the idempotency key (the node makes one if omitted)."""

    stream_id: StreamId
    content: Content
    metadata: Metadata = Field(default_factory=dict)
    timestamp: Timestamp | None = Field(None, description="valid time; default: now")
    event_id: EventId | None = None


class IngestEventRequest(EventIn):
    tenant_id: TenantId


class IngestBatchRequest(Request):
    tenant_id: TenantId
    #: The node checks its own ``limits.max_batch_events`` first (a setting; the schema
    #: states the default).
    events: list[EventIn] = Field(min_length=1, json_schema_extra={"maxItems": DEFAULT_MAX_BATCH_EVENTS})


Consistency = Literal["eventual", "leader", "linearizable"]


class RetrieveRequest(Request):
    tenant_id: TenantId
    query: QueryText
    stream_id: StreamId | None = None
    #: Bounded by the node's ``limits.max_top_k`` (a setting; the schema states the default).
    top_k: int = Field(10, ge=1, json_schema_extra={"maximum": DEFAULT_MAX_TOP_K})
    graph_depth: int = Field(0, ge=0, le=3)
    enable_arbitration: bool = True
    consistency: Consistency = "eventual"
    as_of: AsOf = None
    include_insights: bool = False
    passages: bool = True
    min_score: float = Field(0.0, ge=0, le=1000)
    explain: bool = False

    @field_validator("stream_id", "consistency", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty ``stream_id`` means every stream, an empty ``consistency`` the default."""
        if value == "":
            return cls.model_fields[info.field_name or ""].get_default()
        return value


class TenantWaitRequest(Request):
    """``POST /consolidate`` and ``POST /insights/refresh``."""

    tenant_id: TenantId
    wait: bool = True


class TenantRequest(Request):
    tenant_id: TenantId


class OptionalTenantRequest(Request):
    """``POST /admin/reindex``: no tenant rebuilds every tenant."""

    tenant_id: TenantId | None = None


class EmptyRequest(Request):
    """A body that must be ``{}`` when sent (``POST /admin/tenants/{t}/keys``)."""


class ReembedRequest(Request):
    tenant_id: TenantId | None = None
    dry_run: bool = False
    limit: int = Field(0, ge=0, le=10_000_000, description="at most this many memories; 0: all")


HttpUrl = Annotated[str, Field(pattern=r"^https?://", max_length=299)]


class AddMemberRequest(Request):
    raft_address: str = Field(max_length=255, description="HOST:PORT of the new member's Raft port")
    url: HttpUrl


class TenantStateRequest(Request):
    state: Literal["active", "frozen", "moved"]
    moved_to: list[HttpUrl] = Field(default_factory=list)
    purge: bool = False

    @model_validator(mode="after")
    def _moved_needs_urls(self) -> TenantStateRequest:
        if self.state == "moved" and not self.moved_to:
            raise InvalidInput("moved_to is required when state is moved")
        return self


class KeyRecord(Request):
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 hex digest of the key")
    key_id: str = Field(max_length=64)
    created_at: float = Field(description="epoch seconds")
    tenant_id: Any = Field(None, description="ignored (the path names the tenant)")


class ImportKeysRequest(Request):
    keys: list[KeyRecord] = Field(max_length=10_000)


# -- query strings -------------------------------------------------------------------------
class Query(BaseModel):
    """A query string: values arrive as text (lax parsing), unknown parameters are ignored
    (as they always were), an empty value means the default."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields[info.field_name or ""]
        if value == "" and not field.is_required():
            return field.get_default(call_default_factory=True)
        return value


#: A boolean in a query string: true/false (any case) or 1/0.
Flag = Annotated[str, Field(pattern=r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$")]


def flag(value: str) -> bool:
    return value.lower() in ("true", "1")


class TenantQuery(Query):
    tenant_id: TenantId


class ReadQuery(TenantQuery):
    consistency: Consistency = "eventual"


class ListEventsQuery(ReadQuery):
    stream_id: StreamId | None = None
    after: int = Field(0, ge=0, le=2**62, description="return events after this seq")
    limit: int = Field(100, ge=1, le=1000)


class ListMemoriesQuery(ReadQuery):
    stream_id: StreamId | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: MemoryId | None = None
    include_superseded: Flag = "true"
    as_of: str | None = Field(None, description="ISO 8601 (naive: UTC) or epoch seconds")


class DeleteMemoryQuery(TenantQuery):
    purge_events: Flag = "false"


class LimitQuery(TenantQuery):
    limit: int = Field(100, ge=1, le=5000)


class GraphQuery(TenantQuery):
    limit: int = Field(500, ge=1, le=5000)


class InsightsQuery(TenantQuery):
    stream_id: StreamId | None = None
    limit: int = Field(100, ge=1, le=10_000)


class RejectionsQuery(TenantQuery):
    after: EventId | None = None
    limit: int = Field(100, ge=1, le=1000)


class LookupQuery(ReadQuery):
    ids: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}(,[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}){0,99}$",
        description="1 to 100 event ids, comma-separated",
    )


# -- responses -----------------------------------------------------------------------------
class Response(BaseModel):
    """A response body: the fields a client can rely on; a newer server may add more."""

    model_config = ConfigDict(extra="allow")


class ErrorBody(Response):
    code: str = Field(description="stable machine-readable code, e.g. invalid_input")
    message: str


class ErrorResponse(Response):
    error: ErrorBody


class IngestResponse(Response):
    event_id: str
    tenant_id: str
    stream_id: str
    seq: int


class BatchResponse(Response):
    event_ids: list[str]


class EventOut(Response):
    event_id: str
    tenant_id: str
    stream_id: str
    seq: int
    content: str
    timestamp: str | None
    ingested_at: str | None
    metadata: dict[str, Any]


class EventsPage(Response):
    events: list[EventOut]
    next_after: int | None


class MemoryOut(Response):
    id: str
    layer: str
    tenant_id: str
    stream_id: str
    content: str
    source_event_ids: list[str]
    created_at: str | None
    valid_from: str | None
    valid_to: str | None
    importance: float
    access_count: int
    archived: bool
    metadata: dict[str, Any]
    version: int
    superseded: bool
    superseded_by: str | None
    supersedes: list[str]


class MemoriesPage(Response):
    memories: list[MemoryOut]
    next_cursor: str | None


class RetrieveItem(Response):
    """A memory (``layer`` L1), an event not consolidated yet (L0) or an insight (L2)."""

    id: str
    layer: str
    content: str
    score: float | None = None


class RetrieveResponse(Response):
    results: list[RetrieveItem]
    took_ms: float


class DeleteMemoryResponse(Response):
    deleted: bool
    id: str
    purged_events: int


class TenantStatusResponse(Response):
    tenant_id: str
    l0_events: int
    l1_memories: int
    pending_events: int
    state: str


class ConsolidateResponse(Response):
    tenant_id: str
    done: bool
    target_seq: int | None = None
    cursor: int | None = None


class WhoAmIResponse(Response):
    role: Literal["admin", "tenant"]
    tenant_id: str | None


class IssuedKey(Response):
    tenant_id: str
    key_id: str
    api_key: str


class TenantsResponse(Response):
    tenants: list[TenantStatusResponse]


class LookupResponse(Response):
    events: list[EventOut]
    missing: list[str]


class InsightsResponse(Response):
    insights: list[dict[str, Any]]


class ProbeResponse(Response):
    status: str


class JsonObject(Response):
    """An object whose fields are described in docs/api.md (status and analysis views)."""
