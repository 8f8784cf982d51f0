"""The checker of the fault runs: after the faults heal, read every node and judge.

An ``ok`` (acknowledged) event must be present exactly once on every node with the content
that was sent; a ``failed`` one nowhere; an ``unknown`` one at most once; an id no writer
ever sent nowhere. Every node must hold the same L0 stream (same ids, same order, same
seqs) and the same digest at the same applied index.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from node.testing.cluster import Cluster
from node.testing.workload import History, fingerprint

#: (event_id, stream_id, seq) of one stored event, in the order the node lists them.
StreamEntry = tuple[str, str, int]


@dataclass
class Verdict:
    counts: dict[str, int]
    lost: list[str]  # acknowledged, missing on some node
    duplicated: list[str]  # stored more than once on some node
    resurrected: list[str]  # definitely refused, yet present
    phantom: list[str]  # present, never sent by any writer
    damaged: list[str]  # present with other content than what was sent
    converged: bool
    streams_equal: bool
    digests_equal: bool
    applied_index: int
    notes: list[str] = field(default_factory=list)  # where streams/digests differ
    lost_on: dict[str, int] = field(default_factory=dict)  # node id -> acknowledged events missing
    unreadable: list[str] = field(default_factory=list)  # nodes whose events or digest could not be read

    @property
    def ok(self) -> bool:
        return not any(self.violations().values())

    def violations(self) -> dict[str, int]:
        """Every kind of violation and how many (0 when clean)."""
        return {
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "resurrected": len(self.resurrected),
            "phantom": len(self.phantom),
            "damaged": len(self.damaged),
            "not_converged": int(not self.converged),
            "divergent_streams": int(not self.streams_equal),
            "divergent_digests": int(not self.digests_equal),
            "unreadable_nodes": len(self.unreadable),
        }


async def check(cluster: Cluster, tenant: str, history: History, timeout: float = 90.0) -> Verdict:
    """Wait for the healed shard to converge (recording it if it does not), then read every
    node and judge what it holds; a node that cannot be read is a violation, not a crash."""
    converged, applied, notes = True, -1, []
    try:
        await cluster.wait_leader(timeout=timeout)
        applied = await cluster.wait_converged(timeout=timeout)
    except AssertionError as exc:
        converged = False
        notes.append(f"not converged: {exc}")
    digests: dict[str, dict[str, Any]] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    unreadable: list[str] = []
    try:  # all at one applied index: with the workers on, commands keep coming after the writes
        together = await cluster.digests(tenant, timeout=timeout)
        digests = {cluster.nodes[i].node_id: d for i, d in together.items()}
    except (AssertionError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        notes.append(f"no digests at one applied index: {str(exc)[:200]}")
    for node in cluster.nodes:
        try:
            if node.node_id not in digests:  # each on its own then: they show where it differs
                digests[node.node_id] = (await cluster.digests(tenant, [node.index]))[node.index]
            events[node.node_id] = await cluster.events(node.index, tenant)
        except (AssertionError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            unreadable.append(node.node_id)
            notes.append(f"{node.node_id} unreadable: {str(exc)[:200]}")
    verdict = judge(events, digests, history, converged=converged, applied_index=applied, notes=notes)
    verdict.unreadable = unreadable
    return verdict


def judge(
    events: dict[str, list[dict[str, Any]]],
    digests: dict[str, dict[str, Any]],
    history: History,
    converged: bool = True,
    applied_index: int = -1,
    notes: list[str] | None = None,
) -> Verdict:
    """The verdict on what each node (by id) holds: its L0 events in listing order and its
    digest. Pure, so the checker itself is unit-tested."""
    streams: dict[str, list[StreamEntry]] = {}
    lost: set[str] = set()
    duplicated: set[str] = set()
    resurrected: set[str] = set()
    phantom: set[str] = set()
    damaged: set[str] = set()
    lost_on: dict[str, int] = {}
    for node_id, stored in events.items():
        streams[node_id] = [(e["event_id"], e["stream_id"], int(e["seq"])) for e in stored]
        present = Counter(e["event_id"] for e in stored)
        duplicated |= {eid for eid, count in present.items() if count > 1}
        phantom |= {eid for eid in present if eid not in history.outcomes}
        damaged |= {e["event_id"] for e in stored if _damaged(e, history)}
        missing = {eid for eid, outcome in history.outcomes.items() if outcome == "ok" and not present[eid]}
        lost |= missing
        lost_on[node_id] = len(missing)
        resurrected |= {eid for eid, o in history.outcomes.items() if o == "failed" and present[eid]}
    return Verdict(
        counts=history.counts(),
        lost=sorted(lost),
        duplicated=sorted(duplicated),
        resurrected=sorted(resurrected),
        phantom=sorted(phantom),
        damaged=sorted(damaged),
        converged=converged,
        streams_equal=len({tuple(s) for s in streams.values()}) <= 1,
        digests_equal=len({(d["digest"], d["applied_index"]) for d in digests.values()}) <= 1,
        applied_index=applied_index,
        notes=(notes or []) + _stream_differences(streams) + _digest_differences(digests),
        lost_on=lost_on,
    )


def _damaged(event: dict[str, Any], history: History) -> bool:
    sent = history.sent.get(event["event_id"])
    return sent is not None and fingerprint(event["content"]) != sent


def _stream_differences(streams: dict[str, list[StreamEntry]]) -> list[str]:
    """One line per node whose L0 stream differs from the first node's: where and how."""
    if not streams:
        return []
    (first_id, first), *others = streams.items()
    notes = []
    for node_id, stream in others:
        if stream == first:
            continue
        at = next((i for i, (a, b) in enumerate(zip(first, stream, strict=False)) if a != b), None)
        at = min(len(first), len(stream)) if at is None else at
        theirs = stream[at] if at < len(stream) else None
        mine = first[at] if at < len(first) else None
        notes.append(
            f"L0 stream of {node_id} ({len(stream)} events) differs from {first_id} ({len(first)}) "
            f"at position {at}: {theirs} vs {mine}"
        )
    return notes


def _digest_differences(digests: dict[str, dict[str, Any]]) -> list[str]:
    if len({(d["digest"], d["applied_index"]) for d in digests.values()}) <= 1:
        return []
    shown = (f"{node}={d['digest'][:12]}@{d['applied_index']}" for node, d in digests.items())
    return ["digests: " + ", ".join(shown)]
