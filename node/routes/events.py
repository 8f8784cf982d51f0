"""L0 events: ingest one, ingest a batch, page through a tenant's log."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from memorose.api.models import (
    BatchResponse,
    EventIn,
    IngestBatchRequest,
    IngestEventRequest,
    IngestResponse,
    ListEventsQuery,
    parse,
)
from memorose.errors import InvalidInput
from memorose.models import event_bytes, event_public
from node import validation as v
from node.http_limits import LIMITS, check_quota
from node.routes.common import (
    METRICS,
    SERVICE,
    authorize,
    body_model,
    check_list_size,
    query_model,
    read_barrier,
)


def _new_event_id() -> str:
    return "ev-" + uuid.uuid4().hex


def _event(event: EventIn) -> dict[str, Any]:
    """A validated event as the ingest command takes it (server-made id and time if none)."""
    return {
        "stream_id": event.stream_id,
        "event_id": event.event_id or _new_event_id(),
        "content": event.content,
        "metadata": event.metadata,
        "timestamp": event.timestamp if event.timestamp is not None else time.time(),
    }


async def ingest_event(request: web.Request) -> web.Response:
    body = await body_model(request, IngestEventRequest)
    tenant_id = authorize(request, body.tenant_id)
    event = _event(body)
    _check_quota(request, tenant_id, [event])
    service = request.app[SERVICE]
    [answer] = await service.ingest(tenant_id, [event])
    _count_ingest(request, [answer])
    out = IngestResponse(
        event_id=answer["event_id"], tenant_id=tenant_id, stream_id=event["stream_id"], seq=answer["seq"]
    )
    return web.json_response(out.model_dump(), status=202)


async def ingest_batch(request: web.Request) -> web.Response:
    raw = v.parse_json(await request.read())
    check_list_size(request, raw, "events", "a batch holds at most {limit} events")
    body = parse(IngestBatchRequest, raw)
    tenant_id = authorize(request, body.tenant_id)
    events = [_event(e) for e in body.events]
    ids = [e["event_id"] for e in events]
    if len(set(ids)) != len(ids):
        raise InvalidInput("event_id values must be unique within a batch")
    _check_quota(request, tenant_id, events)
    answers = await request.app[SERVICE].ingest(tenant_id, events)
    _count_ingest(request, answers)
    return web.json_response(
        BatchResponse(event_ids=[a["event_id"] for a in answers]).model_dump(), status=202
    )


def _check_quota(request: web.Request, tenant_id: str, events: list[dict[str, Any]]) -> None:
    """Refuse before proposing (a refused write costs no Raft entry); counts are the node's."""
    limits = request.app[LIMITS]
    if not limits.quota.enabled:
        return
    record = request.app[SERVICE].reader.tenant_or_empty(tenant_id)
    check_quota(limits, record, len(events), sum(event_bytes(e) for e in events))


def _count_ingest(request: web.Request, answers: list[dict[str, Any]]) -> None:
    metrics = request.app[METRICS]
    duplicates = sum(1 for a in answers if a["duplicate"])
    metrics.events_duplicate.inc(duplicates)
    metrics.events_ingested.inc(len(answers) - duplicates)


async def list_events(request: web.Request) -> web.Response:
    q = query_model(request, ListEventsQuery)
    tenant_id = authorize(request, q.tenant_id)
    await read_barrier(request)
    events = request.app[SERVICE].events(tenant_id, q.stream_id, q.after, q.limit)
    next_after = events[-1].seq if len(events) == q.limit else None
    return web.json_response({"events": [event_public(e) for e in events], "next_after": next_after})


def register(app: web.Application) -> None:
    app.router.add_post("/api/v1/events", ingest_event)
    app.router.add_post("/api/v1/events/batch", ingest_batch)
    app.router.add_get("/api/v1/events", list_events)
