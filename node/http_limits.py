"""The node's side of the request limits (issue 15): per-tenant token buckets, the storage
quota check, the concurrency gate, and the Content-Type and body-timeout checks. The pure
logic (buckets, gate, quota) is in ``memorose.limits`` and the connection guard (connection
cap, header deadline) in ``memorose.http_guard``, both shared with the gateway.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from memorose.config import LimitSettings
from memorose.errors import MemoroseError
from memorose.http_guard import BodyTimeout, read_body
from memorose.limits import ConcurrencyGate, KeyedBuckets, Quota, RateLimited

__all__ = ["LIMITS", "BodyTimeout", "NodeLimits", "check_content_type", "check_quota", "read_body"]


class UnsupportedMediaType(MemoroseError):
    status = 415
    code = "unsupported_media_type"


class NodeLimits:
    """Every limit of one node, built once from ``[limits]``."""

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self.requests = KeyedBuckets(settings.tenant_requests_per_sec, settings.tenant_request_burst)
        self.ingest = KeyedBuckets(settings.tenant_ingest_bytes_per_sec, settings.tenant_ingest_burst_bytes)
        self.gate = ConcurrencyGate(settings.max_concurrent_requests)
        self.quota = Quota(
            settings.tenant_max_events, settings.tenant_max_memories, settings.tenant_max_bytes
        )

    def charge_request(self, tenant_id: str) -> None:
        wait = self.requests.take(tenant_id)
        if wait > 0:
            raise RateLimited(
                f"tenant request rate over {self.settings.tenant_requests_per_sec:g}/s; slow down",
                retry_after=wait,
            )

    def charge_ingest(self, tenant_id: str, nbytes: int) -> None:
        wait = self.ingest.take(tenant_id, float(nbytes))
        if wait > 0:
            raise RateLimited(
                f"tenant ingest volume over {self.settings.tenant_ingest_bytes_per_sec} bytes/s; slow down",
                retry_after=wait,
                code="ingest_rate_limited",
            )


LIMITS = web.AppKey("limits", NodeLimits)

#: Routes whose body is JSON (every POST of the API). A missing Content-Type is tolerated
#: (minimal clients omit it; the body must still parse as JSON); any other type is a 415.
_JSON_TYPES = ("application/json",)


def check_content_type(request: web.Request) -> None:
    raw = request.headers.get("Content-Type")
    if raw is None:
        return
    media = raw.split(";", 1)[0].strip().lower()
    if media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(f"Content-Type must be application/json, not {media[:60]!r}")


def check_quota(limits: NodeLimits, record: dict[str, Any], events: int, nbytes: int) -> None:
    """Refuse an ingest that would take the tenant past its quota (counts the node keeps)."""
    limits.quota.check(
        record.get("events", 0), record.get("memories", 0), record.get("bytes", 0), events, nbytes
    )
