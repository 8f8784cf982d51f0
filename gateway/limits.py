"""The gateway's share of the request limits (docs/security.md): the same settings and the
same token buckets, gate and connection guard as a node (``memorose.limits``,
``memorose.http_guard``), applied before a request is forwarded, so one client cannot tie
up the gateway that every tenant shares. Storage quotas need a tenant's stored totals,
which only its shard has: the node enforces them and the gateway passes its 507 on.
"""

from __future__ import annotations

from aiohttp import web

from memorose.config import LimitSettings
from memorose.http_guard import BodyTimeout, ConnectionGuard, GuardedSite, read_body
from memorose.limits import ConcurrencyGate, KeyedBuckets, RateLimited

__all__ = ["BodyTimeout", "GatewayLimits", "guarded_site"]

INGEST_PATH_SUFFIXES = ("/events", "/events/batch", "/memories/add/", "/v1/memories/")


class GatewayLimits:
    """Every limit of one gateway, built once from its ``[limits]`` settings."""

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self.requests = KeyedBuckets(settings.tenant_requests_per_sec, settings.tenant_request_burst)
        self.ingest = KeyedBuckets(settings.tenant_ingest_bytes_per_sec, settings.tenant_ingest_burst_bytes)
        self.gate = ConcurrencyGate(settings.max_concurrent_requests)

    def charge(self, tenant_id: str, method: str, path: str, body: bytes) -> None:
        """A tenant key's request about to be forwarded: its request rate and, for writes of
        events, its ingest volume (429 with Retry-After past either)."""
        wait = self.requests.take(tenant_id)
        if wait > 0:
            raise RateLimited(
                f"tenant request rate over {self.settings.tenant_requests_per_sec:g}/s; slow down",
                retry_after=wait,
            )
        if method == "POST" and path.endswith(INGEST_PATH_SUFFIXES):
            wait = self.ingest.take(tenant_id, float(len(body)))
            if wait > 0:
                rate = self.settings.tenant_ingest_bytes_per_sec
                raise RateLimited(
                    f"tenant ingest volume over {rate} bytes/s; slow down",
                    retry_after=wait,
                    code="ingest_rate_limited",
                )

    async def read_body(self, request: web.Request) -> bytes:
        """The whole body within ``body_timeout_secs`` (408 and the connection closed after)."""
        return await read_body(request, self.settings.body_timeout_secs)


def guarded_site(runner: web.BaseRunner, host: str, port: int, settings: LimitSettings) -> GuardedSite:
    """The gateway's listening socket behind the connection cap and the header deadline."""
    guard = ConnectionGuard(settings.max_connections, settings.header_timeout_secs)
    return GuardedSite(runner, host, port, guard, reuse_address=True)
