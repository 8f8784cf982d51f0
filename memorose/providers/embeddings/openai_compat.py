"""Any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint: a local Ollama
(``http://localhost:11434/v1``), vLLM, LM Studio or OpenAI itself. Batched and retried;
the endpoint's dimension must equal the index's ``embedding_dim``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from memorose.providers.embeddings.base import Embedder, normalise
from memorose.providers.retry import Backoff


class OpenAICompatEmbedder(Embedder):
    releases_gil = True  # an HTTP call: the query's embedding overlaps the lexical stage

    def __init__(
        self,
        base_url: str,
        model: str,
        dim: int,
        api_key: str | None = None,
        batch_size: int = 64,
        max_attempts: int = 5,
        backoff_initial_secs: float = 1.0,
        backoff_max_secs: float = 30.0,
        timeout_secs: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_secs)
        self.vendor_model = model
        self.dim = dim
        self.model = f"openai_compat:{model}:{dim}"
        self.batch_size = batch_size
        self.calls = 0
        self._backoff = Backoff(max_attempts, backoff_initial_secs, backoff_max_secs, sleep)

    def _embed_chunk(self, texts: list[str]) -> np.ndarray:
        def call() -> Any:
            self.calls += 1
            response = self.client.post("/embeddings", json={"model": self.vendor_model, "input": texts})
            response.raise_for_status()
            return response.json()

        body = self._backoff.run(call)
        try:
            rows = sorted(body["data"], key=lambda d: d["index"])
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed embeddings answer from {self.client.base_url}: {exc}") from exc
        if vectors.shape != (len(texts), self.dim):
            raise ValueError(
                f"{self.vendor_model} returned vectors of shape {vectors.shape}; the index expects "
                f"({len(texts)}, {self.dim}): set [index] embedding_dim to the model's dimension"
            )
        return vectors

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        chunks = [
            self._embed_chunk(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)
        ]
        return normalise(np.concatenate(chunks))
