"""The consolidation worker prepares the next batch while the current one is decided and
committed: every batch is prepared once, batches commit in order, and a batch prepared for
a span the cursor no longer matches is thrown away and prepared again (real RocksDB and
state machine; the proposer applies commands directly)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memorose import commands
from memorose.config import ConsolidationSettings
from memorose.consolidation.planner import ConsolidationPlanner, Prepared
from memorose.models import Event
from memorose.providers.embeddings.hashing import HashingEmbedder
from memorose.statemachine import StateMachine
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore
from node.workers import ConsolidationWorker


class RecordingPlanner(ConsolidationPlanner):
    def __init__(self) -> None:
        super().__init__(HashingEmbedder(), ConsolidationSettings(mode="verbatim"))
        self.prepared: list[tuple[int, int]] = []

    def prepare(self, tenant_id: str, events: list[Event], now: float) -> Prepared:
        self.prepared.append((events[0].seq, events[-1].seq))
        return super().prepare(tenant_id, events, now)


class DirectProposer:
    """Applies each command at the next index; ``interfere`` runs once before a chosen call."""

    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine
        self.index = 0
        self.committed: list[tuple[int, int]] = []
        self.interfere: dict[int, Any] = {}

    async def propose(self, command: dict[str, Any]) -> dict[str, Any]:
        call = len(self.committed)
        if call in self.interfere:
            self.interfere.pop(call)()
        self.index += 1
        result = self.machine.apply(commands.encode(command), self.index)
        if result.get("ok"):
            self.committed.append((command["from_cursor"], command["to_cursor"]))
        return result


@pytest.fixture
def parts(
    tmp_path: Path,
) -> Iterator[tuple[StateMachine, DirectProposer, RecordingPlanner, ConsolidationWorker]]:
    store = RocksStore(tmp_path / "rocks")
    machine = StateMachine(store)
    proposer, planner = DirectProposer(machine), RecordingPlanner()
    worker = ConsolidationWorker(
        StateReader(store),
        planner,
        proposer,
        interval=3600,
        batch_size=100,
        is_leader=lambda: True,  # type: ignore[arg-type]
    )
    yield machine, proposer, planner, worker
    store.close()


def ingest(proposer: DirectProposer, n: int, start: int = 0) -> None:
    events = [
        {
            "stream_id": "s",
            "event_id": f"e{i}",
            "content": f"fact number {i}",
            "metadata": {},
            "timestamp": 1.0,
        }
        for i in range(start, start + n)
    ]
    proposer.index += 1
    assert proposer.machine.apply(
        commands.encode(commands.ingest([{"tenant_id": "t", "events": events}], 2.0)), proposer.index
    )["ok"]


async def test_batches_are_prepared_once_and_commit_in_order(parts: Any) -> None:
    machine, proposer, planner, worker = parts
    ingest(proposer, 250)
    await worker.consolidate_tenant("t")
    assert proposer.committed == [(0, 100), (100, 200), (200, 250)]
    assert planner.prepared == [(1, 100), (101, 200), (201, 250)]
    assert StateReader(machine.store).tenant_or_empty("t")["memories"] == 250


async def test_a_batch_prepared_for_a_stale_span_is_prepared_again(parts: Any) -> None:
    machine, proposer, planner, worker = parts
    ingest(proposer, 150)
    # While the first batch commits, 100 more events arrive: the batch prepared ahead was
    # (100, 150]; the next batch is now (100, 200] and must include the new events.
    proposer.interfere[0] = lambda: ingest(proposer, 100, start=150)
    await worker.consolidate_tenant("t")
    assert proposer.committed == [(0, 100), (100, 200), (200, 250)]
    # (101, 150) was prepared ahead (or cancelled before its thread ran): never committed.
    assert [span for span in planner.prepared if span != (101, 150)] == [(1, 100), (101, 200), (201, 250)]
    assert StateReader(machine.store).tenant_or_empty("t")["memories"] == 250
