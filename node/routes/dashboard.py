"""The node's side of the ops dashboard (issue 13): mounts ``dashboard.server`` on the node's
app and adds the three read endpoints the dashboard needs that the API lacked:

- ``GET /api/v1/whoami``: what the key is (admin, or the tenant it is bound to); the gateway
  asks its shards this to sign a tenant in.
- ``GET /api/v1/status/detail?tenant_id=``: the tenant status plus memories counted by state
  (current / superseded / archived) and the consolidation lag in seconds.
- ``GET /api/v1/events/lookup?tenant_id=&ids=a,b``: L0 events by id (what a memory cites).
- ``DELETE /api/v1/admin/tenants/{tenant_id}/keys/{key_id}``: revoke one tenant key (a
  replicated command; the Tenants view's keys dialog).

Registered by ``node.routes.register``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
from aiohttp import web

from dashboard.server import DASHBOARD, DashboardConfig, add_dashboard, loopback_url
from memorose.errors import InvalidInput
from memorose.models import event_public, validate_event_id
from node import validation as v
from node.metrics import NodeMetrics
from node.routes.common import METRICS, SERVICE, authorize, caller, read_barrier, require_admin
from node.service import NodeService

MAX_LOOKUP_IDS = 100
#: Key ids are ``key-<12 hex>`` when issued here; an import may carry any short id.
_KEY_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
#: Counting memories by state reads each one; past this many the counts say "at least".
MAX_COUNTED_MEMORIES = 200_000


async def whoami(request: web.Request) -> web.Response:
    subject = caller(request)
    admin = subject == "*"
    return web.json_response(
        {"role": "admin" if admin else "tenant", "tenant_id": None if admin else subject}
    )


async def tenant_detail(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    await read_barrier(request)
    service = request.app[SERVICE]
    return web.json_response(await service.run_read(detail, service, tenant_id))


def detail(service: NodeService, tenant_id: str) -> dict[str, Any]:
    """Status plus memory counts by state; runs off the event loop (it reads every memory)."""
    counts = {"current": 0, "superseded": 0, "archived": 0}
    complete = True
    for i, memory in enumerate(service.reader.memories(tenant_id)):
        if i >= MAX_COUNTED_MEMORIES:
            complete = False
            break
        state = "archived" if memory.archived else "current" if memory.is_current else "superseded"
        counts[state] += 1
    status = service.tenant_status(tenant_id)
    return {
        **status,
        "memories": {**counts, "complete": complete},
        "consolidation_lag_seconds": _lag_seconds(service, tenant_id, status["pending_events"]),
    }


def _lag_seconds(service: NodeService, tenant_id: str, pending: int) -> float:
    """Age of the oldest event not yet consolidated (0 when nothing is pending)."""
    if pending <= 0:
        return 0.0
    cursor = service.reader.tenant_or_empty(tenant_id)["cursor"]
    oldest = service.reader.event(tenant_id, cursor + 1)
    return round(max(0.0, service.clock() - oldest.ingested_at), 3) if oldest else 0.0


async def lookup_events(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    raw = request.query.get("ids", "")
    ids = [i for i in raw.split(",") if i]
    if not ids or len(ids) > MAX_LOOKUP_IDS:
        raise InvalidInput(f"ids must list 1 to {MAX_LOOKUP_IDS} event ids, comma-separated")
    for event_id in ids:
        validate_event_id(event_id)
    await read_barrier(request)
    service = request.app[SERVICE]
    found, missing = await service.run_read(_events_by_id, service, tenant_id, ids)
    return web.json_response({"events": found, "missing": missing})


def _events_by_id(
    service: NodeService, tenant_id: str, ids: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    found, missing = [], []
    for event_id in dict.fromkeys(ids):
        seq = service.reader.event_seq(tenant_id, event_id)
        event = service.reader.event(tenant_id, seq) if seq is not None else None
        if event is None:
            missing.append(event_id)
        else:
            found.append(event_public(event))
    return found, missing


async def revoke_key(request: web.Request) -> web.Response:
    """(admin) Revoke one key of a tenant; 404 if that tenant has no key with this id."""
    require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    key_id = request.match_info["key_id"]
    if not _KEY_ID.fullmatch(key_id):
        raise InvalidInput("key_id must be 1 to 64 letters, digits or ._:-")
    return web.json_response(await request.app[SERVICE].revoke_key(tenant_id, key_id))


async def cluster_overview(request: web.Request) -> web.Response:
    """(admin) This node's status and every member's, as the gateway reports a shard: what
    the dashboard shows when it is opened on a node rather than on a gateway."""
    require_admin(request)
    service = request.app[SERVICE]
    own = {**service.cluster_status(), "reachable": True}
    raft = service.raft
    urls = [m["url"].rstrip("/") for m in raft.members() if m.get("url")] if raft is not None else []
    client = request.app[DASHBOARD].client
    assert client is not None
    auth = {"Authorization": request.headers["Authorization"]}
    aliases = service.settings.url_aliases
    peers = await asyncio.gather(*(_member_status(client, url, aliases.get(url, url), auth) for url in urls))
    nodes = [own, *peers]
    leader = next((n for n in nodes if n.get("role") == "leader"), None)
    commit = leader["commit_index"] if leader else None
    for n in nodes:
        n["lag"] = _lag(n, commit)
    shard = {"shard": "this shard", "leader": leader["url"] if leader else None, "nodes": nodes}
    return web.json_response({"role": own["role"], "shards": [shard]})


def _lag(node: dict[str, Any], commit: int | None) -> int | None:
    """Commit index minus Raft's applied index (as gateway/app.py and ``memorose status``): the
    store's applied index never sees the leader's no-op entries and would read as lag forever."""
    applied = node.get("raft_applied_index", node.get("applied_index"))
    if commit is None or not node.get("reachable") or applied is None:
        return None
    return max(0, commit - applied)


async def _member_status(
    client: aiohttp.ClientSession, url: str, fetch_url: str, auth: dict[str, str]
) -> dict[str, Any]:
    """A peer's status, read at ``fetch_url`` (its alias, if any) and reported under ``url``."""
    try:
        timeout = aiohttp.ClientTimeout(total=2)
        async with client.get(fetch_url + "/api/v1/cluster/status", headers=auth, timeout=timeout) as resp:
            return {"url": url, "reachable": resp.status == 200, **(await resp.json())}
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return {"url": url, "reachable": False, "role": "unreachable"}


def register(app: web.Application, service: NodeService) -> None:
    app.router.add_get("/api/v1/whoami", whoami)
    app.router.add_get("/api/v1/cluster/overview", cluster_overview)
    app.router.add_get("/api/v1/status/detail", tenant_detail)
    app.router.add_get("/api/v1/events/lookup", lookup_events)
    # Not ``import``: that path is the key import route, and another method on it is a 405.
    app.router.add_delete("/api/v1/admin/tenants/{tenant_id}/keys/{key_id:(?!import$)[^/]+}", revoke_key)
    _commit_latency_metrics(app[METRICS], service)
    add_dashboard(app, _config(service))


def _commit_latency_metrics(metrics: NodeMetrics, service: NodeService) -> None:
    """Propose -> applied latency of this node's recent commits, so the dashboard can chart it."""

    def quantile(q: float) -> float:
        recent = sorted(service.proposer.latencies[-1000:]) if service.proposer is not None else []
        return recent[min(len(recent) - 1, int(len(recent) * q))] if recent else 0.0

    metrics.gauge(
        "memorose_raft_recent_commit_p50_seconds", "p50 of the last 1,000 commits", lambda: quantile(0.5)
    )
    metrics.gauge(
        "memorose_raft_recent_commit_p99_seconds", "p99 of the last 1,000 commits", lambda: quantile(0.99)
    )


def _config(service: NodeService) -> DashboardConfig:
    settings = service.settings
    own = loopback_url(settings.http)

    async def authenticate(key: str) -> str | None:
        return service.authenticate(key)

    def targets() -> dict[str, str]:
        """This node and its Raft peers (URLs from the node's own configuration, through
        ``url_aliases`` where the advertised URL is not reachable from here)."""
        urls = {address: url.rstrip("/") for address, url in settings.peer_map().items()}
        peers = {f"peer {a}": settings.url_aliases.get(u, u) for a, u in urls.items()}
        return {f"this node ({settings.node_id})": own, **peers}

    return DashboardConfig(upstream=own, authenticate=authenticate, metrics_targets=targets)
