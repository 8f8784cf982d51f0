"""Request-body validation: strict JSON, known fields only, typed values.

Everything a client sends is checked here before it reaches a command, a key, a filter or
a path. Unknown fields are refused (they could try to set server-owned values such as
``seq`` or ``importance``), NaN/Infinity are refused, strings are checked for NUL bytes and
lone surrogates.
"""

from __future__ import annotations

import json
import math
from typing import Any

from memorose.errors import InvalidInput
from memorose.models import (
    MAX_METADATA_BYTES,
    parse_timestamp,
    validate_event_id,
    validate_stream_id,
    validate_tenant_id,
    validate_text,
)


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


def require_object(value: Any, allowed: set[str], where: str = "body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown field(s) in {where}: {', '.join(unknown)[:200]}; allowed: {sorted(allowed)}"
        )
    return value


def required(obj: dict[str, Any], name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise InvalidInput(f"field {name!r} is required")
    return obj[name]


def int_field(obj: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = obj.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer")
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}")
    return value


def bool_field(obj: dict[str, Any], name: str, default: bool) -> bool:
    value = obj.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false")
    return value


def int_param(raw: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}")
    return value


def metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object")
    _check_json_value(value, depth=0)
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return value


def _check_json_value(value: Any, depth: int) -> None:
    if depth > 8:
        raise InvalidInput("metadata is nested too deeply (max 8)")
    if isinstance(value, dict):
        for key, item in value.items():
            validate_text("metadata key", key, max_chars=256)
            _check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)
    elif isinstance(value, str):
        validate_text("metadata value", value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput("metadata numbers must be finite")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63 - 1:
        raise InvalidInput("metadata integers must fit in 64 bits")


EVENT_FIELDS = {"stream_id", "content", "metadata", "timestamp", "event_id"}


def event(obj: Any, default_event_id: str, where: str = "event") -> dict[str, Any]:
    """A validated event ready for the ingest command."""
    obj = require_object(obj, EVENT_FIELDS, where)
    event_id = obj.get("event_id")
    return {
        "stream_id": validate_stream_id(required(obj, "stream_id")),
        "event_id": validate_event_id(event_id) if event_id is not None else default_event_id,
        "content": _content(required(obj, "content")),
        "metadata": metadata(obj.get("metadata")),
        "timestamp": parse_timestamp(obj.get("timestamp")),
    }


def _content(value: Any) -> str:
    """Event text: a non-blank string (an empty event is noise that still costs a Raft entry)."""
    text = validate_text("content", value)
    if not text.strip():
        raise InvalidInput("content must not be empty or only whitespace")
    return text


def tenant(value: Any) -> str:
    if value is None:
        raise InvalidInput("tenant_id is required")
    return validate_tenant_id(value)
