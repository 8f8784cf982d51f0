"""What the node logs say about a soak: snapshot installs (and empty ones), load failures,
fatal lines. Counted from the log files the harness writes (one per node, appended across
restarts), because a replica that silently installs an empty database still logs it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_INSTALLED = re.compile(r"installed snapshot at applied index (\d+)")
_WRITTEN = re.compile(r"snapshot at applied index \d+ written")
_LOAD_FAILED = re.compile(r"failed to load full dump|Failed to load|tarfile\.ReadError")
_REJECTED = re.compile(
    r"snapshot.*(reject|refus|discard|verification|corrupt|mismatch|checksum|sha-?256|truncat)", re.I
)
_FATAL = re.compile(r" (CRITICAL|FATAL) |\bFATAL\b")
_FAILPOINT = re.compile(r"failpoint", re.I)
_STALL = re.compile(r"Raft tick thread stalled")
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\)")


@dataclass
class NodeLogStats:
    installs: int = 0
    empty_installs: int = 0
    snapshots_written: int = 0
    load_failures: int = 0
    rejected_snapshots: int = 0
    fatal: int = 0
    failpoint_lines: int = 0
    tick_stalls: int = 0
    tracebacks: int = 0
    excerpts: list[str] = field(default_factory=list)  # the notable lines, capped

    def add(self, other: NodeLogStats) -> None:
        for name in self.counters():
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @staticmethod
    def counters() -> list[str]:
        return [
            "installs",
            "empty_installs",
            "snapshots_written",
            "load_failures",
            "rejected_snapshots",
            "fatal",
            "failpoint_lines",
            "tick_stalls",
            "tracebacks",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in [*self.counters(), "excerpts"]}


def scan_lines(lines: Iterable[str], node_id: str = "", max_excerpts: int = 30) -> NodeLogStats:
    """Count the notable lines of one node's log and keep excerpts of the worrying ones."""
    stats = NodeLogStats()
    for line in lines:
        notable = False
        if match := _INSTALLED.search(line):
            stats.installs += 1
            if int(match.group(1)) == 0:
                stats.empty_installs += 1
                notable = True
        if _WRITTEN.search(line):
            stats.snapshots_written += 1
        if _LOAD_FAILED.search(line):
            stats.load_failures += 1
            notable = True
        if _REJECTED.search(line):
            stats.rejected_snapshots += 1
            notable = True
        if _FAILPOINT.search(line):
            stats.failpoint_lines += 1
            notable = True
        elif _FATAL.search(line):
            stats.fatal += 1
            notable = True
        if _STALL.search(line):
            stats.tick_stalls += 1
        if _TRACEBACK.search(line):
            stats.tracebacks += 1
        if notable and len(stats.excerpts) < max_excerpts:
            stats.excerpts.append(f"{node_id}: {line.rstrip()[:300]}")
    return stats


def scan_logs(logs: dict[str, Path]) -> dict[str, NodeLogStats]:
    """Per node id, plus a ``total`` entry."""
    out: dict[str, NodeLogStats] = {}
    total = NodeLogStats()
    for node_id, path in logs.items():
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        out[node_id] = scan_lines(lines, node_id)
        total.add(out[node_id])
        total.excerpts += out[node_id].excerpts
    out["total"] = total
    return out
