"""Lazy loading of provider classes by name: a vendor module is imported only when chosen."""

from __future__ import annotations

import importlib
from typing import Any


def load(kind: str, registry: dict[str, tuple[str, str]], name: str, options: dict[str, Any]) -> Any:
    try:
        module_name, class_name = registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} provider {name!r}; known: {sorted(registry)}") from None
    return getattr(importlib.import_module(module_name), class_name)(**options)
