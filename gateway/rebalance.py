"""Ring changes: which tenants a new ring moves, and moving them without losing a write.

A move of tenant T from shard A to shard B (every step idempotent, so a failed move can be
re-run):

1. B: set T active (clears a tombstone left by an earlier move away from B).
2. Copy T's L0 events A -> B in pages, keeping event ids, streams, timestamps and metadata
   (event ids make the copy idempotent). Writes continue on A meanwhile.
3. A: freeze T. The state machine now refuses T's writes (clients and gateways get a
   retryable 503 ``tenant_moving``), so nothing can land on A after the next step.
4. Copy the events written during step 2 (everything after the last copied seq).
5. Copy T's API keys (hashes) A -> B.
6. A: mark T moved to B's URLs and purge its data: a tombstone remains, and A answers T's
   requests with 409 ``tenant_moved`` + ``X-Memorose-Moved-To``, which gateways still running
   the old ring follow. B consolidates the copied events into fresh L1 memories.

Events are the source of truth and are moved verbatim; L1 memories (and insights) are
re-derived on B by its consolidation pipeline, so memory ids change across a move.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.ring import HashRing, moves
from memorose.client import AsyncMemoroseClient

PAGE = 1000


@dataclass
class MoveReport:
    tenant_id: str
    source: str
    target: str
    events_copied: int = 0
    keys_copied: int = 0
    frozen_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


async def shard_tenants(client: AsyncMemoroseClient) -> list[str]:
    body = await client.request("GET", "/api/v1/admin/tenants")
    return [t["tenant_id"] for t in body["tenants"] if t.get("state", "active") != "moved"]


async def plan(
    old: dict[str, list[str]], new: dict[str, list[str]], admin_key: str, vnodes: int = 160
) -> dict[str, tuple[str, str]]:
    """Tenants that move from the old ring to the new one: tenant -> (from, to)."""
    tenants: list[str] = []
    for urls in old.values():
        async with AsyncMemoroseClient(urls, api_key=admin_key) as client:
            tenants += await shard_tenants(client)
    return moves(HashRing(old, vnodes), HashRing(new, vnodes), tenants)


async def _copy_events(
    source: AsyncMemoroseClient, target: AsyncMemoroseClient, tenant_id: str, after: int
) -> tuple[int, int]:
    """Copy events with seq > after; returns (events copied, last seq seen)."""
    copied = 0
    while True:
        page = await source.request(
            "GET", "/api/v1/events", params={"tenant_id": tenant_id, "after": after, "limit": PAGE}
        )
        events = page["events"]
        if not events:
            return copied, after
        batch = [
            {k: e[k] for k in ("event_id", "stream_id", "content", "metadata", "timestamp")} for e in events
        ]
        await target.ingest_batch(tenant_id, batch)
        copied += len(batch)
        after = events[-1]["seq"]
        if page.get("next_after") is None:
            return copied, after


async def move_tenant(
    tenant_id: str,
    source_urls: list[str],
    target_urls: list[str],
    admin_key: str,
    *,
    source_name: str = "",
    target_name: str = "",
) -> MoveReport:
    report = MoveReport(tenant_id, source_name, target_name)
    state_path = f"/api/v1/admin/tenants/{tenant_id}/state"
    async with (
        AsyncMemoroseClient(source_urls, api_key=admin_key) as source,
        AsyncMemoroseClient(target_urls, api_key=admin_key) as target,
    ):
        await target.request("POST", state_path, {"state": "active"})
        copied, last = await _copy_events(source, target, tenant_id, 0)
        await source.request("POST", state_path, {"state": "frozen"})
        frozen_at = time.monotonic()
        more, last = await _copy_events(source, target, tenant_id, last)
        keys = (await source.request("GET", f"/api/v1/admin/tenants/{tenant_id}/keys"))["keys"]
        if keys:
            await target.request("POST", f"/api/v1/admin/tenants/{tenant_id}/keys/import", {"keys": keys})
        await source.request("POST", state_path, {"state": "moved", "moved_to": target_urls, "purge": True})
        report.frozen_seconds = round(time.monotonic() - frozen_at, 3)
        report.events_copied = copied + more
        report.keys_copied = len(keys)
    return report


async def rebalance(
    old: dict[str, list[str]],
    new: dict[str, list[str]],
    admin_key: str,
    *,
    vnodes: int = 160,
    progress: Callable[[MoveReport], None] | None = None,
) -> list[MoveReport]:
    """Move every tenant the new ring assigns elsewhere, one at a time."""
    reports = []
    for tenant_id, (source, target) in sorted((await plan(old, new, admin_key, vnodes)).items()):
        report = await move_tenant(
            tenant_id, old[source], new[target], admin_key, source_name=source, target_name=target
        )
        reports.append(report)
        if progress is not None:
            progress(report)
    return reports


def run(coro: Any) -> Any:
    return asyncio.run(coro)
