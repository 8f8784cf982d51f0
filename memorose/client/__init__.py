"""The Memorose Python SDK.

``MemoroseClient`` (blocking) and ``AsyncMemoroseClient`` (asyncio) have the same methods and
share all request, retry and leader-tracking logic (``_core.py``); only the I/O differs.

    from memorose.client import MemoroseClient
    client = MemoroseClient("http://localhost:8080")          # key from MEMOROSE_API_KEY
    client.ingest("user_123", "session_1", "User loves hiking")
    client.retrieve(tenant_id="user_123", stream_id="session_1", query="outdoor activities",
                    top_k=5, graph_depth=1)

``memorose.client.api`` holds the request and response models the node validates with (and
the OpenAPI document is built from); results convert to them with ``to_model()``.
"""

from memorose.api import models as api
from memorose.client._async import AsyncMemoroseClient
from memorose.client._core import RetryPolicy, Timeout
from memorose.client._sync import MemoroseClient
from memorose.client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConnectError,
    MemoroseClientError,
    NotFoundError,
    OutcomeUnknownError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
    RequestTimeout,
    TransportError,
    UnavailableError,
)
from memorose.client.models import ConsolidateResult, IngestResult, MemoryItem, RetrieveResult, TenantStatus

__all__ = [
    "APIError",
    "AsyncMemoroseClient",
    "AuthenticationError",
    "BadRequestError",
    "ConnectError",
    "ConsolidateResult",
    "IngestResult",
    "MemoroseClient",
    "MemoroseClientError",
    "MemoryItem",
    "NotFoundError",
    "OutcomeUnknownError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitedError",
    "RequestTimeout",
    "RetrieveResult",
    "RetryPolicy",
    "TenantStatus",
    "Timeout",
    "TransportError",
    "UnavailableError",
    "api",
]
