"""Run a node's HTTP server until stopped; used by the CLI and by in-process tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable

from aiohttp import web

from memorose.config import Settings
from node.http import build_app
from node.service import NodeService


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RunningNode:
    """A started node: its service, its base URL, and how to stop it."""

    def __init__(self, service: NodeService, runner: web.AppRunner, url: str) -> None:
        self.service = service
        self.runner = runner
        self.url = url
        self._stopped = False

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            await self.runner.cleanup()


async def start_node(settings: Settings) -> RunningNode:
    service = NodeService(settings)
    # In-flight requests get a moment on shutdown; clients retry (writes are idempotent).
    runner = web.AppRunner(build_app(service), access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
    await site.start()
    return RunningNode(service, runner, f"http://{settings.http}")


async def serve_forever(settings: Settings, on_ready: Callable[[RunningNode], None]) -> None:
    node = await start_node(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    deadline = loop.time() + 30
    while not node.service.ready() and loop.time() < deadline:
        await asyncio.sleep(0.02)
    on_ready(node)
    await stop.wait()
    await node.stop()
