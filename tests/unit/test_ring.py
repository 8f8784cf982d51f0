"""The consistent-hash ring: stable, balanced, and minimal movement when a shard is added."""

from __future__ import annotations

from collections import Counter

from gateway.ring import HashRing, moves

TENANTS = [f"tenant-{i}" for i in range(6000)]


def test_assignment_is_stable_and_balanced() -> None:
    ring = HashRing(["s1", "s2"])
    again = HashRing(["s2", "s1"])
    assert all(ring.shard_for(t) == again.shard_for(t) for t in TENANTS)
    counts = Counter(ring.shard_for(t) for t in TENANTS)
    assert set(counts) == {"s1", "s2"}
    assert min(counts.values()) / max(counts.values()) > 0.8


def test_adding_a_shard_moves_only_what_the_new_shard_takes() -> None:
    old = HashRing(["s1", "s2"])
    new = old.with_shard("s3")
    moved = moves(old, new, TENANTS)
    assert all(to == "s3" for _, to in moved.values()), "tenants may only move to the new shard"
    fraction = len(moved) / len(TENANTS)
    assert 0.25 < fraction < 0.42  # ideal: one third
    unmoved = [t for t in TENANTS if t not in moved]
    assert all(old.shard_for(t) == new.shard_for(t) for t in unmoved)
    assert new.without_shard("s3").shard_for("tenant-7") == old.shard_for("tenant-7")
