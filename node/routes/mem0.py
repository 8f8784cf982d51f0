"""A mem0-compatible REST API under ``/mem0`` (docs/mem0.md), so the unmodified ``mem0ai``
``MemoryClient`` works against a node: ``MemoryClient(api_key=KEY, host=URL + "/mem0")``
(the tenant is the one the key is bound to) or ``host=URL + "/mem0/<tenant_id>"`` (any key of
that tenant, or the admin key).

Mapping: the tenant comes from the URL or the key; mem0's ``user_id`` (else ``agent_id``,
``run_id``, ``app_id``) is the stream; the entity ids ride in the memory's metadata under
``mem0`` so reads can filter on them. Messages are events; ``update`` is a replicated
supersession; ``history`` is the memory's lineage. Bodies and query strings are the strict
models of ``memorose.api.mem0_models``; ``memorose.api.openapi`` documents every route here.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from memorose import commands
from memorose.api.mem0_models import (
    ENTITIES,
    Mem0AddRequest,
    Mem0DeleteQuery,
    Mem0ListQuery,
    Mem0ListRequest,
    Mem0SearchRequest,
    Mem0UpdateRequest,
)
from memorose.api.models import flag, parse
from memorose.errors import Forbidden, InvalidInput, NotFound, Unavailable
from memorose.models import Memory, event_bytes, iso, validate_stream_id, validate_tenant_id
from memorose.retrieval.search import RetrieveRequest
from node import validation as v
from node.http_limits import LIMITS, check_quota
from node.routes.common import (
    SERVICE,
    Handler,
    body_model,
    caller,
    check_list_size,
    path_memory_id,
    query_model,
)
from node.service import NodeService

PREFIX = "/mem0"
TENANT = r"{tenant_id:[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}}"


# -- auth and tenant ------------------------------------------------------------------------
@web.middleware
async def mem0_dialect(request: web.Request, handler: Handler) -> web.StreamResponse:
    """mem0 sends ``Authorization: Token <key>``; the node's guard (auth before the body is
    read, rate limits) reads ``Bearer``. Translating the scheme here keeps that guard whole.
    Errors keep the node's shape plus mem0's ``detail``, which its client shows."""
    if not request.path.startswith(PREFIX + "/"):
        return await handler(request)
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "token":
        headers = CIMultiDict(request.headers)
        headers["Authorization"] = f"Bearer {secret.strip()}"
        request = request.clone(headers=headers)
    response = await handler(request)
    if isinstance(response, web.Response) and response.status >= 400 and response.body:
        response.body = _with_detail(bytes(response.body))  # type: ignore[arg-type]
    return response


def _with_detail(body: bytes) -> bytes:
    try:
        payload = json.loads(body)
        payload["detail"] = payload["error"]["message"]
    except (ValueError, TypeError, KeyError):
        return body
    return json.dumps(payload).encode()


def _tenant(request: web.Request) -> str:
    """The URL's tenant (``/mem0/<tenant_id>/...``), else the tenant the key is bound to."""
    subject = caller(request)
    named = request.match_info.get("tenant_id")
    if named is None and subject == "*":
        raise InvalidInput("the admin key needs the tenant in the URL: host=<node>/mem0/<tenant_id>")
    tenant_id = validate_tenant_id(named) if named is not None else subject
    if subject not in ("*", tenant_id):
        raise Forbidden("this key does not give access to that tenant")
    request.app[SERVICE].check_tenant_here(tenant_id)
    return tenant_id


# -- entities (user_id / agent_id / run_id / app_id) ----------------------------------------
def _stream_for(entities: dict[str, str]) -> str | None:
    """The stream: user_id, else agent_id, run_id, app_id. An id outside the stream-id
    alphabet is hashed (e-mail addresses are common user ids)."""
    primary = next((entities[n] for n in ENTITIES if n in entities), None)
    if primary is None:
        return None
    try:
        return validate_stream_id(primary)
    except InvalidInput:
        return "mem0-" + hashlib.sha256(primary.encode()).hexdigest()[:32]


def _entities_of(memory: Memory) -> dict[str, Any]:
    """A memory's entity ids; one made through the native API belongs to its stream's user."""
    tagged = memory.metadata.get("mem0")
    if isinstance(tagged, dict):
        return {n: tagged[n] for n in ENTITIES if isinstance(tagged.get(n), str)}
    return {"user_id": memory.stream_id}


def _matches(memory: Memory, wanted: dict[str, str], show_expired: bool = False) -> bool:
    if not memory.is_current or (memory.archived and not show_expired):
        return False
    have = _entities_of(memory)
    return all(have.get(name) == value for name, value in wanted.items())


def _view(memory: Memory, score: float | None = None) -> dict[str, Any]:
    """A memory as mem0 returns one."""
    entities = _entities_of(memory)
    metadata = {k: val for k, val in memory.metadata.items() if k != "mem0"}
    updated = max(memory.created_at, memory.last_reinforced_at or 0.0)
    out: dict[str, Any] = {
        "id": memory.memory_id,
        "memory": memory.content,
        **{name: entities.get(name) for name in ENTITIES},
        "hash": hashlib.md5(memory.content.encode(), usedforsecurity=False).hexdigest(),
        "metadata": metadata or None,
        "categories": [],
        "immutable": False,
        "expiration_date": None,
        "created_at": iso(memory.created_at),
        "updated_at": iso(updated),
        "stream_id": memory.stream_id,
        "supersedes": list(memory.supersedes),
    }
    if score is not None:
        out["score"] = score
    return out


# -- handlers ---------------------------------------------------------------------------------
async def ping(request: web.Request) -> web.Response:
    """The client's key check at construction; ``project_id`` names the tenant."""
    tenant_id = _tenant(request)
    return web.json_response(
        {"status": "ok", "org_id": "memorose", "project_id": tenant_id, "user_email": None}
    )


async def add(request: web.Request) -> web.Response:
    """Messages become events of the entity's stream; consolidation turns them into memories
    (``async_mode: false`` waits for it and lists the memories made)."""
    tenant_id = _tenant(request)
    raw = await request.read()
    data = v.parse_json(raw) if raw.strip() else {}
    check_list_size(request, data, "messages", "messages must be a list of 1 to {limit} messages")
    body = parse(Mem0AddRequest, data)
    entities = body.entity_ids()
    stream_id = _stream_for(entities)
    if stream_id is None:
        raise InvalidInput("one of user_id, agent_id, run_id or app_id is required")
    events = _events(body, stream_id, entities)
    _charge(request, tenant_id, events)
    service = request.app[SERVICE]
    answers = await service.ingest(tenant_id, events)
    event_ids = [a["event_id"] for a in answers]
    if body.async_mode:
        return web.json_response(
            {
                "message": "Memory processing has been queued for background execution",
                "status": "PENDING",
                "event_id": event_ids[0],
                "event_ids": event_ids,
            }
        )
    return web.json_response({"results": await _consolidated(service, tenant_id, stream_id, event_ids)})


def _events(body: Mem0AddRequest, stream_id: str, entities: dict[str, str]) -> list[dict[str, Any]]:
    """One event per user or assistant message (``system`` ones are instructions, not facts)."""
    timestamp = body.timestamp if body.timestamp is not None else time.time()
    events = [
        {
            "stream_id": stream_id,
            "event_id": "ev-" + uuid.uuid4().hex,
            "content": message.content,
            "metadata": {**body.metadata, "mem0": {**entities, "role": message.role}},
            "timestamp": timestamp,
        }
        for message in body.messages
        if message.role != "system"
    ]
    if not events:
        raise InvalidInput("messages holds no user or assistant message")
    return events


def _charge(request: web.Request, tenant_id: str, events: list[dict[str, Any]]) -> None:
    """The native ingest routes' quota and ingest-volume limits apply here too."""
    limits = request.app[LIMITS]
    nbytes = sum(event_bytes(e) for e in events)
    if caller(request) != "*":
        limits.charge_ingest(tenant_id, nbytes)
    if limits.quota.enabled:
        record = request.app[SERVICE].reader.tenant_or_empty(tenant_id)
        check_quota(limits, record, len(events), nbytes)


async def _consolidated(
    service: NodeService, tenant_id: str, stream_id: str, event_ids: list[str]
) -> list[dict[str, Any]]:
    result = await service.consolidate(tenant_id, wait=True)
    if not result.get("done"):
        raise Unavailable("consolidation is still running; the events are stored, read them later")
    ids = set(event_ids)
    made = await service.run_read(service.memories, tenant_id, stream_id, 10_000, None, None)
    return [
        {"id": m.memory_id, "memory": m.content, "event": "ADD"}
        for m in made
        if m.is_current and ids & set(m.source_event_ids)
    ]


async def search(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    body = await body_model(request, Mem0SearchRequest, empty_ok=True)
    service = request.app[SERVICE]
    wanted = body.entity_ids()
    top_k, max_top_k = body.top_k, service.settings.limits.max_top_k
    if top_k > max_top_k:
        raise InvalidInput(f"top_k must be between 1 and {max_top_k}")
    req = RetrieveRequest(
        tenant_id=tenant_id,
        query=body.query,
        stream_id=_stream_for(wanted),
        # Extra entity filters apply after ranking: ask for more so top_k survive them.
        top_k=min(max_top_k, top_k * (3 if len(wanted) > 1 else 1)),
        passages=False,
    )
    answer = await service.retrieve(req)
    results = []
    for hit in answer["results"]:
        memory = service.reader.memory(tenant_id, hit["id"]) if hit.get("layer") == "L1" else None
        if memory is not None and _matches(memory, wanted, body.show_expired):
            results.append(_view(memory, hit.get("score")))
    return web.json_response({"results": results[:top_k]})


async def get_all(request: web.Request) -> web.Response:
    """Paginated as mem0 v3 (``page``, ``page_size`` in the query)."""
    tenant_id = _tenant(request)
    q = query_model(request, Mem0ListQuery)
    page, size = q.page, q.page_size
    body = await body_model(request, Mem0ListRequest, empty_ok=True)
    wanted = body.entity_ids()
    service = request.app[SERVICE]

    def admit(memory: Memory) -> bool:
        return _matches(memory, wanted, body.show_expired)

    # A full scan of the stream for the count mem0 reports (docs/mem0.md).
    found = await service.run_read(service.memories, tenant_id, _stream_for(wanted), 10**9, None, admit)
    chunk = found[(page - 1) * size : page * size]
    next_url = str(request.url.update_query(page=page + 1)) if len(found) > page * size else None
    prev_url = str(request.url.update_query(page=page - 1)) if page > 1 else None
    return web.json_response(
        {"count": len(found), "next": next_url, "previous": prev_url, "results": [_view(m) for m in chunk]}
    )


def _current(service: NodeService, tenant_id: str, memory_id: str) -> Memory:
    """The current version of a memory: mem0 ids survive updates (each one a supersession)."""
    memory = service.memory(tenant_id, memory_id)
    for _ in range(1000):
        if memory.superseded_by is None:
            return memory
        memory = service.memory(tenant_id, memory.superseded_by)
    raise NotFound(f"memory {memory_id!r} has too long a chain of versions")


async def get_one(request: web.Request) -> web.Response:
    tenant_id = _tenant(request)
    return web.json_response(_view(_current(request.app[SERVICE], tenant_id, path_memory_id(request))))


async def update(request: web.Request) -> web.Response:
    """A new version superseding the current one (Raft-replicated; the old one stays in the
    history and in as_of reads). The answer is the new version; the old id resolves to it."""
    tenant_id = _tenant(request)
    memory_id = path_memory_id(request)
    body = await body_model(request, Mem0UpdateRequest, empty_ok=True)
    service = request.app[SERVICE]
    old = _current(service, tenant_id, memory_id)
    content = old.content if body.text is None else body.text
    meta = old.metadata if body.metadata is None else _merged_metadata(old, body.metadata)
    valid_from = body.timestamp if body.timestamp is not None else service.clock()
    new = await _supersede(service, old, content, meta, valid_from)
    return web.json_response(_view(new))


def _merged_metadata(old: Memory, metadata: dict[str, Any]) -> dict[str, Any]:
    """The new metadata keeps the memory's entity ids (``mem0``)."""
    tagged = old.metadata.get("mem0")
    return {**metadata, "mem0": tagged} if tagged is not None else metadata


async def _supersede(
    service: NodeService, old: Memory, content: str, metadata: dict[str, Any], valid_from: float
) -> Memory:
    """Propose a supersession at the tenant's cursor; retry if consolidation moved it."""
    vector = await service.run_read(service.embedder.embed_one, content)
    now = service.clock()
    new = Memory(
        tenant_id=old.tenant_id,
        memory_id="m-" + uuid.uuid4().hex[:24],
        stream_id=old.stream_id,
        content=content,
        embedding=vector.astype("<f4").tobytes(),
        source_event_ids=list(old.source_event_ids),
        created_at=now,
        valid_from=max(valid_from, old.valid_from),
        importance=old.importance,
        metadata=metadata,
        embedding_model=service.embedder.model,
        embedding_dim=int(vector.shape[0]),
        supersedes=[old.memory_id],
        pipeline={"extractor": "mem0-update", "decision": "supersede"},
    )
    op = {
        "op": "supersede",
        "memory_id": old.memory_id,
        "memory": new.to_dict(),
        "reason": "updated via mem0",
    }
    for _ in range(10):
        cursor = service.reader.tenant_or_empty(old.tenant_id)["cursor"]
        command = commands.consolidate(old.tenant_id, cursor, cursor, [], now, ops=[op])
        result = await service.propose(command)
        if result.get("ok"):
            await service.wait_indexed()
            return service.memory(old.tenant_id, new.memory_id)
    raise Unavailable("the tenant is consolidating; retry the update", retry_after=1.0)


async def delete(request: web.Request) -> web.Response:
    """Deletes the current version; ``delete_linked=true`` also the versions it superseded."""
    tenant_id = _tenant(request)
    q = query_model(request, Mem0DeleteQuery)
    service = request.app[SERVICE]
    memory = _current(service, tenant_id, path_memory_id(request))
    targets = [memory.memory_id]
    if flag(q.delete_linked):
        targets += service.memory_history(tenant_id, memory.memory_id)["lineage"]
    for target in dict.fromkeys(targets):
        await service.delete_memory(tenant_id, target)
    return web.json_response({"message": "Memory deleted successfully!"})


async def history(request: web.Request) -> web.Response:
    """The lineage's versions as mem0 history entries (ADD, then UPDATE per change)."""
    tenant_id = _tenant(request)
    memory_id = path_memory_id(request)
    service = request.app[SERVICE]
    lineage = service.memory_history(tenant_id, memory_id)
    entities = _entities_of(service.memory(tenant_id, memory_id))
    entries: list[dict[str, Any]] = []
    previous: str | None = None
    for version in lineage["versions"]:
        if version["action"] == "superseded":
            continue  # the successor's "created" entry is this change
        event = "ADD" if not entries else "UPDATE"
        entries.append(
            {
                "id": f"{version['memory_id']}:{version['version']}",
                "memory_id": version["memory_id"],
                "input": [],
                "old_memory": previous,
                "new_memory": version["content"],
                "event": event,
                "action": version["action"],
                "reason": version["reason"],
                **{name: entities.get(name) for name in ENTITIES},
                "metadata": None,
                "created_at": version["at"],
                "updated_at": version["at"],
            }
        )
        previous = version["content"]
    return web.json_response(entries)


def register(app: web.Application) -> None:
    """Routes with and without the tenant in the path (the client joins its paths to host);
    ``memorose.api.openapi`` documents each of them."""
    app.middlewares.insert(0, mem0_dialect)
    for base in (PREFIX, f"{PREFIX}/{TENANT}"):
        app.router.add_get(base + "/v1/ping/", ping)
        app.router.add_post(base + "/v3/memories/add/", add)
        app.router.add_post(base + "/v1/memories/", add)
        app.router.add_post(base + "/v3/memories/search/", search)
        app.router.add_post(base + "/v2/memories/search/", search)
        app.router.add_post(base + "/v3/memories/", get_all)
        app.router.add_post(base + "/v2/memories/", get_all)
        app.router.add_get(base + "/v1/memories/{memory_id}/", get_one)
        app.router.add_put(base + "/v1/memories/{memory_id}/", update)
        app.router.add_delete(base + "/v1/memories/{memory_id}/", delete)
        app.router.add_get(base + "/v1/memories/{memory_id}/history/", history)
