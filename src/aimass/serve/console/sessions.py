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
PER_KEY = 32  # a team sharing one key signs in from this many browsers at once


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
    """In-memory sessions by the sha256 of their id. A key holds at most ``per_key`` (its oldest
    is closed by the next sign-in); past ``max_sessions`` the oldest session of the key holding
    the most goes, so one key signing in again and again closes only its own sessions, never
    the operator's.

    >>> store = Sessions(per_key=2, max_sessions=3)
    >>> mine = store.open("am_admin_x", "admin")
    >>> flood = [store.open("am_k_y", "k") for _ in range(5)]
    >>> store.get(mine) is not None, sum(store.get(f) is not None for f in flood)
    (True, 2)
    """

    def __init__(
        self, lifetime_s: float = LIFETIME_S, max_sessions: int = MAX_SESSIONS, per_key: int = PER_KEY
    ):
        self.lifetime_s, self.max_sessions, self.per_key = lifetime_s, max_sessions, per_key
        self._items: dict[str, Session] = {}
        self._by_key: dict[str, OrderedDict[str, None]] = {}  # key id -> its sessions, oldest first
        self._lock = threading.Lock()

    def open(self, key: str, key_id: str) -> str:
        """A new session for ``key``; returns the id to put in the cookie."""
        session_id = secrets.token_urlsafe(32)
        digest = _digest(session_id)
        with self._lock:
            while len(self._by_key.get(key_id, ())) >= self.per_key:
                self._drop(next(iter(self._by_key[key_id])))
            self._items[digest] = Session(key, key_id, time.time() + self.lifetime_s)
            self._by_key.setdefault(key_id, OrderedDict())[digest] = None
            while len(self._items) > self.max_sessions:
                most = max(self._by_key, key=lambda k: len(self._by_key[k]))
                self._drop(next(iter(self._by_key[most])))
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        digest = _digest(session_id)
        with self._lock:
            found = self._items.get(digest)
            if found is not None and found.expires < time.time():
                self._drop(digest)
                found = None
        return found

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._drop(_digest(session_id))

    def _drop(self, digest: str) -> None:
        found = self._items.pop(digest, None)
        if found is not None:
            mine = self._by_key.get(found.key_id)
            if mine is not None:
                mine.pop(digest, None)
                if not mine:
                    del self._by_key[found.key_id]
