"""Request and response bodies of the mem0-compatible routes (``/mem0/...``, docs/mem0.md).

Apart from ``memorose.api.models`` because they are mem0's shapes, not Memorose's: the node
(``node/routes/mem0.py``) validates with them and ``memorose.api.openapi`` documents them.
Requests are strict like the rest (``Request``): unknown fields, wrong JSON types and
non-finite numbers are a 400 ``invalid_input``. The mem0 options Memorose accepts and
ignores (its own pipeline extracts, categorises and forgets) are fields of any JSON type,
so a client that sends them keeps working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    RootModel,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from memorose.api.models import (
    DEFAULT_MAX_BATCH_EVENTS,
    DEFAULT_MAX_TOP_K,
    Content,
    Flag,
    Metadata,
    Query,
    QueryText,
    Request,
    Response,
    Timestamp,
)
from memorose.errors import InvalidInput
from memorose.models import validate_text

#: mem0's entity ids; the first one given (in this order) names the stream.
ENTITIES = ("user_id", "agent_id", "run_id", "app_id")
MAX_ENTITY_CHARS = 256
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 1000

_IGNORED = "accepted and ignored (docs/mem0.md)"
Ignored = Annotated[Any, Field(None, description=_IGNORED)]


def _text(value: Any) -> str:
    """``text`` of an update: a non-blank string."""
    text = validate_text("text", value)
    if not text.strip():
        raise InvalidInput("text must not be empty or only whitespace")
    return text


def _no_expiration(value: Any) -> None:
    if value is not None:
        raise InvalidInput("expiration_date is not supported (Memorose forgets by decayed importance)")


def _no_reserved_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata and "mem0" in metadata:
        raise InvalidInput("metadata.mem0 is reserved (it holds the entity ids)")


class Entities(Request):
    """``user_id``, ``agent_id``, ``run_id``, ``app_id``: any text, 1 to 256 characters (an id
    outside the stream-id alphabet, such as an e-mail address, is hashed into the stream id)."""

    user_id: str | None = Field(None, min_length=1, max_length=MAX_ENTITY_CHARS)
    agent_id: str | None = Field(None, min_length=1, max_length=MAX_ENTITY_CHARS)
    run_id: str | None = Field(None, min_length=1, max_length=MAX_ENTITY_CHARS)
    app_id: str | None = Field(None, min_length=1, max_length=MAX_ENTITY_CHARS)

    @field_validator(*ENTITIES, mode="before")
    @classmethod
    def _entity(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        name = info.field_name
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ENTITY_CHARS:
            raise InvalidInput(f"{name} must be a non-empty string (at most {MAX_ENTITY_CHARS} characters)")
        return validate_text(str(name), value, max_chars=MAX_ENTITY_CHARS)

    def entities(self) -> dict[str, str]:
        """The entity ids given, by name."""
        return {name: value for name in ENTITIES if (value := getattr(self, name)) is not None}


def _only_entities(value: Any, allowed: tuple[str, ...]) -> Any:
    """mem0's other filter operators (``OR``, ``in``, dates, categories) are refused, not ignored."""
    if isinstance(value, dict):
        unsupported = sorted(set(value) - set(allowed))
        if unsupported:
            raise InvalidInput(
                f"unsupported filters: {', '.join(unsupported)[:200]} (only {', '.join(ENTITIES)})"
            )
    return value


class FilterTerm(Entities):
    """One term of ``filters.AND``: equality on entity ids."""

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, value: Any) -> Any:
        return _only_entities(value, ENTITIES)


class Filters(Entities):
    """Equality on entity ids, flat (``{"user_id": "alice"}``) or as one ``AND`` list
    (``{"AND": [{"user_id": "alice"}, {"agent_id": "bot"}]}``), not both."""

    AND: list[FilterTerm] | None = Field(None, max_length=len(ENTITIES) * 4)

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, value: Any) -> Any:
        value = _only_entities(value, (*ENTITIES, "AND"))
        if isinstance(value, dict) and "AND" in value and len(value) > 1:
            raise InvalidInput("filters: AND cannot be combined with other filters")
        return value

    def terms(self) -> list[Entities]:
        return [self, *(self.AND or [])]


class _Filtered(Entities):
    filters: Filters | None = None

    def entity_ids(self) -> dict[str, str]:
        """Entity ids from the top level and ``filters``; one given twice must agree."""
        found: dict[str, str] = {}
        terms: list[Entities] = [self, *(self.filters.terms() if self.filters is not None else [])]
        for term in terms:
            for name, value in term.entities().items():
                if found.setdefault(name, value) != value:
                    raise InvalidInput(f"{name} is given twice with different values")
        return found


# -- requests ------------------------------------------------------------------------------
class Mem0Message(Request):
    """A chat message; ``system`` messages are instructions, not facts (they are skipped)."""

    role: Literal["user", "assistant", "system"] = "user"
    content: Content
    name: str | None = Field(None, max_length=MAX_ENTITY_CHARS, description=_IGNORED)


class Mem0AddRequest(_Filtered):
    """``POST /mem0/v3/memories/add/`` (and ``/v1/memories/``)."""

    #: The node checks its own ``limits.max_batch_events`` first (a setting).
    messages: list[Mem0Message] = Field(
        min_length=1, json_schema_extra={"maxItems": DEFAULT_MAX_BATCH_EVENTS}
    )
    metadata: Metadata = Field(default_factory=dict, description="kept on each event (not under `mem0`)")
    timestamp: Timestamp | None = Field(None, description="valid time; default: now")
    async_mode: bool = Field(True, description="false: wait for consolidation and list the memories made")
    infer: Ignored
    custom_categories: Ignored
    custom_instructions: Ignored
    agent_custom_instructions: Ignored
    expiration_date: Ignored
    structured_data_schema: Ignored
    version: Ignored
    output_format: Ignored
    enable_graph: Ignored
    immutable: Ignored
    includes: Ignored
    excludes: Ignored
    org_id: Ignored
    project_id: Ignored

    @model_validator(mode="after")
    def _reserved(self) -> Mem0AddRequest:
        _no_reserved_metadata(self.metadata)
        return self


class _Read(_Filtered):
    show_expired: bool = Field(False, description="include archived (forgotten) memories")
    rerank: Ignored
    threshold: Ignored
    fields: Ignored
    categories: Ignored
    reference_date: Ignored
    latest_only: Ignored
    keyword_search: Ignored
    metadata: Ignored
    version: Ignored
    output_format: Ignored
    enable_graph: Ignored
    org_id: Ignored
    project_id: Ignored
    start_date: Ignored
    end_date: Ignored


class Mem0SearchRequest(_Read):
    """``POST /mem0/v3/memories/search/`` (and ``/v2/memories/search/``)."""

    query: QueryText
    #: Bounded by the node's ``limits.max_top_k`` (a setting; the schema states the default).
    top_k: int = Field(10, ge=1, json_schema_extra={"maximum": DEFAULT_MAX_TOP_K})


class Mem0ListRequest(_Read):
    """``POST /mem0/v3/memories/`` (and ``/v2/memories/``); paging is in the query string."""

    page: Ignored
    page_size: Ignored


UpdateText = Annotated[str, BeforeValidator(_text), WithJsonSchema({"type": "string", "minLength": 1})]


class Mem0UpdateRequest(Request):
    """``PUT /mem0/v1/memories/{memory_id}/``: ``text`` and/or ``metadata``."""

    text: UpdateText | None = None
    metadata: Metadata | None = Field(None, description="replaces the memory's metadata")
    timestamp: Timestamp | None = Field(None, description="valid time of the new version; default: now")
    expiration_date: Annotated[None, BeforeValidator(_no_expiration)] = Field(
        None, description="only null: Memorose forgets by decayed importance"
    )

    @model_validator(mode="after")
    def _something(self) -> Mem0UpdateRequest:
        if self.text is None and self.metadata is None:
            raise InvalidInput("text or metadata is required")
        _no_reserved_metadata(self.metadata)
        return self


class Mem0ListQuery(Query):
    page: int = Field(1, ge=1, le=MAX_PAGE)
    page_size: int = Field(100, ge=1, le=MAX_PAGE_SIZE)


class Mem0DeleteQuery(Query):
    delete_linked: Flag = Field("false", description="also delete the versions it superseded")


# -- responses -----------------------------------------------------------------------------
class Mem0Ping(Response):
    status: str
    org_id: str
    project_id: str = Field(description="the tenant")
    user_email: str | None


class Mem0Added(Response):
    id: str
    memory: str
    event: str


class Mem0AddResponse(Response):
    """Queued (``status: PENDING`` with the event ids) or, with ``async_mode: false``, the
    memories consolidation made (``results``)."""

    message: str | None = None
    status: str | None = None
    event_id: str | None = None
    event_ids: list[str] | None = None
    results: list[Mem0Added] | None = None


class Mem0Memory(Response):
    id: str
    memory: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    app_id: str | None
    hash: str
    metadata: dict[str, Any] | None
    categories: list[str]
    immutable: bool
    expiration_date: str | None
    created_at: str | None
    updated_at: str | None
    stream_id: str
    supersedes: list[str]
    score: float | None = None


class Mem0SearchResponse(Response):
    results: list[Mem0Memory]


class Mem0Page(Response):
    count: int
    next: str | None
    previous: str | None
    results: list[Mem0Memory]


class Mem0Deleted(Response):
    message: str


class Mem0HistoryEntry(Response):
    id: str
    memory_id: str
    input: list[Any]
    old_memory: str | None
    new_memory: str | None
    event: str
    action: str | None
    reason: str | None
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    app_id: str | None
    metadata: dict[str, Any] | None
    created_at: str | None
    updated_at: str | None


class Mem0History(RootModel[list[Mem0HistoryEntry]]):
    """A memory's versions, oldest first: one ``ADD``, then an ``UPDATE`` per change."""
