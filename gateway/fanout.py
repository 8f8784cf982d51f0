"""Admin routes that name no tenant, reached through the gateway.

A node route with no tenant acts on that node's shard only, so the gateway cannot pick a
shard from the ring. Operations that make sense everywhere (reindex, reembed, the tenant
list) go to every shard at once, or to the one named by ``?shard=NAME``; membership changes
only ever make sense on one shard, so they need ``?shard=`` when there are several.
The answers are merged into ``{"shards": {name: answer}}`` (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.proxy import Answer, Shard
from memorose.errors import InvalidInput

SHARD_PARAM = "shard"


def shards_for(shards: dict[str, Shard], request: web.Request, need_one: bool = False) -> list[Shard]:
    """The shards a tenant-less request goes to: the one ``?shard=`` names, else all of them
    (or, with ``need_one``, the only one; 400 if there are several to choose from)."""
    names = request.query.getall(SHARD_PARAM, [])
    if len(names) > 1:
        raise InvalidInput("give ?shard= at most once")
    if names:
        if names[0] not in shards:
            raise InvalidInput(f"unknown shard {names[0][:64]!r}; shards: {', '.join(shards)}")
        return [shards[names[0]]]
    if need_one and len(shards) > 1:
        raise InvalidInput(f"this route changes one shard: name it with ?shard= (one of {', '.join(shards)})")
    return list(shards.values())


def without_shard_param(request: web.Request) -> str:
    """The path and query to forward: ``?shard=`` is the gateway's, not the node's."""
    query = [(k, v) for k, v in request.query.items() if k != SHARD_PARAM]
    return str(request.rel_url.with_query(query))


def decoded(answer: Answer) -> Any:
    """A shard's answer as JSON (a non-JSON body is kept as text, so nothing is lost)."""
    try:
        return json.loads(answer.body)
    except ValueError:
        return {"status": answer.status, "text": answer.body.decode("utf-8", "replace")[:2000]}


def merge(answers: dict[str, Answer]) -> web.Response:
    """200 ``{"shards": {name: body}}`` when every shard succeeded; otherwise the status,
    error and Retry-After of the first shard (in configuration order) that failed, with
    every shard's answer under ``shards`` so a partial success is visible."""
    bodies = {name: decoded(answer) for name, answer in answers.items()}
    failed = [(name, a) for name, a in answers.items() if a.status >= 300]
    if not failed:
        return web.json_response({"shards": bodies})
    name, first = failed[0]
    error = bodies[name].get("error") if isinstance(bodies[name], dict) else None
    code = error.get("code", "upstream_error") if isinstance(error, dict) else "upstream_error"
    message = error.get("message", "") if isinstance(error, dict) else ""
    summary = f"{len(failed)} of {len(answers)} shards failed; shard {name}: {message}".rstrip(": ")
    headers = {"Retry-After": first.retry_after} if first.retry_after else None
    return web.json_response(
        {"error": {"code": code, "message": summary}, "shards": bodies}, status=first.status, headers=headers
    )


def merge_reembed(response: web.Response) -> web.Response:
    """Reembed also gets the node's own shape at the top (``model``, ``dim``, ``tenants``:
    tenants are disjoint across shards), so ``memorose admin reembed`` works on a gateway."""
    if response.status != 200 or response.text is None:
        return response
    merged: dict[str, Any] = json.loads(response.text)
    tenants: dict[str, Any] = {}
    for body in merged["shards"].values():
        if isinstance(body, dict):
            merged.setdefault("model", body.get("model"))
            merged.setdefault("dim", body.get("dim"))
            tenants.update(body.get("tenants") or {})
    return web.json_response({**merged, "tenants": tenants})


async def gather(targets: list[Shard], send: Callable[[Shard], Awaitable[Answer]]) -> dict[str, Answer]:
    """Ask every target shard at once; ``send(shard)`` forwards to one."""
    answers = await asyncio.gather(*(send(shard) for shard in targets))
    return {shard.name: answer for shard, answer in zip(targets, answers, strict=True)}
