"""Retries with exponential backoff for remote providers, honouring rate limits.

A 429 (or 503) answer's own hint wins over the computed backoff: the ``Retry-After``
header, or the ``retryDelay`` of a google.rpc.RetryInfo detail in the error body. Only
transient failures are retried (rate limits, 5xx, timeouts, dropped connections); a 4xx
such as a bad key fails at once. Every failed attempt is counted by kind in ``usage``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from memorose.providers.llm.base import LLMError, Usage

T = TypeVar("T")
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


def _status_and_response(exc: BaseException) -> tuple[int | None, Any, Any]:
    """(HTTP status, response object, error body) of a google-genai or httpx error."""
    try:
        from google.genai import errors as genai_errors
    except ImportError:  # pragma: no cover - google-genai is a dependency
        genai_errors = None  # type: ignore[assignment]
    if genai_errors is not None and isinstance(exc, genai_errors.APIError):
        return int(exc.code or 0) or None, getattr(exc, "response", None), exc.details
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            body = exc.response.json()
        except ValueError:
            body = None
        return exc.response.status_code, exc.response, body
    return None, None, None


def _hinted_delay(response: Any, body: Any) -> float | None:
    headers = getattr(response, "headers", None)
    if headers is not None:
        value = headers.get("retry-after") or headers.get("Retry-After")
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                pass
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                continue
    return None


def classify(exc: BaseException) -> tuple[str, bool, float | None]:
    """(kind, retryable, server's delay hint) of a failed call."""
    status, response, body = _status_and_response(exc)
    if status is not None:
        kind = "rate_limited" if status == 429 else "server_error" if status >= 500 else "client_error"
        return kind, status in _RETRYABLE_STATUS, _hinted_delay(response, body)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout", True, None
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return "connection", True, None
    return "error", False, None


@dataclass(frozen=True)
class Backoff:
    """How a provider retries transient failures (a value object shared by every vendor)."""

    attempts: int = 5
    initial: float = 1.0
    max_delay: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def run(self, call: Callable[[], T], usage: Usage | None = None) -> T:
        return with_retries(
            call,
            attempts=self.attempts,
            initial=self.initial,
            max_delay=self.max_delay,
            usage=usage,
            sleep=self.sleep,
        )


def with_retries(
    call: Callable[[], T],
    *,
    attempts: int,
    initial: float,
    max_delay: float,
    usage: Usage | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``; retry transient failures; raise LLMError(kind) when out of attempts."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            kind, retryable, hint = classify(exc)
            if usage is not None:
                usage.errors[kind] += 1
            if not retryable or attempt == attempts:
                raise LLMError(kind, str(exc)[:300]) from exc
            backoff = min(max_delay, initial * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            delay = min(max_delay, hint) if hint is not None else backoff
            if usage is not None:
                usage.retries += 1
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def genai_client(api_key: str, base_url: str | None, timeout_secs: float) -> tuple[Any, Any]:
    """A google-genai client and its ``types`` module (imported only when Gemini is chosen)."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=base_url, timeout=int(timeout_secs * 1000))
    return genai.Client(api_key=api_key, http_options=options), types
