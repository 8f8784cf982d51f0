"""``memorose up --nodes N [--shards S]``: a local cluster in the foreground, one subprocess
per node (and, with several shards, a gateway subprocess in front of them on PORT).

Subprocesses rather than in-process nodes: each node then has its own PySyncObj tick
thread, GIL and RocksDB, exactly as in production, and killing one (``kill -9 PID``) is a
real node failure to try things with. The shard shares one generated Raft password and
one admin key, kept in DATA_DIR, so restarting ``up`` reuses the same data.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from memorose.cli_support import OperatorError, check_data_dir, check_port_free, split_hostport


def _secret(path: Path, prefix: str) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = prefix + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def node_commands(
    args: argparse.Namespace, first_port: int | None = None, shard: str = ""
) -> list[tuple[str, str, list[str]]]:
    """(node id, URL, argv) for each member of one shard."""
    port = args.port if first_port is None else first_port
    prefix = f"{shard}-" if shard else ""
    members = [
        (f"{prefix}n{i + 1}", f"{args.host}:{port + 2 * i}", f"{args.host}:{port + 2 * i + 1}")
        for i in range(args.nodes)
    ]
    root = Path(args.data_dir) / shard if shard else Path(args.data_dir)
    out = []
    for node_id, http, raft in members:
        argv = [sys.executable, "-m", "memorose.cli", "node", "--node-id", node_id]
        argv += ["--data-dir", str(root / node_id), "--http", http, "--raft", raft]
        if args.config:
            argv += ["--config", args.config]
        for other_id, other_http, other_raft in members:
            if other_id != node_id:
                argv += ["--peer", f"{other_raft}=http://{other_http}"]
        out.append((node_id, f"http://{http}", argv))
    return out


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def cluster_commands(args: argparse.Namespace) -> tuple[list[tuple[str, str, list[str]]], str | None]:
    """Every process to start, and the URL clients should use (the gateway's, if any)."""
    shards = getattr(args, "shards", 1)
    if shards <= 1:
        return node_commands(args), None
    processes: list[tuple[str, str, list[str]]] = []
    gateway = [sys.executable, "-m", "memorose.cli", "gateway", "--http", f"{args.host}:{args.port}"]
    for k in range(shards):
        name = f"s{k + 1}"
        members = node_commands(args, args.port + 1 + 2 * args.nodes * k, name)
        processes += members
        gateway += ["--shard", f"{name}=" + ",".join(url for _, url, _ in members)]
    gateway_url = f"http://{args.host}:{args.port}"
    processes.append(("gateway", gateway_url, gateway))
    return processes, gateway_url


def _check_ports(processes: list[tuple[str, str, list[str]]]) -> None:
    """Every port of every process checked before the first one starts (else some would
    start and the others die with a traceback each)."""
    for name, _, argv in processes:
        for flag in ("--http", "--raft"):
            if flag in argv:
                host, port = split_hostport(argv[argv.index(flag) + 1])
                if port > 65535:
                    raise OperatorError(f"{name} would need port {port} (over 65535): pass a lower --port")
                what = f"{name} {'HTTP' if flag == '--http' else 'Raft'} address"
                check_port_free(host, port, what, "stop whatever listens there or pass another --port")


def run_local_cluster(args: argparse.Namespace) -> int:
    data_dir = check_data_dir(args.data_dir)
    env = dict(os.environ)
    env.setdefault("MEMOROSE_RAFT_PASSWORD", _secret(data_dir / "raft_password", ""))
    admin_key = env.setdefault("MEMOROSE_ADMIN_KEY", _secret(data_dir / "admin_key", "adm_"))
    nodes, gateway_url = cluster_commands(args)
    _check_ports(nodes)
    procs = [subprocess.Popen(argv, env=env) for _, _, argv in nodes]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    deadline = time.monotonic() + 60
    while not stopping and time.monotonic() < deadline and not all(_ready(url) for _, url, _ in nodes):
        time.sleep(0.2)
    if not stopping:
        what = f"{args.shards} shards x {args.nodes} nodes" if gateway_url else f"shard of {len(nodes)} nodes"
        print(f"Memorose local {what} (data in {data_dir.resolve()})", flush=True)
        if gateway_url:
            print(f"  gateway: {gateway_url}   <- point clients here", flush=True)
        for (node_id, url, _), proc in zip(nodes, procs, strict=True):
            print(f"  {node_id}: {url}  (pid {proc.pid})", flush=True)
        print(f"  admin key: {admin_key}  (stored in {data_dir / 'admin_key'})", flush=True)
        entry = gateway_url or nodes[0][1]
        print(f"  try: curl -H 'Authorization: Bearer {admin_key}' {entry}/api/v1/cluster/status", flush=True)
        print(f"  dashboard: {entry}/dashboard  (sign in with the admin key)", flush=True)
        print("  Ctrl-C stops every node.", flush=True)
    reported: set[int] = set()
    while not stopping:
        for (node_id, _, _), proc in zip(nodes, procs, strict=True):
            if proc.poll() is not None and proc.pid not in reported:
                reported.add(proc.pid)
                print(f"memorose: node {node_id} exited with {proc.returncode}", file=sys.stderr, flush=True)
        if len(reported) == len(procs):
            return 1
        time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0
