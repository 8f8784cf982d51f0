"""``GET /openapi.json`` and ``GET /docs`` (Redoc) on a node or a gateway.

The caller passes the document (``memorose.api.openapi.document()``), so this module, like
the rest of the dashboard, imports neither the node nor the gateway. Redoc's standalone
bundle comes from npm (``make`` copies it into static/vendor/, like the dashboard's libraries)
and is served by the dashboard's static route: no CDN, nothing committed.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Memorose API</title>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/dashboard/static/vendor/redoc.standalone.js"></script>
</body>
</html>
"""
#: Redoc styles inline and runs its search index in a worker it makes from a blob.
_DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: Paths outside the API-key check: the document describes the API and holds no data.
PUBLIC_PATHS = ("/openapi.json", "/docs")


def add_api_docs(app: web.Application, document: dict[str, Any]) -> None:
    body = json.dumps(document, separators=(",", ":")).encode()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=DOCS_PAGE, content_type="text/html", headers=_DOCS_HEADERS)

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
