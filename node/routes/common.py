"""What every route module shares: the app keys, the caller's identity and tenant checks,
the JSON body, and the small parameter parsers more than one resource uses.

It imports no route module, and every route module imports it (never each other), so the
HTTP layer has one direction: ``node.http`` -> ``node.routes.<resource>`` -> this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from memorose.api.models import as_of_time, parse
from memorose.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from memorose.models import validate_memory_id
from node import validation as v
from node.metrics import NodeMetrics
from node.service import NodeService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE = web.AppKey("service", NodeService)
METRICS = web.AppKey("metrics", NodeMetrics)
CALLER = web.RequestKey("caller", str)
M = TypeVar("M", bound=BaseModel)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


async def body_model(request: web.Request, model: type[M], *, empty_ok: bool = False) -> M:
    """The body as ``model`` (memorose.api.models); ``empty_ok``: no body reads as ``{}``."""
    raw = await request.read()
    if empty_ok and not raw.strip():
        return parse(model, {})
    return parse(model, v.parse_json(raw))


def query_model(request: web.Request, model: type[M]) -> M:
    """The query string as ``model`` (the first value of a repeated parameter)."""
    return parse(model, {key: request.query[key] for key in request.query}, "query")


def caller(request: web.Request) -> str:
    """The tenant the bearer key is bound to, or '*' for the admin key."""
    known = request.get(CALLER)
    if known is not None:
        return str(known)
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("missing or malformed Authorization: Bearer <key>")
    subject = request.app[SERVICE].authenticate(secret.strip())
    if subject is None:
        raise Unauthorized("unknown API key")
    request[CALLER] = subject
    return subject


def authorize(request: web.Request, tenant_id: Any) -> str:
    """The validated tenant id, if the caller's key reaches it and it lives on this node."""
    subject = caller(request)
    tenant_id = v.tenant(tenant_id)
    if subject not in ("*", tenant_id):
        raise Forbidden("this key does not give access to that tenant")
    request.app[SERVICE].check_tenant_here(tenant_id)
    return tenant_id


def require_admin(request: web.Request) -> None:
    if caller(request) != "*":
        raise Forbidden("an admin key is required")


def path_memory_id(request: web.Request) -> str:
    """A malformed id in the path is a 404, as a missing memory is (nothing to learn)."""
    try:
        return validate_memory_id(request.match_info["memory_id"])
    except InvalidInput:
        raise NotFound("memory not found") from None


def consistency(value: Any) -> str:
    """eventual (default, this replica) | leader | linearizable (docs/replication.md)."""
    if value is None or value == "":
        return "eventual"
    if value not in ("eventual", "leader", "linearizable"):
        raise InvalidInput("consistency must be eventual, leader or linearizable")
    return str(value)


def check_list_size(request: web.Request, raw: Any, field: str, message: str) -> None:
    """Before validating each item of ``raw[field]``: the limit is a setting
    (``limits.max_batch_events``), which a static model cannot know, and a huge list should
    cost no per-item work. ``message`` may name the limit as ``{limit}``."""
    items = raw.get(field) if isinstance(raw, dict) else None
    limit = request.app[SERVICE].settings.limits.max_batch_events
    if isinstance(items, list) and len(items) > limit:
        raise InvalidInput(message.format(limit=limit))


async def read_barrier(request: web.Request) -> None:
    """Honour ``?consistency=`` on GET reads."""
    await request.app[SERVICE].read_barrier(consistency(request.query.get("consistency")))


def parse_as_of(body: dict[str, Any]) -> float | None:
    return as_of_time(body.get("as_of"))
