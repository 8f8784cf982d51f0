"""Raw PySyncObj baseline: one process per node, a replicated method that does nothing.

Same configuration as a Memorose node (file journal, password, no append batching, the
same periods and timeouts), so the gap to ``memorose bench raft ingest`` is the project's own
overhead (HTTP, validation, group commit, msgpack, RocksDB apply, journal fsync). The
process that becomes leader drives the load (``--concurrency`` commands kept in flight
for ``--seconds``) and writes its figures to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from pysyncobj import SyncObj, SyncObjConf, replicated


class Raw(SyncObj):  # type: ignore[misc]
    def __init__(self, self_address: str, partners: list[str], journal: str, password: str) -> None:
        conf = SyncObjConf(
            password=password,
            bindAddress=self_address,
            journalFile=journal,
            appendEntriesUseBatch=False,
            appendEntriesPeriod=0.01,
            raftMinTimeout=1.0,
            raftMaxTimeout=2.0,
            autoTickPeriod=0.005,
            connectionRetryTime=0.5,
            leaderFallbackTimeout=1.0,
            commandsWaitLeader=False,
            logCompactionMinEntries=10**9,
            logCompactionMinTime=10**6,
        )
        super().__init__(self_address, partners, conf)

    @replicated  # type: ignore[misc]
    def apply(self, payload: bytes) -> int:
        return len(payload)


def drive(node: Raw, payload: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    finished = threading.Semaphore(0)
    errors = [0]

    def submit() -> None:
        started = time.perf_counter()

        def done(result: object, error: int) -> None:
            now = time.perf_counter()
            with lock:
                if error == 0:
                    latencies.append(now - started)
                else:
                    errors[0] += 1
            if now < stop_at:
                submit()
            else:
                finished.release()

        node.apply(payload, callback=done)

    began = time.perf_counter()
    for _ in range(concurrency):
        submit()
    for _ in range(concurrency):
        finished.acquire()
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "concurrency": concurrency,
        "commits": len(latencies),
        "errors": errors[0],
        "commits_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--self", dest="self_address", required=True)
    parser.add_argument("--partner", action="append", default=[])
    parser.add_argument("--journal", required=True)
    parser.add_argument("--password", default="bench")
    parser.add_argument("--payload-bytes", type=int, default=300)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    node = Raw(args.self_address, args.partner, args.journal, args.password)
    deadline = time.monotonic() + 60
    while node._getLeader() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    if not node._isLeader():
        while True:  # followers serve until the benchmark kills them
            time.sleep(1)
    payload = b"x" * args.payload_bytes
    results = [drive(node, payload, int(c), args.seconds) for c in args.concurrency.split(",")]
    Path(args.out).write_text(json.dumps(results))
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
