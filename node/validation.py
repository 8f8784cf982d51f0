"""What stays hand-written of request validation; the bodies and query strings themselves
are pydantic models (``memorose.api.models``).

- ``parse_json``: the bytes before any model sees them. Python's ``json`` with
  ``parse_constant`` is what refuses NaN/Infinity literals, and its errors (not UTF-8, a body
  nested past the parser's depth, malformed text) must be 400s with our message; the gateway
  parses with the same rules (``gateway.routing``), so both answer alike.
- ``tenant``: a tenant named in the path or the query outside a model (admin routes).
"""

from __future__ import annotations

import json
from typing import Any

from memorose.errors import InvalidInput
from memorose.models import validate_tenant_id


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not allowed in JSON")


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("body is not UTF-8") from exc
    if not text.strip():
        raise InvalidInput("body is empty; a JSON object is required")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except InvalidInput:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from exc


def tenant(value: Any) -> str:
    if value is None:
        raise InvalidInput("tenant_id is required")
    return validate_tenant_id(value)
