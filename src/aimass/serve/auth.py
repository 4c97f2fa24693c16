"""API keys with scopes, the server's admin token, and per-key rate limits.

A key reads ``am_<id>_<secret>``; the database keeps only the id and the key's sha256 (the
secret has 256 random bits, so a fast hash is enough and lookups stay cheap). Scopes:
``predict`` (call models) and ``manage`` (deploy, undeploy, keys, usage).

The admin token lives in ``AIMASS_HOME/admin.token`` (mode 0600), created the first time a
server starts; the CLI on the same machine reads it, so operators never paste secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import select

from aimass import paths
from aimass.errors import ConfigError, NotFoundError, PermissionDenied, TooManyRequests, Unauthenticated
from aimass.store.db import ApiKeyRecord, session

SCOPES = ("predict", "manage")
ADMIN_ID = "admin"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# ------------------------------------------------------------------ keys
def create_key(name: str = "", scopes: list[str] | tuple = ("predict",), rate_limit: float | None = None):
    """A new key: returns ``(record, key)``; the key itself is shown once and never stored."""
    scopes = sorted(set(scopes))
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ConfigError(f"Unknown scopes {bad or scopes}.", hint=f"Use one or more of {list(SCOPES)}.")
    if rate_limit is not None and not rate_limit > 0:
        raise ConfigError(
            f"Rate limit must be > 0 requests/s; got {rate_limit}.", hint="e.g. --rate-limit 20"
        )
    key_id = secrets.token_hex(4)
    key = f"am_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKeyRecord(id=key_id, name=name, hash=_digest(key), scopes=scopes, rate_limit=rate_limit)
    with session() as s, s.begin():
        s.add(record)
    return record, key


def list_keys() -> list[dict]:
    with session() as s:
        return [r.to_dict() for r in s.scalars(select(ApiKeyRecord).order_by(ApiKeyRecord.created)).all()]


def revoke_key(key_id: str) -> dict:
    with session() as s, s.begin():
        record = s.get(ApiKeyRecord, key_id)
        if record is None:
            raise NotFoundError(f"No API key with id '{key_id}'.", hint="`aimass keys list` shows the ids.")
        record.revoked = record.revoked or datetime.now(UTC).isoformat(timespec="seconds")
        return record.to_dict()


# ----------------------------------------------------------- admin token
def admin_token(create: bool = True) -> str | None:
    """The admin token (created with mode 0600 if missing and ``create``)."""
    path = paths.home() / "admin.token"
    if not path.exists():
        if not create:
            return None
        token = f"am_{ADMIN_ID}_{secrets.token_urlsafe(32)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another server won the race
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return path.read_text().strip()


# ------------------------------------------------------------ the check
class Caller:
    """Who is calling: a key id (``admin``, a key, or ``anonymous``) and its scopes."""

    def __init__(self, key_id: str, scopes: tuple, rate_limit: float | None = None):
        self.key_id, self.scopes, self.rate_limit = key_id, scopes, rate_limit


ANONYMOUS = Caller("anonymous", ("predict",))


class Guard:
    """Authenticates ``Authorization: Bearer`` headers and enforces scopes and rate limits."""

    def __init__(self, *, open_predict: bool = False, admin: str | None = None, cache_s: float = 5.0):
        self.open_predict = open_predict
        self._admin = _digest(admin) if admin else None
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._cache_s = cache_s
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, header: str | None, scope: str) -> Caller:
        caller = self._identify(header)
        if caller is None:
            if scope == "predict" and self.open_predict:
                return ANONYMOUS
            raise Unauthenticated(
                "This endpoint needs an API key." if not header else "The API key is unknown or revoked.",
                hint="Send 'Authorization: Bearer <key>'; create one with `aimass keys create`.",
            )
        if scope not in caller.scopes:
            raise PermissionDenied(
                f"Key '{caller.key_id}' has scopes {list(caller.scopes)}; this endpoint needs '{scope}'.",
                hint=f"Use a key created with `aimass keys create --scope {scope}`.",
            )
        self._spend(caller)
        return caller

    def _identify(self, header: str | None) -> Caller | None:
        if not header or not header.lower().startswith("bearer "):
            return None
        key = header[7:].strip()
        digest = _digest(key)
        if self._admin and hmac.compare_digest(digest, self._admin):
            return Caller(ADMIN_ID, SCOPES)
        cached = self._cache.get(digest)
        if cached and time.monotonic() - cached[0] < self._cache_s:  # revocation applies within cache_s
            return cached[1]
        caller = _lookup(key, digest)
        self._cache[digest] = (time.monotonic(), caller)
        return caller

    def _spend(self, caller: Caller) -> None:
        """Token bucket per key: ``rate_limit`` requests/s, bursts up to max(1, rate_limit)."""
        rate = caller.rate_limit
        if not rate:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(caller.key_id, (max(1.0, rate), now))
        tokens = min(max(1.0, rate), tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[caller.key_id] = (tokens, now)
            raise TooManyRequests(
                f"Key '{caller.key_id}' is limited to {rate:g} requests/s.",
                retry_after=max(1, math.ceil((1 - tokens) / rate)),
                hint="Slow down, batch several inputs per request, or ask for a higher limit.",
            )
        self._buckets[caller.key_id] = (tokens - 1, now)


def _lookup(key: str, digest: str) -> Caller | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "am":
        return None
    with session() as s:
        record = s.get(ApiKeyRecord, parts[1])
    if record is None or record.revoked or not hmac.compare_digest(record.hash, digest):
        return None
    return Caller(record.id, tuple(record.scopes), record.rate_limit)
