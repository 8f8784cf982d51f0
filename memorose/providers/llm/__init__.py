"""LLM providers behind one interface; ``load_llm`` imports a vendor module only when used."""

from __future__ import annotations

from typing import Any

from memorose.providers.llm.base import LLMError, LLMProvider, Usage
from memorose.providers.registry import load

_PROVIDERS = {
    "offline": ("memorose.providers.llm.offline", "OfflineLLM"),
    "gemini": ("memorose.providers.llm.gemini", "GeminiLLM"),
}


def load_llm(name: str = "offline", **options: Any) -> LLMProvider:
    provider: LLMProvider = load("LLM", _PROVIDERS, name, options)
    return provider


__all__ = ["LLMError", "LLMProvider", "Usage", "load_llm"]
