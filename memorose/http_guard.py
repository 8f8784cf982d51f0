"""A connection guard below aiohttp, shared by nodes and the gateway: it caps open
connections and closes a connection whose request headers do not arrive in time.

Why below aiohttp: aiohttp has no header-read timeout. Its keep-alive timer is the nearest
knob (recent versions arm it when a connection opens, so ``keepalive_timeout`` also bounds
a connection that never completes a request), but its default is an hour and older
versions do not arm it at all. The guard is a thin protocol wrapper, independent of
aiohttp's internals. Importing this module starts nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from memorose.errors import MemoroseError


class BodyTimeout(MemoroseError):
    status = 408
    code = "body_timeout"


async def read_body(request: web.Request, timeout: float) -> bytes:
    """Read (and cache: handlers call ``request.read()`` again) the body within ``timeout``;
    a body dribbled slower is a 408 (the caller closes the connection)."""
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {timeout:g} s") from None


_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


def _refusal() -> bytes:
    body = json.dumps(
        {"error": {"code": "too_many_connections", "message": "the server is at its connection cap"}}
    ).encode()
    return _REFUSED % (len(body), body)


class ConnectionGuard:
    """Shared by every connection of one listening socket: counts them, refuses past the cap."""

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.active = 0
        self.refused = 0
        self.timed_out = 0

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedProtocol(self, inner)


class GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's protocol; forwards everything, adds the cap and the header deadline."""

    def __init__(self, guard: ConnectionGuard, inner: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_inner = inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if guard.max_connections and guard.active >= guard.max_connections:
            guard.refused += 1
            transport.write(_refusal())
            transport.close()
            return
        guard.active += 1
        self._inner = self._make_inner()
        self._inner.connection_made(transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(guard.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._timer = None
        self._guard.timed_out += 1
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._timer.cancel()
                self._timer = None
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is not None:
            self._guard.active -= 1
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections pass through a ConnectionGuard."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, **kw: Any
    ) -> None:
        super().__init__(runner, host, port, **kw)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard.factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
