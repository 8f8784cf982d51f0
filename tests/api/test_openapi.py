"""The OpenAPI document: it describes every route the node serves (and nothing it does not),
the gateway serves the same one, /docs renders it with Redoc from static/vendor, and
Schemathesis, fuzzing a live node from it, finds no 5xx and no response that breaks it."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dashboard.server import VENDOR_DIR
from gateway.app import build_gateway_app
from gateway.config import GatewaySettings
from memorose.api.openapi import ROUTES, document
from node.runner import RunningNode, free_port
from tests.conftest import ADMIN_KEY, NodeStarter

#: Not operations: the dashboard's page and files, and the page that renders this document.
UNDOCUMENTED = re.compile(r"^/dashboard/?$|^/dashboard/static/|^/docs$")


def served(node: RunningNode) -> set[tuple[str, str]]:
    """(method, path) of the node's router, path parameters without their regex."""
    out = set()
    for route in node.runner.app.router.routes():  # type: ignore[union-attr]
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        path = re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", path)
        if route.method != "HEAD" and path and not UNDOCUMENTED.match(path):
            out.add((route.method, path))
    return out


def documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in document()["paths"].items() for method in ops}


async def test_every_route_is_in_the_document_and_every_operation_is_served(start: NodeStarter) -> None:
    node, api = await start()
    routes, doc = served(node), documented()
    doc_paths = {path for _, path in doc}
    missing = sorted(r for r in routes if r not in doc and not (r[0] == "*" and r[1] in doc_paths))
    assert not missing, f"routes missing from memorose/api/openapi.py ROUTES: {missing}"
    wildcard = {path for method, path in routes if method == "*"}
    dead = sorted(op for op in doc if op not in routes and op[1] not in wildcard)
    assert not dead, f"documented operations the node does not serve: {dead}"
    status, body = await api.with_key(None).get("/openapi.json")  # type: ignore[arg-type]
    assert status == 200 and body == document() and body["openapi"].startswith("3.1")


def test_the_route_table_names_each_operation_once() -> None:
    keys = [(r.method, r.path) for r in ROUTES]
    assert len(keys) == len(set(keys))
    ids = [op["operationId"] for ops in document()["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_docs_page_loads_redoc_from_vendor(start: NodeStarter) -> None:
    _, api = await start()
    async with api.session.get(api.url + "/docs") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    [script] = re.findall(r'<script src="([^"]+)"', page)
    assert script == "/dashboard/static/vendor/redoc.standalone.js" and "http" not in page.split("<body>")[1]
    if not (VENDOR_DIR / "redoc.standalone.js").is_file():
        pytest.skip("static/vendor not installed (run make)")
    async with api.session.get(api.url + script) as resp:
        assert resp.status == 200 and len(await resp.read()) > 100_000


async def test_the_gateway_serves_the_same_document() -> None:
    settings = GatewaySettings(
        http=f"127.0.0.1:{free_port()}", admin_key=ADMIN_KEY, shards={"s1": ["http://127.0.0.1:9"]}
    )
    client = TestClient(TestServer(build_gateway_app(settings)))
    await client.start_server()
    try:
        resp = await client.get("/openapi.json")
        assert resp.status == 200 and await resp.json() == document()
        resp = await client.get("/docs")
        assert resp.status == 200 and "redoc" in await resp.text()
    finally:
        await client.close()


# -- Schemathesis against a live node ------------------------------------------------------
#: Each run is bounded: examples per operation, and the whole run's wall time.
MAX_EXAMPLES = 10
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _excluded() -> list[str]:
    """Operations left out: membership and tenant-placement changes (one would take the
    single-node cluster's quorum or freeze its tenants) and the cookie-signed dashboard."""
    args = []
    for route in ROUTES:
        if route.destructive:
            args += [
                "--exclude-operation-id",
                document()["paths"][route.path][route.method.lower()]["operationId"],
            ]
    return [*args, "--exclude-tag", "dashboard"]


async def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(
    start: NodeStarter, tmp_path: Path
) -> None:
    _, api = await start()
    st = Path(sys.executable).with_name("st")
    argv = [
        str(st), "run", api.url + "/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--header", f"Authorization: Bearer {ADMIN_KEY}",
        "--request-timeout", "20",
        "--phases", "coverage,fuzzing",
        "--max-time", "60",
        "--workers", "1",
        "--seed", "1",
        "--generation-database", "none",
        "--no-color",
        *_excluded(),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 150)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
