"""Every kind of bad input gets a 4xx with a JSON error body, never a 500, and stores nothing."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import NodeStarter

EV = "/api/v1/events"
BATCH = "/api/v1/events/batch"
RET = "/api/v1/retrieve"


def good_event(**changes: Any) -> dict[str, Any]:
    return {"tenant_id": "victim", "stream_id": "s1", "content": "hello there", **changes}


def raw(text: str) -> bytes:
    return text.encode()


# (description, method, path, body: dict -> JSON, bytes -> raw, None -> no body)
CASES: list[tuple[str, str, str, Any]] = [
    ("empty body", "POST", EV, b""),
    ("malformed JSON", "POST", EV, b'{"tenant_id": "victim",'),
    ("JSON array body", "POST", EV, b"[1, 2]"),
    ("not UTF-8", "POST", EV, b'{"tenant_id": "\xff\xfe"}'),
    (
        "NaN",
        "POST",
        EV,
        raw('{"tenant_id": "victim", "stream_id": "s1", "content": "x", "metadata": {"v": NaN}}'),
    ),
    (
        "Infinity",
        "POST",
        EV,
        raw('{"tenant_id": "victim", "stream_id": "s1", "content": "x", "timestamp": Infinity}'),
    ),
    (
        "lone surrogate in content",
        "POST",
        EV,
        raw('{"tenant_id": "victim", "stream_id": "s1", "content": "a\\ud800b"}'),
    ),
    (
        "lone surrogate in metadata key",
        "POST",
        EV,
        raw('{"tenant_id": "victim", "stream_id": "s1", "content": "x", "metadata": {"\\udc00": 1}}'),
    ),
    ("NUL in content", "POST", EV, good_event(content="a\u0000b")),
    ("NUL in metadata", "POST", EV, good_event(metadata={"k": "v\u0000"})),
    ("content not a string", "POST", EV, good_event(content=42)),
    ("content missing", "POST", EV, {"tenant_id": "victim", "stream_id": "s1"}),
    ("content too long", "POST", EV, good_event(content="x" * 40_000)),
    ("tenant_id list", "POST", EV, good_event(tenant_id=["victim"])),
    ("tenant_id missing", "POST", EV, {"stream_id": "s1", "content": "x"}),
    ("tenant_id with ..", "POST", EV, good_event(tenant_id="..")),
    ("tenant_id with slash", "POST", EV, good_event(tenant_id="a/b")),
    ("tenant_id with quote", "POST", EV, good_event(tenant_id="a'b")),
    ("tenant_id with query syntax", "POST", EV, good_event(tenant_id="a OR b")),
    ("tenant_id empty", "POST", EV, good_event(tenant_id="")),
    ("tenant_id too long", "POST", EV, good_event(tenant_id="a" * 200)),
    ("stream_id with double quote", "POST", EV, good_event(stream_id='s"1')),
    ("stream_id with colon query syntax", "POST", EV, good_event(stream_id="tenant:x")),
    ("stream_id with wildcard", "POST", EV, good_event(stream_id="*")),
    ("event_id with slash", "POST", EV, good_event(event_id="../../etc/passwd")),
    ("event_id not a string", "POST", EV, good_event(event_id=7)),
    ("server-owned field seq", "POST", EV, good_event(seq=1)),
    ("server-owned field importance", "POST", EV, good_event(importance=1.0)),
    ("server-owned field ingested_at", "POST", EV, good_event(ingested_at=0)),
    ("metadata not an object", "POST", EV, good_event(metadata=[1, 2])),
    (
        "metadata nested too deep",
        "POST",
        EV,
        good_event(metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": 1}}}}}}}}}}),
    ),
    ("metadata huge integer", "POST", EV, good_event(metadata={"n": 2**80})),
    ("timestamp words", "POST", EV, good_event(timestamp="yesterday")),
    ("timestamp boolean", "POST", EV, good_event(timestamp=True)),
    ("timestamp negative", "POST", EV, good_event(timestamp=-5)),
    ("timestamp absurd", "POST", EV, good_event(timestamp=1e20)),
    ("batch events not a list", "POST", BATCH, {"tenant_id": "victim", "events": {"a": 1}}),
    ("batch empty", "POST", BATCH, {"tenant_id": "victim", "events": []}),
    (
        "batch one bad event",
        "POST",
        BATCH,
        {
            "tenant_id": "victim",
            "events": [{"stream_id": "s1", "content": "ok"}, {"stream_id": "s1", "content": 5}],
        },
    ),
    (
        "batch duplicate ids",
        "POST",
        BATCH,
        {
            "tenant_id": "victim",
            "events": [
                {"stream_id": "s1", "content": "a", "event_id": "x"},
                {"stream_id": "s1", "content": "b", "event_id": "x"},
            ],
        },
    ),
    (
        "batch unknown event field",
        "POST",
        BATCH,
        {"tenant_id": "victim", "events": [{"stream_id": "s1", "content": "a", "seq": 3}]},
    ),
    (
        "batch too large",
        "POST",
        BATCH,
        {"tenant_id": "victim", "events": [{"stream_id": "s1", "content": "a"}] * 6000},
    ),
    (
        "body over the size limit",
        "POST",
        EV,
        good_event(metadata={"pad": "x" * 15_000}, content="y" * 30_000) | {"extra": "z" * 80_000},
    ),
    ("retrieve top_k absurd", "POST", RET, {"tenant_id": "victim", "query": "x", "top_k": 10**9}),
    ("retrieve top_k zero", "POST", RET, {"tenant_id": "victim", "query": "x", "top_k": 0}),
    ("retrieve top_k string", "POST", RET, {"tenant_id": "victim", "query": "x", "top_k": "10"}),
    ("retrieve top_k bool", "POST", RET, {"tenant_id": "victim", "query": "x", "top_k": True}),
    ("retrieve top_k float", "POST", RET, {"tenant_id": "victim", "query": "x", "top_k": 2.5}),
    ("retrieve graph_depth negative", "POST", RET, {"tenant_id": "victim", "query": "x", "graph_depth": -1}),
    ("retrieve query missing", "POST", RET, {"tenant_id": "victim"}),
    ("retrieve query not string", "POST", RET, {"tenant_id": "victim", "query": {"$ne": 1}}),
    (
        "retrieve enable_arbitration string",
        "POST",
        RET,
        {"tenant_id": "victim", "query": "x", "enable_arbitration": "yes"},
    ),
    ("retrieve bad consistency", "POST", RET, {"tenant_id": "victim", "query": "x", "consistency": "strong"}),
    (
        "retrieve stream_id injection",
        "POST",
        RET,
        {"tenant_id": "victim", "query": "x", "stream_id": "s1' OR '1'='1"},
    ),
    ("retrieve unknown field", "POST", RET, {"tenant_id": "victim", "query": "x", "tenant_filter": "*"}),
    ("consolidate wait not bool", "POST", "/api/v1/consolidate", {"tenant_id": "victim", "wait": "true"}),
    ("memories bad tenant", "GET", "/api/v1/memories?tenant_id=a%2Fb", None),
    ("memories limit huge", "GET", "/api/v1/memories?tenant_id=victim&limit=99999999", None),
    ("memories limit text", "GET", "/api/v1/memories?tenant_id=victim&limit=ten", None),
    ("memories cursor injection", "GET", "/api/v1/memories?tenant_id=victim&cursor=a%2F..%2Fb", None),
    ("events after negative", "GET", "/api/v1/events?tenant_id=victim&after=-1", None),
    ("events missing tenant", "GET", "/api/v1/events", None),
    ("status tenant with quote", "GET", "/api/v1/status?tenant_id=a%22b", None),
    ("memory id traversal", "GET", "/api/v1/memories/..%2F..%2Fetc?tenant_id=victim", None),
    ("memory id quotes", "GET", "/api/v1/memories/a'b?tenant_id=victim", None),
    ("keys for invalid tenant", "POST", "/api/v1/admin/tenants/a..b/keys", None),
    ("delete invalid tenant", "DELETE", "/api/v1/tenants/a%20b", None),
    ("unknown route", "GET", "/api/v1/nope", None),
    ("wrong method", "PUT", EV, good_event()),
]


async def test_every_bad_input_is_a_json_4xx_and_stores_nothing(start: NodeStarter) -> None:
    _, api = await start(limits={"max_body_bytes": 64 * 1024})
    failures = []
    for description, method, path, body in CASES:
        kwargs: dict[str, Any] = {}
        if isinstance(body, bytes):
            kwargs["data"] = body
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif body is not None:
            kwargs["data"] = json.dumps(body).encode()
            kwargs["headers"] = {"Content-Type": "application/json"}
        status, answer = await api.request(method, path, **kwargs)
        ok = (
            400 <= status < 500
            and isinstance(answer, dict)
            and isinstance(answer.get("error", {}).get("code"), str)
            and isinstance(answer["error"].get("message"), str)
        )
        if not ok:
            failures.append(f"{description}: {status} {str(answer)[:200]}")
    assert not failures, "\n".join(failures)

    _, status_body = await api.get("/api/v1/status?tenant_id=victim")
    assert status_body["l0_events"] == 0, "a rejected request stored something"
    _, events = await api.get("/api/v1/events?tenant_id=victim")
    assert events["events"] == []


async def test_oversized_body_is_413(start: NodeStarter) -> None:
    _, api = await start(limits={"max_body_bytes": 4096})
    status, body = await api.post(EV, good_event(content="x" * 10_000))
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"


async def test_valid_edge_cases_are_accepted(api: Any) -> None:
    """The validator must not be so strict that legitimate input fails."""
    for fields in [
        {"content": "Unicode ✓ café 東京 🚀"},
        {"content": "x", "timestamp": "2023-05-08T13:56:00Z"},
        {"content": "x", "timestamp": "2023-05-08T13:56:00+02:00"},
        {"content": "x", "timestamp": 1683554160},
        {"content": "x", "timestamp": 1683554160.5},
        {"content": "x", "metadata": {"speaker": "Caroline", "tags": ["a", 1, 2.5, True, None]}},
        {"content": "x", "event_id": "D1:3"},
    ]:
        body = await api.ingest("edge", stream="chat.session-1", **fields)
        assert body["seq"] >= 1
    _, events = await api.get("/api/v1/events?tenant_id=edge")
    assert events["events"][0]["content"] == "Unicode ✓ café 東京 🚀"
    assert events["events"][1]["timestamp"] == "2023-05-08T13:56:00Z"
    assert events["events"][2]["timestamp"] == "2023-05-08T11:56:00Z"
