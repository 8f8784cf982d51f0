"""``memorose bench gateway``: what the gateway costs. A local cluster (``memorose up
--shards 2 --nodes 3``, subprocesses) is started; the same single-event ingests and retrieves
are timed directly against the owning shard's leader and through the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=400, help="measured requests per case")
    parser.add_argument("--port", type=int, default=18700, help="gateway port; nodes use the next 12")
    parser.add_argument("--out", default="benchmarks/results/gateway.json", help="JSON results file")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def _poll_json(session: aiohttp.ClientSession, url: str, key: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
                if resp.status == 200:
                    body = await resp.json()
                    if all(s["leader"] for s in body["shards"]):
                        return body
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"cluster not ready at {url}")


async def _time(
    session: aiohttp.ClientSession, key: str, method: str, url: str, bodies: list[Any]
) -> list[float]:
    out = []
    for body in bodies:
        started = time.perf_counter()
        async with session.request(
            method, url, json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            await resp.read()
            assert resp.status < 300, (resp.status, url)
        out.append((time.perf_counter() - started) * 1000)
    return out


async def _measure(gateway: str, key: str, n: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        status = await _poll_json(session, gateway + "/api/v1/cluster/status", key)
        leader = status["shards"][0]["leader"]
        tenant = "bench-gw"
        # find a tenant owned by shard s1 (whose leader we compare against)
        for i in range(1000):
            candidate = f"bench-gw-{i}"
            async with session.get(
                f"{leader}/api/v1/status?tenant_id={candidate}", headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                await resp.read()
            body = {"tenant_id": candidate, "stream_id": "s", "content": "probe", "event_id": f"probe-{i}"}
            async with session.post(
                gateway + "/api/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                await resp.read()
            async with session.get(
                f"{leader}/api/v1/status?tenant_id={candidate}", headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                if (await resp.json())["l0_events"] == 1:
                    tenant = candidate
                    break
        results: dict[str, Any] = {"tenant": tenant, "leader": leader}
        for label, base in (("direct", leader), ("gateway", gateway)):
            events = [
                {
                    "tenant_id": tenant,
                    "stream_id": "s",
                    "content": f"{label} event {i} about apples and trains",
                    "event_id": f"{label}-{i}",
                }
                for i in range(n)
            ]
            ingest = await _time(session, key, "POST", base + "/api/v1/events", events)
            queries = [{"tenant_id": tenant, "query": f"event {i} apples", "top_k": 10} for i in range(n)]
            retrieve = await _time(session, key, "POST", base + "/api/v1/retrieve", queries)
            results[label] = {
                "ingest_ms": {"p50": _pct(ingest, 0.5), "p99": _pct(ingest, 0.99)},
                "retrieve_ms": {"p50": _pct(retrieve, 0.5), "p99": _pct(retrieve, 0.99)},
            }
        return results


def run_gateway_bench(args: argparse.Namespace) -> int:
    key = "adm_" + secrets.token_urlsafe(12)
    env = {**os.environ, "MEMOROSE_ADMIN_KEY": key, "MEMOROSE_RAFT_PASSWORD": secrets.token_urlsafe(12)}
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "memorose.cli", "up", "--shards", "2", "--nodes", "3"]
        argv += ["--port", str(args.port), "--data-dir", tmp]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            print(f"started a 2x3 cluster behind a gateway on :{args.port}; measuring...", flush=True)
            results = asyncio.run(_measure(f"http://127.0.0.1:{args.port}", key, args.requests))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0
