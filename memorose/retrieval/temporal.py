"""Bi-temporal filtering of retrieval results (valid time; docs/consolidation.md).

Superseded memories stay indexed; this decides, per request, which ones a caller sees:
- default: only current facts (no ``valid_to``, not superseded);
- ``as_of``: the facts that were valid then (``valid_from <= as_of < valid_to``);
- ``enable_arbitration=false``: superseded facts too, marked by ``superseded``/``superseded_by``
  (with ``as_of``, still nothing that became valid after it).
Archived memories are never returned (restore them first); they are not indexed either.

Listing memories (``GET /api/v1/memories``) uses ``admit_listed``: by default everything,
archived included (a listing is an inventory); ``include_superseded=false`` keeps what
retrieval could return.
"""

from __future__ import annotations

from typing import Protocol

from memorose.models import Event, Memory


class TemporalRequest(Protocol):
    @property
    def as_of(self) -> float | None: ...

    @property
    def enable_arbitration(self) -> bool: ...


def admit_memory(memory: Memory, req: TemporalRequest) -> bool:
    if memory.archived:
        return False
    if req.as_of is not None and memory.valid_from > req.as_of:
        return False
    if not req.enable_arbitration:
        return True
    if req.as_of is None:
        return memory.is_current
    return memory.valid_to is None or memory.valid_to > req.as_of


def admit_event(event: Event, req: TemporalRequest) -> bool:
    return req.as_of is None or event.timestamp <= req.as_of


def admit_listed(memory: Memory, as_of: float | None, include_superseded: bool) -> bool:
    """The listing's filter. Times are epoch seconds, compared as numbers, never as text."""
    if as_of is not None and memory.valid_from > as_of:
        return False
    if include_superseded:
        return True
    if memory.archived:
        return False
    if as_of is None:
        return memory.is_current
    return memory.valid_to is None or memory.valid_to > as_of
