"""Request limits shared by the node and (later) the gateway: token buckets per key, a
concurrency gate, and the errors they raise. No I/O and no framework here, so any HTTP
layer can use them; the node wires them in ``node/http_limits.py``.

A token bucket holds at most ``burst`` tokens and refills at ``rate`` tokens per second; a
request that costs more than what is in the bucket is refused with the seconds until it
would fit (the ``Retry-After`` the caller should honour). Buckets are kept per key (a
tenant id) in a bounded LRU map, so a flood of distinct tenants cannot grow memory
without bound: an evicted bucket comes back full, which only ever errs on the generous side.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from memorose.errors import MemoroseError


class RateLimited(MemoroseError):
    """Too many requests (or bytes) for this tenant right now; retry after ``retry_after`` s."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class QuotaExceeded(MemoroseError):
    """The tenant stores as much as its quota allows; nothing more is accepted until it shrinks."""

    status = 507
    code = "quota_exceeded"


class Overloaded(MemoroseError):
    """The node is at its concurrent-request cap; retry shortly."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds (RFC 9110); round up so a client never comes back early."""
    return str(max(1, math.ceil(seconds)))


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens: 0.0 when granted, else seconds until they would be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if cost <= self.tokens:
            self.tokens -= cost
            return 0.0
        if self.rate <= 0:
            return math.inf
        return (min(cost, self.burst) - self.tokens) / self.rate


class KeyedBuckets:
    """One token bucket per key, at most ``max_keys`` of them (least recently used dropped)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, cost: float = 1.0) -> float:
        """0.0 when ``key`` may spend ``cost`` now, else the wait in seconds. A cost larger
        than the burst is granted from a full bucket (one big request is not refused forever)."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[key] = bucket
            self._evict()
        else:
            self._buckets.move_to_end(key)
        if cost > self.burst and bucket.tokens >= self.burst:
            cost = self.burst
        return bucket.take(cost, now)

    def _evict(self) -> None:
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class ConcurrencyGate:
    """Counts requests in flight; refuses (without queueing) past ``limit``. 0 = no cap.
    Refusing rather than queueing keeps latency bounded for the requests that are admitted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> bool:
        if self.limit and self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active = max(0, self.active - 1)


@dataclass(frozen=True)
class Quota:
    """Per-tenant storage ceilings (0 = unlimited)."""

    max_events: int = 0
    max_memories: int = 0
    max_bytes: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.max_events or self.max_memories or self.max_bytes)

    def check(
        self, events: int, memories: int, stored_bytes: int, adding_events: int, adding_bytes: int
    ) -> None:
        """Raise QuotaExceeded if adding would pass a ceiling (checked before the write)."""
        if self.max_events and events + adding_events > self.max_events:
            raise QuotaExceeded(
                f"tenant event quota reached ({events} of {self.max_events} events stored)",
                code="quota_events",
            )
        if self.max_memories and memories >= self.max_memories:
            raise QuotaExceeded(
                f"tenant memory quota reached ({memories} of {self.max_memories} memories)",
                code="quota_memories",
            )
        if self.max_bytes and stored_bytes + adding_bytes > self.max_bytes:
            raise QuotaExceeded(
                f"tenant storage quota reached ({stored_bytes} of {self.max_bytes} bytes stored)",
                code="quota_bytes",
            )
