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
import os
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import consolidation_replay as replay_mod
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


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def throughput(
    n: int,
    mode: str,
    embedder: str | None,
    *,
    max_consolidate_s: float,
    batch: int = 1000,
    merge_vectors: str = "mean",
) -> dict[str, Any]:
    """Ingest ``n`` events into one tenant with the node's default background workers
    (consolidation every few seconds, insights on) and time three things in one run:

    - batch ingest: every event acknowledged (the baseline of this run);
    - ingest to searchable: every event BM25-searchable (in Tantivy as an L0 event, or
      already consolidated); the rate of the first and of the second half is reported
      too, to show it does not fall as the tenant grows;
    - ingest to consolidated: every event consolidated and its L1 memory indexed with its
      full vector. Bounded by ``max_consolidate_s``: past it the rate so far is reported.
    """
    load_before = _load()
    overrides: dict[str, Any] = {"consolidation": {"mode": mode, "merge_vectors": merge_vectors}}
    if embedder is not None:
        overrides["embeddings"] = {"provider": embedder}
    with tempfile.TemporaryDirectory() as tmp:
        node = await _node(Path(tmp), **overrides)
        service = node.service
        model = service.embedder.model
        _log(f"{mode} / {model}: ingesting {n} events into one tenant (load {load_before})")
        try:
            async with aiohttp.ClientSession() as session:
                api = Client(node.url, session)
                events = synthetic_events(n)
                crossed: dict[str, float] = {}
                started = time.perf_counter()
                watcher = asyncio.create_task(_watch_searchable(service, n, started, crossed))
                last_print = started
                for first in range(0, n, batch):
                    body = {"tenant_id": "bench", "events": events[first : first + batch]}
                    await api.call("POST", "/api/v1/events/batch", body)
                    if time.perf_counter() - last_print > 10:
                        last_print = time.perf_counter()
                        _log(f"acked {first + batch}, searchable {service.indexer.indexed_seq('bench')}")
                acked_s = time.perf_counter() - started
                await asyncio.wait_for(watcher, 600)
                searchable_s = crossed["all"] - started
                await _check_found(api, events[-1])
                status = await api.call("GET", "/api/v1/status?tenant_id=bench")
                lag_metric = await _lag_metric(session, node.url)
                _log(
                    f"searchable after {searchable_s:.1f} s; pending consolidation {status['pending_events']}"
                )
                consolidated, consolidated_s = await _until_consolidated(
                    service, n, started, max_consolidate_s
                )
                ledger = service.planner.embedding_ledger.snapshot()
        finally:
            await node.stop()
    half = n // 2
    model_s = sum(site["seconds"] for site in ledger["sites"].values())
    return {
        "mode": mode,
        "merge_vectors": merge_vectors,
        "embedder": model,
        "events": n,
        "batch_ingest_events_per_s": round(n / acked_s, 1),
        "searchable_seconds": round(searchable_s, 2),
        "searchable_events_per_s": round(n / searchable_s, 1),
        "searchable_first_half_events_per_s": _rate(half, crossed["half"] - started),
        "searchable_second_half_events_per_s": _rate(n - half, crossed["all"] - crossed["half"]),
        "pending_at_searchable": status["pending_events"],
        "lag_metric_at_searchable": lag_metric,
        "consolidated_events": consolidated,
        "consolidated_complete": consolidated == n,
        "consolidated_seconds": round(consolidated_s, 2),
        "consolidated_events_per_s": round(consolidated / consolidated_s, 1),
        # The planner's model calls per call site (facts, merged texts), and their share of
        # the time to consolidated: what the model costs end to end.
        "model_sites": ledger["sites"],
        "merges_by_mean": ledger["merge_means"],
        "merges_reusing_a_part": ledger["merge_reused"],
        "model_seconds": round(model_s, 2),
        "model_share_of_consolidated": round(model_s / consolidated_s, 3),
        "load_before": load_before,
        "load_after": _load(),
    }


def _rate(events: int, seconds: float) -> float | None:
    """Events per second, None when both ends fell in one 10 ms poll (too fast to time)."""
    return round(events / seconds, 1) if seconds > 0.02 else None


async def _watch_searchable(service: Any, n: int, started: float, crossed: dict[str, float]) -> None:
    """Note when half and all of the events became searchable (polled every 10 ms)."""
    while True:
        seq = service.indexer.indexed_seq("bench")
        now = time.perf_counter()
        if seq >= n // 2:
            crossed.setdefault("half", now)
        if seq >= n:
            crossed["all"] = now
            return
        if now - started > 600:
            raise RuntimeError(f"events did not become searchable within 600 s ({seq} of {n})")
        await asyncio.sleep(0.01)


async def _check_found(api: Client, last: dict[str, Any]) -> None:
    body = {"tenant_id": "bench", "query": last["content"], "top_k": 20}
    found = (await api.call("POST", "/api/v1/retrieve", body))["results"]
    if not any(last["event_id"] in r["source_event_ids"] for r in found):
        raise RuntimeError("the last ingested event is not searchable")


async def _lag_metric(session: aiohttp.ClientSession, url: str) -> float | None:
    """``memorose_consolidation_pending_events`` from /metrics (the lag of full vectors)."""
    async with session.get(url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("memorose_consolidation_pending_events"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _until_consolidated(service: Any, n: int, started: float, max_s: float) -> tuple[int, float]:
    """Wait until every event is consolidated and the memories are indexed (with their
    vectors); past ``max_s`` from ``started``, return how far it got. Prints progress."""
    last_print = time.perf_counter()
    while True:
        now = time.perf_counter()
        cursor = service.reader.tenant_or_empty("bench")["cursor"]
        if cursor >= n and service.indexer.searchable_index() >= service.store.applied_index():
            return cursor, now - started
        if now - started > max_s:
            _log(f"stopped at the time bound: {cursor} of {n} consolidated")
            return cursor, now - started
        if now - last_print > 10:
            last_print = now
            _log(f"consolidated {cursor} of {n} ({cursor / (now - started):.0f} ev/s), load {_load()}")
        await asyncio.sleep(0.05)


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
    parser.add_argument(
        "--events", type=positive_int, default=5000, help="events in the throughput run (e.g. 5000, 100000)"
    )
    parser.add_argument(
        "--embedders",
        default="local,hashing",
        help="comma-separated embedding providers for the throughput run ('default': the configured one)",
    )
    parser.add_argument(
        "--modes", default="pipeline,verbatim", help="consolidation modes for the throughput run"
    )
    parser.add_argument(
        "--max-consolidate-seconds",
        type=float,
        default=600.0,
        help="bound on the wait for ingest-to-consolidated (the rate so far is reported past it)",
    )
    parser.add_argument("--skip-lag", action="store_true", help="skip the steady-rate lag run")
    parser.add_argument("--rate", type=float, default=100.0, help="steady ingest rate (events/s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the lag run")
    parser.add_argument("--locomo", default=None, help="path to locomo10.json (read in place)")
    parser.add_argument(
        "--merge-vectors",
        default="mean",
        help="comma-separated consolidation.merge_vectors values, each a throughput run (e.g. embed,mean)",
    )
    parser.add_argument(
        "--replay-only",
        action="store_true",
        help="only the in-process planner replay (no node): model time per call site, decisions "
        "and merged-vector fidelity for each --merge-vectors value, and the model's own rate",
    )
    parser.add_argument(
        "--replay-events", type=positive_int, default=2000, help="synthetic events in the replay"
    )
    parser.add_argument(
        "--replay-conversations",
        type=int,
        default=2,
        help="LoCoMo conversations replayed too when --locomo is given (0: none)",
    )
    parser.add_argument("--out", default="benchmarks/results/consolidation.json", help="JSON results file")


def _model_baseline(embedders: list[str], when: str) -> list[dict[str, Any]]:
    """The model's own rate on 512 distinct texts of the synthetic log, per embedder."""
    texts = [e["content"] for e in synthetic_events(4000, seed=11)][:4000]
    out = []
    for name in dict.fromkeys("local" if e == "default" else e for e in embedders):
        result = {
            "when": when,
            **replay_mod.model_rate(list(dict.fromkeys(texts))[:520], name),
            "load": _load(),
        }
        print(json.dumps({"model_baseline": result}), flush=True)
        out.append(result)
    return out


def _replays(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The planner replayed in process for each ``--merge-vectors`` value, on the synthetic
    log and on the first LoCoMo conversations; decisions compared with the first value's."""
    sources: dict[str, list[dict[str, Any]]] = {"synthetic": synthetic_events(args.replay_events)}
    if args.locomo and args.replay_conversations > 0:
        samples = json.loads(Path(args.locomo).read_text())[: args.replay_conversations]
        sources["locomo"] = [e for s in samples for e in _turn_events(s)]
    out = []
    for source, events in sources.items():
        texts = list(dict.fromkeys(e["content"] for e in events))[:520]
        rate = {"source": source, **replay_mod.model_rate(texts), "load": _load()}
        print(json.dumps({"model_rate_on_source": rate}), flush=True)
        out.append(rate)
        first: list[str] | None = None
        for value in args.merge_vectors.split(","):
            result = {"source": source, **replay_mod.replay(events, value), "load": _load()}
            decisions = result.pop("_decisions")
            first = decisions if first is None else first
            result["decisions_agree_with_first"] = replay_mod.agreement(first, decisions)
            print(json.dumps({"replay": result}), flush=True)
            out.append(result)
        steps = {"source": source, **replay_mod.one_step_means(events)}
        print(json.dumps({"one_step_means": steps}), flush=True)
        out.append(steps)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"throughput": [], "lag": None, "locomo": [], "load_before": _load()}
    print(f"load average before: {report['load_before']}", flush=True)
    embedders = args.embedders.split(",")
    report["model_baseline"] = _model_baseline(embedders, "before")
    if args.replay_only:
        report["replay"] = _replays(args)
        report["model_baseline"] += _model_baseline(embedders, "after")
        report["load_after"] = _load()
        print(f"load average after: {report['load_after']}", flush=True)
        return report
    for embedder in embedders:
        for mode in args.modes.split(","):
            for merge_vectors in args.merge_vectors.split(",") if mode == "pipeline" else ["mean"]:
                result = await throughput(
                    args.events,
                    mode,
                    None if embedder == "default" else embedder,
                    max_consolidate_s=args.max_consolidate_seconds,
                    merge_vectors=merge_vectors,
                )
                report["throughput"].append(result)
                print(json.dumps(result), flush=True)
    report["model_baseline"] += _model_baseline(embedders, "after")
    if not args.skip_lag:
        report["lag"] = await lag_under_load(args.rate, args.seconds)
        print(json.dumps(report["lag"]), flush=True)
    if args.locomo:
        for mode in ("pipeline", "verbatim"):
            report["locomo"].append(await locomo(Path(args.locomo), mode))
            print(json.dumps(report["locomo"][-1]), flush=True)
    report["load_after"] = _load()
    print(f"load average after: {report['load_after']}", flush=True)
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
