"""Gemini embeddings through google-genai (``batchEmbedContents``), batched and retried.

``output_dimensionality`` asks for the index's dimension; vectors are L2-normalised here
(Gemini only normalises its full-size output). The model name recorded with each memory
includes the dimension, so changing either is detected (``memorose admin reembed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from memorose.providers.embeddings.base import Embedder, normalise
from memorose.providers.retry import Backoff, genai_client


class GeminiEmbedder(Embedder):
    releases_gil = True  # an HTTP call: the query's embedding overlaps the lexical stage

    def __init__(
        self,
        api_key: str,
        model: str = "gemini-embedding-001",
        dim: int = 768,
        base_url: str | None = None,
        batch_size: int = 64,
        max_attempts: int = 5,
        backoff_initial_secs: float = 1.0,
        backoff_max_secs: float = 30.0,
        timeout_secs: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client, self._types = genai_client(api_key, base_url, timeout_secs)
        self.vendor_model = model
        self.dim = dim
        self.model = f"gemini:{model}:{dim}"
        self.batch_size = batch_size
        self.calls = 0
        self._backoff = Backoff(max_attempts, backoff_initial_secs, backoff_max_secs, sleep)

    def _embed_chunk(self, texts: list[str]) -> np.ndarray:
        config = self._types.EmbedContentConfig(output_dimensionality=self.dim)

        def call() -> Any:
            self.calls += 1
            return self.client.models.embed_content(model=self.vendor_model, contents=texts, config=config)

        response = self._backoff.run(call)
        vectors = [e.values for e in (response.embeddings or [])]
        if len(vectors) != len(texts) or any(v is None or len(v) != self.dim for v in vectors):
            raise ValueError(
                f"Gemini returned {len(vectors)} embeddings for {len(texts)} texts "
                f"(expected dimension {self.dim})"
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        chunks = [
            self._embed_chunk(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)
        ]
        return normalise(np.concatenate(chunks))
