"""Request bodies checked against the shared API models before anything is forwarded.

The gateway and the nodes read the same route table (``memorose.api.openapi.ROUTES``) and
the same strict pydantic models, so a body a node would refuse (an unknown field, a wrong
type, an out-of-range value) is refused here with the same 400 and message, without a
round trip to a shard. Checks that depend on a node's own settings (``max_top_k``, the batch
size limit, quotas) stay on the node.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from memorose.api.models import parse
from memorose.api.openapi import ROUTES

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


@lru_cache(maxsize=1)
def _table() -> tuple[tuple[str, re.Pattern[str], type[BaseModel]], ...]:
    """(method, path pattern, request model) for every route with a JSON body."""
    rows = []
    for route in ROUTES:
        if route.request is not None:
            pattern = _PARAM.sub(r"[^/]+", re.escape(route.path).replace(r"\{", "{").replace(r"\}", "}"))
            rows.append((route.method, re.compile(pattern), route.request))
    return tuple(rows)


def request_model(method: str, path: str) -> type[BaseModel] | None:
    """The request model of the route ``method path`` serves, if it takes a body."""
    for route_method, pattern, model in _table():
        if route_method == method and pattern.fullmatch(path):
            return model
    return None


def check_body(method: str, path: str, payload: Any) -> None:
    """Raise ``InvalidInput`` (400) for a body the route's model refuses; a missing body is
    left to the node (some routes take none)."""
    if payload is None:
        return
    model = request_model(method, path)
    if model is not None:
        parse(model, payload)
