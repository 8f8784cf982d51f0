"""Bad input and abuse against every route of a real node (issue 15).

Routes are enumerated from the app's router, so a new route is covered (or must be listed
as exempt) without anyone remembering to add it here. Every hostile request must get a 4xx
with the JSON error shape, store nothing, and leave the node serving. Limits (rate, ingest
volume, quota, concurrency, connections, header and body deadlines) are tested with small
values set per test; nothing asserts a timing.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from memorose.client import AsyncMemoroseClient, RateLimitedError, RetryPolicy
from memorose.errors import InvalidInput
from memorose.models import parse_timestamp, validate_event_id, validate_tenant_id
from node.runner import RunningNode
from tests.conftest import ADMIN_KEY, Api, NodeStarter, scripted_server, wait_until

#: Not API routes: their own auth (dashboard session, metrics token) or deliberately open
#: (probes, and the API's OpenAPI document and its docs page).
EXEMPT_PREFIXES = ("/healthz", "/readyz", "/metrics", "/dashboard", "/openapi.json", "/docs")
PATH_VALUES = {"tenant_id": "victim", "memory_id": "m-1", "raft_address": "127.0.0.1:1"}

#: Routes that act on no tenant (or on the body's): a bad ``?tenant_id=`` is not read.
#: A new route is checked strictly until it is listed here.
TENANTLESS = {
    "/api/v1/admin/tenants",
    "/api/v1/admin/reembed",
    "/api/v1/admin/reindex",
    "/api/v1/admin/cluster/members",
    "/api/v1/cluster/status",
    "/api/v1/cluster/overview",
    "/api/v1/whoami",
}

BAD_IDS = [
    "t1\n",
    "t1\r\n",
    "\nt1",
    "a" * 129,
    "",
    "é",
    "t\u202e1",  # right-to-left override
    "t\u00001",
    "../x",
    "a b",
    "x' OR '1'='1",
    "*",
    "a..b",
]

DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJ = b'{"tenant_id": "victim", "metadata": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3000 + b"}"

#: Bodies for every POST route (sent with the admin key); each must be a 4xx.
BAD_BODIES: list[tuple[str, bytes]] = [
    ("malformed", b'{"tenant_id": "victim",'),
    ("array", b"[1, 2]"),
    ("string", b'"victim"'),
    ("null", b"null"),
    ("not utf-8", b'{"tenant_id": "\xff\xfe"}'),
    ("deep array", DEEP),
    ("deep object", DEEP_OBJ),
    ("NaN", b'{"tenant_id": "victim", "x": NaN}'),
    ("wrong types", b'{"tenant_id": 5, "events": "x", "query": [], "keys": 1, "state": {}}'),
    ("unknown field", b'{"tenant_id": "victim", "zz_unknown": 1}'),
    ("lone surrogate", b'{"tenant_id": "vic\\ud800tim"}'),
    ("NUL id", b'{"tenant_id": "vic\\u0000tim"}'),
    ("RTL id", b'{"tenant_id": "vic\\u202etim"}'),
    ("newline id", b'{"tenant_id": "victim\\n"}'),
    ("injection", b'{"tenant_id": "victim\' OR 1=1 --", "query": "$where"}'),
    ("huge", b'{"tenant_id": "victim", "pad": "' + b"x" * 80_000 + b'"}'),
]


def routes(node: RunningNode) -> list[tuple[str, str]]:
    """(method, path template) of every route the node serves."""
    out = []
    for route in node.runner.app.router.routes():  # type: ignore[union-attr]
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path:
            out.append((route.method, path))
    return sorted(set(out))


def api_routes(node: RunningNode) -> list[tuple[str, str]]:
    return [(m, p) for m, p in routes(node) if not p.startswith(EXEMPT_PREFIXES)]


def fill(template: str, **values: str) -> str:
    """A concrete path: each {param} (with or without a regex) from ``values``/PATH_VALUES."""
    from urllib.parse import quote

    def one(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        return quote(values.get(name, PATH_VALUES.get(name, "x")), safe="")

    path = re.sub(r"\{([^}]+)\}", one, template)
    return path + ("&" if "?" in path else "?") + "tenant_id=" + quote(values.get("query_tenant", "victim"))


def is_json_error(status: int, body: Any, expected: int | None = None) -> bool:
    shape = (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("code"), str)
        and isinstance(body["error"].get("message"), str)
    )
    return shape and (status == expected if expected else 400 <= status < 500)


async def stored(api: Api, tenant: str = "victim") -> tuple[int, int]:
    status, body = await api.with_key(ADMIN_KEY).get(f"/api/v1/status?tenant_id={tenant}")
    assert status == 200, body
    return body["l0_events"], body["l1_memories"]


async def still_serving(api: Api) -> None:
    admin = api.with_key(ADMIN_KEY)
    assert (await admin.get("/readyz"))[0] == 200
    assert (await admin.ingest("canary", "still alive"))["seq"] >= 1


# -- the route matrix -------------------------------------------------------------------------
async def test_every_route_is_either_covered_or_exempt(start: NodeStarter) -> None:
    node, _ = await start()
    every = routes(node)
    assert len(api_routes(node)) >= 30, "the router enumeration found too few routes"
    uncovered = [r for r in every if not r[1].startswith(("/api/", "/mem0/", *EXEMPT_PREFIXES))]
    assert not uncovered, f"routes neither under /api/ or /mem0/ nor exempt: {uncovered}"


async def test_auth_comes_before_parsing_on_every_route(start: NodeStarter) -> None:
    node, api = await start()
    other_key = await api.tenant_key("other")
    await api.tenant_key("victim")
    failures = []
    junk = json.dumps({"zz_unknown": 1, "tenant_id": "victim"}).encode()
    for method, template in api_routes(node):
        path = fill(template)
        for label, key, expected in [("no key", None, 401), ("bad key", "nope", 401)]:
            status, body = await api.with_key(key).request(  # type: ignore[arg-type]
                method, path, data=junk, headers={"Content-Type": "application/json"}
            )
            if not is_json_error(status, body, expected) or "allowed" in json.dumps(body):
                failures.append(f"{label} {method} {template}: {status} {str(body)[:120]}")
        status, body = await api.with_key(other_key).request(
            method, path, data=junk, headers={"Content-Type": "application/json"}
        )
        if template.startswith("/api/v1/admin/") or (method == "DELETE" and "/tenants/" in template):
            ok = is_json_error(status, body, 403)
        elif template in ("/api/v1/whoami", "/api/v1/cluster/status", "/mem0/v1/ping/"):
            ok = status == 200  # tenant-less reads any valid key may make (ping: the key's own tenant)
        else:
            ok = is_json_error(status, body)
        if not ok:
            failures.append(f"other tenant's key {method} {template}: {status} {str(body)[:120]}")
    assert not failures, "\n".join(failures)
    assert await stored(api) == (0, 0)
    await still_serving(api)


async def test_hostile_bodies_and_ids_on_every_route(start: NodeStarter) -> None:
    node, api = await start(limits={"max_body_bytes": 64 * 1024})
    failures = []
    json_type = {"Content-Type": "application/json"}
    for method, template in api_routes(node):
        if method == "POST":
            for label, body in BAD_BODIES:
                status, answer = await api.request(method, fill(template), data=body, headers=json_type)
                if not is_json_error(status, answer):
                    failures.append(f"{label} {method} {template}: {status} {str(answer)[:150]}")
            status, answer = await api.request(
                method,
                fill(template),
                data=b'{"tenant_id": "victim"}',
                headers={"Content-Type": "text/plain"},
            )
            if not is_json_error(status, answer, 415):
                failures.append(f"text/plain {method} {template}: {status} {str(answer)[:150]}")
        for bad in BAD_IDS:
            params = re.findall(r"\{([^}:]+)", template)
            values = {p: bad for p in params} | {"query_tenant": bad}
            status, answer = await api.request(method, fill(template, **values))
            if not params and template in TENANTLESS:
                continue  # no tenant in the query to get wrong
            if not is_json_error(status, answer):
                failures.append(f"id {bad!r} {method} {template}: {status} {str(answer)[:150]}")
    assert not failures, "\n".join(failures)
    assert await stored(api) == (0, 0), "a rejected request stored something"
    await still_serving(api)


async def test_wrong_methods_get_a_json_405(start: NodeStarter) -> None:
    node, api = await start()
    by_path: dict[str, set[str]] = {}
    for method, template in api_routes(node):
        by_path.setdefault(template, set()).add(method)
    failures = []
    for template, methods in by_path.items():
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - methods):
            status, body = await api.request(method, fill(template))
            if not is_json_error(status, body, 405):
                failures.append(f"{method} {template}: {status} {str(body)[:100]}")
    assert not failures, "\n".join(failures)


# -- specific bad-input classes of issue 15 ----------------------------------------------------
def test_ids_must_match_their_pattern_exactly() -> None:
    for bad in ["t1\n", "t1\r", "\u0661", "a" * 129]:
        with pytest.raises(InvalidInput):
            validate_tenant_id(bad)
        with pytest.raises(InvalidInput):
            validate_event_id(bad)
    assert validate_tenant_id("t1") == "t1"
    with pytest.raises(InvalidInput):
        parse_timestamp(10**400)


async def test_bad_values_are_400_and_store_nothing(api: Api) -> None:
    huge = "1" + "0" * 400
    cases = [
        b'{"tenant_id": "victim", "stream_id": "s", "content": "x", "timestamp": ' + huge.encode() + b"}",
        b'{"tenant_id": "victim", "query": "x", "as_of": ' + huge.encode() + b"}",
        b'{"tenant_id": "victim", "stream_id": "s", "content": ""}',
        b'{"tenant_id": "victim", "stream_id": "s", "content": " \\n\\t "}',
        b'{"tenant_id": "victim\\n", "stream_id": "s", "content": "x"}',
        b'{"tenant_id": "victim", "stream_id": "s\\n", "content": "x"}',
        b'{"tenant_id": "victim", "stream_id": "s", "content": "x", "event_id": "e1\\n"}',
    ]
    for body in cases:
        path = "/api/v1/retrieve" if b"as_of" in body else "/api/v1/events"
        status, answer = await api.request(
            "POST", path, data=body, headers={"Content-Type": "application/json"}
        )
        assert is_json_error(status, answer, 400), (body[:80], status, answer)
    assert await stored(api) == (0, 0)
    # A missing Content-Type is tolerated (documented); the body must still be JSON.
    status, _ = await api.request(
        "POST",
        "/api/v1/events",
        data=b'{"tenant_id": "ct", "stream_id": "s", "content": "no type"}',
        skip_auto_headers=("Content-Type",),
    )
    assert status == 202
    status, answer = await api.request(
        "POST", "/api/v1/events", data=b'{"tenant_id": "ct", "stream_id": "s", "content": "octets"}'
    )
    assert is_json_error(status, answer, 415), (status, answer)  # aiohttp's default octet-stream


async def test_reindex_body_is_validated_and_scoped(api: Api) -> None:
    await api.ingest("victim", "something to index")
    for body in [b'{"everything": true}', b'{"tenant_id": "a/b"}', b"[1]"]:
        status, answer = await api.request(
            "POST", "/api/v1/admin/reindex", data=body, headers={"Content-Type": "application/json"}
        )
        assert is_json_error(status, answer, 400), (body, status, answer)
    status, answer = await api.post("/api/v1/admin/reindex", {"tenant_id": "nobody-here"})
    assert is_json_error(status, answer, 404)
    status, answer = await api.post("/api/v1/admin/reindex", {"tenant_id": "victim"})
    assert status == 200 and answer["rebuilt"], answer
    assert await api.retrieve("victim", "something to index")


# -- /metrics ---------------------------------------------------------------------------------
async def test_metrics_name_no_tenant_by_default(api: Api) -> None:
    await api.ingest("secret-customer-42", "hello")
    status, text = await api.with_key(None).get("/metrics")  # type: ignore[arg-type]
    assert status == 200
    assert "secret-customer-42" not in text


async def test_metrics_token_when_set(start: NodeStarter) -> None:
    token = "metrics-token-0123456789"
    _, api = await start(metrics={"token": token})
    status, body = await api.with_key(None).get("/metrics")  # type: ignore[arg-type]
    assert is_json_error(status, body, 401)
    assert (await api.with_key("wrong-token-0123456789").get("/metrics"))[0] == 401
    assert (await api.with_key(token).get("/metrics"))[0] == 200
    assert (await api.with_key(ADMIN_KEY).get("/metrics"))[0] == 200


# -- limits -----------------------------------------------------------------------------------
async def test_request_rate_is_429_with_retry_after(start: NodeStarter) -> None:
    _, api = await start(limits={"tenant_requests_per_sec": 0.5, "tenant_request_burst": 3})
    tenant = api.with_key(await api.tenant_key("busy"))
    answers = []
    for _ in range(6):
        async with api.session.get(
            api.url + "/api/v1/status?tenant_id=busy", headers={"Authorization": f"Bearer {tenant.key}"}
        ) as resp:
            answers.append((resp.status, resp.headers.get("Retry-After"), await resp.json()))
    limited = [a for a in answers if a[0] == 429]
    assert limited, answers
    status, retry_after, body = limited[0]
    assert is_json_error(status, body, 429) and body["error"]["code"] == "rate_limited"
    assert retry_after is not None and int(retry_after) >= 1
    # Another tenant and the admin key are not affected.
    assert (await api.get("/api/v1/status?tenant_id=busy"))[0] == 200


async def test_ingest_volume_is_429(start: NodeStarter) -> None:
    limits = {"tenant_ingest_bytes_per_sec": 100, "tenant_ingest_burst_bytes": 4096}
    _, api = await start(limits=limits)
    tenant = api.with_key(await api.tenant_key("loud"))
    codes = []
    for i in range(4):
        status, body = await tenant.post(
            "/api/v1/events", {"tenant_id": "loud", "stream_id": "s", "content": f"{i} " + "x" * 1500}
        )
        codes.append(body["error"]["code"] if status == 429 else status)
    assert codes[0] == 202 and "ingest_rate_limited" in codes, codes


async def test_storage_quota(start: NodeStarter) -> None:
    _, api = await start(limits={"tenant_max_events": 2, "tenant_max_bytes": 10_000})
    await api.ingest("small", "one")
    await api.ingest("small", "two")
    status, body = await api.post("/api/v1/events", {"tenant_id": "small", "stream_id": "s", "content": "3"})
    assert is_json_error(status, body, 507) and body["error"]["code"] == "quota_events"
    status, body = await api.post(
        "/api/v1/events", {"tenant_id": "big", "stream_id": "s", "content": "y" * 20_000}
    )
    assert is_json_error(status, body, 507) and body["error"]["code"] == "quota_bytes"
    assert await stored(api, "small") == (2, 0)
    await still_serving(api)


async def _raw(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _partial_post(api: Api) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose POST announced 100 body bytes and sent one."""
    reader, writer = await _raw(api.url)
    writer.write(
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + ADMIN_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    return reader, writer


async def test_concurrency_cap_is_503(start: NodeStarter) -> None:
    _, api = await start(limits={"max_concurrent_requests": 1, "body_timeout_secs": 20})
    # One request admitted and held: its body never finishes arriving.
    _, writer = await _partial_post(api)

    async def overloaded() -> bool:
        status, body = await api.get("/api/v1/status?tenant_id=victim")
        return status == 503 and body["error"]["code"] == "overloaded"

    await wait_until(overloaded, what="the second request refused")
    writer.close()
    await wait_until(lambda: _ok(api), what="the node serving again")


async def _ok(api: Api) -> bool:
    return (await api.get("/api/v1/status?tenant_id=victim"))[0] == 200


async def test_body_timeout_is_408(start: NodeStarter) -> None:
    _, api = await start(limits={"body_timeout_secs": 0.3})
    reader, writer = await _partial_post(api)
    answer = await asyncio.wait_for(reader.read(), 30)
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer
    writer.close()
    assert await stored(api) == (0, 0)


async def test_a_client_gone_mid_body_is_counted_as_closed_not_as_a_server_error(api: Api) -> None:
    """The body never arrives because the client disconnected: nobody to answer, nothing
    stored, and /metrics counts it as 499 (client closed), not as a 500."""
    _, writer = await _partial_post(api)
    writer.close()

    async def counted(status: str) -> bool:
        _, text = await api.get("/metrics")
        return any(
            line.startswith("memorose_http_requests_total{")
            and 'route="/api/v1/events"' in line
            and f'status="{status}"' in line
            for line in str(text).splitlines()
        )

    await wait_until(lambda: counted("499"), what="the dropped request counted")
    assert not await counted("500")
    assert await stored(api) == (0, 0)
    await still_serving(api)


async def test_slow_header_connections_are_closed(start: NodeStarter) -> None:
    _, api = await start(limits={"header_timeout_secs": 0.5})
    conns = [await _raw(api.url) for _ in range(20)]
    for _, writer in conns:
        writer.write(b"GET /api/v1/status?tenant_id=victim HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
    # Every one is closed by the node (EOF), without ever getting an answer.
    answers = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in conns)), 30)
    assert all(a == b"" for a in answers)
    for _, writer in conns:
        writer.close()
    await still_serving(api)


async def test_connection_cap(start: NodeStarter) -> None:
    _, api = await start(limits={"max_connections": 3, "header_timeout_secs": 30})
    held = [await _raw(api.url) for _ in range(3)]
    reader, writer = await _raw(api.url)
    answer = await asyncio.wait_for(reader.read(), 30)
    assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
    writer.close()
    for _, w in held:
        w.close()
    await wait_until(lambda: _ok(api), what="connections freed")


# -- the SDK ----------------------------------------------------------------------------------
@pytest.fixture
async def limiter() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A scripted server: 429 with Retry-After twice, then a tenant status."""
    counts = {"limited": 0, "served": 0}

    async def handler(request: web.Request) -> web.Response:
        if counts["limited"] < 2:
            counts["limited"] += 1
            body = {"error": {"code": "rate_limited", "message": "slow down"}}
            return web.json_response(body, status=429, headers={"Retry-After": "0.05"})
        counts["served"] += 1
        return web.json_response(
            {"tenant_id": "t", "l0_events": 0, "l1_memories": 0, "pending_events": 0, "state": "active"}
        )

    async with scripted_server(handler) as url:
        yield url, counts


async def test_sdk_retries_429_honouring_retry_after(limiter: tuple[str, dict[str, int]]) -> None:
    url, counts = limiter
    async with AsyncMemoroseClient(url, api_key=ADMIN_KEY, retry=RetryPolicy(max_attempts=4)) as client:
        await client.status("t")
    assert counts == {"limited": 2, "served": 1}
    counts["limited"] = 0
    async with AsyncMemoroseClient(url, api_key=ADMIN_KEY, retry=RetryPolicy(max_attempts=2)) as client:
        with pytest.raises(RateLimitedError):
            await client.status("t")
    # The delay before a retry is at least what the server asked for (no timing measured).
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
    assert policy.delay(0, retry_after=5.0) >= 5.0
    assert policy.delay(0, retry_after=3600.0) == policy.max_retry_after
