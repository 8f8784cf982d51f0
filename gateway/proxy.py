"""Forwarding to a shard's leader: learn it from redirects and cluster status, retry on
another member when a node is down, wait out elections within a deadline.

Writes forwarded here are idempotent: the gateway gives every event an id before the first
attempt, so a retry after a lost answer cannot store it twice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

HOP_HEADERS = {"authorization", "content-type", "accept"}


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str
    retry_after: str | None = None
    moved_to: str | None = None


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Shard:
    """One Raft group: its member URLs and the leader last seen."""

    def __init__(self, name: str, urls: list[str], aliases: dict[str, str] | None = None) -> None:
        self.name = name
        self.urls = urls
        #: Advertised base URL -> the URL this gateway reaches the same node at (compose:
        #: nodes advertise host ports, the gateway talks to them on the container network).
        self.aliases = aliases or {}
        self.leader: str | None = None
        self.redirects = 0
        self.failovers = 0

    def _reachable(self, url: str) -> str:
        """``url`` with an advertised base replaced by the one this gateway can reach."""
        base = _base(url)
        return self.aliases[base] + url[len(base) :] if base in self.aliases else url

    def candidates(self) -> list[str]:
        if self.leader is None:
            return list(self.urls)
        return [self.leader] + [u for u in self.urls if u != self.leader]

    async def forward(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path_qs: str,
        body: bytes,
        headers: dict[str, str],
        deadline: float,
    ) -> Answer:
        """Send to the leader (following redirects), failing over until ``deadline``."""
        backoff = 0.05
        last = Answer(
            503, b'{"error": {"code": "no_leader", "message": "shard unavailable"}}', "application/json", "1"
        )
        while time.monotonic() < deadline:
            for url in self.candidates():
                answer = await self._try(session, method, url + path_qs, body, headers, deadline)
                if answer is None:  # connection failed: next member
                    if self.leader == url:
                        self.leader = None
                    self.failovers += 1
                    continue
                if answer.status == 503:
                    last = answer
                    break  # election in progress: wait, then start over
                return answer
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, 0.5)
        return last

    async def _try(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        body: bytes,
        headers: dict[str, str],
        deadline: float,
    ) -> Answer | None:
        for _ in range(4):  # redirects
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                async with session.request(
                    method,
                    url,
                    data=body or None,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=remaining, connect=min(2.0, remaining)),
                ) as resp:
                    payload = await resp.read()
                    if resp.status in (307, 308) and "Location" in resp.headers:
                        url = self._reachable(resp.headers["Location"])
                        self.leader = _base(self._reachable(resp.headers.get("X-Memorose-Leader", url)))
                        self.redirects += 1
                        continue
                    if resp.status < 500 and self.leader is None:
                        self.leader = _base(url)
                    return Answer(
                        resp.status,
                        payload,
                        resp.headers.get("Content-Type", "application/json"),
                        resp.headers.get("Retry-After"),
                        resp.headers.get("X-Memorose-Moved-To"),
                    )
            except (aiohttp.ClientError, TimeoutError, OSError):
                return None
        return None
