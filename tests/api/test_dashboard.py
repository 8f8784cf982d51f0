"""The dashboard's HTTP side on a real in-process node: the page and every file it loads,
sign-in for a session cookie, the CSRF rule for writes, tenant isolation through the proxy,
and the read endpoints added for it (whoami, status/detail, events/lookup, retrieve explain)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from dashboard.sessions import SessionStore
from memorose.storage.reader import hash_key
from tests.conftest import ADMIN_KEY, Api


class Browser:
    """A cookie-keeping client that talks to the dashboard the way the page does."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.csrf = ""

    async def call(
        self, method: str, path: str, json: Any = None, csrf: bool = True, **headers: str
    ) -> tuple[int, Any]:
        if csrf and method != "GET":
            headers.setdefault("X-CSRF-Token", self.csrf)
        async with self.session.request(
            method, self.url + path, json=json, headers=headers, allow_redirects=False
        ) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body

    async def sign_in(self, key: str) -> tuple[int, Any]:
        status, body = await self.call("POST", "/dashboard/session", {"key": key})
        if status == 200:
            self.csrf = body["csrf_token"]
        return status, body


@pytest.fixture
async def browser(api: Api) -> AsyncIterator[Browser]:
    # unsafe=True: the jar keeps cookies of an IP-address host (127.0.0.1) like a browser does.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Browser(api.url, session)


async def test_page_and_every_file_it_loads_with_and_without_the_slash(api: Api) -> None:
    for path in ("/dashboard", "/dashboard/"):
        status, page = await api.get(path)
        assert status == 200 and "<title>Memorose dashboard</title>" in page
        assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page)
        assert len(assets) >= 5, assets
        for asset in assets:
            status, _ = await api.get(asset)
            assert status == 200, asset
    status, app = await api.get("/dashboard/static/app.js")
    modules = re.findall(r'from "\./(js/[a-z]+\.js)"', app)
    assert len(modules) >= 7
    for module in modules:
        status, _ = await api.get("/dashboard/static/" + module)
        assert status == 200, module
    status, body = await api.get("/dashboard/static/nope.js")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_sign_in_sets_an_httponly_strict_cookie_and_never_returns_the_key(api: Api) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as session,
        session.post(api.url + "/dashboard/session", json={"key": ADMIN_KEY}) as resp,
    ):
        assert resp.status == 200
        cookie = resp.headers["Set-Cookie"]
        body = await resp.json()
        csp = resp.headers["Content-Security-Policy"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert re.search(r"Max-Age=\d+", cookie)
    assert ADMIN_KEY not in cookie and ADMIN_KEY not in str(body)
    assert body["role"] == "admin" and body["csrf_token"]
    assert "script-src 'self'" in csp


@pytest.mark.parametrize(
    "payload, status",
    [
        ({"key": "adm_wrong"}, 401),
        ({"key": ""}, 400),
        ({"key": 12}, 400),
        ({"key": "x" * 600}, 400),
        ({"key": ADMIN_KEY, "extra": 1}, 400),
        ([ADMIN_KEY], 400),
        ("not json", 400),
    ],
)
async def test_bad_sign_in_is_a_4xx_with_a_json_error(browser: Browser, payload: Any, status: int) -> None:
    if payload == "not json":
        async with browser.session.post(browser.url + "/dashboard/session", data=b"{nope") as resp:
            got, body = resp.status, await resp.json()
    else:
        got, body = await browser.call("POST", "/dashboard/session", payload)
    assert got == status and body["error"]["code"]
    assert not [c.key for c in browser.session.cookie_jar if c.key.startswith("memorose_session")]


async def test_session_proxy_csrf_and_sign_out(browser: Browser) -> None:
    status, body = await browser.call("GET", "/dashboard/session")
    assert status == 200 and body == {"signed_in": False}
    status, body = await browser.call("GET", "/dashboard/api/cluster/status")
    assert status == 401 and body["error"]["code"] == "unauthorized"

    assert (await browser.sign_in(ADMIN_KEY))[0] == 200
    status, body = await browser.call("GET", "/dashboard/api/cluster/status")
    assert status == 200 and body["role"] == "leader" and body["role_since"] > 0
    event = {"tenant_id": "acme", "stream_id": "s", "content": "Ada prefers tea over coffee"}
    status, body = await browser.call("POST", "/dashboard/api/events", event, csrf=False)
    assert status == 403 and body["error"]["code"] == "csrf"
    status, body = await browser.call("POST", "/dashboard/api/events", event, **{"X-CSRF-Token": "forged"})
    assert status == 403
    status, body = await browser.call("POST", "/dashboard/api/events", event, Origin="http://evil.example")
    assert status == 403
    status, body = await browser.call("POST", "/dashboard/api/events", event)
    assert status == 202, body
    status, body = await browser.call("GET", "/dashboard/api/../healthz")
    assert status in (400, 404)
    status, body = await browser.call("GET", "/dashboard/api/memories%2F..%2F..%2Fhealthz")
    assert status == 400 and body["error"]["code"] == "invalid_input"
    for path in ("/dashboard/api/cluster/status", "/dashboard/session"):
        status, body = await browser.call("PUT", path, {})
        assert status == 405 and body["error"]["code"] == "method_not_allowed"

    status, _ = await browser.call("DELETE", "/dashboard/session", csrf=False)
    assert status == 403  # signing out is a write too
    status, body = await browser.call("DELETE", "/dashboard/session")
    assert status == 200 and body == {"signed_out": True}
    status, _ = await browser.call("GET", "/dashboard/api/cluster/status")
    assert status == 401


async def test_a_tenant_session_sees_only_its_tenant(api: Api, browser: Browser) -> None:
    await api.ingest("acme", "Acme's launch is on Friday", event_id="a1")
    await api.ingest("globex", "Globex secret plan", event_id="g1")
    await api.consolidate("globex")
    status, body = await api.get("/api/v1/memories?tenant_id=globex")
    globex_memory = body["memories"][0]["id"]
    key = await api.tenant_key("acme")

    status, body = await browser.sign_in(key)
    assert status == 200 and body["role"] == "tenant" and body["tenant_id"] == "acme"
    status, body = await browser.call("GET", "/dashboard/api/whoami")
    assert body == {"role": "tenant", "tenant_id": "acme"}
    status, body = await browser.call("GET", "/dashboard/api/status/detail?tenant_id=acme")
    assert status == 200 and body["l0_events"] == 1
    for path in (
        "/dashboard/api/status/detail?tenant_id=globex",
        "/dashboard/api/events/lookup?tenant_id=globex&ids=g1",
        "/dashboard/api/admin/tenants",
        "/dashboard/metrics",
    ):
        status, body = await browser.call("GET", path)
        assert status == 403, path
        assert "Globex" not in str(body)
    status, body = await browser.call("GET", f"/dashboard/api/memories/{globex_memory}?tenant_id=acme")
    assert status == 404
    status, body = await browser.call("GET", "/dashboard/api/events/lookup?tenant_id=acme&ids=a1,g1")
    assert [e["event_id"] for e in body["events"]] == ["a1"] and body["missing"] == ["g1"]


async def test_detail_counts_memories_by_state_and_lookup_validates(api: Api) -> None:
    await api.ingest("acme", "The office is in Leeds", event_id="e1")
    await api.consolidate("acme")
    await api.ingest("acme", "Pending thing about Zurich trams", event_id="e2")
    status, body = await api.get("/api/v1/status/detail?tenant_id=acme")
    assert status == 200
    assert body["memories"]["current"] >= 1 and body["memories"]["complete"] is True
    assert body["memories"]["superseded"] == 0 and body["memories"]["archived"] == 0
    assert body["l0_events"] == 2
    assert body["consolidation_lag_seconds"] >= 0
    status, body = await api.get("/api/v1/whoami")
    assert body == {"role": "admin", "tenant_id": None}
    for query in (
        "tenant_id=acme&ids=",
        "tenant_id=acme&ids=" + ",".join(f"e{i}" for i in range(101)),
        "tenant_id=acme&ids=bad%20id",
        "tenant_id=..%2Fx&ids=e1",
    ):
        status, body = await api.get("/api/v1/events/lookup?" + query)
        assert 400 <= status < 500 and body["error"]["code"], query
    status, body = await api.get("/api/v1/status/detail?tenant_id=Bad!Tenant")
    assert status == 400


async def test_retrieve_explain_returns_the_features_behind_each_score(api: Api) -> None:
    await api.ingest("acme", "Ada loves hiking in the Alps", event_id="h1")
    await api.consolidate("acme")
    [hit, *_] = await api.retrieve("acme", "hiking Alps", explain=True)
    assert hit["features"]["bm25"] > 0 and hit["score"] > 0
    [plain, *_] = await api.retrieve("acme", "hiking Alps")
    assert "features" not in plain
    status, body = await api.post("/api/v1/retrieve", {"tenant_id": "acme", "query": "x", "explain": "yes"})
    assert status == 400 and body["error"]["code"] == "invalid_input"


async def test_metrics_of_known_targets_only(browser: Browser) -> None:
    await browser.sign_in(ADMIN_KEY)
    status, body = await browser.call("GET", "/dashboard/metrics")
    assert status == 200 and "memorose_raft_recent_commit_p50_seconds" in body["text"]
    status, body = await browser.call("GET", "/dashboard/metrics?target=http://169.254.169.254")
    assert status == 400 and body["error"]["code"] == "invalid_input"


def test_sessions_expire_and_are_bounded() -> None:
    now = [1000.0]
    store = SessionStore(ttl=60, limit=2, clock=lambda: now[0])
    first = store.create("*", "k1")
    assert store.get(first.token) is first and store.get("forged") is None
    now[0] += 61
    assert store.get(first.token) is None
    a, b, c = (store.create("t", f"k{i}") for i in range(3))
    assert len(store) == 2 and store.get(a.token) is None and store.get(c.token) is c
    store.delete(c.token)
    assert store.get(c.token) is None and store.get(b.token) is b


async def test_a_session_ends_when_its_tenant_key_is_revoked(api: Api, browser: Browser) -> None:
    await api.ingest("acme", "Acme's launch is on Friday")
    key = await api.tenant_key("acme")
    assert (await browser.sign_in(key))[0] == 200
    status, _ = await api.delete("/api/v1/tenants/acme")  # revokes its keys
    assert status == 200
    status, body = await browser.call("GET", "/dashboard/api/status?tenant_id=acme")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await browser.call("GET", "/dashboard/session")
    assert body == {"signed_in": False}


async def test_cluster_overview_on_a_node_is_admin_only(api: Api) -> None:
    status, body = await api.get("/api/v1/cluster/overview")
    assert status == 200 and body["role"] == "leader"
    [shard] = body["shards"]
    [node] = shard["nodes"]
    assert node["reachable"] and shard["leader"] == node["url"]
    # Lag is against Raft's applied index: the new leader's no-op entry never reaches the
    # store, so commit minus the store's applied index would show a fresh leader as lagging.
    assert node["applied_index"] < node["commit_index"] == node["raft_applied_index"]
    assert node["lag"] == 0
    await api.ingest("acme", "hello")
    key = await api.tenant_key("acme")
    status, body = await api.with_key(key).get("/api/v1/cluster/overview")
    assert status == 403 and body["error"]["code"] == "forbidden"


async def test_revoking_a_key_admin_only_and_only_the_tenants_own(api: Api, browser: Browser) -> None:
    await api.ingest("acme", "Acme's launch is on Friday")
    await api.ingest("globex", "Globex secret plan")
    revoked, kept, other = [await api.tenant_key(t) for t in ("acme", "acme", "globex")]
    _, body = await api.get("/api/v1/admin/tenants/acme/keys")
    revoked_id = next(k["key_id"] for k in body["keys"] if k["key_hash"] == hash_key(revoked))
    _, body = await api.get("/api/v1/admin/tenants/globex/keys")
    [other_id] = [k["key_id"] for k in body["keys"]]

    status, body = await api.with_key(kept).delete(f"/api/v1/admin/tenants/acme/keys/{revoked_id}")
    assert status == 403 and body["error"]["code"] == "forbidden"  # admin only
    status, body = await api.delete(f"/api/v1/admin/tenants/acme/keys/{other_id}")
    assert status == 404 and body["error"]["code"] == "not_found"  # another tenant's key id
    status, body = await api.delete("/api/v1/admin/tenants/acme/keys/key-unknown")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api.delete("/api/v1/admin/tenants/acme/keys/bad%20id")
    assert status == 400 and body["error"]["code"] == "invalid_input"

    status, body = await api.delete(f"/api/v1/admin/tenants/acme/keys/{revoked_id}")
    assert status == 200 and body == {"tenant_id": "acme", "key_id": revoked_id, "revoked": True}
    status, body = await api.with_key(revoked).get("/api/v1/status?tenant_id=acme")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    for key, tenant in ((kept, "acme"), (other, "globex")):
        status, _ = await api.with_key(key).get(f"/api/v1/status?tenant_id={tenant}")
        assert status == 200
    status, _ = await api.delete(f"/api/v1/admin/tenants/acme/keys/{revoked_id}")
    assert status == 404  # already revoked

    # the keys list the dashboard shows: ids and times, never a key's hash
    await browser.sign_in(ADMIN_KEY)
    status, body = await browser.call("GET", "/dashboard/api/admin/tenants/acme/keys")
    assert status == 200 and [k["key_id"] for k in body["keys"]] != [revoked_id]
    assert len(body["keys"]) == 1 and "key_hash" not in str(body) and hash_key(kept) not in str(body)


async def test_memory_listing_filters_superseded_and_as_of_on_the_server(api: Api) -> None:
    await api.ingest("acme", "Alice lives in Paris", event_id="paris", timestamp="2023-01-10T00:00:00Z")
    await api.consolidate("acme")
    await api.ingest("acme", "Alice moved to Berlin", event_id="berlin", timestamp="2023-06-01T00:00:00Z")
    await api.consolidate("acme")

    async def listed(query: str) -> list[str]:
        status, body = await api.get("/api/v1/memories?tenant_id=acme&limit=1&" + query)
        assert status == 200, body
        return [m["content"] for m in body["memories"]]

    assert len(await listed("")) == 1  # the default lists everything, a page at a time
    assert await listed("include_superseded=false") == ["Alice moved to Berlin"]  # a full page
    # as_of compares times, not text: "+00:00", "Z", a naive time and epoch seconds agree
    for as_of in ("2023-03-01T00:00:00%2B00:00", "2023-03-01T00:00:00Z", "2023-03-01T00:00:00", "1677628800"):
        assert await listed(f"include_superseded=false&as_of={as_of}") == ["Alice lives in Paris"], as_of
    assert await listed("include_superseded=0&as_of=2022-01-01T00:00:00Z") == []
    status, body = await api.get("/api/v1/memories?tenant_id=acme&include_superseded=true&as_of=2023-03-01")
    assert [m["content"] for m in body["memories"]] == ["Alice lives in Paris"]  # nothing newer than as_of
    for query in ("include_superseded=maybe", "as_of=yesterday", "as_of=99999999999999", "as_of=nan"):
        status, body = await api.get("/api/v1/memories?tenant_id=acme&" + query)
        assert status == 400 and body["error"]["code"] == "invalid_input", query
