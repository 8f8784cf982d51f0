"""Shared fixtures: real nodes (RocksDB, Tantivy, LanceDB, PySyncObj on loopback) started
in-process on ports the test picked, polled until ready. No fixed sleeps."""

from __future__ import annotations

import os

# In-process nodes get the same single-threaded BLAS as `memorose node` (memorose/cli.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from memorose.config import load_settings
from node.runner import RunningNode, free_port, start_node

ADMIN_KEY = "adm_test_admin_key"


class Api:
    """A minimal JSON client for tests: returns (status, body)."""

    def __init__(self, url: str, session: aiohttp.ClientSession, key: str = ADMIN_KEY) -> None:
        self.url = url
        self.session = session
        self.key = key

    def with_key(self, key: str) -> Api:
        return Api(self.url, self.session, key)

    async def request(
        self, method: str, path: str, json: Any = None, data: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = kw.pop("headers", {})
        if self.key is not None:
            headers.setdefault("Authorization", f"Bearer {self.key}")
        async with self.session.request(
            method, self.url + path, json=json, data=data, headers=headers, allow_redirects=False, **kw
        ) as resp:
            text = await resp.text()
            try:
                import json as _json

                body = _json.loads(text) if text else None
            except ValueError:
                body = text
            return resp.status, body

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=json, **kw)

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kw)

    # conveniences used by many tests
    async def ingest(self, tenant: str, content: str, stream: str = "s1", **fields: Any) -> dict[str, Any]:
        status, body = await self.post(
            "/api/v1/events", {"tenant_id": tenant, "stream_id": stream, "content": content, **fields}
        )
        assert status == 202, body
        return body  # type: ignore[no-any-return]

    async def consolidate(self, tenant: str) -> dict[str, Any]:
        status, body = await self.post("/api/v1/consolidate", {"tenant_id": tenant, "wait": True})
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def retrieve(self, tenant: str, query: str, **fields: Any) -> list[dict[str, Any]]:
        status, body = await self.post("/api/v1/retrieve", {"tenant_id": tenant, "query": query, **fields})
        assert status == 200, body
        return body["results"]  # type: ignore[no-any-return]

    async def tenant_key(self, tenant: str) -> str:
        status, body = await self.post(f"/api/v1/admin/tenants/{tenant}/keys")
        assert status == 201, body
        return body["api_key"]  # type: ignore[no-any-return]


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
