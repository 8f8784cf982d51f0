"""Group commit: concurrent ingest requests on the leader share one Raft entry.

While one entry is in flight, new requests queue; the next entry carries all of them.
Throughput then grows with concurrency instead of being bounded by one commit per request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from memorose import commands
from node.proposer import Proposer
from node.tasks import BackgroundTask

MAX_EVENTS_PER_ENTRY = 5000


class IngestBatcher(BackgroundTask):
    task_name = "ingest-batcher"

    def __init__(self, proposer: Proposer, clock: Any) -> None:
        self.proposer = proposer
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
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._take()
                await self._commit(batch)

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
