"""Mount the dashboard on an aiohttp app (a node's or the gateway's).

Routes, all under ``/dashboard``:

- ``GET /dashboard`` and ``/dashboard/``: the page; ``/dashboard/static/...``: its files.
- ``POST /dashboard/session`` ``{"key": ...}``: sign in; sets an HttpOnly, SameSite=Strict
  session cookie and returns the role and a CSRF token. ``GET`` tells who is signed in,
  ``DELETE`` signs out.
- ``/dashboard/api/<path>``: the public ``/api/v1/<path>`` of this same process, called with
  the session's key. Writes need the ``X-CSRF-Token`` header, so another site cannot forge them.
- ``GET /dashboard/metrics?target=URL``: (admin) Prometheus text of a node this process knows.

The proxy calls this process's own API over loopback instead of sharing its auth code, so
the node and the gateway enforce tenancy exactly as for any other client (docs/dashboard.md).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from dashboard.sessions import DEFAULT_TTL_SECS, Session, SessionStore

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
#: The npm files the page loads (the Makefile's VENDOR_FILES, by name; a unit test compares).
VENDOR_FILES = (
    "force-graph.min.js",
    "3d-force-graph.min.js",
    "uPlot.iife.min.js",
    "uPlot.min.css",
    "redoc.standalone.js",  # the /docs page (dashboard/apidocs.py)
)
COOKIE = "memorose_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD"}
PROXIED_METHODS = {"GET", "POST", "DELETE"}
MAX_KEY_CHARS = 512
MAX_REDIRECTS = 3
_API_PATH = re.compile(r"[A-Za-z0-9_\-.:/]{1,400}")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

log = logging.getLogger(__name__)

Authenticate = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class DashboardConfig:
    """What the host process tells the dashboard about itself."""

    upstream: str  # base URL of this process's own API (loopback when bound to every address)
    authenticate: Authenticate  # key -> "*" (admin), a tenant id, or None
    metrics_targets: Callable[[], dict[str, str]]  # label -> base URL whose /metrics an admin may read
    session_ttl: float = DEFAULT_TTL_SECS


class Dashboard:
    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.sessions = SessionStore(ttl=config.session_ttl)
        self.client: aiohttp.ClientSession | None = None


DASHBOARD = web.AppKey("dashboard", Dashboard)


def loopback_url(host_port: str) -> str:
    """The URL a process uses to reach itself: a wildcard bind address becomes loopback."""
    host, _, port = host_port.rpartition(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"http://{host}:{port}"


def add_dashboard(app: web.Application, config: DashboardConfig) -> None:
    """Register the dashboard's routes and its HTTP client's lifecycle on ``app``."""
    app[DASHBOARD] = Dashboard(config)
    app.on_startup.append(_open)
    app.on_cleanup.append(_close)
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/dashboard", index)
    app.router.add_get("/dashboard/", index)
    app.router.add_route("*", "/dashboard/session", session_route)
    app.router.add_get("/dashboard/metrics", node_metrics)
    app.router.add_route("*", "/dashboard/api/{path:.*}", proxy)
    app.router.add_get("/dashboard/static/{path:.+}", static_file)


async def _open(app: web.Application) -> None:
    warn_if_vendor_missing()
    app[DASHBOARD].client = aiohttp.ClientSession(auto_decompress=True)


def missing_vendor_files() -> list[str]:
    return [name for name in VENDOR_FILES if not (VENDOR_DIR / name).is_file()]


def warn_if_vendor_missing() -> None:
    """Say so at start-up: without its npm libraries the page loads but draws no graph and no
    chart, which an operator would otherwise only find in the browser's console."""
    missing = missing_vendor_files()
    if missing:
        log.warning(
            "dashboard: %s missing from %s; the graph and metrics views will not work "
            "(run `make` in a checkout, or install a wheel built by `make`)",
            ", ".join(missing),
            VENDOR_DIR,
        )


async def _close(app: web.Application) -> None:
    client = app[DASHBOARD].client
    if client is not None:
        await client.close()


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/dashboard"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


# -- pages ------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.StreamResponse:
    """The same page with or without the slash: it refers to its files by absolute paths."""
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return error(404, "not_found", "the dashboard is not installed")
    return web.FileResponse(page)


async def static_file(request: web.Request) -> web.StreamResponse:
    """A file under static/ (never outside it, never a dot-file); a JSON 404 otherwise."""
    root = STATIC_DIR.resolve()
    target = (root / request.match_info["path"]).resolve()
    if not target.is_relative_to(root) or not target.is_file() or target.name.startswith("."):
        return error(404, "not_found", "no such dashboard file")
    return web.FileResponse(target)


# -- sessions ---------------------------------------------------------------------------------
def cookie_name(request: web.Request) -> str:
    """Cookies ignore ports: without the port in the name, signing in on one node of a host
    (``memorose up --nodes 3``) would replace the session of its neighbour in the browser."""
    return f"{COOKIE}_{request.url.port or 80}"


def _session(request: web.Request) -> Session | None:
    return request.app[DASHBOARD].sessions.get(request.cookies.get(cookie_name(request)))


def _same_origin(request: web.Request) -> bool:
    """A browser names the page that sent a write in Origin; its host must be this one. The
    scheme is not compared: behind a TLS-terminating proxy the page is https, this is http."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


def _csrf_ok(request: web.Request, session: Session) -> bool:
    token = request.headers.get(CSRF_HEADER, "")
    return _same_origin(request) and secrets.compare_digest(token.encode(), session.csrf.encode())


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


async def session_route(request: web.Request) -> web.Response:
    """POST signs in, GET tells who is signed in, DELETE signs out."""
    handler = {"POST": sign_in, "GET": session_info, "DELETE": sign_out}.get(request.method)
    if handler is None:
        return error(405, "method_not_allowed", "use GET, POST or DELETE")
    return await handler(request)


async def sign_in(request: web.Request) -> web.Response:
    if not _same_origin(request):
        return error(403, "forbidden", "cross-origin sign-in refused")
    body = await _json_object(request)
    if body is None or set(body) != {"key"}:
        return error(400, "invalid_input", 'the body must be {"key": "<admin or tenant key>"}')
    key = body["key"]
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS:
        return error(400, "invalid_input", "key must be a non-empty string")
    dashboard = request.app[DASHBOARD]
    subject = await dashboard.config.authenticate(key.strip())
    if subject is None:
        return error(401, "unauthorized", "unknown API key")
    dashboard.sessions.delete(request.cookies.get(cookie_name(request)))
    session = dashboard.sessions.create(subject, key.strip())
    response = web.json_response(session.public())
    response.set_cookie(
        cookie_name(request),
        session.token,
        max_age=int(dashboard.config.session_ttl),
        path="/dashboard",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def session_info(request: web.Request) -> web.Response:
    """200 either way: a page that is not signed in yet is not an error (nor a console error)."""
    session = _session(request)
    return web.json_response(session.public() if session else {"signed_in": False})


async def sign_out(request: web.Request) -> web.Response:
    session = _session(request)
    if session is not None and not _csrf_ok(request, session):
        return error(403, "csrf", "missing or wrong X-CSRF-Token")
    request.app[DASHBOARD].sessions.delete(request.cookies.get(cookie_name(request)))
    response = web.json_response({"signed_out": True})
    response.del_cookie(cookie_name(request), path="/dashboard")
    return response


# -- the API, on the session's behalf ---------------------------------------------------------
async def proxy(request: web.Request) -> web.Response:
    if request.method not in PROXIED_METHODS:
        return error(405, "method_not_allowed", "the dashboard proxies GET, POST and DELETE")
    session = _session(request)
    if session is None:
        return error(401, "unauthorized", "not signed in (or the session expired)")
    if request.method not in SAFE_METHODS and not _csrf_ok(request, session):
        return error(403, "csrf", "missing or wrong X-CSRF-Token")
    path = request.match_info["path"]
    if not _API_PATH.fullmatch(path) or ".." in path or "//" in path:
        return error(400, "invalid_input", "invalid API path")
    query = request.query_string
    url = f"{request.app[DASHBOARD].config.upstream}/api/v1/{path}" + (f"?{query}" if query else "")
    body = await request.read()
    dashboard = request.app[DASHBOARD]
    response = await _forward(dashboard, request.method, url, body, session.key)
    if response.status == 401:
        return await _unauthorized_upstream(dashboard, session)
    return response


async def _unauthorized_upstream(dashboard: Dashboard, session: Session) -> web.Response:
    """The API refused the session's key. Revoked (its tenant was deleted): the session ends.
    Still valid (a tenant key asked about a tenant on another shard): that is a 403."""
    if await dashboard.config.authenticate(session.key) is None:
        dashboard.sessions.delete(session.token)
        return error(401, "unauthorized", "the key of this session is no longer valid")
    return error(403, "forbidden", "this key does not give access to that tenant")


async def _forward(dashboard: Dashboard, method: str, url: str, body: bytes, key: str) -> web.Response:
    """Call the API; follow a follower's 307 to the leader (same key, same body) a few times."""
    assert dashboard.client is not None
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=150)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            async with dashboard.client.request(
                method, url, data=body or None, headers=headers, allow_redirects=False, timeout=timeout
            ) as resp:
                location = resp.headers.get("Location")
                if resp.status in (307, 308) and location and location.startswith(("http://", "https://")):
                    url = location
                    continue
                ctype = resp.content_type or "application/json"
                payload = _redact(await resp.read(), ctype)
                return web.Response(status=resp.status, body=payload, content_type=ctype)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return error(502, "upstream_unavailable", f"the API did not answer: {type(exc).__name__}")
    return error(502, "too_many_redirects", "the API kept redirecting")


#: Fields the page never needs and must never hold: a key's hash is enough to copy the key
#: to another cluster (``keys/import``), so it stays between the API and its admin clients.
REDACTED_FIELDS = frozenset({"key_hash"})


def _redact(payload: bytes, content_type: str) -> bytes:
    """``payload`` without any REDACTED_FIELDS (at any depth) when it is JSON that has one."""
    if content_type != "application/json" or not any(f.encode() in payload for f in REDACTED_FIELDS):
        return payload
    try:
        return json.dumps(_without_redacted(json.loads(payload))).encode()
    except (ValueError, UnicodeDecodeError):  # fail closed: unparseable, so not shown at all
        return json.dumps({"error": {"code": "redacted", "message": "unreadable API answer"}}).encode()


def _without_redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_redacted(v) for k, v in value.items() if k not in REDACTED_FIELDS}
    if isinstance(value, list):
        return [_without_redacted(v) for v in value]
    return value


async def node_metrics(request: web.Request) -> web.Response:
    """Prometheus text of one node (admin only; only URLs this process was configured with).
    Without ``target``, the first target that answers: a dead node is not a good default.
    ``urls`` (label -> URL) lets the page find the shard leader's label (metrics.js)."""
    session = _session(request)
    if session is None:
        return error(401, "unauthorized", "not signed in")
    if not session.is_admin:
        return error(403, "forbidden", "metrics carry every tenant's labels: an admin key is required")
    dashboard = request.app[DASHBOARD]
    targets = dashboard.config.metrics_targets()
    wanted = request.query.get("target")
    if wanted is not None and wanted not in targets:
        return error(400, "invalid_input", f"target must be one of: {', '.join(sorted(targets))}")
    last = "no targets"
    for label in [wanted] if wanted else list(targets):
        text, last = await _scrape(dashboard, label, targets[label], session.key)
        if text is not None:
            return web.json_response(
                {"target": label, "targets": list(targets), "urls": targets, "text": text}
            )
    return error(502, "upstream_unavailable", last)


async def _scrape(dashboard: Dashboard, label: str, url: str, key: str) -> tuple[str | None, str]:
    """(the metrics text, "") or (None, why not). Sends the session's admin key: a node with
    a metrics token accepts the admin key too."""
    assert dashboard.client is not None
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with dashboard.client.get(url + "/metrics", headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                return None, f"{label} answered {resp.status}"
            return await resp.text(), ""
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return None, f"{label} did not answer: {type(exc).__name__}"
