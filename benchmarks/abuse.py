"""``memorose bench abuse``: what abusive clients cost a well-behaved one (issue 15).

Starts one node as a subprocess (its own interpreter: the abusers' client code does not
share its GIL), then measures a normal tenant's ingest and retrieve latency twice in the
same run: first alone (baseline), then while N slow clients hold connections with partial
headers (re-opening each one the node closes) and a burst client of another tenant fires
requests over its rate limit. Prints both phases with the load average.

    nice -n 10 memorose bench abuse --seconds 20 --slow 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from node.runner import free_port

ADMIN = "adm_bench_abuse_admin_key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase (s)")
    parser.add_argument("--slow", type=int, default=200, help="slow connections holding partial headers")
    parser.add_argument(
        "--burst-workers", type=int, default=8, help="concurrent requests of the burst client"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="tenant_requests_per_sec of the node")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="header_timeout_secs of the node")
    parser.add_argument("--out", default="benchmarks/results/abuse.json", help="JSON result file")


@dataclass
class Phase:
    name: str
    ingest_ms: list[float] = field(default_factory=list)
    retrieve_ms: list[float] = field(default_factory=list)
    normal_errors: dict[str, int] = field(default_factory=dict)
    burst: dict[str, int] = field(default_factory=dict)
    slow_opened: int = 0
    slow_closed_by_node: int = 0
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def summary(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "ingest": _quantiles(self.ingest_ms),
            "retrieve": _quantiles(self.retrieve_ms),
            "normal_errors": self.normal_errors,
            "burst_statuses": self.burst,
            "slow_opened": self.slow_opened,
            "slow_closed_by_node": self.slow_closed_by_node,
            "loadavg": [round(x, 2) for x in self.loadavg],
        }


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"n": len(values), "p50_ms": round(statistics.median(ordered), 2), "p99_ms": round(p99, 2)}


# -- the node ---------------------------------------------------------------------------------
def _start_node(workdir: Path, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MEMOROSE_ADMIN_KEY": ADMIN,
        "MEMOROSE_EMBEDDINGS__PROVIDER": "hashing",
        "MEMOROSE_LLM__PROVIDER": "offline",
        "MEMOROSE_LIMITS__TENANT_REQUESTS_PER_SEC": str(args.rate),
        "MEMOROSE_LIMITS__TENANT_REQUEST_BURST": str(int(args.rate * 2)),
        "MEMOROSE_LIMITS__HEADER_TIMEOUT_SECS": str(args.header_timeout),
    }
    cmd = [
        sys.executable,
        "-c",
        "from memorose.cli import main; raise SystemExit(main())",
        "node",
        "--data-dir",
        str(workdir / "node"),
        "--http",
        f"127.0.0.1:{port}",
        "--raft",
        f"127.0.0.1:{free_port()}",
    ]
    log = (workdir / "node.log").open("wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


async def _wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            async with session.get(url + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("memorose: the benchmark node did not become ready in 120 s (see its node.log)")


async def _tenant_key(session: aiohttp.ClientSession, url: str, tenant: str) -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with session.post(f"{url}/api/v1/admin/tenants/{tenant}/keys", headers=headers) as resp:
        body = await resp.json()
        return str(body["api_key"])


# -- the clients ------------------------------------------------------------------------------
async def _normal_client(
    session: aiohttp.ClientSession, url: str, key: str, phase: Phase, stop: float
) -> None:
    """One ingest then one retrieve, back to back, until ``stop``; latencies in ms."""
    headers = {"Authorization": f"Bearer {key}"}
    i = 0
    while time.monotonic() < stop:
        i += 1
        event = {"tenant_id": "normal", "stream_id": "s", "content": f"normal event {i} about hiking"}
        for path, body, sink in [
            ("/api/v1/events", event, phase.ingest_ms),
            ("/api/v1/retrieve", {"tenant_id": "normal", "query": "hiking", "top_k": 5}, phase.retrieve_ms),
        ]:
            started = time.perf_counter()
            async with session.post(url + path, json=body, headers=headers) as resp:
                await resp.read()
                if resp.status >= 300:
                    phase.normal_errors[str(resp.status)] = phase.normal_errors.get(str(resp.status), 0) + 1
                    continue
            sink.append((time.perf_counter() - started) * 1000)


async def _burst_client(
    session: aiohttp.ClientSession, url: str, key: str, phase: Phase, stop: float
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < stop:
        try:
            async with session.get(url + "/api/v1/status?tenant_id=abuser", headers=headers) as resp:
                await resp.read()
                status = str(resp.status)
        except aiohttp.ClientError:
            status = "error"
        phase.burst[status] = phase.burst.get(status, 0) + 1


async def _slow_client(host: str, port: int, phase: Phase, stop: float) -> None:
    """Hold a connection with unfinished headers; when the node closes it, open another."""
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        phase.slow_opened += 1
        writer.write(b"GET /api/v1/status HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
        try:
            await writer.drain()
            while time.monotonic() < stop:
                writer.write(b"a")  # a byte now and then, as slowloris does
                await writer.drain()
                if await _closed(reader, timeout=1.0):
                    phase.slow_closed_by_node += 1
                    break
        except (ConnectionError, OSError):
            phase.slow_closed_by_node += 1
        finally:
            writer.close()


async def _closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except TimeoutError:
        return False


async def _phase(name: str, url: str, keys: dict[str, str], args: argparse.Namespace, abuse: bool) -> Phase:
    phase = Phase(name)
    stop = time.monotonic() + args.seconds
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as normal, aiohttp.ClientSession() as burst:
        tasks = [_normal_client(normal, url, keys["normal"], phase, stop)]
        if abuse:
            tasks += [_slow_client(host, int(port), phase, stop) for _ in range(args.slow)]
            tasks += [
                _burst_client(burst, url, keys["abuser"], phase, stop) for _ in range(args.burst_workers)
            ]
        await asyncio.gather(*tasks)
    phase.loadavg = os.getloadavg()
    return phase


async def _run(args: argparse.Namespace, workdir: Path) -> list[Phase]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = _start_node(workdir, port, args)
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, url)
            keys = {t: await _tenant_key(session, url, t) for t in ("normal", "abuser")}
        baseline = await _phase("baseline", url, keys, args, abuse=False)
        abused = await _phase("under abuse", url, keys, args, abuse=True)
        return [baseline, abused]
    finally:
        node.terminate()
        node.wait(timeout=30)


def _print(phases: list[Phase], args: argparse.Namespace) -> None:
    print(
        f"abuse bench: {args.slow} slow-header connections, {args.burst_workers} burst workers "
        f"over a {args.rate:g}/s tenant limit, header timeout {args.header_timeout:g} s, "
        f"{args.seconds:g} s per phase"
    )
    head = f"{'phase':<12} {'ingest p50/p99 ms':>18} {'retrieve p50/p99 ms':>20}"
    print(f"{head} {'n':>6}  normal-client errors  load avg")
    for p in phases:
        s = p.summary()
        ing, ret = s["ingest"], s["retrieve"]
        load = " ".join(f"{x:.2f}" for x in p.loadavg)
        latency = (
            f"{ing['p50_ms']:>8.1f} / {ing['p99_ms']:<7.1f} {ret['p50_ms']:>9.1f} / {ret['p99_ms']:<8.1f}"
        )
        print(f"{p.name:<12} {latency} {ing['n'] + ret['n']:>6}  {p.normal_errors or '-'!s:<20}  {load}")
        if p.burst or p.slow_opened:
            print(
                f"{'':<12} burst answers {p.burst}; slow connections opened {p.slow_opened}, "
                f"closed by the node {p.slow_closed_by_node}"
            )


def run_abuse_bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="memorose-abuse-") as tmp:
        phases = asyncio.run(_run(args, Path(tmp)))
    _print(phases, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"args": vars(args) | {"func": None}, "phases": [p.summary() for p in phases]}, indent=2)
    )
    return 0
