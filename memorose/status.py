"""``memorose status --url URL``: the cluster as a table (or JSON), from a node or a gateway.

A gateway already reports every shard; a node reports itself and its peers' URLs, which
are then asked in turn. Exit status: 0 healthy, 1 degraded (a shard without a leader, a
node unreachable or without quorum), 2 when the URL cannot be queried at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import httpx

#: A follower further behind than this many entries is shown as lagging.
LAG_WARN_ENTRIES = 1000
COLUMNS = ("SHARD", "NODE", "URL", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "HEALTH")


class StatusError(Exception):
    """The URL could not be queried (down, wrong key, not Memorose)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = sub.add_parser("status", help="cluster table: shards, nodes, roles, terms, lag, health")
    status.add_argument("--url", required=True, help="a node's or the gateway's base URL")
    status.add_argument("--admin-key", help="admin key (default: MEMOROSE_ADMIN_KEY)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--timeout", type=float, default=3.0, help="seconds per request")
    status.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    key = args.admin_key or os.environ.get("MEMOROSE_ADMIN_KEY")
    if not key:
        print("memorose: --admin-key or MEMOROSE_ADMIN_KEY is required", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    try:
        with httpx.Client(timeout=args.timeout, headers={"Authorization": f"Bearer {key}"}) as client:
            report = collect(client, args.url.rstrip("/"))
    except StatusError as exc:
        print(f"memorose: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["healthy"] else 1


def collect(client: httpx.Client, url: str) -> dict[str, Any]:
    """The normalised report: ``{"source", "healthy", "shards": [{"shard", "leader", "nodes"}]}``."""
    first = _fetch(client, url, strict=True)
    if first.get("role") == "gateway":
        shards = [_shard(s["shard"], s["nodes"]) for s in first["shards"]]
    else:
        peers = [p["url"] for p in first.get("peers", []) if p.get("url")]
        shards = [_shard("-", [first, *(_fetch(client, p) for p in peers)])]
    return {"source": url, "healthy": all(s["healthy"] for s in shards), "shards": shards}


def _fetch(client: httpx.Client, url: str, strict: bool = False) -> dict[str, Any]:
    try:
        resp = client.get(url + "/api/v1/cluster/status")
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        if strict:
            raise StatusError(f"cannot query {url}: {exc}") from None
        return {"url": url, "reachable": False, "role": "unreachable"}
    if resp.status_code != 200:
        message = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
        if strict:
            raise StatusError(f"{url} answered {resp.status_code}: {message}")
        return {"url": url, "reachable": False, "role": f"error {resp.status_code}"}
    return {"url": url, "reachable": True, **body}


def _shard(name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    leader = next((n for n in nodes if n.get("role") == "leader"), None)
    commit = leader.get("commit_index") if leader else None
    rows = [_node_row(n, commit) for n in nodes]
    healthy = leader is not None and all(r["health"] == "ok" for r in rows)
    return {"shard": name, "leader": leader.get("url") if leader else None, "healthy": healthy, "nodes": rows}


def _node_row(node: dict[str, Any], commit: int | None) -> dict[str, Any]:
    reachable = bool(node.get("reachable", True)) and "applied_index" in node
    # Raft's applied position (leader no-ops included), comparable with the commit index.
    applied = node.get("raft_applied_index", node.get("applied_index"))
    lag = max(0, commit - applied) if reachable and commit is not None and applied is not None else None
    if not reachable:
        health = "unreachable"
    elif not node.get("has_quorum", False):
        health = "no quorum"
    elif lag is not None and lag > LAG_WARN_ENTRIES:
        health = "lagging"
    else:
        health = "ok"
    return {
        "node_id": node.get("node_id"),
        "url": node.get("url"),
        "role": node.get("role"),
        "term": node.get("term"),
        "commit_index": node.get("commit_index"),
        "applied_index": applied,
        "lag": lag,
        "health": health,
    }


def render(report: dict[str, Any]) -> str:
    """A fixed-width table, one line per node, then one summary line per shard."""
    fields = ("node_id", "url", "role", "term", "commit_index", "applied_index", "lag", "health")
    rows = [
        [shard["shard"], *(_cell(n[k]) for k in fields)] for shard in report["shards"] for n in shard["nodes"]
    ]
    widths = [max(len(c) for c in col) for col in zip(COLUMNS, *rows, strict=False)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [COLUMNS, *rows]
    ]
    for shard in report["shards"]:
        leader = shard["leader"] or "NONE"
        lines.append(
            f"shard {shard['shard']}: leader {leader}, {'healthy' if shard['healthy'] else 'DEGRADED'}"
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
