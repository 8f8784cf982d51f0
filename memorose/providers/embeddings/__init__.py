"""Embedding providers behind one interface; ``load_embedder`` imports a vendor on demand."""

from __future__ import annotations

import importlib
from typing import Any

from memorose.providers.embeddings.base import Embedder

_PROVIDERS = {
    "hashing": ("memorose.providers.embeddings.hashing", "HashingEmbedder"),
    "gemini": ("memorose.providers.embeddings.gemini", "GeminiEmbedder"),
    "openai_compat": ("memorose.providers.embeddings.openai_compat", "OpenAICompatEmbedder"),
}


def load_embedder(name: str = "hashing", **options: Any) -> Embedder:
    try:
        module_name, class_name = _PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown embedding provider {name!r}; known: {sorted(_PROVIDERS)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    embedder: Embedder = cls(**options)
    return embedder


__all__ = ["Embedder", "load_embedder"]
