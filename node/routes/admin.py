"""Admin-only routes: tenant keys, tenant state and deletion, cluster membership, digest,
reindex and re-embed. Every handler checks the admin key itself (the guard middleware
also refuses tenant keys on ``/api/v1/admin/`` before the body is read)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from memorose.api.models import (
    AddMemberRequest,
    EmptyRequest,
    ImportKeysRequest,
    OptionalTenantRequest,
    ReembedRequest,
    TenantStateRequest,
)
from memorose.errors import InvalidInput, NotFound
from node import validation as v
from node.routes.common import SERVICE, body_model, read_barrier, require_admin


async def issue_key(request: web.Request) -> web.Response:
    require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    if await request.read():
        await body_model(request, EmptyRequest)
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
    body = await body_model(request, AddMemberRequest)
    address = _hostport(body.raft_address)
    return web.json_response(await request.app[SERVICE].add_member(address, body.url.rstrip("/")))


async def remove_member(request: web.Request) -> web.Response:
    require_admin(request)
    address = _hostport(request.match_info["raft_address"])
    return web.json_response(await request.app[SERVICE].remove_member(address))


def _hostport(value: Any) -> str:
    """Hand-written: a host's alphabet (brackets for IPv6) and a port range in one string."""
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
    body = await body_model(request, TenantStateRequest)
    answer = await request.app[SERVICE].set_tenant_state(tenant_id, body.state, body.moved_to, body.purge)
    return web.json_response(answer)


async def export_keys(request: web.Request) -> web.Response:
    """Admin: the tenant's key records (hashes only), to carry them to another shard."""
    require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    return web.json_response({"keys": request.app[SERVICE].reader.api_keys(tenant_id)})


async def import_keys(request: web.Request) -> web.Response:
    require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    body = await body_model(request, ImportKeysRequest)
    clean = [{"key_hash": k.key_hash, "key_id": k.key_id, "created_at": k.created_at} for k in body.keys]
    return web.json_response({"imported": await request.app[SERVICE].import_keys(tenant_id, clean)})


async def list_tenants(request: web.Request) -> web.Response:
    require_admin(request)
    service = request.app[SERVICE]
    return web.json_response({"tenants": [service.tenant_status(t) for t in service.reader.tenant_ids()]})


async def reindex(request: web.Request) -> web.Response:
    """Rebuild the derived indexes: ``{}`` (or no body) for all tenants, ``{"tenant_id": T}``
    for one. Anything else is a 400: a stray request must not rebuild everything."""
    require_admin(request)
    tenant_id = (await body_model(request, OptionalTenantRequest, empty_ok=True)).tenant_id
    if tenant_id is not None and request.app[SERVICE].reader.tenant(tenant_id) is None:
        raise NotFound(f"no tenant {tenant_id!r} on this node")
    return web.json_response(await request.app[SERVICE].reindex(tenant_id))


async def reembed(request: web.Request) -> web.Response:
    require_admin(request)
    body = await body_model(request, ReembedRequest, empty_ok=True)
    # A bounded step lets `memorose admin reembed` report progress between requests.
    answer = await request.app[SERVICE].reembed(body.tenant_id, body.dry_run, limit=body.limit or None)
    return web.json_response(answer)


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
