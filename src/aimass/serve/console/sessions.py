"""Console sessions: a key pasted once, then an HttpOnly, SameSite=Strict cookie.

The cookie holds only a random session id (256 bits). The server keeps, in memory, the sha256 of
that id mapped to the session: the key (so every page re-checks it against the key table, and a
revoked key ends its sessions at once), a CSRF token and an expiry. The key never goes into a
cookie, a page or a log; a restart signs everyone out.

Every form carries the session's CSRF token (``csrf`` field, or the ``X-CSRF-Token`` header for
htmx requests); a POST without the right one is a 403. The sign-in form, which has no session yet,
uses a double-submit token: a random cookie that the form must repeat.

>>> store = Sessions()
>>> sid = store.open("am_admin_x", "admin")
>>> store.get(sid).key_id, store.get("forged") is None
('admin', True)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "aimass_console"
SIGNIN_COOKIE = "aimass_signin"
LIFETIME_S = 12 * 3600
MAX_SESSIONS = 10_000


@dataclass
class Session:
    key: str
    key_id: str
    expires: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    notes: dict = field(default_factory=dict)  # one-time messages, e.g. a new key's secret

    def valid_csrf(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf.encode(), str(token).encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """In-memory sessions by the sha256 of their id, oldest dropped past ``max_sessions``."""

    def __init__(self, lifetime_s: float = LIFETIME_S, max_sessions: int = MAX_SESSIONS):
        self.lifetime_s, self.max_sessions = lifetime_s, max_sessions
        self._items: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, key: str, key_id: str) -> str:
        """A new session for ``key``; returns the id to put in the cookie."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._items[_digest(session_id)] = Session(key, key_id, time.time() + self.lifetime_s)
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        digest = _digest(session_id)
        with self._lock:
            found = self._items.get(digest)
            if found is not None and found.expires < time.time():
                del self._items[digest]
                found = None
        return found

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._items.pop(_digest(session_id), None)
