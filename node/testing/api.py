"""A minimal JSON client of the node's HTTP API for tests and the fault soak.

It lives in the product (not under tests/) because ``memorose bench soak`` drives real nodes
with it; it returns ``(status, body)`` and never raises on an HTTP error status.
"""

from __future__ import annotations

import json as _json
from typing import Any

import aiohttp

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
