"""What one flush of retrieval feedback costs the Raft thread: the apply of a ``touch``.

Every ``forgetting.touch_flush_secs`` the leader proposes one ``touch`` per tenant with the
accesses and co-retrieval pairs of the queries it served since (node/maintenance.py), and
every replica applies it on its Raft thread, holding the GIL: a query in flight meanwhile
waits. Over a copy of the RocksDB of a ``memorose bench storage --data`` build, this bench
fills a ``TouchBuffer`` as that many queries would (each returning ``--results`` random
memories of the tenant), drains it as the flusher does, and times ``StateMachine.apply``
of each command (docs/state-machine.md, "A touch decodes three fields").

    memorose bench touch-apply --data /tmp/bench-data --scenario 100k-1tenant --queries-per-flush 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.read_stages import _scenario_dir
from benchmarks.storage import percentiles
from memorose import commands
from memorose.statemachine import StateMachine
from memorose.storage import keys
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore
from node.maintenance import TouchBuffer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="the --data DIR of a `bench storage` run")
    parser.add_argument("--scenario", default=None, help="scenario in DIR (default: the only one)")
    parser.add_argument("--flushes", type=int, default=30, help="touch commands applied")
    parser.add_argument("--queries-per-flush", type=int, default=20, help="queries served between flushes")
    parser.add_argument("--results", type=int, default=10, help="memories each query returned")
    parser.add_argument("--seed", type=int, default=1, help="seed of the drawn results")
    parser.add_argument("--out", default="benchmarks/results/touch_apply.json", help="JSON results file")


def _flushes(ids_by_tenant: dict[str, list[str]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Touch commands as the flusher would propose them, one flush at a time."""
    rng = random.Random(args.seed)
    tenants = sorted(ids_by_tenant)
    out = []
    for flush in range(args.flushes):
        buffer = TouchBuffer()
        for _ in range(args.queries_per_flush):
            tenant = rng.choice(tenants)
            ids = ids_by_tenant[tenant]
            buffer.record(tenant, rng.sample(ids, min(args.results, len(ids))))
        for tenant, (accesses, pairs) in sorted(buffer.drain().items()):
            out.append(
                commands.touch(
                    tenant,
                    1e9 + flush,
                    [[m, n] for m, n in sorted(accesses.items())],
                    [[a, b, n] for (a, b), n in sorted(pairs.items())],
                    0.05,
                )
            )
    return out


def _memory_ids(store: RocksStore) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for tenant_id in StateReader(store).tenant_ids():
        prefix = keys.tenant_prefix(keys.MEMORY, tenant_id)
        found = [key[len(prefix) :].decode() for key, _ in store.scan(prefix)]
        if found:
            out[tenant_id] = found
    return out


def run_touch_apply(args: argparse.Namespace) -> int:
    if args.flushes < 1 or args.queries_per_flush < 1 or args.results < 1:
        raise SystemExit("--flushes, --queries-per-flush and --results must be positive")
    scenario = _scenario_dir(Path(args.data), args.scenario)
    with tempfile.TemporaryDirectory(prefix="memorose-touch-apply-") as tmp:
        shutil.copytree((scenario / "rocks").resolve(), Path(tmp) / "rocks")  # applied here, not there
        store = RocksStore(Path(tmp) / "rocks")
        try:
            ids = _memory_ids(store)
            if not ids:
                raise SystemExit(f"no memories in {scenario}")
            machine = StateMachine(store)
            ms: list[float] = []
            sizes: list[tuple[int, int]] = []
            for command in _flushes(ids, args):
                payload = commands.encode(command)
                started = time.perf_counter()
                result = machine.apply(payload, store.applied_index() + 1)
                ms.append((time.perf_counter() - started) * 1000)
                if not result.get("ok"):
                    raise SystemExit(f"a touch failed: {result}")
                sizes.append((len(command["accesses"]), len(command["co_retrieved"])))
        finally:
            store.close()
    measured = ms[len(ms) // 6 :]  # the first ones warm the block cache
    result_doc = {
        "scenario": scenario.name,
        "memories": sum(len(v) for v in ids.values()),
        "commands": len(ms),
        "accesses_per_command": round(sum(a for a, _ in sizes) / len(sizes), 1),
        "pairs_per_command": round(sum(p for _, p in sizes) / len(sizes), 1),
        "apply_ms": {**percentiles(measured), "mean": round(sum(measured) / len(measured), 3)},
        "load_average": os.getloadavg(),
    }
    print(f"== memorose bench touch-apply: {result_doc['scenario']}, {result_doc['memories']:,} memories ==")
    print(
        f"{result_doc['commands']} touches of {result_doc['accesses_per_command']} accesses and "
        f"{result_doc['pairs_per_command']} co-retrieval pairs; apply ms {result_doc['apply_ms']}"
    )
    print(f"load average {result_doc['load_average']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result_doc, indent=2) + "\n")
    print(f"result: {out}")
    return 0
