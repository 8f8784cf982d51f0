"""The OpenAPI 3.1 document of the HTTP API, built from ``memorose.api.models``.

``ROUTES`` is the route table: method, path, request body and query models, response model,
who may call it and the errors it documents. The node serves exactly these routes (a test
compares its router with this table) and the gateway serves the same document, so a client
generated from ``/openapi.json`` works against either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, RootModel
from pydantic.json_schema import models_json_schema

from memorose.api import mem0_models as mm
from memorose.api import models as m

Auth = Literal["tenant", "admin", "any", "none", "metrics", "session", "mem0"]
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    tag: str
    response: type[BaseModel] = m.JsonObject
    request: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    auth: Auth = "tenant"
    #: The body may be left out (read as ``{}``).
    body_optional: bool = False
    #: Changes cluster membership or a tenant's placement: left out of fuzzing.
    destructive: bool = False
    content_type: str = "application/json"


def _r(method: str, path: str, summary: str, tag: str, **kw: Any) -> Route:
    return Route(method, path, summary, tag, **kw)


V1 = "/api/v1"
#: mem0's own paths (docs/mem0.md), each served under ``/mem0`` (the key's tenant) and
#: ``/mem0/{tenant_id}``: (method, path, summary, request, query, response, body optional).
_MEM0: tuple[
    tuple[str, str, str, type[BaseModel] | None, type[BaseModel] | None, type[BaseModel], bool], ...
] = (
    ("GET", "/v1/ping/", "mem0: check the key; project_id names the tenant", None, None, mm.Mem0Ping, False),
    ("POST", "/v3/memories/add/", "mem0: add messages", mm.Mem0AddRequest, None, mm.Mem0AddResponse, False),
    ("POST", "/v1/memories/", "mem0: add messages (v1)", mm.Mem0AddRequest, None, mm.Mem0AddResponse, False),
    (
        "POST",
        "/v3/memories/search/",
        "mem0: search",
        mm.Mem0SearchRequest,
        None,
        mm.Mem0SearchResponse,
        False,
    ),
    (
        "POST",
        "/v2/memories/search/",
        "mem0: search (v2)",
        mm.Mem0SearchRequest,
        None,
        mm.Mem0SearchResponse,
        False,
    ),
    (
        "POST",
        "/v3/memories/",
        "mem0: list memories",
        mm.Mem0ListRequest,
        mm.Mem0ListQuery,
        mm.Mem0Page,
        True,
    ),
    (
        "POST",
        "/v2/memories/",
        "mem0: list memories (v2)",
        mm.Mem0ListRequest,
        mm.Mem0ListQuery,
        mm.Mem0Page,
        True,
    ),
    (
        "GET",
        "/v1/memories/{memory_id}/",
        "mem0: one memory (its current version)",
        None,
        None,
        mm.Mem0Memory,
        False,
    ),
    (
        "PUT",
        "/v1/memories/{memory_id}/",
        "mem0: update (a replicated supersession)",
        mm.Mem0UpdateRequest,
        None,
        mm.Mem0Memory,
        False,
    ),
    (
        "DELETE",
        "/v1/memories/{memory_id}/",
        "mem0: delete",
        None,
        mm.Mem0DeleteQuery,
        mm.Mem0Deleted,
        False,
    ),
    (
        "GET",
        "/v1/memories/{memory_id}/history/",
        "mem0: a memory's versions",
        None,
        None,
        mm.Mem0History,
        False,
    ),
)


def _mem0_routes() -> tuple[Route, ...]:
    return tuple(
        Route(
            method, base + path, summary, "mem0", response, request, query, auth="mem0", body_optional=empty
        )
        for base in ("/mem0", "/mem0/{tenant_id}")
        for method, path, summary, request, query, response, empty in _MEM0
    )


ROUTES: tuple[Route, ...] = (
    # events
    _r(
        "POST",
        f"{V1}/events",
        "Ingest one event",
        "events",
        request=m.IngestEventRequest,
        response=m.IngestResponse,
        status=202,
    ),
    _r(
        "POST",
        f"{V1}/events/batch",
        "Ingest a batch of events (one Raft entry)",
        "events",
        request=m.IngestBatchRequest,
        response=m.BatchResponse,
        status=202,
    ),
    _r(
        "GET",
        f"{V1}/events",
        "Page through a tenant's L0 events",
        "events",
        query=m.ListEventsQuery,
        response=m.EventsPage,
    ),
    _r(
        "GET",
        f"{V1}/events/lookup",
        "L0 events by id",
        "events",
        query=m.LookupQuery,
        response=m.LookupResponse,
    ),
    # retrieval
    _r(
        "POST",
        f"{V1}/retrieve",
        "Hybrid search over a tenant's memories",
        "retrieval",
        request=m.RetrieveRequest,
        response=m.RetrieveResponse,
    ),
    # memories
    _r(
        "GET",
        f"{V1}/memories",
        "List L1 memories",
        "memories",
        query=m.ListMemoriesQuery,
        response=m.MemoriesPage,
    ),
    _r(
        "GET",
        f"{V1}/memories/{{memory_id}}",
        "One memory",
        "memories",
        query=m.ReadQuery,
        response=m.MemoryOut,
    ),
    _r(
        "DELETE",
        f"{V1}/memories/{{memory_id}}",
        "Delete a memory from every store and index",
        "memories",
        query=m.DeleteMemoryQuery,
        response=m.DeleteMemoryResponse,
    ),
    _r(
        "GET",
        f"{V1}/memories/{{memory_id}}/history",
        "Every version of a memory",
        "memories",
        query=m.TenantQuery,
    ),
    _r(
        "POST", f"{V1}/memories/{{memory_id}}/restore", "Un-archive a memory", "memories", query=m.TenantQuery
    ),
    _r(
        "POST",
        f"{V1}/consolidate",
        "Consolidate what was acknowledged before the call",
        "memories",
        request=m.TenantWaitRequest,
        response=m.ConsolidateResponse,
    ),
    _r(
        "GET",
        f"{V1}/forgetting/preview",
        "What a forgetting pass would archive now",
        "memories",
        query=m.TenantQuery,
    ),
    _r("POST", f"{V1}/forgetting/run", "Run a forgetting pass", "memories", request=m.TenantRequest),
    _r("GET", f"{V1}/rejections", "Events the pipeline rejected", "memories", query=m.RejectionsQuery),
    # graph and insights
    _r("GET", f"{V1}/graph", "The memory graph", "graph and insights", query=m.GraphQuery),
    _r(
        "GET",
        f"{V1}/graph/analysis",
        "Communities, PageRank and centrality",
        "graph and insights",
        query=m.LimitQuery,
    ),
    _r(
        "GET",
        f"{V1}/insights",
        "L2 insights, best first",
        "graph and insights",
        query=m.InsightsQuery,
        response=m.InsightsResponse,
    ),
    _r(
        "POST",
        f"{V1}/insights/refresh",
        "Recompute a tenant's insights",
        "graph and insights",
        request=m.TenantWaitRequest,
    ),
    # status and cluster
    _r(
        "GET",
        f"{V1}/status",
        "A tenant's status",
        "status",
        query=m.ReadQuery,
        response=m.TenantStatusResponse,
    ),
    _r(
        "GET", f"{V1}/status/detail", "Status with memories by state and the lag", "status", query=m.ReadQuery
    ),
    _r("GET", f"{V1}/whoami", "What the key is", "status", response=m.WhoAmIResponse, auth="any"),
    _r("GET", f"{V1}/cluster/status", "This node's Raft and index status", "cluster", auth="any"),
    _r("GET", f"{V1}/cluster/overview", "Every member's status", "cluster", auth="admin"),
    # admin
    _r(
        "POST",
        f"{V1}/admin/tenants/{{tenant_id}}/keys",
        "Issue a tenant key",
        "admin",
        request=m.EmptyRequest,
        body_optional=True,
        response=m.IssuedKey,
        status=201,
        auth="admin",
    ),
    _r(
        "GET",
        f"{V1}/admin/tenants/{{tenant_id}}/keys",
        "A tenant's key records (hashes)",
        "admin",
        auth="admin",
    ),
    _r(
        "DELETE",
        f"{V1}/admin/tenants/{{tenant_id}}/keys/{{key_id}}",
        "Revoke one tenant key",
        "admin",
        auth="admin",
    ),
    _r(
        "POST",
        f"{V1}/admin/tenants/{{tenant_id}}/keys/import",
        "Import key records (tenant moves)",
        "admin",
        request=m.ImportKeysRequest,
        auth="admin",
    ),
    _r(
        "POST",
        f"{V1}/admin/tenants/{{tenant_id}}/state",
        "Freeze, mark moved or reactivate a tenant",
        "admin",
        request=m.TenantStateRequest,
        auth="admin",
        destructive=True,
    ),
    _r(
        "GET",
        f"{V1}/admin/tenants",
        "Every tenant's status",
        "admin",
        response=m.TenantsResponse,
        auth="admin",
    ),
    _r("DELETE", f"{V1}/tenants/{{tenant_id}}", "Delete a tenant and revoke its keys", "admin", auth="admin"),
    _r(
        "GET",
        f"{V1}/admin/digest",
        "Hash of a tenant's replicated state",
        "admin",
        query=m.ReadQuery,
        auth="admin",
    ),
    _r(
        "POST",
        f"{V1}/admin/reindex",
        "Rebuild derived indexes",
        "admin",
        request=m.OptionalTenantRequest,
        body_optional=True,
        auth="admin",
    ),
    _r(
        "POST",
        f"{V1}/admin/reembed",
        "Re-embed memories of another model",
        "admin",
        request=m.ReembedRequest,
        body_optional=True,
        auth="admin",
    ),
    _r(
        "POST",
        f"{V1}/admin/cluster/members",
        "Add a voting member (on the leader)",
        "admin",
        request=m.AddMemberRequest,
        auth="admin",
        destructive=True,
    ),
    _r(
        "DELETE",
        f"{V1}/admin/cluster/members/{{raft_address}}",
        "Remove a member",
        "admin",
        auth="admin",
        destructive=True,
    ),
    # probes and documents
    _r("GET", "/healthz", "The process is up", "probes", response=m.ProbeResponse, auth="none"),
    _r(
        "GET",
        "/readyz",
        "A leader is known and the store is healthy",
        "probes",
        response=m.ProbeResponse,
        auth="none",
    ),
    _r("GET", "/metrics", "Prometheus text", "probes", auth="metrics", content_type="text/plain"),
    _r("GET", "/openapi.json", "This document", "probes", auth="none"),
    # the dashboard's own session API (docs/dashboard.md; a cookie, not a bearer key)
    _r("GET", "/dashboard/session", "The dashboard session", "dashboard", auth="session"),
    _r("POST", "/dashboard/session", "Sign the dashboard in with a key", "dashboard", auth="session"),
    _r("DELETE", "/dashboard/session", "Sign the dashboard out", "dashboard", auth="session"),
    _r(
        "GET", "/dashboard/metrics", "One node's Prometheus text (admin session)", "dashboard", auth="session"
    ),
    _r("GET", "/dashboard/api/{path}", "The API with the session's key", "dashboard", auth="session"),
    _r("POST", "/dashboard/api/{path}", "The API with the session's key", "dashboard", auth="session"),
    _r("DELETE", "/dashboard/api/{path}", "The API with the session's key", "dashboard", auth="session"),
    # the mem0-compatible API (docs/mem0.md)
    *_mem0_routes(),
)

#: Path parameters: where a model field says what they are.
_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "tenant_id": {"type": "string", "pattern": m.ID_PATTERN},
    "memory_id": {"type": "string", "pattern": m.EVENT_ID_PATTERN},
    "key_id": {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,64}$"},
    "raft_address": {"type": "string", "description": "HOST:PORT"},
    "path": {"type": "string", "description": "the path under /api/v1/"},
}
_ERRORS = {
    400: "invalid input (the JSON error shape)",
    401: "no key, or an unknown key",
    403: "the key does not reach this tenant, or an admin key is required",
    404: "not found",
    405: "method not allowed",
    408: "the body did not arrive in time",
    409: "the tenant moved (X-Memorose-Moved-To)",
    413: "the body is over limits.max_body_bytes",
    415: "the body is not application/json",
    429: "the tenant's request rate or ingest volume (Retry-After)",
    503: "no leader yet, overloaded or the tenant is moving (Retry-After)",
    504: "outcome unknown: retry with the same event ids",
    507: "the tenant's storage quota",
}


def _errors(route: Route) -> list[int]:
    codes = [404, 405]
    if route.auth in ("tenant", "admin", "any", "metrics", "mem0"):
        codes.append(401)
    if route.auth in ("tenant", "admin", "mem0"):
        codes += [403, 429, 503]
    if route.auth == "mem0":
        codes += [400, 409]  # 400: the admin key names no tenant in the path
    if route.request is not None or route.query is not None or "{" in route.path:
        codes.append(400)
    if route.request is not None:
        codes += [408, 413, 415]
    if route.auth == "tenant":
        codes.append(409)
    if route.request is mm.Mem0AddRequest or (
        route.path.endswith(("/events", "/events/batch")) and route.method == "POST"
    ):
        codes += [504, 507]
    return sorted(set(codes))


def _query_parameters(model: type[BaseModel], schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "responses": _responses(route),
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": _PATH_PARAMS.get(name, {"type": "string"})}
        for name in re.findall(r"\{([^}]+)\}", route.path)
    ]
    if route.query is not None:
        params += _query_parameters(route.query, schemas[route.query.__name__])
    if params:
        op["parameters"] = params
    if route.request is not None:
        op["requestBody"] = {
            "required": not route.body_optional,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=route.request.__name__)}}},
        }
    op["security"] = _security(route.auth)
    return op


def _security(auth: Auth) -> list[dict[str, list[str]]]:
    if auth in ("none", "session"):
        return []
    if auth == "mem0":
        return [{"mem0Token": []}, {"bearer": []}]  # mem0's client sends Token <key>
    if auth == "metrics":
        return [{}, {"bearer": []}]  # open unless metrics.token is set
    return [{"bearer": []}]


def _responses(route: Route) -> dict[str, Any]:
    if route.content_type == "application/json":
        body = {"application/json": {"schema": {"$ref": REF.format(model=route.response.__name__)}}}
    else:
        body = {route.content_type: {"schema": {"type": "string"}}}
    out: dict[str, Any] = {str(route.status): {"description": "OK", "content": body}}
    if route.path == "/api/v1/insights/refresh":
        out["202"] = {"description": "started (wait: false)", "content": body}
    error = {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}
    for code in _errors(route):
        out[str(code)] = {"description": _ERRORS[code], "content": error}
    return out


def _operation_id(route: Route) -> str:
    words = re.sub(r"[{}]", "", route.path.removeprefix("/api/v1/")).replace("/", "_").replace(".", "_")
    return f"{route.method.lower()}_{words.strip('_') or 'root'}"


def _models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [m.ErrorResponse]
    for route in ROUTES:
        for model in (route.request, route.query, route.response):
            if model is not None and model not in found:
                found.append(model)
    return found


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; callers must not change it)."""
    models = _models()
    pairs = [(model, _mode(model)) for model in models]
    _, top = models_json_schema(pairs, ref_template=REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Memorose",
            "version": "1",
            "description": "A distributed, multi-tenant memory database for AI agents. "
            'Errors are {"error": {"code", "message"}}; see docs/api.md.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "mem0Token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "mem0's dialect, `Token <key>`: the same keys as bearer",
                },
            },
        },
    }


def _mode(model: type[BaseModel]) -> Literal["validation", "serialization"]:
    return "serialization" if issubclass(model, m.Response | RootModel) else "validation"
