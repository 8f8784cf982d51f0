"""How long does log compaction stall the Raft tick thread (i.e. heartbeats)?

Builds a sizeable RocksDB through a real one-node RaftNode, then forces log compaction
twice: once with the snapshot packed on the tick thread (what a plain PySyncObj
serializer does) and once with the project's background packing. Reports the longest gap
between two ticks during each compaction, which is how long heartbeats could not be sent.

    memorose bench raft-snapshot --events 200000
"""

from __future__ import annotations

import argparse
import base64
import random
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.report import save_json
from memorose import commands
from memorose.config import RaftSettings
from memorose.storage.rocks import RocksStore
from node import snapshot
from node.raft import RaftNode
from node.runner import free_port


def fill(node: RaftNode, events: int, per_entry: int = 500) -> None:
    done = threading.Semaphore(0)
    pending = 0
    for start in range(0, events, per_entry):
        batch = [
            {
                "stream_id": "s",
                "event_id": f"e-{i}",
                "content": f"event number {i} " + base64.b64encode(random.randbytes(150)).decode(),
                "timestamp": 1.7e9 + i,
                "metadata": {"i": i},
            }
            for i in range(start, min(events, start + per_entry))
        ]
        payload = commands.encode(commands.ingest([{"tenant_id": f"t{start % 50}", "events": batch}], 1.7e9))
        node.apply(payload, callback=lambda r, e: done.release())
        pending += 1
        if pending >= 20:
            done.acquire()
            pending -= 1
    for _ in range(pending):
        done.acquire()


def compaction_stall(node: RaftNode, inline: bool) -> dict[str, float]:
    gaps: list[float] = []
    last = [time.perf_counter()]

    def on_tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    node.pack_inline = inline
    before = node.snapshot_stats["taken"]
    node.addOnTickCallback(on_tick)
    # one committed entry so there is something new to compact
    done = threading.Event()
    node.apply(commands.encode(commands.noop()), callback=lambda r, e: done.set())
    done.wait(10)
    node.forceLogCompaction()
    deadline = time.monotonic() + 600
    while node.snapshot_stats["taken"] == before and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    node.removeOnTickCallback(on_tick)
    return {
        "max_tick_gap_ms": round(max(gaps) * 1000, 1),
        "tick_block_ms": round(node.snapshot_stats["last_tick_block_ms"], 1),
        "pack_ms": round(node.snapshot_stats["last_pack_ms"], 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=200_000, help="events written before the compactions")
    parser.add_argument("--out", default="benchmarks/results/raft_snapshot.json", help="JSON results file")


def run_snapshot_bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="raft-snap-") as tmp:
        store = RocksStore(Path(tmp) / "rocks")
        address = f"127.0.0.1:{free_port()}"
        tuning = RaftSettings(log_compaction_min_entries=10**9, log_compaction_min_time=10**6)
        node = RaftNode(address, {}, store, tuning, Path(tmp) / "raft", "pw")
        while not node.is_leader():
            time.sleep(0.05)
        started = time.perf_counter()
        fill(node, args.events)
        fill_s = time.perf_counter() - started
        store.flush()
        size_mb = store.disk_bytes() / 1e6
        inline = compaction_stall(node, inline=True)
        background = compaction_stall(node, inline=False)
        dump_mb = snapshot.stream_size(Path(tmp) / "raft" / "dump") / 1e6
        node.destroy()
        time.sleep(0.2)
        store.close()
    result = {
        "events": args.events,
        "rocksdb_mb": round(size_mb, 1),
        "dump_mb": round(dump_mb, 1),
        "fill_events_per_s": round(args.events / fill_s),
        "pack_on_tick_thread": inline,
        "pack_in_background": background,
    }
    save_json(result, args.out)
    return 0
