"""LoCoMo-R: retrieval recall on LoCoMo through the public HTTP API (``memorose bench locomo``).

Implements ``shared/benchmarks/LOCOMO_R.md``: each conversation is ingested as one tenant
(one event per turn), consolidated to completion, then every category 1-4 question is asked
verbatim and scored against its normalised evidence. Everything goes through HTTP, so the
figures are what a user of a node gets. The data is read from where it lies; nothing of it is
copied. With no ``--url`` a node is started as a subprocess on a temporary data directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

KS = (1, 3, 5, 10, 20)
WORD_BUDGET = 500
TOP_K = 50  # one request per question serves every k and the word budget
STREAM = "conversation"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
BATCH = 500
SECTION = "## LoCoMo retrieval (issue 7)"

_SESSION_RE = re.compile(r"^session_(\d+)$")
_EVIDENCE_RE = re.compile(r"^D:?(\d+):0*(\d+)$")


# -- the data set ----------------------------------------------------------------------------
def load_samples(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        samples: list[dict[str, Any]] = json.load(fh)
    return samples


def parse_session_time(text: str) -> float:
    """'1:56 pm on 8 May, 2023' -> epoch seconds (UTC)."""
    parsed = datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")
    return parsed.replace(tzinfo=UTC).timestamp()


def sessions(conversation: dict[str, Any]) -> list[tuple[int, list[dict[str, Any]]]]:
    """(number, turns) in session order; keyed by ``session_N`` (date keys may lack a session)."""
    found = [(int(m.group(1)), v) for k, v in conversation.items() if (m := _SESSION_RE.match(k))]
    return sorted(found, key=lambda item: item[0])


def turn_content(turn: dict[str, Any]) -> str:
    content = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        content += f" [shared image: {turn['blip_caption']}]"
    return content


def conversation_events(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """One event per turn, session order, timestamp = session date-time + turn index seconds."""
    conversation = sample["conversation"]
    events = []
    for number, turns in sessions(conversation):
        start = parse_session_time(conversation[f"session_{number}_date_time"])
        for index, turn in enumerate(turns):
            events.append(
                {
                    "event_id": turn["dia_id"],
                    "stream_id": STREAM,
                    "content": turn_content(turn),
                    "metadata": {"speaker": turn["speaker"]},
                    "timestamp": start + index,
                }
            )
    return events


def normalise_evidence(evidence: Sequence[str], known: set[str]) -> list[str]:
    """Split on ``[;,\\s]+``, rewrite ``D:?a:0*b`` to ``Da:b``, drop ids that do not exist."""
    out: dict[str, None] = {}
    for item in evidence:
        for part in re.split(r"[;,\s]+", str(item)):
            match = _EVIDENCE_RE.match(part)
            if match:
                dia_id = f"D{int(match.group(1))}:{int(match.group(2))}"
                if dia_id in known:
                    out.setdefault(dia_id, None)
    return list(out)


@dataclass(frozen=True)
class Question:
    text: str
    category: int
    gold: frozenset[str]


def scorable_questions(sample: dict[str, Any], known: set[str]) -> list[Question]:
    out = []
    for qa in sample["qa"]:
        category = int(qa["category"])
        if category not in CATEGORIES:
            continue
        gold = normalise_evidence(qa.get("evidence") or [], known)
        if gold:
            out.append(Question(qa["question"], category, frozenset(gold)))
    return out


# -- scoring ---------------------------------------------------------------------------------
def score_results(results: list[dict[str, Any]], gold: frozenset[str]) -> dict[str, float]:
    """recall@k, footprint@k (|S_k|) and recall within the word budget, for one question."""
    scores: dict[str, float] = {}
    covered: set[str] = set()
    for k in range(1, max(KS) + 1):
        if k <= len(results):
            covered.update(results[k - 1].get("source_event_ids") or [])
        if k in KS:
            scores[f"recall@{k}"] = len(gold & covered) / len(gold)
            scores[f"footprint@{k}"] = float(len(covered))
    budget_covered: set[str] = set()
    words = 0
    for result in results:
        words += len(str(result.get("content", "")).split())
        if words > WORD_BUDGET:
            break
        budget_covered.update(result.get("source_event_ids") or [])
    scores[f"recall@{WORD_BUDGET}w"] = len(gold & budget_covered) / len(gold)
    return scores


@dataclass
class Tally:
    """Micro-averaged sums per group ('1-4' and each category)."""

    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, category: int, scores: dict[str, float]) -> None:
        for group in ("1-4", str(category)):
            bucket = self.sums.setdefault(group, {})
            for name, value in scores.items():
                bucket[name] = bucket.get(name, 0.0) + value
            self.counts[group] = self.counts.get(group, 0) + 1

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for group in ["1-4", *(str(c) for c in (4, 1, 2, 3))]:
            n = self.counts.get(group, 0)
            if n:
                out[group] = {"n": n, **{k: round(v / n, 4) for k, v in self.sums[group].items()}}
        return out


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- talking to a node -------------------------------------------------------------------------
class NodeApi:
    """The few calls the benchmark makes, with the admin key (it acts for every tenant)."""

    def __init__(self, url: str, admin_key: str) -> None:
        self.client = httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {admin_key}"}, timeout=600
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        response = self.client.request(method, path, json=body, params=params or None)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:300]}")
        return orjson.loads(response.content)  # as the SDK decodes (memorose/client/_core.py)

    def close(self) -> None:
        self.client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: How long the bench waits for a node to be ready (its own, or the one ``--url`` names).
READY_TIMEOUT_S = 120.0


@contextmanager
def local_node(timeout: float = READY_TIMEOUT_S) -> Iterator[tuple[str, str]]:
    """Start ``memorose up`` as a subprocess on a temporary data dir; yield (url, admin key).

    Background consolidation is pushed out of the way so that the benchmark's own
    ``consolidate`` call does (and times) all of it.
    """
    data_dir = tempfile.mkdtemp(prefix="memorose-locomo-")
    port = _free_port()
    raft_port = _free_port()
    key = "adm_" + secrets.token_hex(16)
    env = dict(os.environ, MEMOROSE_ADMIN_KEY=key, MEMOROSE_CONSOLIDATION__INTERVAL_SECS="86400")
    cmd = [sys.executable, "-m", "memorose.cli", "--log-level", "WARNING", "up"]
    cmd += ["--data-dir", data_dir, "--port", str(port), "--raft", f"127.0.0.1:{raft_port}"]
    log_path = Path(data_dir) / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, timeout)
        yield url, key
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Poll ``/readyz`` (serving, and a leader known): a node that answers ``/healthz``
    may still refuse writes with 503 ``no_leader``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the node exited with status {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the node at {url} was not ready within {timeout:.0f}s")


# -- the run ---------------------------------------------------------------------------------
@dataclass
class RunStats:
    tally: Tally = field(default_factory=Tally)
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    turns: int = 0
    memories: int = 0
    ingest_s: float = 0.0
    consolidate_s: float = 0.0
    conversations: list[dict[str, Any]] = field(default_factory=list)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ingest_conversation(api: NodeApi, tenant: str, events: list[dict[str, Any]]) -> float:
    api.call("DELETE", f"/api/v1/tenants/{tenant}")  # a clean tenant: reruns must not stack up
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        api.call("POST", "/api/v1/events/batch", {"tenant_id": tenant, "events": events[i : i + BATCH]})
    return time.perf_counter() - started


def consolidate(api: NodeApi, tenant: str) -> tuple[float, int]:
    started = time.perf_counter()
    result: dict[str, Any] = {"cursor": -1}
    while True:  # one call may end before consolidation does (slow embedder, busy machine)
        previous = result.get("cursor")
        result = api.call("POST", "/api/v1/consolidate", {"tenant_id": tenant, "wait": True})
        if result.get("done"):
            break
        if result.get("cursor") == previous:
            raise RuntimeError(f"consolidation of {tenant} makes no progress: {result}")
    elapsed = time.perf_counter() - started
    status = api.call("GET", "/api/v1/status", tenant_id=tenant)
    return elapsed, int(status["l1_memories"])


def ask(api: NodeApi, tenant: str, question: Question, stats: RunStats) -> dict[str, float]:
    started = time.perf_counter()
    body = api.call("POST", "/api/v1/retrieve", {"tenant_id": tenant, "query": question.text, "top_k": TOP_K})
    stats.latencies_ms.append((time.perf_counter() - started) * 1000)
    stats.server_ms.append(float(body.get("took_ms", 0.0)))
    scores = score_results(body["results"], question.gold)
    stats.tally.add(question.category, scores)
    return scores


def run_conversation(api: NodeApi, sample: dict[str, Any], stats: RunStats, position: str) -> None:
    tenant = sample["sample_id"]
    events = conversation_events(sample)
    known = {e["event_id"] for e in events}
    questions = scorable_questions(sample, known)
    ingest_s = ingest_conversation(api, tenant, events)
    _progress(f"[{position}] {tenant}: ingested {len(events)} turns in {ingest_s:.2f}s; consolidating")
    consolidate_s, memories = consolidate(api, tenant)
    _progress(f"[{position}] {tenant}: {memories} memories in {consolidate_s:.2f}s; {len(questions)} queries")
    recall10 = 0.0
    for i, question in enumerate(questions, 1):
        recall10 += ask(api, tenant, question, stats)["recall@10"]
        if i % 50 == 0 or i == len(questions):
            _progress(f"[{position}] {tenant}: {i}/{len(questions)} queries, R@10 so far {recall10 / i:.3f}")
    stats.turns += len(events)
    stats.memories += memories
    stats.ingest_s += ingest_s
    stats.consolidate_s += consolidate_s
    stats.conversations.append(
        {
            "tenant": tenant,
            "turns": len(events),
            "memories": memories,
            "questions": len(questions),
            "recall@10": round(recall10 / max(1, len(questions)), 4),
        }
    )


def build_report(stats: RunStats, data_path: str, url: str | None) -> dict[str, Any]:
    return {
        "benchmark": "LoCoMo-R (shared/benchmarks/LOCOMO_R.md)",
        "command": " ".join(["memorose bench locomo", *sys.argv[3:]])
        if sys.argv[1:3] == ["bench", "locomo"]
        else "memorose bench locomo --data " + str(data_path),
        "data": str(data_path),
        "node": url or "subprocess (memorose up, temporary data dir)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "top_k_requested": TOP_K,
        "summary": stats.tally.summary(),
        "latency_ms": {
            "client_p50": round(percentile(stats.latencies_ms, 50), 2),
            "client_p95": round(percentile(stats.latencies_ms, 95), 2),
            "server_p50": round(percentile(stats.server_ms, 50), 2),
            "server_p95": round(percentile(stats.server_ms, 95), 2),
        },
        "throughput": {
            "turns": stats.turns,
            "ingest_turns_per_s": round(stats.turns / stats.ingest_s, 1) if stats.ingest_s else None,
            "consolidation_turns_per_s": round(stats.turns / stats.consolidate_s, 1)
            if stats.consolidate_s
            else None,
            "memories": stats.memories,
            "memories_per_100_turns": round(100 * stats.memories / stats.turns, 1) if stats.turns else None,
        },
        "conversations": stats.conversations,
    }


# -- output ----------------------------------------------------------------------------------
def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}".removeprefix("0")


def markdown(report: dict[str, Any]) -> str:
    """The ``docs/benchmarks.md`` section: self-contained, replaced wholesale on every run."""
    summary = report["summary"]
    lines = [
        SECTION,
        "",
        f"    {report.get('command', 'memorose bench locomo')}",
        "",
        f"Measured {report['when']} on {len(report['conversations'])} conversation(s),"
        f" node: {report['node']};",
        "protocol: `shared/benchmarks/LOCOMO_R.md` (the data is read in place, never copied). Recall is",
        "micro-averaged over questions; footprint@k is the mean number of distinct turns cited by the",
        "top k results; R@500w takes memory texts in rank order while they fit in 500 words. One",
        f"`/retrieve` with `top_k` {TOP_K} per question serves every k. Ranking: `docs/retrieval.md`.",
        "",
        "| categories | n | R@1 | R@3 | R@5 | R@10 | R@20 | R@500w | footprint@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group, row in summary.items():
        label = "1-4" if group == "1-4" else f"{group} {CATEGORIES[int(group)]}"
        cells = [_f(row.get(f"recall@{k}")) for k in KS]
        lines.append(
            f"| {label} | {row['n']:,} | {' | '.join(cells)} | {_f(row.get('recall@500w'))} "
            f"| {row.get('footprint@10', 0):.1f} |"
        )
    lat, thr = report["latency_ms"], report["throughput"]
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| retrieve p50 / p95, client side (ms) | {lat['client_p50']} / {lat['client_p95']} |",
        f"| retrieve p50 / p95, server `took_ms` | {lat['server_p50']} / {lat['server_p95']} |",
        f"| ingest (turns/s, batches of {BATCH}) | {thr['ingest_turns_per_s']} |",
        f"| consolidation (turns/s) | {thr['consolidation_turns_per_s']} |",
        f"| memories per 100 turns | {thr['memories_per_100_turns']} |",
        f"| turns / memories | {thr['turns']:,} / {thr['memories']:,} |",
        "",
        "Baseline (BM25Okapi over raw turns): R@5 .530, R@10 .612, R@500w .665 on categories 1-4;",
        "multi-hop R@10 .352.",
        "",
    ]
    return "\n".join(lines)


def update_doc(path: Path, section: str) -> None:
    """Replace this benchmark's section (up to the next ``## `` heading), or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def print_summary(report: dict[str, Any]) -> None:
    print(markdown(report))


def run_locomo(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not data.exists():
        print(f"memorose: LoCoMo data not found at {data}", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    samples = load_samples(data)
    if args.limit_conversations:
        samples = samples[: args.limit_conversations]
    if args.url:
        key = args.admin_key or os.environ.get("MEMOROSE_ADMIN_KEY")
        if not key:
            print("memorose: --admin-key or MEMOROSE_ADMIN_KEY is required with --url", file=sys.stderr)
            return 2
        _wait_ready(args.url.rstrip("/"), None, READY_TIMEOUT_S)  # a node started just before
        report = _run(samples, args.url, key, str(data), args.url)
    else:
        _progress("starting a node (memorose up) on a temporary data dir ...")
        with local_node() as (url, key):
            report = _run(samples, url, key, str(data), None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.doc:
        update_doc(Path(args.doc), markdown(report))
    print_summary(report)
    _progress(f"wrote {out}" + (f" and the '{SECTION[3:]}' section of {args.doc}" if args.doc else ""))
    return 0


def _run(
    samples: list[dict[str, Any]], url: str, key: str, data: str, given_url: str | None
) -> dict[str, Any]:
    api = NodeApi(url, key)
    stats = RunStats()
    try:
        for i, sample in enumerate(samples, 1):
            run_conversation(api, sample, stats, f"{i}/{len(samples)}")
    finally:
        api.close()
    return build_report(stats, data, given_url)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="path to locomo10.json (never copied)")
    parser.add_argument("--url", help="a running node; default: start one as a subprocess")
    parser.add_argument("--admin-key", help="admin key for --url (default: MEMOROSE_ADMIN_KEY)")
    parser.add_argument("--out", default="benchmarks/results/locomo.json", help="JSON report")
    parser.add_argument("--doc", default="docs/benchmarks.md", help="Markdown file to update ('' for none)")
    parser.add_argument("--limit-conversations", type=int, default=0, help="only the first N conversations")
