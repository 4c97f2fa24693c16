"""API keys with scopes, the server's admin token, per-key rate limits and quotas.

A key reads ``am_<id>_<secret>``; the database keeps only the id and the key's sha256 (the
secret has 256 random bits, so a fast hash is enough and lookups stay cheap). Scopes:

- ``predict``: call models;
- ``manage``: deploy, undeploy, keys, usage, and jobs that call aimass (import, train, ...);
- ``jobs:code``: upload code and run it as a custom job. That code runs on the server as the
  server's user, so ``manage`` does not include it; a key has it only when created with it
  (``aimass keys create --scope jobs:code``), and only a caller holding it may grant it.

The admin token lives in ``AIMASS_HOME/admin.token`` (mode 0600), created the first time a
server starts; the CLI on the same machine reads it, so operators never paste secrets. It has
every scope.

A server keeps recent lookups in a bounded cache, and every revocation (REST or CLI, in any
process sharing ``AIMASS_HOME``) appends a line to ``AIMASS_HOME/keys.revoked``; the server
stats that file on each request (about 2 µs) and drops its cache when it grew, so a revoked
key is refused from the next request on.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import numbers
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from aimass import paths
from aimass.access import directory
from aimass.errors import ConfigError, NotFoundError, PermissionDenied, TooManyRequests, Unauthenticated
from aimass.serve import quotas
from aimass.store.db import ApiKeyRecord, session

CODE_SCOPE = "jobs:code"
SCOPES = ("predict", "manage", CODE_SCOPE)
ADMIN_ID = "admin"
POLICY_DECIDED = "policy_decided"  # request.state flag: the access policies decided this request
RATE_MIN, RATE_MAX = 0.001, 1_000_000.0  # requests per second
CACHE_SIZE = 4096  # keys remembered per server (valid and unknown alike), least recently used out
MAX_BUCKETS = 65_536  # rate buckets kept (keys and anonymous addresses), the oldest dropped first
REVOKED_LOG = "keys.revoked"
KEY_FORMAT = re.compile(r"am_([0-9a-f]{8})_[A-Za-z0-9_-]{32,128}")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# ------------------------------------------------------------------ keys
def grantable(caller: Caller) -> set[str]:
    """What ``caller`` may put in a new key: ``predict`` and ``manage`` with ``manage``, and
    ``jobs:code`` only if it holds ``jobs:code`` itself (so ``manage`` cannot mint a way to run code)."""
    scopes = set(caller.scopes)
    return scopes | {"predict", "manage"} if "manage" in scopes else scopes


def create_key(
    name: str = "",
    scopes: list[str] | tuple = ("predict",),
    rate_limit: float | None = None,
    *,
    quota: int | None = None,
    quota_period: str | None = None,
    granted_by: Caller | None = None,
):
    """A new key: returns ``(record, key)``; the key itself is shown once and never stored.

    ``rate_limit`` is requests/s, from :data:`RATE_MIN` to :data:`RATE_MAX` (None: no limit);
    ``quota``: metered items per ``quota_period`` (``day`` or ``month``, UTC; None: no quota).
    ``granted_by``: the caller asking (over REST); see :func:`grantable`. The new key is bound as
    the caller's key is (its user, project and tags): a key that acts as a user, or reaches one
    project, cannot mint a key that reaches further.
    """
    scopes = sorted(set(scopes))
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ConfigError(f"Unknown scopes {bad or scopes}.", hint=f"Use one or more of {list(SCOPES)}.")
    if granted_by is not None and (beyond := [s for s in scopes if s not in grantable(granted_by)]):
        raise PermissionDenied(
            f"Key '{granted_by.key_id}' has scopes {list(granted_by.scopes)} and cannot grant {beyond}.",
            hint="A key grants only scopes it has; the admin token (`aimass keys create` on the server) "
            "grants any.",
        )
    _not_held_to_a_limit(granted_by)
    rate_limit = check_rate_limit(rate_limit)
    quota, quota_period = quotas.check_quota(quota, quota_period)
    key_id = secrets.token_hex(4)
    key = f"am_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKeyRecord(
        id=key_id,
        name=name,
        hash=_digest(key),
        scopes=scopes,
        rate_limit=rate_limit,
        quota=quota,
        quota_period=quota_period,
    )
    with session() as s, s.begin():
        s.add(record)
    if granted_by is not None and granted_by.key_id not in ("admin", "anonymous"):
        bound = directory.key_binding(granted_by.key_id)
        if bound["user"] or bound["project"] or bound["tags"]:  # before anyone has the key
            tags = bound["tags"] or None
            directory.bind_key(key_id, user=bound["user"], project=bound["project"], tags=tags)
        for policy in directory.attached("key", granted_by.key_id):  # a Deny on the key binds its children
            directory.attach(policy, "key", key_id)
    return record, key


UNCHANGED = object()


def update_key(
    key_id: str,
    *,
    rate_limit=UNCHANGED,
    quota=UNCHANGED,
    quota_period=UNCHANGED,
    granted_by: Caller | None = None,
) -> dict:
    """Change a key's rate limit or quota (None removes it); servers apply it within seconds.
    A quota's period stays as it was unless given."""
    _not_held_to_a_limit(granted_by)
    with session() as s, s.begin():
        record = s.get(ApiKeyRecord, key_id)
        if record is None or record.revoked:
            state = "revoked" if record is not None else "unknown"
            raise NotFoundError(
                f"No active API key with id '{key_id}' ({state}).", hint="`aimass keys list` shows the ids."
            )
        if rate_limit is not UNCHANGED:
            record.rate_limit = check_rate_limit(rate_limit)
        if quota is None:  # no quota, so no period either
            record.quota = record.quota_period = None
        elif quota is not UNCHANGED or quota_period is not UNCHANGED:
            new = record.quota if quota is UNCHANGED else quota
            period = record.quota_period if quota_period is UNCHANGED else quota_period
            record.quota, record.quota_period = quotas.check_quota(new, period)
    return _listed(record)


def _not_held_to_a_limit(caller: Caller | None) -> None:
    """A key with a quota or a rate limit may not mint or change keys: a fresh key (or its own,
    changed) would escape the limit."""
    if caller is None or caller.key_id in (ADMIN_ID, "anonymous"):
        return
    held = None
    if quotas.limit_of(caller.key_id) is not None:
        held = "a quota"
    else:
        with session() as s:
            record = s.get(ApiKeyRecord, caller.key_id)
        if record is not None and record.rate_limit is not None:
            held = "a rate limit"
    if held:
        raise PermissionDenied(
            f"Key '{caller.key_id}' is held to {held}, so it may not create or change keys.",
            hint="Ask an operator (the admin token, or a key without a quota or rate limit) to do it.",
        )


def check_rate_limit(value) -> float | None:
    """``value`` as a float in [RATE_MIN, RATE_MAX] requests/s, or None for no limit.

    Raises:
        ConfigError: not a number, not finite (inf, NaN) or out of range.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"Rate limit must be a number of requests/s; got {value!r}.", hint="e.g. --rate-limit 20"
        )
    try:
        rate = float(value)
    except OverflowError:  # an int past float range
        rate = math.inf
    if not (math.isfinite(rate) and RATE_MIN <= rate <= RATE_MAX):
        raise ConfigError(
            f"Rate limit must be from {RATE_MIN:g} to {RATE_MAX:,.0f} requests/s; got {rate!r}.",
            hint='e.g. --rate-limit 20 (REST: "rate_limit": 20); leave it out for no limit.',
        )
    return rate


def open_rate() -> float | None:
    """``AIMASS_OPEN_PREDICT_RATE``: requests/s each client address may send as the anonymous caller
    of an ``--open-predict`` server (unset: no limit but the server's own queues)."""
    value = os.environ.get("AIMASS_OPEN_PREDICT_RATE", "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = value  # refused below, naming it
    try:
        return check_rate_limit(number)
    except ConfigError as exc:
        raise ConfigError(f"AIMASS_OPEN_PREDICT_RATE: {exc.message}", hint="e.g. 20, or unset it.") from None


def effective_rate(stored) -> float | None:
    """The limit a stored value means: finite positive values clamped into range, anything else
    (None, inf or NaN left by an older version) no limit."""
    if isinstance(stored, bool) or not isinstance(stored, numbers.Real):
        return None
    rate = float(stored)
    if not math.isfinite(rate) or rate <= 0:
        return None
    return min(max(rate, RATE_MIN), RATE_MAX)


def list_keys() -> list[dict]:
    """Every key, with ``quota_used``: the items used this period where it has a quota."""
    with session() as s:
        records = s.scalars(select(ApiKeyRecord).order_by(ApiKeyRecord.created)).all()
    return [_listed(r) for r in records]


def _listed(record: ApiKeyRecord) -> dict:
    info = {**record.to_dict(), "rate_limit": effective_rate(record.rate_limit), "quota_used": None}
    if record.quota:
        since = quotas.window(record.quota_period or "month")[0]
        info["quota_used"] = quotas.used_since(record.id, quotas.minute(since))
    return info


def revoke_key(key_id: str) -> dict:
    """Revoke a key; every server on this ``AIMASS_HOME`` refuses it from its next request."""
    with session() as s, s.begin():
        record = s.get(ApiKeyRecord, key_id)
        if record is None:
            raise NotFoundError(f"No API key with id '{key_id}'.", hint="`aimass keys list` shows the ids.")
        record.revoked = record.revoked or datetime.now(UTC).isoformat(timespec="seconds")
        info = record.to_dict()
    with open(paths.home() / REVOKED_LOG, "a") as log:  # after the commit: guards re-read from here
        log.write(f"{info['revoked']} {key_id}\n")
    return info


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
    """Who is calling: a key id (``admin``, a key, or ``anonymous``) and its scopes; ``where``, the
    request's client address and scheme (what policy conditions read), once :meth:`at` set it."""

    def __init__(
        self, key_id: str, scopes: tuple, rate_limit: float | None = None, where: dict | None = None
    ):
        self.key_id, self.scopes, self.rate_limit, self.where = key_id, scopes, rate_limit, where or {}

    def at(self, request: dict | None) -> Caller:
        """This caller, calling from where the ASGI scope ``request`` says (a copy: callers are cached)."""
        if not request:
            return self
        return Caller(
            self.key_id, self.scopes, self.rate_limit, {k: request.get(k) for k in ("client", "scheme")}
        )


ANONYMOUS = Caller("anonymous", ("predict",))


def require(caller: Caller, scope: str | tuple[str, ...], why: str = "this endpoint needs") -> Caller:
    """``caller`` if it has ``scope`` (or one of several); PermissionDenied (403) otherwise.

    >>> require(Caller("k1", ("manage",)), "manage").key_id
    'k1'
    """
    needed = (scope,) if isinstance(scope, str) else tuple(scope)
    if not any(s in caller.scopes for s in needed):
        wanted = " or ".join(repr(s) for s in needed)
        hint = f"Use a key created with `aimass keys create --scope {needed[0]}`."
        if CODE_SCOPE in needed:
            hint += f" 'manage' does not include '{CODE_SCOPE}': it runs code on the server."
        raise PermissionDenied(
            f"Key '{caller.key_id}' has scopes {list(caller.scopes)}; {why} {wanted}.", hint=hint
        )
    return caller


class Guard:
    """Authenticates ``Authorization: Bearer`` headers and enforces scopes and rate limits.

    Lookups are cached (at most ``cache_size`` keys, each for ``cache_s`` seconds); a revocation
    anywhere on this ``AIMASS_HOME`` empties the cache before the next request is checked.
    Malformed keys are refused without a lookup and never cached.
    """

    def __init__(
        self,
        *,
        open_predict: bool = False,
        admin: str | None = None,
        cache_s: float = 5.0,
        cache_size: int = CACHE_SIZE,
    ):
        self.open_predict = open_predict
        self._admin = _digest(admin) if admin else None
        self._cache: OrderedDict[str, tuple[float, Caller | None]] = OrderedDict()
        self._cache_s, self._cache_size = cache_s, cache_size
        self._lock = threading.Lock()
        self._revocations = paths.home() / REVOKED_LOG
        self._seen = _mark(self._revocations)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._open_rate = open_rate() if open_predict else None  # a bad value stops the start-up
        self.policy = None  # an AccessGuard (aimass.serve.access_guard), set by the app

    def check(self, header: str | None, scope: str | tuple[str, ...], request=None) -> Caller:
        """The caller, if the key is valid, may do what the request asks and is within its rate.

        ``request``: the ASGI scope; a route that :attr:`policy` has a rule for is decided by the
        access policies, any other by ``scope`` (or one of several)."""
        caller = self.identify(header)
        if caller is None:
            if scope == "predict" and self.open_predict:
                if self._open_rate is not None:  # per client address: one client cannot take it all
                    client = (request or {}).get("client") or ("?",)
                    self.spend(Caller("anonymous", ("predict",), self._open_rate), f"anonymous@{client[0]}")
                return ANONYMOUS
            raise Unauthenticated(
                "This endpoint needs an API key." if not header else "The API key is unknown or revoked.",
                hint="Send 'Authorization: Bearer <key>'; create one with `aimass keys create`.",
            )
        self.spend(caller)  # before any decision: a refused request costs one too (and writes an audit row)
        found = self.policy.rule(request) if self.policy is not None and request is not None else None
        if found is None:
            require(caller, scope)
        else:
            self.policy.authorize(caller, request, found)
            request.setdefault("state", {})[POLICY_DECIDED] = True
        return caller.at(request)

    def identify(self, header: str | None) -> Caller | None:
        """The caller a header names, or None (no key, malformed, unknown or revoked)."""
        if not header or header[:7].lower() != "bearer ":
            return None
        key = header[7:].strip()
        digest = _digest(key)
        if self._admin and hmac.compare_digest(digest, self._admin):
            return Caller(ADMIN_ID, SCOPES)
        if not (form := KEY_FORMAT.fullmatch(key)):
            return None
        seen = self._fresh()
        with self._lock:
            cached = self._cache.get(digest)
            if cached and time.monotonic() - cached[0] < self._cache_s:
                self._cache.move_to_end(digest)
                return cached[1]
        caller = _lookup(form.group(1), digest)
        self._remember(digest, caller, seen)
        return caller

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    def _fresh(self):
        """Drop the cache if a key was revoked since the last look; returns the mark seen."""
        mark = _mark(self._revocations)
        if mark != self._seen or mark is _UNKNOWN:
            with self._lock:
                self._cache.clear()
                self._seen = mark
        return mark

    def _remember(self, digest: str, caller: Caller | None, seen) -> None:
        with self._lock:
            if seen is _UNKNOWN or seen != self._seen:  # a revocation came in during the lookup
                return
            self._cache[digest] = (time.monotonic(), caller)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def spend(self, caller: Caller, bucket: str | None = None) -> None:
        """Token bucket per key (or ``bucket``: an anonymous client's address): ``rate_limit``
        requests/s, bursts up to max(1, rate_limit)."""
        rate = caller.rate_limit
        if not rate:
            return
        now = time.monotonic()
        bucket = bucket or caller.key_id
        if bucket not in self._buckets and len(self._buckets) >= MAX_BUCKETS:  # addresses are many
            self._buckets.pop(next(iter(self._buckets)))
        tokens, last = self._buckets.get(bucket, (max(1.0, rate), now))
        tokens = min(max(1.0, rate), tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[bucket] = (tokens, now)
            who = "Key 'anonymous' (this address)" if bucket != caller.key_id else f"Key '{caller.key_id}'"
            raise TooManyRequests(
                f"{who} is limited to {rate:g} requests/s.",
                retry_after=max(1, math.ceil((1 - tokens) / rate)),
                hint="Slow down, batch several inputs per request, or ask for a higher limit.",
            )
        self._buckets[bucket] = (tokens - 1, now)


_UNKNOWN = object()  # the revocations log could not be read: cache nothing


def _mark(path: Path):
    """What identifies the revocations log's state: it only grows, so its size changes on
    every revocation (inode too, should someone replace it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return _UNKNOWN
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _lookup(key_id: str, digest: str) -> Caller | None:
    with session() as s:
        record = s.get(ApiKeyRecord, key_id)
    if record is None or record.revoked or not hmac.compare_digest(record.hash, digest):
        return None
    return Caller(record.id, tuple(record.scopes), effective_rate(record.rate_limit))
