"""The SDK's exception tree.

    MemoroseClientError
    ├── TransportError              no usable answer from any node
    │   ├── ConnectError            could not connect to any seed / leader
    │   └── RequestTimeout          the request timed out
    └── APIError                    the server answered with an error body
        ├── BadRequestError         400 (invalid input)
        ├── AuthenticationError     401
        ├── PermissionDeniedError   403
        ├── NotFoundError           404
        ├── PayloadTooLargeError    413
        ├── RateLimitedError        429 after retries (the tenant's rate or ingest volume)
        ├── QuotaExceededError      507 (the tenant's storage quota; not retried)
        ├── UnavailableError        503 after retries (no leader, overloaded)
        └── OutcomeUnknownError     504: a write may or may not have committed

A write that fails with ``TransportError`` or ``OutcomeUnknownError`` is safe to retry: the
client sends the same event ids, which the server treats as idempotency keys.
"""

from __future__ import annotations

from typing import Any


class MemoroseClientError(Exception):
    """Base of every error the SDK raises."""


class TransportError(MemoroseClientError):
    pass


class ConnectError(TransportError):
    pass


class RequestTimeout(TransportError):
    pass


class APIError(MemoroseClientError):
    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class BadRequestError(APIError):
    pass


class AuthenticationError(APIError):
    pass


class PermissionDeniedError(APIError):
    pass


class NotFoundError(APIError):
    pass


class PayloadTooLargeError(APIError):
    pass


class RateLimitedError(APIError):
    pass


class QuotaExceededError(APIError):
    pass


class UnavailableError(APIError):
    pass


class OutcomeUnknownError(APIError):
    pass


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    429: RateLimitedError,
    507: QuotaExceededError,
    503: UnavailableError,
    504: OutcomeUnknownError,
}


def error_for(status: int, body: Any) -> APIError:
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code", "error")) if isinstance(error, dict) else "error"
    message = str(error.get("message", "")) if isinstance(error, dict) else str(body)[:200]
    cls = _BY_STATUS.get(status, APIError)
    return cls(status, code, message, body)
