"""``memorose bench storage``: ingest throughput and retrieval latency of one storage node.

The node under test runs as a subprocess (``python -m memorose.cli node``) and is driven
only through its public HTTP API, so the figures are what a client sees. Per scenario:

* batch ingest (``/events/batch``, pre-serialised bodies, a few requests in flight),
* consolidation drained with ``POST /consolidate {wait: true}``,
* sequential retrieve queries (client-observed latency and the server's ``took_ms``),
* the floor: the same queries as an exact numpy search over that tenant's vectors,
* idle RSS of the node and bytes on disk per memory.

Single-event ingest (many requests in flight, group commit) is measured once, on the first
single-tenant node. Tenants above the ANN threshold are also re-measured on the exact path
(restart with a higher ``MEMOROSE_INDEX__ANN_THRESHOLD`` plus an online reindex).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from benchmarks.corpus import Record, generate, sample_queries
from benchmarks.report import render_markdown, update_docs
from memorose.config import IndexSettings
from memorose.providers.embeddings import load_embedder

DEFAULT_ANN_THRESHOLD = IndexSettings().ann_threshold
EXACT_THRESHOLD = 1_000_000
TOP_K = 10


class BenchError(RuntimeError):
    """The node misbehaved (an error answer, a crash, a timeout): the figures would lie."""


@dataclass
class BenchConfig:
    sizes: list[int]
    tenants: int
    queries: int
    out: Path
    docs: Path | None = None
    single_events: int = 5000
    concurrency: int = 32
    batch: int = 500
    batch_concurrency: int = 4
    ann_threshold: int | None = None
    seed: int = 7
    workdir: Path | None = None
    keep: bool = False
    data: Path | None = None
    layout: str = "both"
    in_flight: int = 8
    node_code: Path | None = None
    command: str = ""

    @property
    def threshold(self) -> int:
        return self.ann_threshold or DEFAULT_ANN_THRESHOLD

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchConfig:
        sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
        if not sizes or min(sizes) < 1 or args.tenants < 1 or args.queries < 1:
            raise ValueError("--sizes, --tenants and --queries must be positive")
        return cls(
            sizes=sizes,
            tenants=args.tenants,
            queries=args.queries,
            out=Path(args.out),
            docs=Path(args.docs) if getattr(args, "docs", None) else None,
            single_events=getattr(args, "single_events", 5000),
            concurrency=getattr(args, "concurrency", 32),
            batch=getattr(args, "batch", 500),
            batch_concurrency=getattr(args, "batch_concurrency", 4),
            ann_threshold=getattr(args, "ann_threshold", None),
            seed=getattr(args, "seed", 7),
            workdir=Path(args.workdir) if getattr(args, "workdir", None) else None,
            keep=getattr(args, "keep", False),
            data=Path(args.data) if getattr(args, "data", None) else None,
            layout=getattr(args, "layout", "both"),
            in_flight=getattr(args, "in_flight", 8),
            node_code=Path(args.node_code).resolve() if getattr(args, "node_code", None) else None,
            command=_command_line(),
        )


def _command_line() -> str:
    argv = sys.argv[1:]
    if argv[:2] != ["bench", "storage"]:  # run as benchmarks/storage.py
        argv = ["bench", "storage", *argv]
    return " ".join(["memorose", *argv])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- measurements --------------------------------------------------------------------------------
def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
    arr = np.asarray(samples, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "mean": round(float(arr.mean()), 3),
        "max": round(float(arr.max()), 3),
    }


def memory_status(pid: int) -> dict[str, int]:
    """VmRSS and its anonymous / file-backed parts (bytes), from /proc (Linux). File-backed
    pages (mmapped journal, index files) are page cache the kernel can reclaim."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
    return out


def rss_bytes(pid: int) -> int:
    return memory_status(pid).get("VmRSS", 0)


def disk_usage(root: Path) -> dict[str, int]:
    """Allocated bytes under ``root``, in total and per top-level entry (rocks, index, raft...).
    A file with several hard links is counted once, under the first entry that holds it:
    ``rocks`` comes first, so ``raft`` shows only the tables its dump alone keeps."""
    parts: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    # ``rocks`` is a symlink to its live generation (``rocks-<n>``): counted once, under
    # ``rocks`` (following the link as well counted the database twice).
    linked = {entry.resolve() for entry in root.iterdir() if entry.is_symlink() and entry.is_dir()}
    for entry in sorted(root.iterdir(), key=lambda e: (e.name != "rocks", e.name)):
        if not entry.is_symlink() and entry.resolve() in linked:
            continue
        top = entry.resolve() if entry.is_symlink() and entry.is_dir() else entry
        paths: Iterable[Path] = top.rglob("*") if top.is_dir() else [top]
        size = 0
        for path in [top, *paths] if top.is_dir() else paths:
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if st.st_nlink > 1 and not path.is_dir():
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            size += st.st_blocks * 512
        parts[entry.name] = size
    return {"total": sum(parts.values()), **dict(sorted(parts.items()))}


def _cpu_ticks(pid: int | str) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (all threads)


def _busy_ticks() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


class CpuMeter:
    """CPU used by processes other than the bench and its node, in cores (Linux only):
    tells whether a run shared the machine."""

    def __init__(self, node_pid: int) -> None:
        self.node_pid = node_pid
        self._start = self._read()

    def _read(self) -> tuple[float, int, int, int] | None:
        try:
            return time.monotonic(), _busy_ticks(), _cpu_ticks("self"), _cpu_ticks(self.node_pid)
        except (OSError, IndexError, ValueError):
            return None

    def our_cores(self) -> tuple[float, float] | None:
        """Cores the node and this process kept busy since the meter started."""
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        hz, elapsed = os.sysconf("SC_CLK_TCK"), end[0] - self._start[0]
        return (
            round((end[3] - self._start[3]) / hz / elapsed, 2),
            round((end[2] - self._start[2]) / hz / elapsed, 2),
        )

    def other_cores(self) -> float | None:
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = end[1] - self._start[1]
        ours = (end[2] - self._start[2]) + (end[3] - self._start[3])
        return round(max(0.0, (busy - ours) / hz / (end[0] - self._start[0])), 2)


# -- the node under test -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    """``memorose node`` in a subprocess, on free loopback ports, with a known admin key."""

    def __init__(
        self, data_dir: Path, admin_key: str, env: dict[str, str] | None = None, code: Path | None = None
    ) -> None:
        self.data_dir = data_dir
        self.admin_key = admin_key
        self.env = env or {}
        #: The checkout whose code the node runs (``--node-code``); None: the bench's own.
        self.code = code
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, session: aiohttp.ClientSession, timeout: float = 90.0) -> float:
        """Start the node; returns the seconds it took to answer ``/readyz``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MEMOROSE_ADMIN_KEY": self.admin_key, **self.env}
        cmd = [
            sys.executable,
            "-m",
            "memorose.cli",
            "--log-level",
            "WARNING",
            "node",
            "--data-dir",
            str(self.data_dir),
            "--http",
            f"127.0.0.1:{self.port}",
            "--raft",
            f"127.0.0.1:{self.raft_port()}",
        ]
        with open(self.log_path, "ab") as log_file:
            # ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH:
            # run from the node's checkout, or a bench started in another checkout measures
            # its own code under the other's name.
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=self.code
            )
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"node exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                async with session.get(self.url + "/readyz") as resp:
                    if resp.status == 200:
                        return round(time.monotonic() - started, 1)
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise BenchError(f"node not ready after {timeout}s: {self.log_tail()}")

    def raft_port(self) -> int:
        """The Raft port this data dir was first served on: the address is the node's Raft
        identity (the dump's membership names it), so a reused ``--data`` restarted on a
        new port never elects a leader."""
        remembered = self.data_dir.parent / f"{self.data_dir.name}.raft-port"
        if remembered.exists():
            return int(remembered.read_text())
        port = free_port()
        remembered.write_text(f"{port}\n")
        return port

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Client:
    """JSON over HTTP with the admin key; any unexpected status is a BenchError."""

    def __init__(self, session: aiohttp.ClientSession, node: NodeProcess) -> None:
        self.session = session
        self.url = node.url
        self.headers = {"Authorization": f"Bearer {node.admin_key}", "Content-Type": "application/json"}

    async def call(self, method: str, path: str, body: bytes | None = None, expect: int = 200) -> Any:
        async with self.session.request(method, self.url + path, data=body, headers=self.headers) as resp:
            raw = await resp.read()
            if resp.status != expect:
                raise BenchError(f"{method} {path} -> {resp.status}: {raw[:300]!r}")
        return json.loads(raw) if raw else None

    async def post(self, path: str, payload: Any, expect: int = 200) -> Any:
        return await self.call("POST", path, json.dumps(payload).encode(), expect)

    async def timed_post(self, path: str, body: bytes) -> tuple[float, Any]:
        """Client-observed milliseconds from sending the request to the last byte of the answer."""
        started = time.perf_counter()
        async with self.session.post(self.url + path, data=body, headers=self.headers) as resp:
            raw = await resp.read()
            elapsed = (time.perf_counter() - started) * 1000
            if resp.status != 200:
                raise BenchError(f"POST {path} -> {resp.status}: {raw[:300]!r}")
        return elapsed, json.loads(raw)


async def run_pool(jobs: list[Any], workers: int, fn: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``fn`` over ``jobs`` with at most ``workers`` in flight; the first error wins."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            await fn(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(max(1, min(workers, len(jobs))))))


class Progress:
    """A log line at every tenth of ``total`` (when there are at least ``min_total`` steps)."""

    def __init__(self, what: str, total: int, min_total: int = 2000) -> None:
        self.what, self.total, self.done, self.next_report = what, total, 0, total / 10
        self.min_total = min_total

    def add(self, n: int) -> None:
        self.done += n
        if self.total >= self.min_total and self.next_report <= self.done < self.total:
            log(f"  {self.what}: {self.done}/{self.total}")
            self.next_report += self.total / 10


# -- phases --------------------------------------------------------------------------------------
def _event_json(record: Record) -> dict[str, Any]:
    return {"event_id": record.event_id, "stream_id": record.stream_id, "content": record.content}


async def ingest_batched(
    client: Client, by_tenant: dict[str, list[Record]], batch: int, workers: int
) -> dict[str, Any]:
    bodies = [
        (len(chunk), json.dumps({"tenant_id": t, "events": [_event_json(r) for r in chunk]}).encode())
        for t, records in by_tenant.items()
        for chunk in (records[i : i + batch] for i in range(0, len(records), batch))
    ]
    total = sum(n for n, _ in bodies)
    progress = Progress("batch ingest", total)

    async def send(job: tuple[int, bytes]) -> None:
        answer = await client.call("POST", "/api/v1/events/batch", job[1], expect=202)
        if len(answer["event_ids"]) != job[0]:
            raise BenchError("batch answer has the wrong number of event ids")
        progress.add(job[0])

    started = time.perf_counter()
    await run_pool(bodies, workers, send)
    seconds = time.perf_counter() - started
    return {
        "events": total,
        "requests": len(bodies),
        "events_per_request": round(total / len(bodies), 1),
        "in_flight": workers,
        "seconds": round(seconds, 3),
        "events_per_s": round(total / seconds, 1),
    }


async def ingest_single(client: Client, tenant: str, records: list[Record], workers: int) -> dict[str, Any]:
    bodies = [json.dumps({"tenant_id": tenant, **_event_json(r)}).encode() for r in records]
    latencies: list[float] = []
    progress = Progress("single-event ingest", len(bodies))

    async def send(body: bytes) -> None:
        started = time.perf_counter()
        await client.call("POST", "/api/v1/events", body, expect=202)
        latencies.append((time.perf_counter() - started) * 1000)
        progress.add(1)

    started = time.perf_counter()
    await run_pool(bodies, workers, send)
    seconds = time.perf_counter() - started
    return {
        "events": len(bodies),
        "requests": len(bodies),
        "events_per_request": 1,
        "in_flight": workers,
        "seconds": round(seconds, 3),
        "events_per_s": round(len(bodies) / seconds, 1),
        "request_ms": percentiles(latencies),
    }


async def drain_consolidation(client: Client, tenants: list[str], timeout: float = 1800.0) -> float:
    """Consolidate every tenant (``wait: true``), retrying calls that time out server-side."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    progress = Progress("consolidated tenants", len(tenants), min_total=10)

    async def one(tenant: str) -> None:
        while True:
            try:
                await client.post("/api/v1/consolidate", {"tenant_id": tenant, "wait": True})
            except BenchError:
                if time.monotonic() > deadline:
                    raise
                continue  # a long drain can outlive one call's server-side timeout
            status = await client.call("GET", f"/api/v1/status?tenant_id={tenant}")
            if status["pending_events"] == 0:
                progress.add(1)
                return

    await run_pool(tenants, 4, one)
    return round(time.perf_counter() - started, 3)


async def wait_idle(client: Client, node: NodeProcess, timeout: float = 120.0) -> int:
    """Poll until the indexes caught up and RSS stopped moving; return RSS in bytes."""
    deadline = time.monotonic() + timeout
    previous = -1
    stable = 0
    while time.monotonic() < deadline:
        status = await client.call("GET", "/api/v1/cluster/status")
        rss = rss_bytes(node.pid)
        caught_up = status["indexed_index"] >= status["applied_index"]
        stable = stable + 1 if caught_up and abs(rss - previous) <= 0.01 * max(rss, 1) else 0
        if stable >= 4:
            return rss
        previous = rss
        await asyncio.sleep(0.25)
    return rss_bytes(node.pid)


async def wait_quiet(node: NodeProcess, timeout: float = 300.0, cores: float = 0.15) -> float | None:
    """Poll until the node's own CPU use stays low (background index maintenance, such as a
    LanceDB optimise, finished), so queries measure the steady state. Seconds waited, or
    None if it never went quiet (recorded, not fatal)."""
    hz = os.sysconf("SC_CLK_TCK")
    started = time.monotonic()
    quiet = 0
    while time.monotonic() - started < timeout:
        before, t0 = _cpu_ticks(node.pid), time.monotonic()
        await asyncio.sleep(0.5)
        used = (_cpu_ticks(node.pid) - before) / hz / (time.monotonic() - t0)
        quiet = quiet + 1 if used < cores else 0
        if quiet >= 2:
            return round(time.monotonic() - started, 1)
    return None


async def run_queries(
    client: Client, queries: list[tuple[str, str, str]], warmup: int, node_pid: int | None = None
) -> dict[str, Any]:
    """One query in flight at a time: latency, not throughput. Items: (tenant, query, source id).
    With ``node_pid``: also the node's CPU time per measured query (after the warm-up, which
    pays for building timelines), a figure that other processes' load barely moves."""
    ticks = 0
    client_ms: list[float] = []
    server_ms: list[float] = []
    found = 0
    for i, (tenant, text, source) in enumerate(queries):
        body = json.dumps({"tenant_id": tenant, "query": text, "top_k": TOP_K}).encode()
        if i == warmup and node_pid is not None:
            ticks = _cpu_ticks(node_pid)
        elapsed, answer = await client.timed_post("/api/v1/retrieve", body)
        if i < warmup:
            continue
        client_ms.append(elapsed)
        server_ms.append(float(answer["took_ms"]))
        found += any(source in r.get("source_event_ids", []) for r in answer["results"])
    measured = len(client_ms)
    extra = {}
    if node_pid is not None and measured:
        cpu_s = (_cpu_ticks(node_pid) - ticks) / os.sysconf("SC_CLK_TCK")
        extra["node_cpu_ms_per_query"] = round(cpu_s * 1000 / measured, 2)
    return {
        **extra,
        "queries": measured,
        "warmup": warmup,
        "client_ms": percentiles(client_ms),
        "server_ms": percentiles(server_ms),
        "qps_sequential": round(measured / (sum(client_ms) / 1000), 1) if measured else 0.0,
        "source_in_top10": round(found / measured, 3) if measured else 0.0,
    }


async def run_throughput(
    client: Client, queries: list[tuple[str, str, str]], in_flight: int, node_pid: int | None = None
) -> dict[str, Any]:
    """Queries per second with one query in flight, then with ``in_flight``, back to back over
    the same (warm) queries: how far concurrent reads of one node scale.

    With ``node_pid``: the cores the node and this client kept busy in each phase, and the
    ratio's ceiling on this machine (``ratio_ceiling``): the CPUs over the cores one query
    in flight already takes. A node that overlaps one query's work on two threads (the vector
    scan, the query's embedding) scales less with more queries in flight, not because it
    serialises them but because the cores are already taken."""
    bodies = [json.dumps({"tenant_id": t, "query": q, "top_k": TOP_K}).encode() for t, q, _ in queries]

    async def one(body: bytes) -> None:
        await client.timed_post("/api/v1/retrieve", body)

    rates: dict[int, float] = {}
    cores: dict[int, tuple[float, float]] = {}
    for workers in (1, in_flight):
        meter = CpuMeter(node_pid) if node_pid is not None else None
        started = time.perf_counter()
        await run_pool(bodies, workers, one)
        rates[workers] = len(bodies) / (time.perf_counter() - started)
        busy = meter.our_cores() if meter is not None else None
        if busy is not None:
            cores[workers] = busy
    out: dict[str, Any] = {
        "in_flight": in_flight,
        "qps_1": round(rates[1], 1),
        "qps_n": round(rates[in_flight], 1),
        "ratio": round(rates[in_flight] / rates[1], 2),
    }
    if 1 in cores and in_flight in cores:
        (node_1, client_1), (node_n, client_n) = cores[1], cores[in_flight]
        out.update(
            node_cores_1=node_1,
            client_cores_1=client_1,
            node_cores_n=node_n,
            client_cores_n=client_n,
            ratio_ceiling=throughput_ceiling(len(os.sched_getaffinity(0)), node_1 + client_1),
        )
    return out


def throughput_ceiling(cpus: int, cores_at_one: float) -> float | None:
    """The most that more queries in flight can multiply throughput by on ``cpus`` CPUs,
    when one query in flight (node and client together) keeps ``cores_at_one`` busy:
    perfect scaling until every CPU is busy, no lock and no GIL."""
    return round(cpus / cores_at_one, 2) if cores_at_one > 0 else None


async def healthz_ms(client: Client, calls: int = 200) -> dict[str, float]:
    """Client-observed latency of ``GET /healthz``: the HTTP floor of every request."""
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        await client.call("GET", "/healthz")
        timings.append((time.perf_counter() - started) * 1000)
    return percentiles(timings[10:])


def bm25s_peer(
    by_tenant: dict[str, list[Record]], queries: list[tuple[str, str, str]], warmup: int
) -> dict[str, Any] | None:
    """The same queries over the same texts with bm25s (in this process, no HTTP): the
    lexical peer the server's retrieve is compared with. None if bm25s is not installed."""
    try:
        import bm25s
        import Stemmer
    except ImportError:
        return None
    stemmer = Stemmer.Stemmer("english")
    wanted = {tenant for tenant, _, _ in queries}
    indexes = {}
    for tenant in wanted:
        retriever = bm25s.BM25()
        texts = [r.content for r in by_tenant[tenant]]
        retriever.index(
            bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
        )
        indexes[tenant] = (retriever, by_tenant[tenant])
    timings: list[float] = []
    found = 0
    for i, (tenant, text, source) in enumerate(queries):
        retriever, records = indexes[tenant]
        started = time.perf_counter()
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
        docs, _ = retriever.retrieve(tokens, k=min(TOP_K, len(records)), show_progress=False, n_threads=1)
        elapsed = (time.perf_counter() - started) * 1000
        if i >= warmup:
            timings.append(elapsed)
            found += any(records[int(d)].event_id == source for d in docs[0])
    measured = len(timings)
    return {"ms": percentiles(timings), "source_in_top10": round(found / measured, 3) if measured else 0.0}


def exact_floor(
    by_tenant: dict[str, list[Record]], queries: list[tuple[str, str, str]], warmup: int
) -> dict[str, Any]:
    """The same queries answered by an exact numpy top-k over the tenant's vectors: the floor
    any vector index is compared with. Only the product and the top-k are timed."""
    embedder = load_embedder("hashing", dim=IndexSettings().embedding_dim)
    wanted = {tenant for tenant, _, _ in queries}
    matrices = {t: embedder.embed([r.content for r in by_tenant[t]]) for t in wanted}
    vectors = embedder.embed([text for _, text, _ in queries])
    timings: list[float] = []
    for i, ((tenant, _, _), query) in enumerate(zip(queries, vectors, strict=True)):
        matrix = matrices[tenant]
        started = time.perf_counter()
        scores = matrix @ query
        k = min(TOP_K, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        elapsed = (time.perf_counter() - started) * 1000
        if i >= warmup:
            timings.append(elapsed)
    return {
        "ms": percentiles(timings),
        "matrix_mib": round(max(m.nbytes for m in matrices.values()) / 2**20, 1),
    }


def vector_path(node: NodeProcess, tenant: str) -> str:
    """Which vector index serves the tenant, read off the data dir: a LanceDB table or not."""
    lance = node.data_dir / "index" / "lance" / f"tenant_{tenant}.lance"
    return "ann" if lance.exists() else "exact"


# -- scenarios -----------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    size: int
    tenants: int
    by_tenant: dict[str, list[Record]] = field(default_factory=dict)
    queries: list[tuple[str, str, str]] = field(default_factory=list)


def build_scenario(cfg: BenchConfig, size: int, tenants: int) -> Scenario:
    name = f"{size // 1000}k-1tenant" if tenants == 1 else f"{size // 1000}k-{tenants}tenants"
    if size < 1000:
        name = f"{size}-1tenant" if tenants == 1 else f"{size}-{tenants}tenants"
    records = generate(size, seed=cfg.seed + size)
    width = len(str(tenants - 1))
    names = [f"bench-t{i:0{width}d}" for i in range(tenants)]
    by_tenant = {t: records[i::tenants] for i, t in enumerate(names)}
    owner = {r.event_id: t for t, rs in by_tenant.items() for r in rs}
    warmup = min(20, cfg.queries)
    drawn = sample_queries(records, cfg.queries + warmup, seed=cfg.seed * 31 + size + tenants)
    queries = [(owner[source], text, source) for text, source in drawn]
    return Scenario(name, size, tenants, {t: rs for t, rs in by_tenant.items() if rs}, queries)


async def measure_node(
    client: Client, node: NodeProcess, sc: Scenario, warmup: int, in_flight: int = 0
) -> dict[str, Any]:
    await wait_idle(client, node)
    quiet = await wait_quiet(node)
    log(f"  node quiet after {quiet} s" if quiet is not None else "  node never went quiet; querying anyway")
    log(f"  {len(sc.queries) - warmup} queries (+{warmup} warm-up), one in flight")
    # The warm-up's first query starts what a tenant's first query starts (its timeline,
    # and with a sentence model the lexicon, built in the background: seconds of model
    # runs): measured after it is done, the figures are the steady state's.
    await run_queries(client, sc.queries[:warmup], 0)
    settled = await wait_quiet(node)
    log(f"  quiet again {settled} s after the warm-up" if settled is not None else "  busy after the warm-up")
    retrieve = await run_queries(client, sc.queries[warmup:], 0, node.pid)
    retrieve["warmup"] = warmup
    retrieve["waited_for_quiet_s"] = quiet
    retrieve["quiet_after_warmup_s"] = settled
    log(
        f"  retrieve p50 {retrieve['client_ms']['p50']} ms, p99 {retrieve['client_ms']['p99']} ms "
        f"(server took_ms p50 {retrieve['server_ms']['p50']}, p99 {retrieve['server_ms']['p99']}); "
        f"node CPU {retrieve.get('node_cpu_ms_per_query')} ms per query"
    )
    retrieve["healthz_ms"] = await healthz_ms(client)
    if in_flight > 1:
        retrieve["throughput"] = await run_throughput(client, sc.queries[warmup:], in_flight, node.pid)
        t = retrieve["throughput"]
        log(f"  throughput {t['qps_1']} q/s with 1 in flight, {t['qps_n']} with {in_flight}: {t['ratio']}x")
        if t.get("ratio_ceiling") is not None:
            log(
                f"  cores busy (node + client): {t['node_cores_1']} + {t['client_cores_1']} "
                f"with 1 in flight, "
                f"{t['node_cores_n']} + {t['client_cores_n']} with {in_flight}; "
                f"ceiling of the ratio on {len(os.sched_getaffinity(0))} CPUs: {t['ratio_ceiling']}x"
            )
    rss = await wait_idle(client, node)
    mem = memory_status(node.pid)
    disk = disk_usage(node.data_dir)
    paths = sorted({vector_path(node, t) for t in sc.by_tenant})
    return {
        "vector_path": "+".join(paths),
        "retrieve": retrieve,
        "idle_rss_mib": round(rss / 2**20, 1),
        "idle_rss_anon_mib": round(mem.get("RssAnon", 0) / 2**20, 1),
        "idle_rss_file_mib": round(mem.get("RssFile", 0) / 2**20, 1),
        "peak_rss_mib": round(mem.get("VmHWM", 0) / 2**20, 1),
        "disk_bytes": disk,
        "disk_bytes_per_memory": round(disk["total"] / sc.size),
        "rss_bytes_per_memory": round(rss / sc.size),
    }


def rss_above_empty(row: dict[str, Any], size: int) -> int | None:
    """Bytes of RSS per memory above a warm empty node of the same code (``warm_up_empty``),
    when that was measured (a run that reuses ``--data``)."""
    warm = row.get("build", {}).get("empty_warm_rss_mib")
    if warm is None:
        return None
    return round((row["idle_rss_mib"] - warm) * 2**20 / size)


async def run_scenario(
    cfg: BenchConfig, session: aiohttp.ClientSession, workdir: Path, sc: Scenario, single_ingest: bool
) -> list[dict[str, Any]]:
    admin_key = "adm_bench_" + secrets.token_hex(12)
    # The storage engine is measured with the hashing embedder (as the exact floor below):
    # 100K facts through the local model would take ~15 min and measure the model, and its
    # arbitration would fold the synthetic near-duplicates (the count check needs one each).
    env = {"MEMOROSE_EMBEDDINGS__PROVIDER": os.environ.get("MEMOROSE_EMBEDDINGS__PROVIDER", "hashing")}
    if cfg.ann_threshold:
        env["MEMOROSE_INDEX__ANN_THRESHOLD"] = str(cfg.ann_threshold)
    if cfg.node_code is not None:
        env["PYTHONPATH"] = str(cfg.node_code)
    base = cfg.data if cfg.data is not None else workdir
    node = NodeProcess(base / sc.name, admin_key, env, cfg.node_code)
    marker = base / f"{sc.name}.built.json"
    built = json.loads(marker.read_text()) if cfg.data is not None and marker.exists() else None
    if cfg.data is not None and built is None and node.data_dir.exists():
        raise BenchError(f"{node.data_dir} holds an unfinished build (no {marker.name}): delete it first")
    warmup = min(20, cfg.queries)
    results: list[dict[str, Any]] = []
    log(f"scenario {sc.name}: {sc.size} memories over {len(sc.by_tenant)} tenant(s)")
    try:
        # A restart on a reused 1M build loads every tenant's vectors and the Raft journal
        # before it answers /readyz: minutes on a loaded 2-core machine, not a hang.
        ready_s = await node.start(session, timeout=90.0 + sc.size / 2000)
        log(f"  node ready after {ready_s} s")
        client = Client(session, node)
        meter = CpuMeter(node.pid)
        if built is None:
            built = await build_data(cfg, client, node, sc)
            if cfg.data is not None:
                marker.write_text(json.dumps(built, indent=2) + "\n")
        else:
            made_of = {k: built.get(k) for k in ("size", "tenants", "seed")}
            if made_of != {"size": sc.size, "tenants": sc.tenants, "seed": cfg.seed}:
                raise BenchError(f"{node.data_dir} holds other data ({made_of}): use another --data")
            log(f"  reusing the data built {built['date']} under {node.data_dir}")
            empty = await measure_empty_node(session, workdir / f"empty-{sc.name}", admin_key, env, cfg)
            log(
                f"  an empty node of the same code: RSS {empty['empty_rss_mib']} MiB, "
                f"{empty['empty_warm_rss_mib']} MiB after one retrieve"
            )
            built = {**built, **empty, "reused": True}
        await _check_counts(client, sc)
        row = {
            "scenario": sc.name,
            "memories": sc.size,
            "tenants": len(sc.by_tenant),
            "ann_threshold": cfg.threshold,
            "embedder": env["MEMOROSE_EMBEDDINGS__PROVIDER"],
            "node_code": str(cfg.node_code or "this checkout"),
            "consolidation_mode": os.environ.get("MEMOROSE_CONSOLIDATION__MODE", "pipeline"),
            "build": built,
            "empty_rss_mib": built["empty_rss_mib"],
            "empty_rss_anon_mib": built.get("empty_rss_anon_mib"),
            "ingest_batch": built["ingest_batch"],
            "consolidate_drain_s": built["consolidate_drain_s"],
            "node_ready_s": ready_s,
            **await measure_node(client, node, sc, warmup, cfg.in_flight),
        }
        row["rss_bytes_per_memory_above_empty"] = rss_above_empty(row, sc.size)
        row["floor"] = exact_floor(sc.by_tenant, sc.queries, warmup)
        peer = bm25s_peer(sc.by_tenant, sc.queries, warmup)
        if peer is not None:
            row["bm25s"] = peer
        row["other_processes_cpu_cores"] = meter.other_cores()
        log(
            f"  path {row['vector_path']}; floor p99 {row['floor']['ms']['p99']} ms; "
            f"bm25s p99 {peer['ms']['p99'] if peer else '-'} ms; RSS {row['idle_rss_mib']} MiB, "
            f"{row['rss_bytes_per_memory']} B per memory "
            f"({row['rss_bytes_per_memory_above_empty'] or '-'} B above a warm empty node)"
        )
        results.append(row)
        if single_ingest and cfg.single_events > 0 and not built.get("reused"):
            extra = generate(cfg.single_events, seed=cfg.seed - 1, id_prefix="single")
            single = await ingest_single(client, "bench-single", extra, cfg.concurrency)
            log(f"  single-event ingest: {single['events_per_s']} events/s")
            row["ingest_single"] = single
    finally:
        node.stop()
    if sc.tenants == 1 and sc.size > cfg.threshold:
        results.append(await run_exact_rerun(cfg, session, node, sc, row))
    return results


async def measure_empty_node(
    session: aiohttp.ClientSession, data_dir: Path, admin_key: str, env: dict[str, str], cfg: BenchConfig
) -> dict[str, float]:
    """Idle RSS of a freshly started node with no data, same code and settings: a run that
    reuses ``--data`` measures it again, so before and after compare within one run."""
    node = NodeProcess(data_dir, admin_key, env, cfg.node_code)
    try:
        await node.start(session)
        client = Client(session, node)
        rss = await wait_idle(client, node)
        anon = memory_status(node.pid).get("RssAnon", 0)
        warm = await warm_up_empty(client, node)
    finally:
        node.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "empty_rss_mib": round(rss / 2**20, 1),
        "empty_rss_anon_mib": round(anon / 2**20, 1),
        "empty_warm_rss_mib": round(warm / 2**20, 1),
    }


async def warm_up_empty(client: Client, node: NodeProcess) -> int:
    """RSS of the empty node once it has answered one retrieve over one event: what every
    node holds whatever its size (the embedding model loaded, the query path's imports), so
    that ``(idle RSS - this) / memories`` is what each memory adds."""
    event = {"tenant_id": "bench-warm", "event_id": "warm-1", "stream_id": "s", "content": "a warm-up event"}
    await client.call("POST", "/api/v1/events", json.dumps(event).encode(), expect=202)
    await client.post("/api/v1/retrieve", {"tenant_id": "bench-warm", "query": "warm-up event"})
    return await wait_idle(client, node)


async def build_data(cfg: BenchConfig, client: Client, node: NodeProcess, sc: Scenario) -> dict[str, Any]:
    """Ingest the scenario's events and consolidate them: what a reused data dir skips."""
    started = time.perf_counter()
    empty_rss = await wait_idle(client, node)
    empty_anon = memory_status(node.pid).get("RssAnon", 0)
    ingest = await ingest_batched(client, sc.by_tenant, cfg.batch, cfg.batch_concurrency)
    log(f"  batch ingest: {ingest['events_per_s']} events/s ({ingest['seconds']} s)")
    consolidate_s = await drain_consolidation(client, list(sc.by_tenant))
    log(f"  consolidated in {consolidate_s} s after ingest ended")
    return {
        "size": sc.size,
        "tenants": sc.tenants,
        "seed": cfg.seed,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "empty_rss_mib": round(empty_rss / 2**20, 1),
        "empty_rss_anon_mib": round(empty_anon / 2**20, 1),
        "ingest_batch": ingest,
        "consolidate_drain_s": consolidate_s,
        "build_s": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(memory_status(node.pid).get("VmHWM", 0) / 2**20, 1),
    }


async def _check_counts(client: Client, sc: Scenario) -> None:
    """Every event became one memory: otherwise the latency would be for a smaller index."""
    total = 0
    for tenant in sc.by_tenant:
        status = await client.call("GET", f"/api/v1/status?tenant_id={tenant}")
        total += status["l1_memories"]
    if total != sc.size:
        raise BenchError(f"{sc.name}: expected {sc.size} memories, the node has {total}")


async def run_exact_rerun(
    cfg: BenchConfig, session: aiohttp.ClientSession, previous: NodeProcess, sc: Scenario, ann: dict[str, Any]
) -> dict[str, Any]:
    """The same data served by the exact in-memory matrix: restart with a higher threshold and
    rebuild the derived indexes from RocksDB (``/admin/reindex``)."""
    threshold = max(EXACT_THRESHOLD, sc.size + 1)
    log(f"scenario {sc.name}-exact: same data, MEMOROSE_INDEX__ANN_THRESHOLD={threshold}, reindex")
    node = NodeProcess(
        previous.data_dir,
        previous.admin_key,
        {**previous.env, "MEMOROSE_INDEX__ANN_THRESHOLD": str(threshold)},
        previous.code,
    )
    warmup = min(20, cfg.queries)
    try:
        await node.start(session, timeout=90.0 + sc.size / 2000)
        client = Client(session, node)
        meter = CpuMeter(node.pid)
        answer = await client.post("/api/v1/admin/reindex", {})
        log(f"  reindexed in {answer.get('took_ms')} ms")
        row = {
            "scenario": sc.name + "-exact",
            "memories": sc.size,
            "tenants": 1,
            "ann_threshold": threshold,
            "reindex_ms": answer.get("took_ms"),
            **await measure_node(client, node, sc, warmup),
            "floor": ann["floor"],
        }
        row["other_processes_cpu_cores"] = meter.other_cores()
        log(f"  path {row['vector_path']}; RSS {row['idle_rss_mib']} MiB")
        return row
    finally:
        node.stop()


# -- entry point ---------------------------------------------------------------------------------
def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": list(os.getloadavg()),
    }


async def _run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    machine = _machine()
    scenarios: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=900)
    connector = aiohttp.TCPConnector(limit=max(cfg.concurrency, cfg.batch_concurrency) + 4)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        first_single = True
        for size in cfg.sizes:
            spread = min(cfg.tenants, size)
            layouts = {"both": (1, spread), "single": (1,), "spread": (spread,)}[cfg.layout]
            for tenants in dict.fromkeys(layouts):
                sc = build_scenario(cfg, size, tenants)
                rows = await run_scenario(
                    cfg, session, workdir, sc, single_ingest=first_single and tenants == 1
                )
                first_single = first_single and tenants != 1
                scenarios.extend(rows)
    machine["loadavg_after"] = list(os.getloadavg())
    single = next((s["ingest_single"] for s in scenarios if "ingest_single" in s), None)
    return {
        "benchmark": "storage",
        "date": started.isoformat(timespec="seconds"),
        "command": cfg.command,
        "machine": machine,
        "config": {
            "sizes": cfg.sizes,
            "tenants": cfg.tenants,
            "queries": cfg.queries,
            "top_k": TOP_K,
            "batch": cfg.batch,
            "batch_concurrency": cfg.batch_concurrency,
            "single_concurrency": cfg.concurrency,
            "ann_threshold": cfg.threshold,
        },
        "ingest_single": single,
        "scenarios": scenarios,
        "seconds": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
    }


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run every scenario; the result is also written to ``cfg.out`` (and ``cfg.docs``)."""
    if cfg.workdir is not None:
        cfg.workdir.mkdir(parents=True, exist_ok=True)
    # Always a fresh directory of our own: it is deleted afterwards unless --keep.
    workdir = Path(tempfile.mkdtemp(prefix="memorose-bench-", dir=cfg.workdir))
    log(f"node data dirs under {workdir}")
    try:
        result = asyncio.run(_run(cfg, workdir))
    finally:
        if not cfg.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"results written to {cfg.out}")
    if cfg.docs is not None:
        update_docs(cfg.docs, render_markdown(result))
        log(f"tables written to {cfg.docs}")
    return result


def run_storage_bench(args: argparse.Namespace) -> int:
    """``memorose bench storage``: 0 on success, 1 if the node misbehaved, 2 on bad arguments."""
    try:
        cfg = BenchConfig.from_args(args)
    except ValueError as exc:
        print(f"memorose bench storage: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_bench(cfg)
    except BenchError as exc:
        print(f"memorose bench storage: {exc}", file=sys.stderr)
        return 1
    print(render_markdown(result), flush=True)
    return 0
