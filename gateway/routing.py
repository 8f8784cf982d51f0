"""What a request acts on, decided before it is forwarded: its JSON body (parsed as strictly
as a node parses it, so bad input is a 4xx here and never a 500) and its tenant.

The node stores a write under the body's ``tenant_id`` and reads under the query's; the
gateway must route by the same tenant the node will act on, so it considers every place a
tenant can be named (the path, the query, the body) and refuses a request naming two.
The mem0-compatible routes (docs/mem0.md) name their tenant in the path or not at all; then
it is the one the key is bound to (``request_key`` gives the key to look up).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from memorose.errors import InvalidInput, Unauthorized
from memorose.models import validate_tenant_id

#: Deeper than any valid request (a batch event's metadata is at most 8 levels, so a valid
#: body is about 12 deep); a limit well below Python's recursion limit keeps parsing and
#: re-serialising safe.
MAX_JSON_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not allowed in JSON")


def parse_body(body: bytes) -> Any:
    """The decoded JSON body, or None when there is none; InvalidInput (400) when the node
    would refuse it too: not UTF-8, malformed, NaN/Infinity, nested too deeply."""
    if not body.strip():
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("body is not UTF-8") from None
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except InvalidInput:
        raise
    except RecursionError:
        raise InvalidInput(f"JSON is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    check_depth(payload)
    return payload


def check_depth(payload: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Iterative (a recursive walk is what a deep body attacks)."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, dict | list):
            continue
        if depth > limit:
            raise InvalidInput(f"JSON is nested more than {limit} levels deep")
        items = value.values() if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items if isinstance(item, dict | list))


def dump_body(payload: Any) -> bytes:
    """Compact UTF-8 JSON (the gateway re-serialises ingest bodies to add event ids)."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("strings must not contain lone surrogates") from None


def named_tenants(request: web.Request, payload: Any) -> set[str]:
    """Every tenant the request names: path, each ``?tenant_id=``, the body's ``tenant_id``."""
    names: list[Any] = []
    if "tenant_id" in request.match_info:
        names.append(request.match_info["tenant_id"])
    names.extend(request.query.getall("tenant_id", []))
    if isinstance(payload, dict) and payload.get("tenant_id") is not None:
        names.append(payload["tenant_id"])
    return {validate_tenant_id(name) for name in names}


def tenant_of(request: web.Request, payload: Any) -> str | None:
    """The one tenant the request acts on, None if it names none; 400 if it names several
    (the node would act on one and the gateway might have routed by the other)."""
    tenants = named_tenants(request, payload)
    if len(tenants) > 1:
        raise InvalidInput(
            "the request names different tenants in the path, query and body "
            f"({', '.join(sorted(tenants))}); name one tenant"
        )
    return next(iter(tenants), None)


def request_key(request: web.Request) -> str:
    """The API key of ``Authorization: Bearer <key>`` or mem0's ``Token <key>``."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "token") or not secret.strip():
        raise Unauthorized("missing or malformed Authorization: Token <key>")
    return secret.strip()
