"""LLM providers behind one interface; ``load_llm`` imports a vendor module only when used."""

from __future__ import annotations

import importlib
from typing import Any

from memorose.providers.llm.base import LLMError, LLMProvider, Usage

_PROVIDERS = {
    "offline": ("memorose.providers.llm.offline", "OfflineLLM"),
    "gemini": ("memorose.providers.llm.gemini", "GeminiLLM"),
}


def load_llm(name: str = "offline", **options: Any) -> LLMProvider:
    try:
        module_name, class_name = _PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown LLM provider {name!r}; known: {sorted(_PROVIDERS)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    provider: LLMProvider = cls(**options)
    return provider


__all__ = ["LLMError", "LLMProvider", "Usage", "load_llm"]
