"""Forgetting: importance decays with a half-life unless reinforced (docs/consolidation.md).

Stored ``importance`` is a memory's strength at its last reinforcement; what it is worth at
time ``now`` is derived, never written back, so the outcome does not depend on how often
the forgetting pass runs. The decay clock restarts at the last access or reinforcement,
and each access also stretches the half-life (spaced repetition: a memory used often is
forgotten more slowly). These functions are pure and deterministic: the state machine
calls them with the time the leader put in the command.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DAY = 86_400.0


def decay_anchor(memory: Mapping[str, Any]) -> float:
    """When the decay clock last restarted: creation, last access or last reinforcement."""
    return float(
        max(
            memory.get("created_at") or 0.0,
            memory.get("last_accessed_at") or 0.0,
            memory.get("last_reinforced_at") or 0.0,
        )
    )


def effective_half_life_days(memory: Mapping[str, Any], half_life_days: float) -> float:
    return half_life_days * (1.0 + math.log1p(max(0, int(memory.get("access_count") or 0))))


def effective_importance(memory: Mapping[str, Any], now: float, half_life_days: float) -> float:
    """``importance`` halved every (stretched) half-life since the decay anchor."""
    elapsed_days = max(0.0, now - decay_anchor(memory)) / DAY
    half_life = effective_half_life_days(memory, half_life_days)
    return float(memory.get("importance", 0.5)) * 0.5 ** (elapsed_days / half_life)


def strengthen(importance: float, boost: float, times: int = 1) -> float:
    """Move importance toward 1 by ``boost`` of the remaining distance, ``times`` times."""
    remaining = (1.0 - importance) * (1.0 - boost) ** max(0, times)
    return min(1.0, max(0.0, 1.0 - remaining))


def should_archive(
    memory: Mapping[str, Any], now: float, half_life_days: float, min_importance: float
) -> bool:
    """Only current, unarchived memories are forgotten: superseded ones are history and
    stay until an explicit delete (as_of queries read them)."""
    if memory.get("archived") or memory.get("valid_to") is not None or memory.get("superseded_by"):
        return False
    return effective_importance(memory, now, half_life_days) < min_importance
