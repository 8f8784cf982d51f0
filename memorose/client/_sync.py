"""Blocking client (httpx.Client). Method-for-method twin of ``AsyncMemoroseClient``."""

from __future__ import annotations

import time
from typing import Any

import httpx

from memorose.api.models import EventIn
from memorose.client import _core as core
from memorose.client.errors import ConnectError, RequestTimeout
from memorose.client.models import ConsolidateResult, IngestResult, MemoryItem, RetrieveResult, TenantStatus


class MemoroseClient:
    """Talks to a node, a shard (follows the leader) or a gateway.

    ``MemoroseClient("http://localhost:8080")`` or several seed URLs; the API key comes from
    ``api_key=`` or ``MEMOROSE_API_KEY``.
    """

    def __init__(
        self,
        urls: str | list[str] = "http://127.0.0.1:8080",
        api_key: str | None = None,
        *,
        timeout: core.Timeout | float | None = None,
        retry: core.RetryPolicy | None = None,
    ) -> None:
        self._core = core.ClientCore.create(urls, api_key, timeout, retry)
        t = self._core.timeout
        self._http = httpx.Client(timeout=httpx.Timeout(t.read, connect=t.connect), follow_redirects=False)

    def __enter__(self) -> MemoroseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: core.Request) -> Any:
        call = core.Call(self._core, request)
        while True:
            url, params = call.target()
            try:
                response = self._http.request(
                    request.method, url, json=request.json, params=params, headers=self._core.headers()
                )
            except httpx.TimeoutException as exc:
                time.sleep(call.failed(RequestTimeout(f"{request.method} {url} timed out: {exc}")))
                continue
            except httpx.TransportError as exc:
                time.sleep(call.failed(ConnectError(f"{request.method} {url} failed: {exc}")))
                continue
            done, value = call.answered(response.status_code, dict(response.headers), _json(response))
            if done:
                return value
            time.sleep(value)

    # -- API ------------------------------------------------------------------------------
    def ingest(
        self,
        tenant_id: str,
        stream_id: str,
        content: str,
        metadata: dict[str, Any] | None = None,
        timestamp: Any = None,
        event_id: str | None = None,
    ) -> IngestResult:
        request = core.ingest(tenant_id, stream_id, content, metadata, timestamp, event_id)
        return IngestResult.from_dict(self._send(request))

    def ingest_batch(self, tenant_id: str, events: list[dict[str, Any]] | list[EventIn]) -> list[str]:
        return list(self._send(core.ingest_batch(tenant_id, events))["event_ids"])

    def retrieve(
        self,
        tenant_id: str,
        query: str,
        stream_id: str | None = None,
        top_k: int = 10,
        graph_depth: int = 0,
        enable_arbitration: bool = True,
        **options: Any,
    ) -> RetrieveResult:
        opts = {
            "stream_id": stream_id,
            "top_k": top_k,
            "graph_depth": graph_depth,
            "enable_arbitration": enable_arbitration,
            **options,
        }
        return RetrieveResult.from_dict(self._send(core.retrieve(tenant_id, query, opts)))

    def get_insights(self, tenant_id: str, stream_id: str | None = None) -> list[dict[str, Any]]:
        body = self._send(core.with_tenant("GET", "/api/v1/insights", tenant_id, stream_id=stream_id))
        return list(body.get("insights", []))

    def get_memory(self, tenant_id: str, memory_id: str) -> MemoryItem:
        return MemoryItem.from_dict(
            self._send(core.with_tenant("GET", f"/api/v1/memories/{memory_id}", tenant_id))
        )

    def list_memories(
        self, tenant_id: str, stream_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[MemoryItem], str | None]:
        request = core.with_tenant(
            "GET", "/api/v1/memories", tenant_id, stream_id=stream_id, limit=limit, cursor=cursor
        )
        body = self._send(request)
        return [MemoryItem.from_dict(m) for m in body["memories"]], body.get("next_cursor")

    def delete_memory(self, tenant_id: str, memory_id: str) -> None:
        self._send(core.with_tenant("DELETE", f"/api/v1/memories/{memory_id}", tenant_id))

    def memory_history(self, tenant_id: str, memory_id: str) -> list[dict[str, Any]]:
        body = self._send(core.with_tenant("GET", f"/api/v1/memories/{memory_id}/history", tenant_id))
        return list(body.get("versions", body.get("history", [])))

    def consolidate(self, tenant_id: str, wait: bool = True) -> ConsolidateResult:
        body = self._send(core.Request("POST", "/api/v1/consolidate", {"tenant_id": tenant_id, "wait": wait}))
        return ConsolidateResult.from_dict(body)

    def status(self, tenant_id: str) -> TenantStatus:
        return TenantStatus.from_dict(self._send(core.with_tenant("GET", "/api/v1/status", tenant_id)))

    def request(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Any other endpoint (admin operations), with the same leader following and retries."""
        return self._send(core.Request(method, path, json, params))

    def cluster_status(self) -> dict[str, Any]:
        return dict(self._send(core.Request("GET", "/api/v1/cluster/status")))


def _json(response: httpx.Response) -> Any:
    return core.decode_json(response.content)
