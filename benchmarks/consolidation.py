"""``memorose bench consolidation``: consolidation throughput and lag, and the pipeline's
effect on LoCoMo (memories per 100 turns, recall against the one-memory-per-event policy).

Runs real nodes in this process (RocksDB, Tantivy, PySyncObj on loopback) on temporary
data directories and talks to them over HTTP. Offline providers only. LoCoMo is read from
where it lies (``--locomo``); nothing of it is copied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from memorose.cli_support import positive_int
from memorose.config import load_settings
from node.runner import RunningNode, free_port, start_node

ADMIN = "adm_bench_admin_key"
_EVIDENCE_RE = re.compile(r"^D:?(\d+):0*(\d+)$")
_SESSION_RE = re.compile(r"^session_(\d+)$")
PEOPLE = ["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Gina", "Hugo", "Ivy", "Jon"]
CITIES = ["Paris", "Berlin", "Lisbon", "Oslo", "Rome", "Madrid", "Vienna", "Prague"]
THINGS = ["a red bicycle", "a sailing boat", "a vintage camera", "a beagle puppy", "an espresso machine"]


class Client:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.session = url, session
        self.headers = {"Authorization": f"Bearer {ADMIN}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.url + path, json=body, headers=self.headers) as resp:
            data = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data


async def consolidate_all(api: Client, tenant: str) -> None:
    """``POST /consolidate`` with wait until done (one call may time out on a slow embedder)."""
    while not (await api.call("POST", "/api/v1/consolidate", {"tenant_id": tenant, "wait": True}))["done"]:
        pass


async def _node(data_dir: Path, **overrides: Any) -> RunningNode:
    settings = load_settings(
        data_dir=data_dir,
        http=f"127.0.0.1:{free_port()}",
        raft=f"127.0.0.1:{free_port()}",
        admin_key=ADMIN,
        **overrides,
    )
    node = await start_node(settings)
    deadline = time.monotonic() + 30
    while not node.service.ready() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return node


def synthetic_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """A steady agent log: facts, repeats, changes of state and noise (about 15 %)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        who, city, thing = rng.choice(PEOPLE), rng.choice(CITIES), rng.choice(THINGS)
        roll = rng.random()
        if roll < 0.15:
            text = rng.choice(["ok", "thanks!", "lol", "hmm", "sounds good", "yes"])
        elif roll < 0.35:
            text = f"{who} moved to {city} in {2015 + i % 10}"
        elif roll < 0.55:
            text = f"{who} lives in {city}"
        else:
            text = f"{who} bought {thing} for {10 + i % 900} euros on day {i} of the project"
        out.append({"stream_id": f"s{i % 8}", "content": text, "event_id": f"ev{i}"})
    return out


async def throughput(n: int, mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        node = await _node(
            Path(tmp), consolidation={"interval_secs": 86_400, "mode": mode, "batch_size": 200}
        )
        model = node.service.embedder.model
        try:
            async with aiohttp.ClientSession() as session:
                api = Client(node.url, session)
                events = synthetic_events(n)
                ingest_started = time.perf_counter()
                for start in range(0, n, 1000):
                    await api.call(
                        "POST",
                        "/api/v1/events/batch",
                        {"tenant_id": "bench", "events": events[start : start + 1000]},
                    )
                await _until_indexed(node)
                searchable_s = time.perf_counter() - ingest_started
                await _check_found(api, events[-1])
                started = time.perf_counter()
                await consolidate_all(api, "bench")
                took = time.perf_counter() - started
                status = await api.call("GET", "/api/v1/status?tenant_id=bench")
        finally:
            await node.stop()
    return {
        "mode": mode,
        "embedder": model,
        "events": n,
        "searchable_seconds": round(searchable_s, 2),
        "searchable_events_per_s": round(n / searchable_s, 1),
        "seconds": round(took, 2),
        "events_per_s": round(n / took, 1),
        "l1_memories": status["l1_memories"],
    }


async def _until_indexed(node: RunningNode) -> None:
    """Poll until everything applied is indexed: BM25 over the L0 events, before any
    consolidation (what retrieval then finds; no query is timed here)."""
    service = node.service
    deadline = time.monotonic() + 300
    while service.indexer.searchable_index() < service.store.applied_index():
        if time.monotonic() > deadline:
            raise RuntimeError("events did not become searchable within 300 s")
        await asyncio.sleep(0.01)


async def _check_found(api: Client, last: dict[str, Any]) -> None:
    body = {"tenant_id": "bench", "query": last["content"], "top_k": 20}
    found = (await api.call("POST", "/api/v1/retrieve", body))["results"]
    if not any(last["event_id"] in r["source_event_ids"] for r in found):
        raise RuntimeError("the last ingested event is not searchable")


async def lag_under_load(rate: float, seconds: float) -> dict[str, Any]:
    """Ingest at ``rate`` events/s (batches every 100 ms) and sample the lag gauge."""
    with tempfile.TemporaryDirectory() as tmp:
        node = await _node(Path(tmp), consolidation={"interval_secs": 1.0, "batch_size": 100})
        service = node.service
        samples: list[tuple[int, float]] = []
        try:
            async with aiohttp.ClientSession() as session:
                api = Client(node.url, session)
                events = synthetic_events(int(rate * seconds) + 100)
                per_tick, sent, started = max(1, int(rate / 10)), 0, time.monotonic()
                while time.monotonic() - started < seconds:
                    due = int((time.monotonic() - started) * rate)
                    if due > sent:
                        chunk = events[sent : min(due, sent + 5 * per_tick)]
                        await api.call(
                            "POST", "/api/v1/events/batch", {"tenant_id": "bench", "events": chunk}
                        )
                        sent += len(chunk)
                    record = service.reader.tenant_or_empty("bench")
                    pending = record["next_seq"] - 1 - record["cursor"]
                    oldest = service.reader.event("bench", record["cursor"] + 1) if pending else None
                    samples.append((pending, time.time() - oldest.ingested_at if oldest else 0.0))
                    await asyncio.sleep(0.1)
                drain_started = time.perf_counter()
                await consolidate_all(api, "bench")
                drain = time.perf_counter() - drain_started
        finally:
            await node.stop()
    lags = sorted(s[1] for s in samples)
    pend = sorted(s[0] for s in samples)
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": sent,
        "achieved_rate": round(sent / seconds, 1),
        "lag_p50_s": round(statistics.median(lags), 2),
        "lag_p95_s": round(lags[int(0.95 * (len(lags) - 1))], 2),
        "lag_max_s": round(lags[-1], 2),
        "pending_p95": pend[int(0.95 * (len(pend) - 1))],
        "final_drain_s": round(drain, 2),
    }


# -- LoCoMo ---------------------------------------------------------------------------------------
def _turn_events(sample: dict[str, Any]) -> list[dict[str, Any]]:
    conv = sample["conversation"]
    out = []
    numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION_RE.match(k)))
    for n in numbers:
        when = datetime.strptime(conv[f"session_{n}_date_time"].strip(), "%I:%M %p on %d %B, %Y")
        base = when.replace(tzinfo=UTC).timestamp()
        for i, turn in enumerate(conv[f"session_{n}"]):
            text = f"{turn['speaker']}: {turn['text']}"
            if turn.get("blip_caption"):
                text += f" [shared image: {turn['blip_caption']}]"
            out.append(
                {
                    "stream_id": "conversation",
                    "event_id": turn["dia_id"],
                    "content": text,
                    "metadata": {"speaker": turn["speaker"]},
                    "timestamp": base + i,
                }
            )
    return out


def _gold(qa: dict[str, Any], known: set[str]) -> set[str]:
    gold = set()
    for item in qa.get("evidence", []):
        for part in re.split(r"[;,\s]+", str(item)):
            m = _EVIDENCE_RE.match(part)
            if m and f"D{m.group(1)}:{m.group(2)}" in known:
                gold.add(f"D{m.group(1)}:{m.group(2)}")
    return gold


async def locomo(path: Path, mode: str, ks: tuple[int, ...] = (5, 10)) -> dict[str, Any]:
    samples = json.loads(path.read_text())
    hits = {k: 0.0 for k in ks}
    questions = turns = current = stored = 0
    rejected = 0
    consolidation_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        node = await _node(
            Path(tmp), consolidation={"interval_secs": 86_400, "mode": mode, "batch_size": 200}
        )
        try:
            async with aiohttp.ClientSession() as session:
                api = Client(node.url, session)
                for sample in samples:
                    tenant = sample["sample_id"].replace("_", "-")
                    events = _turn_events(sample)
                    turns += len(events)
                    for start in range(0, len(events), 500):
                        await api.call(
                            "POST",
                            "/api/v1/events/batch",
                            {"tenant_id": tenant, "events": events[start : start + 500]},
                        )
                    started = time.perf_counter()
                    await consolidate_all(api, tenant)
                    consolidation_s += time.perf_counter() - started
                    memories = list(node.service.reader.memories(tenant))
                    stored += len(memories)
                    current += sum(1 for m in memories if m.is_current and not m.archived)
                    rejected += len(node.service.reader.rejected(tenant, limit=100_000))
                    known = {e["event_id"] for e in events}
                    for qa in sample["qa"]:
                        if qa.get("category") not in (1, 2, 3, 4):
                            continue
                        gold = _gold(qa, known)
                        if not gold:
                            continue
                        questions += 1
                        body = {"tenant_id": tenant, "query": qa["question"], "top_k": max(ks)}
                        results = (await api.call("POST", "/api/v1/retrieve", body))["results"]
                        for k in ks:
                            seen = {e for r in results[:k] for e in r["source_event_ids"]}
                            hits[k] += len(gold & seen) / len(gold)
        finally:
            await node.stop()
    return {
        "mode": mode,
        "turns": turns,
        "questions": questions,
        "rejected_events": rejected,
        "l1_memories_current": current,
        "l1_memories_stored": stored,
        "current_per_100_turns": round(100 * current / turns, 1),
        "consolidation_events_per_s": round(turns / consolidation_s, 1),
        **{f"recall@{k}": round(hits[k] / questions, 3) for k in ks},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=positive_int, default=5000, help="events in the throughput run")
    parser.add_argument("--rate", type=float, default=100.0, help="steady ingest rate (events/s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the lag run")
    parser.add_argument("--locomo", default=None, help="path to locomo10.json (read in place)")
    parser.add_argument("--out", default="benchmarks/results/consolidation.json", help="JSON results file")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"throughput": [], "lag": None, "locomo": []}
    for mode in ("pipeline", "verbatim"):
        report["throughput"].append(await throughput(args.events, mode))
        print(json.dumps(report["throughput"][-1]), flush=True)
    report["lag"] = await lag_under_load(args.rate, args.seconds)
    print(json.dumps(report["lag"]), flush=True)
    if args.locomo:
        for mode in ("pipeline", "verbatim"):
            report["locomo"].append(await locomo(Path(args.locomo), mode))
            print(json.dumps(report["locomo"][-1]), flush=True)
    return report


def run_consolidation_bench(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("memorose").setLevel(logging.WARNING)
    logging.getLogger("node").setLevel(logging.WARNING)
    report = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")
    return 0
