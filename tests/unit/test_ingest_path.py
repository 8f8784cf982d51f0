"""Batch ingest's fast paths (issue 12) keep their results: the analyzer's ASCII tokenizer
gives the regex's tokens, apply writes the same bytes as the record-by-record version,
the indexer's paced cycles never delay a waiter, and ``consolidation.auto = false`` keeps
the leader from consolidating on its own."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from memorose import codec, commands
from memorose.retrieval import text
from memorose.statemachine import StateMachine
from memorose.storage import keys
from memorose.storage.fulltext import KIND_EVENT
from memorose.storage.indexer import MIN_CYCLE_INTERVAL_S, Indexer
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore
from node.workers import ConsolidationWorker

_REGEX = re.compile(r"[^\W_]+", re.UNICODE)


def regex_words(value: str) -> list[str]:
    """The analyzer's tokens as they were defined before the ASCII fast path."""
    return [w for w in _REGEX.findall(value.lower()) if len(w) <= 40]


def test_the_ascii_tokenizer_gives_the_regex_tokens() -> None:
    rng = random.Random(12)
    alphabet = [chr(i) for i in range(128)] + ["é", "ß", "İ", "Ω", "٣", "ǅ", "ﬁ"]
    samples = ["", "_", "a_b", "Hello, World! 10:00", "x" * 40, "y" * 41 + " ok", "Straße İstanbul"]
    for _ in range(5000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        if rng.random() < 0.2:
            value += " " + "Q" * rng.randrange(38, 44)
        samples.append(value)
    for value in samples:
        assert text.words(value) == regex_words(value), value


def test_analyze_stems_every_token_also_after_the_cache_is_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    sentence = "Running runners ran quickly; the RUNS were timed at 10:00"
    expected = [text.stem(w) for w in regex_words(sentence)]
    assert text.analyze(sentence) == expected
    assert text.analyze(sentence) == expected  # from the cache
    monkeypatch.setattr(text, "_DOCUMENT_STEMS_MAX", 0)
    assert text.analyze(sentence + " jumping") == [*expected, "jump"]  # cleared when full
    assert text.analyze(sentence) == expected


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[StateMachine]:
    store = RocksStore(tmp_path / "rocks")
    yield StateMachine(store)
    store.close()


def event(event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "stream_id": "s1",
        "event_id": event_id,
        "content": f"text of {event_id}",
        "timestamp": 1.5,
        **extra,
    }


def test_apply_writes_each_event_as_the_record_by_record_version_did(machine: StateMachine) -> None:
    """Replicas on either version must hold the same bytes (digests compare them)."""
    first = [event("a", metadata={"k": "v"}), event("b", metadata={})]
    second = [event("b"), event("c"), event("c")]  # a repeat of the other request and of itself
    entry = commands.ingest(
        [{"tenant_id": "t1", "events": first}, {"tenant_id": "t1", "events": second}], 9.0
    )
    result = machine.apply(commands.encode(entry), 1)
    assert result["requests"] == [
        [{"event_id": "a", "seq": 1, "duplicate": False}, {"event_id": "b", "seq": 2, "duplicate": False}],
        [
            {"event_id": "b", "seq": 2, "duplicate": True},
            {"event_id": "c", "seq": 3, "duplicate": False},
            {"event_id": "c", "seq": 3, "duplicate": True},
        ],
    ]
    store = machine.store
    for seq, ev in enumerate([first[0], first[1], second[1]], start=1):
        record = {
            "tenant_id": "t1",
            "stream_id": ev["stream_id"],
            "event_id": ev["event_id"],
            "seq": seq,
            "content": ev["content"],
            "timestamp": ev["timestamp"],
            "ingested_at": 9.0,
            "metadata": ev.get("metadata") or {},
        }
        assert store.get(keys.event("t1", seq)) == msgpack.packb(record, use_bin_type=True)
        assert store.get(keys.event_id("t1", ev["event_id"])) == msgpack.packb(seq, use_bin_type=True)
    tenant = codec.unpack(store.get(keys.tenant("t1")))
    assert (tenant["next_seq"], tenant["events"]) == (4, 3)
    assert tenant["bytes"] == sum(len(e["content"]) for e in (first[0], first[1], second[1])) + len(
        '{"k":"v"}'
    )
    # A later entry that only repeats stored events changes no counter and adds no field.
    machine.apply(commands.encode(commands.ingest([{"tenant_id": "t1", "events": [event("a")]}], 10.0)), 2)
    assert codec.unpack(store.get(keys.tenant("t1")))["bytes"] == tenant["bytes"]
    assert StateReader(store).event_seq("t1", "c") == 3


class IndexedNode:
    def __init__(self, root: Path) -> None:
        self.store = RocksStore(root / "rocks")
        self.machine = StateMachine(self.store)
        self.indexer = Indexer(StateReader(self.store), root / "index", dim=8, ann_threshold=1000)
        self.indexer.open()
        self.index = 0

    def ingest(self, word: str) -> int:
        self.index += 1
        events = [event(f"e{self.index}", content=f"{word} number {self.index}")]
        assert self.machine.apply(
            commands.encode(commands.ingest([{"tenant_id": "t1", "events": events}], 2.0)), self.index
        )["ok"]
        return self.index


@pytest.fixture
def node(tmp_path: Path) -> Iterator[IndexedNode]:
    n = IndexedNode(tmp_path)
    n.indexer.start()
    yield n
    n.indexer.stop()
    n.store.close()


def test_a_waiter_does_not_wait_out_the_cycle_interval(node: IndexedNode) -> None:
    """Right after a cycle the indexer pauses to gather changes, but ``wait_for`` cuts the
    pause short: read-your-writes and consolidation never pay the interval."""
    assert node.indexer.wait_for(node.ingest("alpha"), timeout=10)
    waits = []
    for _ in range(5):
        index = node.ingest("beta")  # lands while the indexer pauses after the last cycle
        started = time.monotonic()
        assert node.indexer.wait_for(index, timeout=10)
        waits.append(time.monotonic() - started)
    assert min(waits) < MIN_CYCLE_INTERVAL_S / 2
    refs = node.indexer.fulltext.search("t1", text.query_terms("beta"), kind=KIND_EVENT, limit=10)
    assert len(refs) == 5


def test_changes_that_keep_coming_share_commits(node: IndexedNode) -> None:
    assert node.indexer.wait_for(node.ingest("warm"), timeout=10)
    generation = node.indexer.fulltext.generation
    deadline = time.monotonic() + 1.0
    last = 0
    while time.monotonic() < deadline:  # an entry every 10 ms, nobody waiting
        last = node.ingest("gamma")
        time.sleep(0.01)
    assert node.indexer.wait_for(last, timeout=10)
    commits = node.indexer.fulltext.generation - generation
    assert 1 <= commits <= 1.0 / MIN_CYCLE_INTERVAL_S + 3, commits  # not one per entry (~100)


class CountingWorker(ConsolidationWorker):
    passes = 0

    async def run_pass(self) -> None:
        self.passes += 1


@pytest.mark.parametrize("auto", [True, False])
def test_consolidation_auto_false_runs_passes_only_when_triggered(auto: bool) -> None:
    async def scenario() -> tuple[int, int]:
        unused: Any = None  # a pass is counted, not run: no reader, planner or proposer
        worker = CountingWorker(
            unused, unused, unused, interval=0.05, batch_size=10, auto=auto, is_leader=lambda: True
        )
        worker.start()
        if auto:  # passes come on their own: poll for two
            for _ in range(500):
                if worker.passes >= 2:
                    break
                await asyncio.sleep(0.01)
        else:  # none may come: six intervals without one
            await asyncio.sleep(0.3)
        on_its_own = worker.passes
        worker.trigger()
        for _ in range(100):
            if worker.passes > on_its_own:
                break
            await asyncio.sleep(0.01)
        await worker.stop()
        return on_its_own, worker.passes - on_its_own

    on_its_own, triggered = asyncio.run(scenario())
    assert triggered >= 1
    assert (on_its_own >= 2) if auto else (on_its_own == 0)
