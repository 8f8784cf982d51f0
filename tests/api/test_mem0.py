"""The real ``mem0ai`` MemoryClient, unmodified, against a node and through the gateway
(docs/mem0.md). The client is synchronous: it runs in a thread so the in-process node's
event loop keeps serving it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ["MEM0_TELEMETRY"] = "False"  # no network here; read when mem0 is imported
os.environ.setdefault("MEM0_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "memorose-mem0-test"))

from mem0 import MemoryClient
from mem0.exceptions import MemoryNotFoundError

from tests.api.test_gateway import gateway  # noqa: F401
from tests.conftest import ADMIN_KEY, Api

T = TypeVar("T")


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def client_for(url: str, key: str) -> MemoryClient:
    return await call(MemoryClient, api_key=key, host=url)


async def test_add_search_get_update_history_delete_with_a_tenant_key(api: Api) -> None:
    key = await api.tenant_key("acme")
    mem0 = await client_for(api.url + "/mem0", key)
    assert mem0.project_id == "acme"  # the ping names the key's tenant

    queued = await call(
        mem0.add,
        [
            {"role": "user", "content": "I moved to Lisbon last spring and I work as a pastry chef"},
            {"role": "assistant", "content": "Lisbon is lovely in spring!"},
        ],
        user_id="alice",
        metadata={"source": "chat"},
    )
    assert queued["status"] == "PENDING" and len(queued["event_ids"]) == 2
    await call(mem0.add, "I have a greyhound named Biscuit", user_id="bob")
    assert (await api.consolidate("acme"))["done"]

    alice = await call(mem0.get_all, filters={"user_id": "alice"})
    assert alice["count"] >= 1 and alice["next"] is None
    assert all(m["user_id"] == "alice" and m["metadata"] == {"source": "chat"} for m in alice["results"])
    assert not any("greyhound" in m["memory"] for m in alice["results"])

    hits = await call(mem0.search, "Where does she live?", filters={"user_id": "alice"}, top_k=3)
    assert hits["results"] and "Lisbon" in hits["results"][0]["memory"]
    assert hits["results"][0]["score"] > 0
    memory_id = hits["results"][0]["id"]
    bob_hits = await call(mem0.search, "greyhound", filters={"AND": [{"user_id": "bob"}]})
    assert [h["user_id"] for h in bob_hits["results"]] == ["bob"] * len(bob_hits["results"]) != []

    got = await call(mem0.get, memory_id)
    assert got["id"] == memory_id and got["user_id"] == "alice"

    updated = await call(mem0.update, memory_id, text="Alice lives in Porto now")
    assert updated["memory"] == "Alice lives in Porto now" and updated["supersedes"] == [memory_id]
    assert (await call(mem0.get, memory_id))["memory"] == "Alice lives in Porto now"  # the id follows
    listed = await call(mem0.get_all, filters={"user_id": "alice"})
    assert updated["id"] in {m["id"] for m in listed["results"]}
    assert memory_id not in {m["id"] for m in listed["results"]}  # superseded: not current

    history = await call(mem0.history, memory_id)
    assert [h["event"] for h in history] == ["ADD", "UPDATE"]
    assert (
        history[1]["old_memory"] == got["memory"] and history[1]["new_memory"] == "Alice lives in Porto now"
    )

    assert (await call(mem0.delete, updated["id"])) == {"message": "Memory deleted successfully!"}
    with pytest.raises(MemoryNotFoundError):
        await call(mem0.get, updated["id"])
    with pytest.raises(MemoryNotFoundError):
        await call(mem0.get, memory_id)  # its current version is gone


async def test_admin_key_names_the_tenant_in_the_url_and_tenants_stay_apart(api: Api) -> None:
    admin = await client_for(api.url + "/mem0/globex", ADMIN_KEY)
    result = await call(admin.add, "Dana prefers green tea", user_id="dana", async_mode=False)
    assert [r["event"] for r in result["results"]] == ["ADD"]
    assert "tea" in (await call(admin.get, result["results"][0]["id"]))["memory"]

    other = await client_for(api.url + "/mem0", await api.tenant_key("initech"))
    assert (await call(other.get_all, filters={"user_id": "dana"}))["results"] == []
    with pytest.raises(MemoryNotFoundError):
        await call(other.get, result["results"][0]["id"])

    # A tenant key cannot name another tenant in the URL, nor can the admin key name none.
    status, body = await api.with_key(await api.tenant_key("initech")).get("/mem0/globex/v1/ping/")
    assert status == 403 and body["error"]["code"] == "forbidden"
    with pytest.raises(ValueError, match="tenant in the URL"):
        await client_for(api.url + "/mem0", ADMIN_KEY)


async def test_bad_input_is_a_4xx_in_the_nodes_error_shape(api: Api) -> None:
    headers = {"Authorization": f"Token {await api.tenant_key('acme')}"}
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/mem0/v3/memories/add/", {"messages": "not a list", "user_id": "u"}),
        ("POST", "/mem0/v3/memories/add/", {"messages": [{"role": "user", "content": "x"}]}),
        ("POST", "/mem0/v3/memories/add/", {"messages": [{"role": "robot", "content": "x"}], "user_id": "u"}),
        ("POST", "/mem0/v3/memories/add/", {"messages": [], "user_id": "u", "surprise": 1}),
        ("POST", "/mem0/v3/memories/search/", {"query": "x", "filters": {"OR": [{"user_id": "u"}]}}),
        ("POST", "/mem0/v3/memories/search/", {"query": 5}),
        ("POST", "/mem0/v3/memories/?page=0", {}),
        ("PUT", "/mem0/v1/memories/m-nope/", {"text": "x"}),
        ("GET", "/mem0/v1/memories/..%2f/", None),
        ("POST", "/mem0/v3/memories/add/", {"messages": [{"content": 5}], "user_id": "u"}),
        ("POST", "/mem0/v3/memories/add/", {"messages": [{"content": "x"}], "user_id": 7}),
        (
            "POST",
            "/mem0/v3/memories/add/",
            {"messages": [{"content": "x"}], "user_id": "u", "timestamp": "nope"},
        ),
        (
            "POST",
            "/mem0/v3/memories/add/",
            {"messages": [{"content": "x"}], "user_id": "u", "metadata": {"mem0": 1}},
        ),
        (
            "POST",
            "/mem0/v3/memories/add/",
            {"messages": [{"content": "x"}], "filters": {"user_id": "a"}, "user_id": "b"},
        ),
        ("POST", "/mem0/v3/memories/search/", {"query": "x", "filters": {"AND": "x"}}),
        ("POST", "/mem0/v3/memories/search/", {"query": "x", "top_k": True}),
        ("POST", "/mem0/v3/memories/?page_size=abc", {}),
        ("POST", "/mem0/v3/memories/", [1, 2]),
        ("PUT", "/mem0/v1/memories/m-nope/", {}),
        ("DELETE", "/mem0/v1/memories/m-nope/?delete_linked=maybe", None),
        ("GET", "/mem0/v1/memories/m-nope/history/", None),
        ("POST", "/mem0/v9/memories/", {}),
    ]
    for method, path, body in cases:
        status, answer = await api.request(method, path, json=body, headers=headers)
        assert 400 <= status < 500, (path, body, status, answer)
        assert set(answer["error"]) == {"code", "message"}
    status, answer = await api.request(
        "POST",
        "/mem0/v3/memories/add/",
        data=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert status == 400 and answer["error"]["code"] == "invalid_input"
    status, answer = await api.request(
        "POST", "/mem0/v3/memories/", json={}, headers={"Authorization": "Token nope"}
    )
    assert status == 401


async def test_mem0_through_the_gateway_reaches_the_tenants_shard(
    gateway: tuple[Api, dict[str, Api], Any],  # noqa: F811
) -> None:
    gw, shards, app = gateway
    from gateway.app import GATEWAY

    key = await gw.tenant_key("tenant-3")
    mem0 = await client_for(gw.url + "/mem0", key)  # the gateway finds the key's tenant
    await call(mem0.add, "Maya adopted a greyhound named Biscuit", user_id="maya")
    owner = shards[app[GATEWAY].ring.shard_for("tenant-3")]
    assert (await owner.consolidate("tenant-3"))["done"]
    hits = await call(mem0.search, "greyhound", filters={"user_id": "maya"})
    assert "Biscuit" in hits["results"][0]["memory"]
    by_url = await client_for(gw.url + "/mem0/tenant-3", ADMIN_KEY)
    history = await call(by_url.history, hits["results"][0]["id"])
    assert [h["event"] for h in history] == ["ADD"]
