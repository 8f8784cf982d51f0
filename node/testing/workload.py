"""Concurrent writers of the fault runs (Jepsen-style, on loopback).

Each operation writes one event with a unique client ``event_id`` and behaves like a careful
client: it follows 307 redirects to the leader, waits and retries on 503, and retries an
"outcome unknown" (504, timeout, connection lost) with the SAME event id, which the state
machine deduplicates. Its final outcome is ``ok`` (some attempt was acknowledged),
``failed`` (every attempt was definitely refused before reaching the log) or ``unknown``.
The history keeps a hash of what was sent, so the checker can also tell damaged content.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from node.testing.api import ADMIN_KEY
from node.testing.cluster import Cluster

_SYLLABLES = [a + b for a in "bdfgklmnprstvz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]


@dataclass
class History:
    """Everything the writers did, for the checker and the failover figures."""

    outcomes: dict[str, str] = field(default_factory=dict)  # event_id -> ok | failed | unknown
    sent: dict[str, str] = field(default_factory=dict)  # event_id -> sha1 of the content sent
    attempts: Counter[str] = field(default_factory=Counter)
    attempt_results: Counter[str] = field(default_factory=Counter)  # ok/redirect/retry/unknown/failed
    latencies: list[float] = field(default_factory=list)  # seconds, acknowledged operations
    acked_at: list[float] = field(default_factory=list)  # time.monotonic() of each acknowledgement

    def longest_ack_gap(self, start: float, end: float) -> float:
        """The longest stretch in [start, end] with no write acknowledged (seconds)."""
        times = [start, *sorted(t for t in self.acked_at if start <= t <= end), end]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def counts(self) -> dict[str, int]:
        counter = Counter(self.outcomes.values())
        return {k: counter.get(k, 0) for k in ("ok", "failed", "unknown")}


def content_for(event_id: str, size: int) -> str:
    """Deterministic pseudo-text of about ``size`` bytes: varied enough that RocksDB and
    zlib do not shrink a snapshot to a single transfer chunk."""
    rng = random.Random(event_id)
    words = [event_id]
    length = len(event_id)
    while length < size:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[: max(size, len(event_id))]


def fingerprint(content: str) -> str:
    return hashlib.sha1(content.encode()).hexdigest()


def event_body(tenant: str, event_id: str, size: int, history: History) -> dict[str, Any]:
    content = content_for(event_id, size)
    history.sent[event_id] = fingerprint(content)
    return {"tenant_id": tenant, "stream_id": "fault", "event_id": event_id, "content": content}


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
    event_bytes: int = 0,
) -> str:
    """Write one event like a careful client; returns its final outcome."""
    body = event_body(tenant, event_id, event_bytes, history)
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
            history.acked_at.append(time.monotonic())
            return "ok"
        if result == "redirect" and next_url:
            url = next_url
            continue
        saw_unknown = saw_unknown or result == "unknown"
        if result == "failed":
            break
        url = None
        await asyncio.sleep(0.05)
    outcome = "unknown" if saw_unknown else "failed"
    history.outcomes[event_id] = outcome
    return outcome


async def run_writers(
    cluster: Cluster,
    tenant: str,
    writers: int,
    stop: asyncio.Event,
    history: History,
    prefix: str = "w",
    event_bytes: int = 0,
) -> None:
    """``writers`` concurrent clients writing unique events until ``stop`` is set."""
    async with aiohttp.ClientSession() as session:

        async def writer(w: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                eid = f"{prefix}{w}-{n}"
                await write_event(cluster, session, tenant, eid, history, event_bytes=event_bytes)

        await asyncio.gather(*(writer(w) for w in range(writers)))


async def run_readers(
    cluster: Cluster, tenant: str, readers: int, stop: asyncio.Event, interval_s: float = 0.05
) -> int:
    """``readers`` clients retrieving from random live nodes until ``stop`` is set; returns
    the answers received. What a leader returns becomes retrieval feedback (``touch``
    commands), so faults and snapshots meet those writes too. Errors are ignored: a read of
    a killed or paused node fails, and the checker judges the replicated state, not reads."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    answered = 0
    async with aiohttp.ClientSession() as session:

        async def reader(r: int) -> None:
            nonlocal answered
            rng = random.Random(r)
            while not stop.is_set():
                live = [n for n in cluster.nodes if n.alive and not n.paused]
                if live:
                    query = " ".join(rng.choice(_SYLLABLES) for _ in range(2))
                    body = {"tenant_id": tenant, "query": query, "top_k": 5, "passages": False}
                    try:
                        async with session.post(
                            rng.choice(live).url + "/api/v1/retrieve",
                            json=body,
                            headers=headers,
                            timeout=aiohttp.ClientTimeout(total=5.0),
                        ) as resp:
                            await resp.read()
                            answered += resp.status == 200
                    except (aiohttp.ClientError, TimeoutError, OSError):
                        pass
                await asyncio.sleep(interval_s)

        await asyncio.gather(*(reader(r) for r in range(readers)))
    return answered


async def first_ack(
    cluster: Cluster,
    session: aiohttp.ClientSession,
    tenant: str,
    event_id: str,
    history: History,
    exclude: Iterable[int],
    timeout: float = 30.0,
    event_bytes: int = 0,
) -> float | None:
    """Seconds until a node outside ``exclude`` acknowledges one event (the same id sent to
    every such node, again and again, never following a redirect into ``exclude``); None
    if none did within ``timeout``. Measures when a new leader takes writes."""
    body = event_body(tenant, event_id, event_bytes, history)
    banned = set(exclude)
    started = time.monotonic()
    saw_unknown = False
    while time.monotonic() - started < timeout:
        targets = [n for n in cluster.nodes if n.index not in banned and n.alive and not n.paused]
        results = await asyncio.gather(*(write_once(session, n.url, body, timeout=1.0) for n in targets))
        for result, _ in results:
            history.attempts[event_id] += 1
            history.attempt_results[result] += 1
            saw_unknown = saw_unknown or result == "unknown"
        if any(result == "ok" for result, _ in results):
            took = time.monotonic() - started
            history.outcomes[event_id] = "ok"
            history.latencies.append(took)
            history.acked_at.append(time.monotonic())
            return took
        await asyncio.sleep(0.05)
    history.outcomes[event_id] = "unknown" if saw_unknown else "failed"
    return None
