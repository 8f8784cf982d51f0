"""Consistent hashing of tenants onto shards, with virtual nodes.

Each shard owns ``vnodes`` points on a 64-bit ring; a tenant belongs to the first point at or
after its own hash. Adding a shard moves only the tenants whose arcs the new points take over
(about 1/N of them), which ``moves`` computes before anything is changed.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable


def _hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, shards: Iterable[str], vnodes: int = 160) -> None:
        self.shards = sorted(set(shards))
        if not self.shards:
            raise ValueError("a ring needs at least one shard")
        self.vnodes = vnodes
        points = sorted((_hash(f"{shard}#{i}"), shard) for shard in self.shards for i in range(vnodes))
        self._keys = [p for p, _ in points]
        self._owners = [s for _, s in points]

    def shard_for(self, tenant_id: str) -> str:
        index = bisect.bisect_left(self._keys, _hash(tenant_id)) % len(self._keys)
        return self._owners[index]

    def with_shard(self, shard: str) -> HashRing:
        return HashRing([*self.shards, shard], self.vnodes)

    def without_shard(self, shard: str) -> HashRing:
        return HashRing([s for s in self.shards if s != shard], self.vnodes)


def moves(old: HashRing, new: HashRing, tenants: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Tenants whose shard differs between two rings: tenant -> (from shard, to shard)."""
    out = {}
    for tenant in tenants:
        before, after = old.shard_for(tenant), new.shard_for(tenant)
        if before != after:
            out[tenant] = (before, after)
    return out
