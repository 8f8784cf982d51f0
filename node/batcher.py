"""Group commit: concurrent ingest requests on the leader share one Raft entry.

While ``max_in_flight`` entries are in flight, new requests queue; the next entry carries
all of them. Throughput then grows with concurrency instead of being bounded by one commit
per request. Two entries in flight rather than one: with one, the leader's event loop
(HTTP parsing and validation of the next requests) sat idle while an entry was replicated
and applied, and the tick thread sat idle while the loop parsed; the Raft log keeps the
entries in the order they were proposed, and each request is answered by its own entry.
"""

from __future__ import annotations

import asyncio
from typing import Any

from memorose import commands
from node.proposer import Proposer
from node.tasks import BackgroundTask

MAX_EVENTS_PER_ENTRY = 5000
#: Ingest entries proposed and not yet applied at once (see the module docstring).
MAX_ENTRIES_IN_FLIGHT = 2


class IngestBatcher(BackgroundTask):
    task_name = "ingest-batcher"

    def __init__(self, proposer: Proposer, clock: Any, max_in_flight: int = MAX_ENTRIES_IN_FLIGHT) -> None:
        self.proposer = proposer
        self.max_in_flight = max_in_flight
        self.clock = clock
        self._queue: list[tuple[dict[str, Any], asyncio.Future[list[dict[str, Any]]]]] = []
        self._wakeup = asyncio.Event()
        self.entries = 0
        self.requests = 0

    async def submit(self, tenant_id: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Returns one answer per event: {event_id, seq, duplicate}."""
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._queue.append(({"tenant_id": tenant_id, "events": events}, future))
        self._wakeup.set()
        return await future

    def _take(self) -> list[tuple[dict[str, Any], asyncio.Future[list[dict[str, Any]]]]]:
        taken: list[tuple[dict[str, Any], asyncio.Future[list[dict[str, Any]]]]] = []
        count = 0
        while self._queue and (not taken or count + len(self._queue[0][0]["events"]) <= MAX_EVENTS_PER_ENTRY):
            item = self._queue.pop(0)
            taken.append(item)
            count += len(item[0]["events"])
        return taken

    async def _run(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    if len(in_flight) >= self.max_in_flight:
                        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        continue  # more requests may have queued meanwhile: take them all
                    task = asyncio.create_task(self._commit(self._take()))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        finally:
            for task in in_flight:
                task.cancel()

    async def _commit(self, batch: list[tuple[dict[str, Any], asyncio.Future[list[dict[str, Any]]]]]) -> None:
        command = commands.ingest([req for req, _ in batch], ingested_at=self.clock())
        try:
            result = await self.proposer.propose(command)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.entries += 1
        self.requests += len(batch)
        answers = result.get("requests") if result.get("ok") else None
        for i, (_, future) in enumerate(batch):
            if future.done():
                continue
            if answers is None:
                future.set_exception(RuntimeError(f"ingest failed: {result.get('error')}"))
            else:
                future.set_result(answers[i])  # a list of per-event answers, or a refusal dict
