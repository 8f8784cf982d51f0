"""Group commit with two entries in flight (node/batcher.py).

The proposer here is a stand-in that holds each proposal until the test releases it, so
the test controls what is in flight; everything else is the real batcher and the real
ingest command encoding.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.batcher import IngestBatcher


class HeldProposer:
    """Answers each proposal when the test says so, like a Raft entry committing."""

    def __init__(self) -> None:
        self.proposed: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
        self.max_in_flight = 0

    def in_flight(self) -> int:
        return sum(1 for _, f in self.proposed if not f.done())

    async def propose(self, command: dict[str, Any]) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.proposed.append((command, future))
        self.max_in_flight = max(self.max_in_flight, self.in_flight())
        return await future

    def commit(self, k: int) -> None:
        """Apply proposal ``k``: every request gets one answer per event."""
        command, future = self.proposed[k]
        answers = [
            [{"event_id": ev["event_id"], "seq": k, "duplicate": False} for ev in req["events"]]
            for req in command["requests"]
        ]
        future.set_result({"ok": True, "requests": answers})


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _two_entries(batcher: IngestBatcher) -> tuple[asyncio.Task[Any], asyncio.Task[Any]]:
    """Requests "a" and "b", each proposed as its own entry (two may be in flight)."""
    first = asyncio.create_task(batcher.submit("t", _events("a")))
    await _settle()
    second = asyncio.create_task(batcher.submit("t", _events("b")))
    await _settle()
    return first, second


def _events(*ids: str) -> list[dict[str, Any]]:
    return [{"stream_id": "s", "event_id": i, "content": i, "timestamp": 1.0} for i in ids]


@pytest.fixture
async def batcher_and_proposer() -> Any:
    proposer = HeldProposer()
    batcher = IngestBatcher(proposer, lambda: 1.7e9)  # type: ignore[arg-type]
    batcher.start()
    yield batcher, proposer
    await batcher.stop()


async def test_two_entries_in_flight_and_the_rest_queue_into_one(batcher_and_proposer: Any) -> None:
    batcher, proposer = batcher_and_proposer
    first, second = await _two_entries(batcher)
    assert len(proposer.proposed) == 2  # the second did not wait for the first to commit
    queued = [asyncio.create_task(batcher.submit("t", _events(x))) for x in ("c", "d", "e")]
    await _settle()
    assert len(proposer.proposed) == 2  # two in flight: the others queue
    proposer.commit(1)  # entries may commit in any order as far as the batcher is concerned
    await _settle()
    assert len(proposer.proposed) == 3
    assert [len(r["events"]) for r in proposer.proposed[2][0]["requests"]] == [1, 1, 1]  # one entry for all
    proposer.commit(0)
    proposer.commit(2)
    answers = await asyncio.gather(first, second, *queued)
    assert [a[0]["event_id"] for a in answers] == ["a", "b", "c", "d", "e"]
    assert [a[0]["seq"] for a in answers] == [0, 1, 2, 2, 2]
    assert proposer.max_in_flight == 2
    assert batcher.entries == 3 and batcher.requests == 5


async def test_a_failed_entry_fails_only_its_own_requests(batcher_and_proposer: Any) -> None:
    batcher, proposer = batcher_and_proposer
    first, second = await _two_entries(batcher)
    proposer.proposed[0][1].set_exception(TimeoutError("outcome unknown"))
    proposer.commit(1)
    with pytest.raises(TimeoutError):
        await first
    assert (await second)[0]["event_id"] == "b"
