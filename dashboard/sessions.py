"""Server-side dashboard sessions: an opaque cookie token maps to the key the operator signed
in with. The key never reaches the browser's storage; the cookie alone is useless elsewhere."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_TTL_SECS = 8 * 3600
MAX_SESSIONS = 1000


@dataclass
class Session:
    """One signed-in browser: who it is, the key it acts with, and its CSRF token."""

    token: str
    subject: str  # "*" for the admin key, else the tenant id the key is bound to
    key: str = field(repr=False)
    csrf: str = field(repr=False)
    expires_at: float

    @property
    def is_admin(self) -> bool:
        return self.subject == "*"

    def public(self) -> dict[str, object]:
        """What the page may know: never the key, and the CSRF token it must echo on writes."""
        return {
            "signed_in": True,
            "role": "admin" if self.is_admin else "tenant",
            "tenant_id": None if self.is_admin else self.subject,
            "csrf_token": self.csrf,
            "expires_at": self.expires_at,
        }


class SessionStore:
    """In-memory, per process, bounded: a restart signs everyone out, which is the safe default."""

    def __init__(
        self, ttl: float = DEFAULT_TTL_SECS, limit: int = MAX_SESSIONS, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, subject: str, key: str) -> Session:
        self._expire()
        while len(self._sessions) >= self.limit:
            self._sessions.popitem(last=False)
        session = Session(
            token=secrets.token_urlsafe(32),
            subject=subject,
            key=key,
            csrf=secrets.token_urlsafe(24),
            expires_at=self.clock() + self.ttl,
        )
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session for a cookie value; an expired one is dropped on sight."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        if session.expires_at <= self.clock():
            del self._sessions[token]
            return None
        return session

    def delete(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[token]
