"""Bridges asyncio and PySyncObj: propose a command, await its applied result.

PySyncObj calls back on its tick thread, so results are handed to the event loop with
``call_soon_threadsafe``; nothing here blocks the loop. The callback fires on the leader
once the entry is committed by a majority AND applied locally, which is when a write is
acknowledged. A timeout or a leader change is "outcome unknown" (the entry may still
commit): clients retry with the same event ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import FAIL_REASON

from memorose import commands
from memorose.errors import Conflict, OutcomeUnknown, Unavailable
from node.raft import RaftNode


class NotLeader(Unavailable):
    """This node is not the leader; the HTTP layer redirects to the leader."""

    code = "not_leader"

    def __init__(self, leader: str | None, url: str | None = None) -> None:
        super().__init__("this node is not the leader", retry_after=0.5)
        self.leader = leader
        self.url = url


class Proposer:
    def __init__(self, raft: RaftNode, timeout: float) -> None:
        self.raft = raft
        self.timeout = timeout
        self.latencies: list[float] = []  # recent commit latencies (s), read by metrics

    def not_leader(self) -> NotLeader:
        return NotLeader(self.raft.leader_address(), self.raft.leader_url())

    async def propose(self, command: dict[str, Any]) -> dict[str, Any]:
        """Replicate a command through the leader; returns the state machine's result."""
        if not self.raft.is_leader():
            raise self.not_leader()
        payload = commands.encode(command)
        return await self._call(lambda cb: self.raft.apply(payload, callback=cb))  # type: ignore[no-any-return]

    async def barrier(self) -> None:
        """Wait until a no-op proposed now is applied on THIS node (any role): every write
        acknowledged before the call is then visible locally (linearizable read).

        On a follower PySyncObj forwards the no-op to the leader and calls back when the
        follower itself has applied it.
        """
        if self.raft.leader_address() is None:
            raise Unavailable("no leader is known yet; retry", retry_after=0.5)
        payload = commands.encode(commands.noop())
        try:
            await self._call(lambda cb: self.raft.apply(payload, callback=cb))
        except (NotLeader, OutcomeUnknown):
            raise Unavailable("the read barrier was interrupted by a leader change; retry") from None

    async def change_membership(self, action: Callable[[Callable[[Any, int], None]], None]) -> None:
        """Add or remove a member (leader only); waits until the change is committed."""
        if not self.raft.is_leader():
            raise self.not_leader()
        try:
            await self._call(action)
        except Denied:
            raise Conflict(
                "membership change refused: another change is in progress, the node is already "
                "(or not) a member, or this leader has not committed its first entry yet"
            ) from None

    async def _call(self, submit: Callable[[Callable[[Any, int], None]], None]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def on_done(result: Any, error: int) -> None:
            loop.call_soon_threadsafe(_resolve, future, result, error)

        started = time.perf_counter()
        submit(on_done)
        try:
            result, error = await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            raise OutcomeUnknown("the write was not confirmed in time; retry with the same ids") from None
        if error == FAIL_REASON.SUCCESS:
            self._record(time.perf_counter() - started)
            return result
        if error in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.QUEUE_FULL):
            raise Unavailable("no leader or the queue is full; retry shortly", retry_after=0.5)
        if error == FAIL_REASON.NOT_LEADER:
            raise self.not_leader()
        if error == FAIL_REASON.REQUEST_DENIED:
            raise Denied()
        raise OutcomeUnknown(f"leadership changed while the write was pending (reason {error})")

    def _record(self, seconds: float) -> None:
        self.latencies.append(seconds)
        if len(self.latencies) > 4096:
            del self.latencies[:2048]


class Denied(Exception):
    """PySyncObj refused the request (membership changes only)."""


def _resolve(future: asyncio.Future[tuple[Any, int]], result: Any, error: int) -> None:
    if not future.done():
        future.set_result((result, error))
