"""Run a node's HTTP server until stopped; used by the CLI and by in-process tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable

from aiohttp import web

from memorose.cli_support import OperatorError
from memorose.config import Settings
from memorose.http_guard import ConnectionGuard, GuardedSite
from memorose.runtime import raise_open_file_limit
from node.http import build_app
from node.service import NodeService

log = logging.getLogger(__name__)

#: Below this many open files a node warns at start (tables, connections, journal, dumps).
LOW_OPEN_FILES = 4096


#: Ports this process has handed out: the kernel may offer a just-released port again, and
#: callers (a cluster harness picking ports for several nodes before starting any) must not
#: get the same one twice.
_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now and that this process has not handed out before."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


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
    limits = settings.limits
    runner = web.AppRunner(
        build_app(service),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=0.5,
        keepalive_timeout=limits.keepalive_timeout_secs,
    )
    await runner.setup()
    guard = ConnectionGuard(limits.max_connections, limits.header_timeout_secs)
    site = GuardedSite(runner, settings.http_host, settings.http_port, guard, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:  # the CLI checked the port first; someone took it since
        await runner.cleanup()
        raise OperatorError(
            f"HTTP address {settings.http}: {exc.strerror}: stop whatever listens there or pass another port"
        ) from None
    return RunningNode(service, runner, f"http://{settings.http}")


async def serve_forever(settings: Settings, on_ready: Callable[[RunningNode], None]) -> None:
    """Serve until SIGINT/SIGTERM, stop gracefully, then end the process at once: the
    interpreter's own teardown would join worker threads still busy with abandoned work,
    which made stops take up to 15 s. Only for the CLI (tests use ``start_node``)."""
    open_files = raise_open_file_limit()
    if 0 <= open_files < LOW_OPEN_FILES:
        log.warning("open-file limit %d: RocksDB keeps every table open; raise it (ulimit -n)", open_files)
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
    watchdog = threading.Timer(STOP_BUDGET_S, _exit_now)
    watchdog.daemon = True
    watchdog.start()
    await node.stop()
    watchdog.cancel()
    logging.shutdown()
    os._exit(0)


#: A graceful stop that takes longer than this ends in an immediate exit. Safe: an
#: acknowledged write is already in the fsynced journal, and everything else is either in
#: RocksDB's WAL or derived; an exit here is no worse than the crash every node survives.
STOP_BUDGET_S = 1.4


def _exit_now() -> None:
    log.warning("graceful stop took longer than %.1f s; exiting now", STOP_BUDGET_S)
    logging.shutdown()
    os._exit(0)
