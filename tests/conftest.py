"""Shared fixtures: real nodes (RocksDB, Tantivy, LanceDB, PySyncObj on loopback) started
in-process on ports the test picked, polled until ready. No fixed sleeps."""

from __future__ import annotations

import os

# In-process nodes get the same single-threaded BLAS as `memorose node` (memorose/cli.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from memorose.config import load_settings
from node.runner import RunningNode, free_port, start_node
from node.testing.api import ADMIN_KEY, Api

__all__ = ["ADMIN_KEY", "Api", "NodeStarter", "wait_until"]


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


NodeStarter = Callable[..., Awaitable[tuple[RunningNode, Api]]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[NodeStarter]:
    """Start (or restart) a node on a data dir; all are stopped at teardown."""
    running: list[RunningNode] = []
    session = aiohttp.ClientSession()

    async def _start(data_dir: Path | None = None, **overrides: Any) -> tuple[RunningNode, Api]:
        settings = load_settings(
            data_dir=data_dir or tmp_path / "node",
            http=f"127.0.0.1:{free_port()}",
            raft=f"127.0.0.1:{free_port()}",
            admin_key=ADMIN_KEY,
            **overrides,
        )
        node = await start_node(settings)
        running.append(node)
        api = Api(node.url, session)

        async def ready() -> bool:
            status, _ = await api.get("/readyz")
            return status == 200

        await wait_until(ready, what="node ready")
        return node, api

    yield _start
    for node in reversed(running):
        try:
            await asyncio.wait_for(node.stop(), 30)
        except TimeoutError:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            raise AssertionError(
                f"node {node.url} did not stop within 30 s; pending tasks: {tasks}"
            ) from None
    await session.close()


@pytest.fixture
async def api(start: NodeStarter) -> Api:
    _, client = await start()
    return client


@contextlib.asynccontextmanager
async def scripted_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A throwaway HTTP server on 127.0.0.1 answering every path with ``handler``: for
    scripting what a client sees (429s, 503s, redirects). Yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
