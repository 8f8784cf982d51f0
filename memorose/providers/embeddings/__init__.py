"""Embedding providers behind one interface; ``load_embedder`` imports a vendor on demand."""

from __future__ import annotations

from typing import Any

from memorose.providers.embeddings.base import Embedder
from memorose.providers.registry import load

_PROVIDERS = {
    "local": ("memorose.providers.embeddings.local", "LocalEmbedder"),
    "hashing": ("memorose.providers.embeddings.hashing", "HashingEmbedder"),
    "gemini": ("memorose.providers.embeddings.gemini", "GeminiEmbedder"),
    "openai_compat": ("memorose.providers.embeddings.openai_compat", "OpenAICompatEmbedder"),
}


def load_embedder(name: str = "local", **options: Any) -> Embedder:
    embedder: Embedder = load("embedding", _PROVIDERS, name, options)
    return embedder


__all__ = ["Embedder", "load_embedder"]
