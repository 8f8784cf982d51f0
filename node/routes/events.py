"""L0 events: ingest one, ingest a batch, page through a tenant's log."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from memorose.errors import InvalidInput
from memorose.models import event_bytes, event_public
from node import validation as v
from node.http_limits import LIMITS, check_quota
from node.routes.common import METRICS, SERVICE, authorize, json_body, optional_stream, read_barrier


def _new_event_id() -> str:
    return "ev-" + uuid.uuid4().hex


async def ingest_event(request: web.Request) -> web.Response:
    body = await json_body(request, v.EVENT_FIELDS | {"tenant_id"})
    tenant_id = authorize(request, body.get("tenant_id"))
    event = v.event({k: body[k] for k in body if k != "tenant_id"}, _new_event_id())
    _check_quota(request, tenant_id, [event])
    service = request.app[SERVICE]
    [answer] = await service.ingest(tenant_id, [event])
    _count_ingest(request, [answer])
    return web.json_response(
        {
            "event_id": answer["event_id"],
            "tenant_id": tenant_id,
            "stream_id": event["stream_id"],
            "seq": answer["seq"],
        },
        status=202,
    )


async def ingest_batch(request: web.Request) -> web.Response:
    body = await json_body(request, {"tenant_id", "events"})
    tenant_id = authorize(request, body.get("tenant_id"))
    raw_events = v.required(body, "events")
    limit = request.app[SERVICE].settings.limits.max_batch_events
    if not isinstance(raw_events, list) or not raw_events:
        raise InvalidInput("events must be a non-empty list")
    if len(raw_events) > limit:
        raise InvalidInput(f"a batch holds at most {limit} events")
    events = [v.event(e, _new_event_id(), f"events[{i}]") for i, e in enumerate(raw_events)]
    ids = [e["event_id"] for e in events]
    if len(set(ids)) != len(ids):
        raise InvalidInput("event_id values must be unique within a batch")
    _check_quota(request, tenant_id, events)
    answers = await request.app[SERVICE].ingest(tenant_id, events)
    _count_ingest(request, answers)
    return web.json_response({"event_ids": [a["event_id"] for a in answers]}, status=202)


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
    q = request.query
    tenant_id = authorize(request, q.get("tenant_id"))
    stream_id = optional_stream(q.get("stream_id"))
    after = v.int_param(q.get("after"), "after", 0, 0, 2**62)
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 1000)
    await read_barrier(request)
    events = request.app[SERVICE].events(tenant_id, stream_id, after, limit)
    next_after = events[-1].seq if len(events) == limit else None
    return web.json_response({"events": [event_public(e) for e in events], "next_after": next_after})


def register(app: web.Application) -> None:
    app.router.add_post("/api/v1/events", ingest_event)
    app.router.add_post("/api/v1/events/batch", ingest_batch)
    app.router.add_get("/api/v1/events", list_events)
