"""Usage per key: requests, items and compute milliseconds, by model and minute.

The request path only adds to an in-memory tally; :meth:`Meter.flush` (every couple of
seconds, and at shutdown) folds it into the ``usage`` table, one row per key, model and minute.
:meth:`Meter.admit` holds a key to its quota (:mod:`aimass.serve.quotas`): the table's items this
period (re-read every few seconds, off the event loop) plus the tally not yet written.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from aimass.errors import ConfigError
from aimass.serve import quotas
from aimass.store.db import UsageRecord, session

REFRESH_S = 5.0  # how stale a key's quota and stored usage may be
HOLD_S = 900.0  # a request's hold lapses after this long even if it was never released
UNMETERED = ("admin", "anonymous")


def _minute() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")


class Meter:
    def __init__(self):
        self._tally: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
        self._lock = threading.Lock()
        # key -> (read at, (quota, period) or None, first minute of the period, items stored then)
        self._quotas: dict[str, tuple[float, tuple[int, str] | None, str, int]] = {}
        # key -> the holds of its requests in flight: hold -> (items expected, held until)
        self._holds: dict[str, dict[Hold, tuple[int, float]]] = {}

    async def admit(self, key_id: str, items: int = 1) -> Hold:
        """QuotaExceeded (429) when ``key_id`` has used its quota's items this period, counting
        what the key's requests in flight are expected to use (their holds); else the request's
        own :class:`Hold` of ``items`` (release it when the request ends). A key without a quota
        gets a hold that holds nothing."""
        known = self._quotas.get(key_id)
        if key_id not in UNMETERED and (known is None or time.monotonic() - known[0] > REFRESH_S):
            await asyncio.to_thread(self._read_quota, key_id)
        return self.admit_now(key_id, items)

    def admit_now(self, key_id: str, items: int = 1) -> Hold:
        """:meth:`admit` in the calling thread (a worker's: the quota is read here if it is stale)."""
        if key_id in UNMETERED:
            return Hold(self, key_id, 0)
        known = self._quotas.get(key_id)
        if known is None or time.monotonic() - known[0] > REFRESH_S:
            known = self._read_quota(key_id)
        if known[1] is None:
            return Hold(self, key_id, 0)
        hold = Hold(self, key_id, 0)
        hold.grow(items)
        return hold

    def _check(self, key_id: str, hold: Hold) -> None:
        """Refuse when the stored use, the tally not yet written and the other holds reach the quota
        (the request's own size is not refused ahead: the one that crosses it is answered)."""
        known = self._quotas.get(key_id)
        if known is None or known[1] is None:
            return
        _, limit, since, stored = known
        now = time.monotonic()
        with self._lock:
            pending = sum(row[1] for (k, _, m), row in self._tally.items() if k == key_id and m >= since)
            held = self._holds.setdefault(key_id, {})
            for other in [h for h, (_, until) in held.items() if until < now]:  # never released: a backstop
                del held[other]
            others = sum(n for h, (n, _) in held.items() if h is not hold)
        if stored + pending + others >= limit[0]:
            raise quotas.refuse(key_id, *limit, stored + pending + others)

    def forget(self, key_id: str) -> None:
        """Read ``key_id``'s quota afresh on its next request (it was just changed here)."""
        self._quotas.pop(key_id, None)

    def _read_quota(self, key_id: str):
        limit = quotas.limit_of(key_id)
        since = quotas.minute(quotas.window(limit[1])[0]) if limit else ""
        known = (time.monotonic(), limit, since, quotas.used_since(key_id, since) if limit else 0)
        self._quotas[key_id] = known
        return known

    def add(self, key_id: str, model: str, items: int, compute_ms: float, requests: int = 1) -> None:
        with self._lock:
            row = self._tally[(key_id, model, _minute())]
            row[0] += requests
            row[1] += items
            row[2] += compute_ms

    def flush(self) -> int:
        """Write the tally to the database; returns how many rows it touched. If the write fails
        (e.g. the database is busy) the tally is kept for the next flush and the error re-raised."""
        with self._lock:
            tally, self._tally = self._tally, defaultdict(lambda: [0, 0, 0.0])
        if not tally:
            return 0
        try:
            self._write(tally)
        except Exception:
            with self._lock:  # nothing metered is lost: fold it back into the current tally
                for where, (requests, items, ms) in tally.items():
                    row = self._tally[where]
                    row[0], row[1], row[2] = row[0] + requests, row[1] + items, row[2] + ms
            raise
        for (key_id, _, minute), (_, items, _) in tally.items():  # now stored: count it there
            known = self._quotas.get(key_id)
            if known and known[1] and minute >= known[2]:
                self._quotas[key_id] = (*known[:3], known[3] + int(items))
        return len(tally)

    @staticmethod
    def _write(tally: dict) -> None:
        with session() as s, s.begin():
            for (key_id, model, minute), (requests, items, ms) in tally.items():
                row = s.scalar(
                    select(UsageRecord).where(
                        UsageRecord.key_id == key_id, UsageRecord.model == model, UsageRecord.minute == minute
                    )
                )
                if row is None:
                    row = UsageRecord(
                        key_id=key_id, model=model, minute=minute, requests=0, items=0, compute_ms=0
                    )
                    s.add(row)
                row.requests += int(requests)
                row.items += int(items)
                row.compute_ms += float(ms)


class Hold:
    """The items one request of a key held to a quota is expected to use, while it runs: the
    key's other requests count them, so many requests at once cannot all slip under the quota
    before any is metered. :meth:`release` when the request ends (it lapses after
    :data:`HOLD_S` regardless)."""

    def __init__(self, meter: Meter, key_id: str, items: int):
        self.meter, self.key_id, self.items = meter, key_id, items

    def grow(self, items: int) -> None:
        """Expect ``items`` more; QuotaExceeded (429, and nothing held) when the key's use and its
        other requests' holds already reach the quota."""
        if self.meter._quotas.get(self.key_id, (0, None))[1] is None:
            return
        try:
            self.meter._check(self.key_id, self)
        except Exception:
            self.release()
            raise
        with self.meter._lock:
            self.items += max(0, int(items))
            self.meter._holds.setdefault(self.key_id, {})[self] = (self.items, time.monotonic() + HOLD_S)

    def release(self) -> None:
        with self.meter._lock:
            self.meter._holds.get(self.key_id, {}).pop(self, None)
        self.items = 0


def record(key_id: str, model: str, items: int, compute_ms: float, requests: int = 1) -> None:
    """Meter one piece of work done outside a server's meter (a ``predict`` job's rows) to
    ``key_id``: written at once. ``requests``: 0 for a part of one (a job's rows as it goes)."""
    if key_id in UNMETERED or items <= 0 and requests <= 0:
        return
    meter = Meter()
    meter.add(key_id, model, max(items, 0), compute_ms, requests)
    meter.flush()


def usage(key: str | None = None, since: str | None = None) -> list[dict]:
    """Totals per key and model, optionally for one key and from ``since`` (ISO time or date)."""
    query = select(
        UsageRecord.key_id,
        UsageRecord.model,
        func.sum(UsageRecord.requests),
        func.sum(UsageRecord.items),
        func.sum(UsageRecord.compute_ms),
        func.min(UsageRecord.minute),
        func.max(UsageRecord.minute),
    ).group_by(UsageRecord.key_id, UsageRecord.model)
    if key:
        query = query.where(UsageRecord.key_id == key)
    if since:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            raise ConfigError(
                f"--since {since!r} is not a date or time.",
                hint="Use ISO format, e.g. 2026-11-22 or 2026-11-22T09:30.",
            ) from None
        start = start.astimezone(UTC) if start.tzinfo else start
        query = query.where(UsageRecord.minute >= start.strftime("%Y-%m-%dT%H:%M"))
    with session() as s:
        rows = s.execute(query.order_by(UsageRecord.key_id, UsageRecord.model)).all()
    return [
        {
            "key": k,
            "model": m,
            "requests": int(r),
            "items": int(i),
            "compute_ms": round(float(ms), 1),
            "first": first,
            "last": last,
        }
        for k, m, r, i, ms, first, last in rows
    ]


MAX_HOURS = 24 * 31


def series(hours: int = 24, key: str | None = None, now: datetime | None = None) -> dict:
    """Requests per key in each hour of the last ``hours`` (UTC, oldest first, empty hours 0):
    ``{"hours": [...], "keys": {key: [count per hour]}}``, what the console's usage chart draws.

    Raises:
        ConfigError: ``hours`` outside 1 to 744 (31 days).
    """
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_HOURS:
        raise ConfigError(
            f"hours must be a whole number from 1 to {MAX_HOURS}; got {hours!r}.", hint="e.g. 24"
        )
    end = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    slots = [(end - timedelta(hours=h)).strftime("%Y-%m-%dT%H") for h in range(hours - 1, -1, -1)]
    hour = func.substr(UsageRecord.minute, 1, 13)
    query = (
        select(UsageRecord.key_id, hour, func.sum(UsageRecord.requests))
        .where(UsageRecord.minute >= slots[0])
        .group_by(UsageRecord.key_id, hour)
    )
    if key:
        query = query.where(UsageRecord.key_id == key)
    with session() as s:
        rows = s.execute(query).all()
    index = {slot: i for i, slot in enumerate(slots)}
    keys: dict[str, list[int]] = {}
    for key_id, slot, requests in rows:
        if slot in index:
            keys.setdefault(key_id, [0] * hours)[index[slot]] = int(requests)
    return {"hours": [f"{slot}:00" for slot in slots], "keys": dict(sorted(keys.items()))}
