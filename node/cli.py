"""CLI subcommands owned by the node package: ``up``, ``node`` and ``admin``
(``bench`` belongs to the ``benchmarks`` package)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from memorose.cli_support import (
    OperatorError,
    check_data_dir,
    check_port_free,
    port_number,
    positive_int,
    split_hostport,
)
from memorose.config import Settings, load_settings
from node.runner import RunningNode, serve_forever


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = sub.add_parser("up", help="start a local node (or a local N-node shard) in the foreground")
    up.add_argument("--data-dir", default="./data", help="where the node (or each node) keeps its data")
    up.add_argument(
        "--port", type=port_number, default=8080, help="HTTP port (Raft uses PORT+1 unless --raft)"
    )
    up.add_argument("--host", default="127.0.0.1", help="address to listen on")
    up.add_argument("--raft", default=None, help="Raft HOST:PORT (default: HOST:PORT+1)")
    up.add_argument("--config", default=None, help="TOML config file (docs/configuration.md)")
    up.add_argument(
        "--nodes",
        type=positive_int,
        default=1,
        help="start a local shard of N nodes as subprocesses (node i: HTTP PORT+2i, Raft PORT+2i+1)",
    )
    up.add_argument(
        "--shards",
        type=positive_int,
        default=1,
        help="with S > 1: S shards of --nodes nodes behind a gateway on PORT (nodes from PORT+1)",
    )
    up.set_defaults(func=cmd_up)

    node = sub.add_parser("node", help="start a node from flags and/or a config file")
    node.add_argument("--config", default=None, help="TOML config file")
    node.add_argument("--node-id", help="this node's name in the shard (default: n1, or node_id in --config)")
    node.add_argument("--data-dir", help="where the node keeps its data (default: ./data, or data_dir)")
    node.add_argument("--http", help="HOST:PORT for the HTTP API (default: 127.0.0.1:8080, or http)")
    node.add_argument(
        "--raft", help="HOST:PORT for Raft, the bind address (default: 127.0.0.1:8081, or raft)"
    )
    node.add_argument("--raft-advertise", help="HOST:PORT peers know this node by, if not --raft")
    node.add_argument("--http-advertise", help="base URL clients reach this node at, if not http://HTTP")
    node.add_argument(
        "--peer",
        action="append",
        default=None,
        help="another member, RAFTHOST:PORT=http://HOST:PORT (repeat)",
    )
    node.set_defaults(func=cmd_node)

    admin = sub.add_parser("admin", help="administration")
    admin_sub = admin.add_subparsers(dest="admin_command", metavar="ACTION")
    reindex = admin_sub.add_parser("reindex", help="rebuild LanceDB and Tantivy from RocksDB")
    reindex.add_argument("--url", help="a running node: rebuild online through its admin API")
    reindex.add_argument("--admin-key", help="admin key for --url (default: MEMOROSE_ADMIN_KEY)")
    reindex.add_argument("--data-dir", help="a stopped node's data directory: rebuild offline")
    reindex.set_defaults(func=cmd_reindex)

    backup = admin_sub.add_parser(
        "backup", help="archive a STOPPED node's data dir (RocksDB checkpoint + Raft)"
    )
    backup.add_argument("--data-dir", required=True, help="the stopped node's data directory")
    backup.add_argument("--out", required=True, help="archive to write (.tar.gz)")
    backup.set_defaults(func=cmd_backup)
    restore = admin_sub.add_parser("restore", help="unpack and verify a backup into a new data dir")
    restore.add_argument("--archive", required=True, help="a file written by `memorose admin backup`")
    restore.add_argument("--data-dir", required=True, help="an empty or absent directory")
    restore.set_defaults(func=cmd_restore)

    reembed = admin_sub.add_parser(
        "reembed", help="re-derive embeddings made by another model or dimension (after a provider change)"
    )
    reembed.add_argument("--url", required=True, help="a running node (the leader, or it redirects)")
    reembed.add_argument("--admin-key", help="admin key (default: MEMOROSE_ADMIN_KEY)")
    reembed.add_argument("--tenant", help="only this tenant")
    reembed.add_argument("--dry-run", action="store_true", help="only count the stale memories")
    reembed.set_defaults(func=cmd_reembed)


def _print_ready(node: RunningNode) -> None:
    service = node.service
    print(f"Memorose node {service.settings.node_id} listening on {node.url}", flush=True)
    print(f"  data dir:  {service.data_dir.resolve()}", flush=True)
    if service.admin_key_generated:
        print(f"  admin key: {service.admin_key}  (stored in {service.data_dir / 'admin_key'})", flush=True)
    else:
        print("  admin key: from configuration", flush=True)
    print(f"  dashboard: {node.url}/dashboard  (sign in with the admin key)", flush=True)
    print(f"  try: curl -H 'Authorization: Bearer <admin key>' {node.url}/api/v1/cluster/status", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    if args.nodes > 1 or args.shards > 1:
        from node.local_cluster import run_local_cluster

        return run_local_cluster(args)
    raft = args.raft or f"{args.host}:{args.port + 1}"
    settings = load_settings(args.config, data_dir=args.data_dir, http=f"{args.host}:{args.port}", raft=raft)
    preflight(settings, "pass another --port (Raft uses PORT+1) or --raft HOST:PORT")
    asyncio.run(serve_forever(settings, _print_ready))
    return 0


def preflight(settings: Settings, fix: str) -> None:
    """Data dir and both ports checked before anything starts: one line, not a traceback."""
    check_data_dir(settings.data_dir)
    http_host, http_port = split_hostport(settings.http)
    check_port_free(http_host, http_port, "HTTP address", f"stop whatever listens there or {fix}")
    raft_host, raft_port = split_hostport(settings.raft)
    check_port_free(raft_host, raft_port, "Raft address", f"stop whatever listens there or {fix}")


def cmd_node(args: argparse.Namespace) -> int:
    settings = load_settings(
        args.config,
        node_id=args.node_id,
        data_dir=args.data_dir,
        http=args.http,
        raft=args.raft,
        raft_advertise=args.raft_advertise,
        http_advertise=args.http_advertise,
        peers=args.peer,
    )
    preflight(settings, "pass another --http / --raft HOST:PORT")
    asyncio.run(serve_forever(settings, _print_ready))
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    if args.url:
        import os

        key = args.admin_key or os.environ.get("MEMOROSE_ADMIN_KEY")
        if not key:
            print("memorose: --admin-key or MEMOROSE_ADMIN_KEY is required with --url", file=sys.stderr)
            return 2
        result = _post(args.url.rstrip("/") + "/api/v1/admin/reindex", key)
        print(json.dumps(result))
        return 0
    if not args.data_dir:
        print("memorose: give --url of a running node or --data-dir of a stopped one", file=sys.stderr)
        return 2
    return _reindex_offline(args.data_dir)


def cmd_backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from node.backup import BackupError, backup

    try:
        manifest = backup(Path(args.data_dir), Path(args.out))
    except BackupError as exc:
        print(f"memorose: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"archive": args.out, "applied_index": manifest["applied_index"]}))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from node.backup import BackupError, restore

    try:
        manifest = restore(Path(args.archive), Path(args.data_dir))
    except BackupError as exc:
        print(f"memorose: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"data_dir": args.data_dir, "applied_index": manifest["applied_index"]}))
    return 0


def cmd_reembed(args: argparse.Namespace) -> int:
    import os

    key = args.admin_key or os.environ.get("MEMOROSE_ADMIN_KEY")
    if not key:
        print("memorose: --admin-key or MEMOROSE_ADMIN_KEY is required", file=sys.stderr)
        return 2
    url = args.url.rstrip("/") + "/api/v1/admin/reembed"
    body: dict[str, Any] = {"dry_run": True}
    if args.tenant:
        body["tenant_id"] = args.tenant
    report = _post(url, key, body)
    if args.dry_run:
        print(json.dumps(report))
        return 0
    for tenant, counts in report["tenants"].items():
        _reembed_tenant(url, key, tenant, int(counts["stale"]), report["model"])
    print(json.dumps({**report, "done": True}))
    return 0


def _reembed_tenant(url: str, key: str, tenant: str, total: int, model: str, step: int = 512) -> None:
    """Re-embed one tenant in bounded steps, printing progress (the node stays online)."""
    done = 0
    while done < total:
        answer = _post(url, key, {"tenant_id": tenant, "limit": step})["tenants"][tenant]
        done += int(answer["updated"])
        print(f"{tenant}: {done}/{total} memories re-embedded with {model}", file=sys.stderr, flush=True)
        if int(answer["updated"]) == 0:
            break


def _reindex_offline(data_dir: str) -> int:
    from pathlib import Path

    from memorose.providers.factory import build_embedder
    from memorose.storage.indexer import Indexer
    from memorose.storage.reader import StateReader
    from memorose.storage.rocks import RocksStore

    settings = load_settings(data_dir=data_dir)
    try:
        store = RocksStore(Path(data_dir) / "rocks")
    except Exception as exc:
        print(f"memorose: cannot open {data_dir} (is the node still running?): {exc}", file=sys.stderr)
        return 1
    try:
        indexer = Indexer(
            StateReader(store),
            Path(data_dir) / "index",
            dim=settings.index.embedding_dim,
            ann_threshold=settings.index.ann_threshold,
            model=build_embedder(settings).model,  # lazy: names the model, loads nothing
        )
        indexer.rebuild()
        print(json.dumps({"rebuilt": True, "position": indexer.position}))
    finally:
        store.close()
    return 0


def _post(url: str, key: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise OperatorError(
            f"{url} answered {exc.code}: {_error_message(exc)}: check --url and --admin-key"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OperatorError(f"cannot reach {url} ({reason}): check --url and that the node runs") from None
    except ValueError:
        raise OperatorError(f"{url} did not answer JSON: check that --url is a Memorose node") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The node's JSON error message, else the HTTP reason."""
    try:
        return str(json.loads(exc.read())["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)
