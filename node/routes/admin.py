"""Admin-only routes: tenant keys, tenant state and deletion, cluster membership, digest,
reindex and re-embed. Every handler checks the admin key itself (the guard middleware
also refuses tenant keys on ``/api/v1/admin/`` before the body is read)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from memorose.errors import InvalidInput, NotFound
from memorose.models import validate_tenant_id
from node import validation as v
from node.routes.common import SERVICE, json_body, read_barrier, require_admin


async def issue_key(request: web.Request) -> web.Response:
    require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    if await request.read():
        v.require_object(v.parse_json(await request.read()), set())
    return web.json_response(await request.app[SERVICE].issue_key(tenant_id), status=201)


async def delete_tenant(request: web.Request) -> web.Response:
    require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    existed = await request.app[SERVICE].delete_tenant(tenant_id)
    return web.json_response({"deleted": True, "tenant_id": tenant_id, "existed": existed})


async def digest(request: web.Request) -> web.Response:
    """Hash of a tenant's replicated state at this node's applied index (compare replicas)."""
    require_admin(request)
    tenant_id = v.tenant(request.query.get("tenant_id"))
    await read_barrier(request)
    service = request.app[SERVICE]
    return web.json_response(await service.run_read(service.digest, tenant_id))


async def add_member(request: web.Request) -> web.Response:
    """Add a voting member (on the leader; one change at a time). docs/replication.md."""
    require_admin(request)
    body = await json_body(request, {"raft_address", "url"})
    address = _hostport(v.required(body, "raft_address"))
    url = v.required(body, "url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 300:
        raise InvalidInput("url must be the member's http(s):// base URL")
    return web.json_response(await request.app[SERVICE].add_member(address, url.rstrip("/")))


async def remove_member(request: web.Request) -> web.Response:
    require_admin(request)
    address = _hostport(request.match_info["raft_address"])
    return web.json_response(await request.app[SERVICE].remove_member(address))


def _hostport(value: Any) -> str:
    host, sep, port = str(value).rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not host or len(value) > 255 or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput("raft_address must be HOST:PORT")
    if not all(c.isalnum() or c in ".-_[]:" for c in host):
        raise InvalidInput("raft_address has an invalid host")
    return str(value)


async def set_tenant_state(request: web.Request) -> web.Response:
    """Admin: freeze / mark moved (and purge) / reactivate a tenant (used by tenant moves)."""
    require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    body = await json_body(request, {"state", "moved_to", "purge"})
    state = v.required(body, "state")
    if state not in ("active", "frozen", "moved"):
        raise InvalidInput("state must be active, frozen or moved")
    moved_to = body.get("moved_to") or []
    if not isinstance(moved_to, list) or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) and len(u) < 300 for u in moved_to
    ):
        raise InvalidInput("moved_to must be a list of http(s) URLs")
    if state == "moved" and not moved_to:
        raise InvalidInput("moved_to is required when state is moved")
    purge = v.bool_field(body, "purge", False)
    return web.json_response(await request.app[SERVICE].set_tenant_state(tenant_id, state, moved_to, purge))


async def export_keys(request: web.Request) -> web.Response:
    """Admin: the tenant's key records (hashes only), to carry them to another shard."""
    require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    return web.json_response({"keys": request.app[SERVICE].reader.api_keys(tenant_id)})


async def import_keys(request: web.Request) -> web.Response:
    require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    body = await json_body(request, {"keys"})
    records = v.required(body, "keys")
    if not isinstance(records, list) or len(records) > 10_000:
        raise InvalidInput("keys must be a list")
    clean = [_key_record(record) for record in records]
    return web.json_response({"imported": await request.app[SERVICE].import_keys(tenant_id, clean)})


def _key_record(record: Any) -> dict[str, Any]:
    record = v.require_object(record, {"key_hash", "key_id", "created_at", "tenant_id"}, "key")
    key_hash, key_id = record.get("key_hash"), record.get("key_id")
    if (
        not isinstance(key_hash, str)
        or len(key_hash) != 64
        or not all(c in "0123456789abcdef" for c in key_hash)
    ):
        raise InvalidInput("key_hash must be a SHA-256 hex digest")
    if not isinstance(key_id, str) or len(key_id) > 64:
        raise InvalidInput("key_id must be a short string")
    created = record.get("created_at")
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise InvalidInput("created_at must be epoch seconds")
    return {"key_hash": key_hash, "key_id": key_id, "created_at": float(created)}


async def list_tenants(request: web.Request) -> web.Response:
    require_admin(request)
    service = request.app[SERVICE]
    return web.json_response({"tenants": [service.tenant_status(t) for t in service.reader.tenant_ids()]})


async def reindex(request: web.Request) -> web.Response:
    """Rebuild the derived indexes: ``{}`` (or no body) for all tenants, ``{"tenant_id": T}``
    for one. Anything else is a 400: a stray request must not rebuild everything."""
    require_admin(request)
    raw = await request.read()
    body = v.require_object(v.parse_json(raw), {"tenant_id"}) if raw.strip() else {}
    tenant_id = body.get("tenant_id")
    if tenant_id is not None:
        tenant_id = v.tenant(tenant_id)
        if request.app[SERVICE].reader.tenant(tenant_id) is None:
            raise NotFound(f"no tenant {tenant_id!r} on this node")
    return web.json_response(await request.app[SERVICE].reindex(tenant_id))


async def reembed(request: web.Request) -> web.Response:
    require_admin(request)
    raw = await request.read()
    body = v.require_object(v.parse_json(raw), {"tenant_id", "dry_run", "limit"}) if raw.strip() else {}
    tenant_id = body.get("tenant_id")
    if tenant_id is not None:
        tenant_id = validate_tenant_id(tenant_id)
    dry_run = v.bool_field(body, "dry_run", False)
    # A bounded step lets `memorose admin reembed` report progress between requests.
    limit = v.int_field(body, "limit", 0, 0, 10_000_000)
    return web.json_response(await request.app[SERVICE].reembed(tenant_id, dry_run, limit=limit or None))


def register(app: web.Application) -> None:
    app.router.add_post("/api/v1/admin/tenants/{tenant_id}/keys", issue_key)
    app.router.add_delete("/api/v1/tenants/{tenant_id}", delete_tenant)
    app.router.add_post("/api/v1/admin/reindex", reindex)
    app.router.add_get("/api/v1/admin/digest", digest)
    app.router.add_post("/api/v1/admin/cluster/members", add_member)
    app.router.add_delete("/api/v1/admin/cluster/members/{raft_address}", remove_member)
    app.router.add_get("/api/v1/admin/tenants", list_tenants)
    app.router.add_post("/api/v1/admin/tenants/{tenant_id}/state", set_tenant_state)
    app.router.add_get("/api/v1/admin/tenants/{tenant_id}/keys", export_keys)
    app.router.add_post("/api/v1/admin/tenants/{tenant_id}/keys/import", import_keys)
    app.router.add_post("/api/v1/admin/reembed", reembed)
