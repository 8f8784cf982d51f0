"""The Python SDK against a real node (and a scripted front server for redirects/503s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from memorose.client import (
    AsyncMemoroseClient,
    AuthenticationError,
    BadRequestError,
    ConnectError,
    MemoroseClient,
    NotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    UnavailableError,
)
from node.runner import free_port
from tests.conftest import ADMIN_KEY, Api, scripted_server

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=4)


async def test_readme_usage_works_as_written(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOROSE_API_KEY", ADMIN_KEY)

    def scenario() -> None:
        with MemoroseClient(api.url) as client:
            first = client.ingest("user_123", "session_1", "User loves hiking")
            assert first.event_id.startswith("ev-") and first.seq == 1
            client.ingest("user_123", "session_1", "User works as a nurse in Leeds")
            results = client.retrieve(
                tenant_id="user_123",
                stream_id="session_1",
                query="outdoor activities hiking",
                top_k=5,
                graph_depth=1,
            )
            assert results.results[0].content == "User loves hiking"
            assert results.results[0].source_event_ids == [first.event_id]
            assert client.consolidate("user_123").done
            assert client.status("user_123").l1_memories == 2
            memories, cursor = client.list_memories("user_123")
            assert {m.content for m in memories} == {"User loves hiking", "User works as a nurse in Leeds"}
            assert cursor is None
            assert client.get_memory("user_123", memories[0].id).id == memories[0].id
            client.delete_memory("user_123", memories[0].id)
            with pytest.raises(NotFoundError):
                client.get_memory("user_123", memories[0].id)
            assert client.cluster_status()["role"] == "leader"

    await asyncio.to_thread(scenario)


async def test_explicit_event_ids_make_retries_idempotent(api: Api) -> None:
    async with AsyncMemoroseClient(api.url, api_key=ADMIN_KEY) as client:
        a = await client.ingest("t", "s", "same thing", event_id="fixed-1")
        b = await client.ingest("t", "s", "same thing", event_id="fixed-1")
        assert a == b
        ids = await client.ingest_batch(
            "t", [{"stream_id": "s", "content": "x"}, {"stream_id": "s", "content": "y"}]
        )
        assert len(ids) == 2 and all(i.startswith("ev-") for i in ids)
        assert (await client.status("t")).l0_events == 3


async def test_errors_map_to_the_exception_tree(api: Api) -> None:
    tenant_key = await api.tenant_key("mine")
    async with AsyncMemoroseClient(api.url, api_key=tenant_key, retry=FAST) as client:
        with pytest.raises(PermissionDeniedError) as denied:
            await client.retrieve("theirs", "anything")
        assert denied.value.status == 403 and denied.value.code == "forbidden"
        with pytest.raises(BadRequestError):
            await client.retrieve("mine", "x", top_k=0)
        with pytest.raises(NotFoundError):
            await client.get_memory("mine", "m-nope")
    async with AsyncMemoroseClient(api.url, api_key="wrong", retry=FAST) as client:
        with pytest.raises(AuthenticationError):
            await client.status("mine")


@pytest.fixture
async def front(api: Api) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A scripted front server: answers 503 a few times, then redirects to the real node."""
    counts = {"unavailable": 0, "redirected": 0}

    async def handler(request: web.Request) -> web.Response:
        if counts["unavailable"] < 2:
            counts["unavailable"] += 1
            return web.json_response(
                {"error": {"code": "no_leader", "message": "electing"}},
                status=503,
                headers={"Retry-After": "0"},
            )
        counts["redirected"] += 1
        return web.Response(status=307, headers={"Location": api.url + request.path_qs})

    async with scripted_server(handler) as url:
        yield url, counts


async def test_follows_redirects_keeping_the_body_and_retries_503(front: tuple[str, dict[str, int]]) -> None:
    url, counts = front
    async with AsyncMemoroseClient(url, api_key=ADMIN_KEY, retry=FAST) as client:
        result = await client.ingest("t", "s", "redirected write", event_id="r1")
        assert result.event_id == "r1"
        # The leader learnt from the redirect is used directly afterwards.
        await client.ingest("t", "s", "second write", event_id="r2")
        assert counts == {"unavailable": 2, "redirected": 1}
        # (background consolidation may already have turned the event into a memory)
        [top] = (await client.retrieve("t", "redirected write", top_k=1)).results
        assert "r1" in top.source_event_ids


async def test_dead_seed_is_skipped_and_exhaustion_raises(api: Api) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with AsyncMemoroseClient([dead, api.url], api_key=ADMIN_KEY, retry=FAST) as client:
        assert (await client.ingest("t", "s", "via the second seed")).seq == 1
    async with AsyncMemoroseClient([dead], api_key=ADMIN_KEY, retry=FAST) as client:
        with pytest.raises(ConnectError):
            await client.status("t")


async def test_unavailable_after_retries_raises(front: tuple[str, dict[str, int]]) -> None:
    url, _ = front
    policy = RetryPolicy(initial_backoff=0.0, max_backoff=0.0, max_attempts=2)
    async with AsyncMemoroseClient(url, api_key=ADMIN_KEY, retry=policy) as client:
        with pytest.raises(UnavailableError):
            await client.status("t")
