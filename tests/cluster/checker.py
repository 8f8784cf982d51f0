"""Concurrent writers and the checker of the fault runs (Jepsen-style, on loopback).

Each operation writes one event with a unique ``event_id`` and behaves like a careful
client: it follows 307 redirects to the leader, waits and retries on 503, and retries an
"outcome unknown" (504, timeout, connection lost) with the SAME event id, which the state
machine deduplicates. Its final outcome is ``ok`` (some attempt was acknowledged),
``failed`` (every attempt was definitely refused before reaching the log) or ``unknown``.

After the faults heal, the checker reads every node: an ``ok`` event must be present
exactly once on every node, a ``failed`` one nowhere, an ``unknown`` one at most once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.cluster.harness import Cluster
from tests.conftest import ADMIN_KEY


@dataclass
class History:
    outcomes: dict[str, str] = field(default_factory=dict)  # event_id -> ok | failed | unknown
    attempts: Counter[str] = field(default_factory=Counter)
    attempt_results: Counter[str] = field(default_factory=Counter)  # ok/redirect/retry/unknown/failed
    latencies: list[float] = field(default_factory=list)  # seconds, acknowledged operations

    def counts(self) -> dict[str, int]:
        counter = Counter(self.outcomes.values())
        return {k: counter.get(k, 0) for k in ("ok", "failed", "unknown")}


async def write_once(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], timeout: float
) -> tuple[str, str | None]:
    """One HTTP attempt: ('ok'|'redirect'|'retry'|'unknown'|'failed', next URL)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with session.post(
            url + "/api/v1/events",
            json=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            await resp.read()
            if resp.status == 202:
                return "ok", None
            if resp.status == 307:
                return "redirect", resp.headers.get("X-Memorose-Leader")
            if resp.status == 503:
                return "retry", None  # no leader / not ready: nothing was proposed
            if resp.status == 504:
                return "unknown", None
            return "failed", None
    except aiohttp.ClientConnectorError:
        return "retry", None  # never connected: nothing was sent
    except (aiohttp.ClientError, TimeoutError, OSError):
        return "unknown", None


async def write_event(
    cluster: Cluster,
    session: aiohttp.ClientSession,
    tenant: str,
    event_id: str,
    history: History,
    deadline_s: float = 20.0,
) -> str:
    body = {
        "tenant_id": tenant,
        "stream_id": "fault",
        "event_id": event_id,
        "content": f"fault run {event_id}",
    }
    started = time.monotonic()
    deadline = started + deadline_s
    saw_unknown = False
    url: str | None = None
    while time.monotonic() < deadline:
        if url is None:
            live = [n for n in cluster.nodes if n.alive and not n.paused]
            url = random.choice(live or cluster.nodes).url
        history.attempts[event_id] += 1
        result, next_url = await write_once(
            session, url, body, timeout=min(5.0, deadline - time.monotonic() + 0.1)
        )
        history.attempt_results[result] += 1
        if result == "ok":
            history.outcomes[event_id] = "ok"
            history.latencies.append(time.monotonic() - started)
            return "ok"
        if result == "redirect" and next_url:
            url = next_url
            continue
        if result == "unknown":
            saw_unknown = True
        if result == "failed":
            break
        url = None
        await asyncio.sleep(0.05)
    outcome = "unknown" if saw_unknown else "failed"
    history.outcomes[event_id] = outcome
    return outcome


async def run_writers(
    cluster: Cluster, tenant: str, writers: int, stop: asyncio.Event, history: History, prefix: str = "w"
) -> None:
    """``writers`` concurrent clients writing unique events until ``stop`` is set."""
    async with aiohttp.ClientSession() as session:

        async def writer(w: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                await write_event(cluster, session, tenant, f"{prefix}{w}-{n}", history)

        await asyncio.gather(*(writer(w) for w in range(writers)))


@dataclass
class Verdict:
    counts: dict[str, int]
    lost: list[str]
    duplicated: list[str]
    resurrected: list[str]  # definitely failed, yet present
    digests_equal: bool
    applied_index: int

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated and not self.resurrected and self.digests_equal


async def check(cluster: Cluster, tenant: str, history: History) -> Verdict:
    """Wait for the healed shard to converge, then read every node."""
    await cluster.wait_leader()
    applied = await cluster.wait_converged(timeout=90)
    digests = await cluster.digests(tenant)
    lost: set[str] = set()
    duplicated: set[str] = set()
    resurrected: set[str] = set()
    for node in cluster.nodes:
        if not node.alive:
            continue
        present = Counter(e["event_id"] for e in await cluster.events(node.index, tenant))
        duplicated |= {eid for eid, count in present.items() if count > 1}
        for eid, outcome in history.outcomes.items():
            if outcome == "ok" and present[eid] == 0:
                lost.add(eid)
            if outcome == "failed" and present[eid] > 0:
                resurrected.add(eid)
    values = {d["digest"] for d in digests.values()}
    indexes = {d["applied_index"] for d in digests.values()}
    return Verdict(
        counts=history.counts(),
        lost=sorted(lost),
        duplicated=sorted(duplicated),
        resurrected=sorted(resurrected),
        digests_equal=len(values) == 1 and len(indexes) == 1,
        applied_index=applied,
    )
