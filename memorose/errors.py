"""Errors the engine raises for callers; the HTTP layer maps each to a status code.

Every error carries a stable machine-readable ``code`` that ends up in the JSON body
``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations


class MemoroseError(Exception):
    """Base class: an error with an HTTP status and a stable code."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(MemoroseError):
    status = 400
    code = "invalid_input"


class Unauthorized(MemoroseError):
    status = 401
    code = "unauthorized"


class Forbidden(MemoroseError):
    status = 403
    code = "forbidden"


class NotFound(MemoroseError):
    status = 404
    code = "not_found"


class Conflict(MemoroseError):
    status = 409
    code = "conflict"


class PayloadTooLarge(MemoroseError):
    status = 413
    code = "payload_too_large"


class Unavailable(MemoroseError):
    """The node cannot serve this now (no leader, shutting down); retry later."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class OutcomeUnknown(MemoroseError):
    """The write may or may not have been committed (timeout, leader change).

    Retrying with the same event ids is safe: they are idempotency keys.
    """

    status = 504
    code = "outcome_unknown"


class TenantMoved(MemoroseError):
    """The tenant now lives on another shard; ``moved_to`` lists that shard's node URLs."""

    status = 409
    code = "tenant_moved"

    def __init__(self, moved_to: list[str]) -> None:
        super().__init__(f"this tenant moved to another shard: {', '.join(moved_to) or 'unknown'}")
        self.moved_to = moved_to


class ConfigError(MemoroseError):
    code = "config"
