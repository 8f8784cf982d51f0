"""A local aiohttp stub of the Gemini REST API (and of an OpenAI-compatible embeddings
endpoint) for driving the REAL google-genai client in tests: generateContent with
structured output, embedContent, batchEmbedContents, scripted failures (429, garbage)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from node.runner import free_port

Answer = Callable[[dict[str, Any]], Any]


def fake_vector(text: str, dim: int) -> list[float]:
    """A deterministic vector per text (same text, same vector)."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    return [float(x) for x in rng.standard_normal(dim)]


@dataclass
class Scripted:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None  # a 200 whose model text is this string (malformed answers)


class GeminiStub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.script: dict[str, list[Scripted]] = {}
        self.answer: Answer = lambda body: {"events": []}
        self.url = ""
        self._runner: web.AppRunner | None = None

    def queue(self, method: str, item: Scripted) -> None:
        self.script.setdefault(method, []).append(item)

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [body for m, body in self.requests if m == method]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{version}/models/{model_method}", self._model_call)
        app.router.add_post("/v1/embeddings", self._openai_embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _model_call(self, request: web.Request) -> web.Response:
        _, _, method = request.match_info["model_method"].partition(":")
        body = await request.json()
        self.requests.append((method, body))
        if request.headers.get("x-goog-api-key") != "test-key":
            return web.json_response(
                {"error": {"code": 403, "message": "bad key", "status": "PERMISSION_DENIED"}}, status=403
            )
        pending = self.script.get(method)
        if pending:
            item = pending.pop(0)
            if item.raw is None:
                return web.json_response(item.body, status=item.status, headers=item.headers)
            return web.json_response(self._candidate(item.raw))
        if method == "generateContent":
            return web.json_response(self._candidate(json.dumps(self.answer(body))))
        if method == "batchEmbedContents":
            return web.json_response({"embeddings": [self._embedding(r) for r in body["requests"]]})
        if method == "embedContent":
            return web.json_response({"embedding": self._embedding(body)})
        return web.json_response(
            {"error": {"code": 404, "message": method, "status": "NOT_FOUND"}}, status=404
        )

    @staticmethod
    def _candidate(text: str) -> dict[str, Any]:
        return {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 120},
        }

    @staticmethod
    def _embedding(request: dict[str, Any]) -> dict[str, Any]:
        text = " ".join(p["text"] for p in request["content"]["parts"])
        return {"values": fake_vector(text, int(request.get("outputDimensionality") or 3072))}

    async def _openai_embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("openai.embeddings", body))
        pending = self.script.get("openai.embeddings")
        if pending:
            item = pending.pop(0)
            return web.json_response(item.body, status=item.status, headers=item.headers)
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(t, 16)}
            for i, t in enumerate(body["input"])
        ]
        return web.json_response({"object": "list", "data": list(reversed(data)), "model": body["model"]})


def rate_limited(delay: str = "0.01s") -> Scripted:
    return Scripted(
        429,
        {
            "error": {
                "code": 429,
                "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}],
            }
        },
    )
