"""Bridges asyncio and PySyncObj: propose a command, await its applied result.

PySyncObj calls back on its tick thread, so results are handed to the event loop with
``call_soon_threadsafe``; nothing here blocks the loop. A timeout or a leader change is
"outcome unknown" (the entry may still commit): clients retry with the same event ids.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pysyncobj import FAIL_REASON

from memorose import commands
from memorose.errors import OutcomeUnknown, Unavailable
from node.raft import RaftNode


class NotLeader(Unavailable):
    """This node is not the leader; the HTTP layer redirects to the leader."""

    code = "not_leader"

    def __init__(self, leader: str | None) -> None:
        super().__init__("this node is not the leader", retry_after=0.5)
        self.leader = leader


class Proposer:
    def __init__(self, raft: RaftNode, timeout: float) -> None:
        self.raft = raft
        self.timeout = timeout

    async def propose(self, command: dict[str, Any]) -> dict[str, Any]:
        if self.raft.role() != "leader":
            raise NotLeader(self.raft.leader_address())
        payload = commands.encode(command)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def on_done(result: Any, error: int) -> None:
            loop.call_soon_threadsafe(_resolve, future, result, error)

        self.raft.apply(payload, callback=on_done)
        try:
            result, error = await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            raise OutcomeUnknown("the write was not confirmed in time; retry with the same ids") from None
        if error == FAIL_REASON.SUCCESS:
            return result  # type: ignore[no-any-return]
        if error in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.QUEUE_FULL):
            raise Unavailable("no leader or the queue is full; retry shortly", retry_after=0.5)
        if error == FAIL_REASON.NOT_LEADER:
            raise NotLeader(self.raft.leader_address())
        raise OutcomeUnknown(f"leadership changed while the write was pending (reason {error})")


def _resolve(future: asyncio.Future[tuple[Any, int]], result: Any, error: int) -> None:
    if not future.done():
        future.set_result((result, error))
