"""Per-key quotas: at most ``quota`` metered items (predictions, or prompt + completion tokens,
or embedded tokens) in each UTC day or month, as OpenAI's usage limits and a cloud's quotas.

A request is admitted while the key has used less than its quota this period, counting what its
requests in flight are expected to use (:class:`aimass.serve.metering.Hold`); the one that
crosses it is answered (how many tokens it will take is not known before), and the next is a 429
``insufficient_quota`` that says what was used, when it resets, and who can raise it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from aimass.errors import ConfigError, QuotaExceeded
from aimass.store.db import ApiKeyRecord, UsageRecord, session

PERIODS = ("day", "month")
QUOTA_MAX = 10**15


def check_quota(quota, period) -> tuple[int | None, str | None]:
    """``(quota, period)`` checked: a whole number of items from 1 to 10**15 and ``day`` or
    ``month`` (default ``month``); ``(None, None)`` for no quota."""
    if quota is None:
        if period is not None:
            raise ConfigError(
                f"--quota-period {period!r} without --quota.", hint="e.g. --quota 100000 --quota-period day"
            )
        return None, None
    if isinstance(quota, bool) or not isinstance(quota, int) or not 1 <= quota <= QUOTA_MAX:
        raise ConfigError(
            f"A quota is a whole number of items from 1 to {QUOTA_MAX:,}; got {quota!r}.",
            hint="Items are what usage counts: predictions, or tokens for language models. "
            'e.g. --quota 100000 (REST: "quota": 100000); leave it out for no quota.',
        )
    period = period or "month"
    if period not in PERIODS:
        raise ConfigError(
            f"A quota period is 'day' or 'month'; got {period!r}.", hint="e.g. --quota-period day"
        )
    return quota, period


def window(period: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The UTC ``period`` ``now`` falls in: ``(start, end)``."""
    now = now or datetime.now(UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return start, start.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
    start = start.replace(day=1)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def minute(moment: datetime) -> str:
    """``moment`` as the usage table's minute (``YYYY-MM-DDTHH:MM``, UTC)."""
    return moment.strftime("%Y-%m-%dT%H:%M")


def limit_of(key_id: str) -> tuple[int, str] | None:
    """A key's ``(quota, period)``, or None (no quota, the admin token, an unknown key)."""
    with session() as s:
        record = s.get(ApiKeyRecord, key_id)
    if record is None or not record.quota:
        return None
    return int(record.quota), record.quota_period or "month"


def used_since(key_id: str, since: str) -> int:
    """Items the usage table holds for ``key_id`` from the minute ``since`` on."""
    query = select(func.sum(UsageRecord.items)).where(
        UsageRecord.key_id == key_id, UsageRecord.minute >= since
    )
    with session() as s:
        return int(s.scalar(query) or 0)


def refuse(key_id: str, quota: int, period: str, used: int, now: datetime | None = None) -> QuotaExceeded:
    """The 429 a key over its quota gets."""
    now = now or datetime.now(UTC)
    start, end = window(period, now)
    return QuotaExceeded(
        f"Key '{key_id}' used {used:,} of the {quota:,} items its quota allows this {period} "
        f"(since {start:%Y-%m-%d} UTC); it resets at {end:%Y-%m-%dT%H:%MZ}.",
        retry_after=max(1.0, (end - now).total_seconds()),
        hint="Items are predictions, or prompt and completion tokens. An operator raises it with "
        f"`aimass keys update {key_id} --quota N` (REST: PATCH /v1/keys/{key_id}).",
    )
