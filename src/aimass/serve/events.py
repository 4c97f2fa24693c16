"""Each service's events log, kept in the metadata database like a cloud console's events tab.

Kinds: created, loading, warmed, ready, failed (with cause and hint), swapped, traffic,
settings, draining, stopped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select

from aimass.store.db import EventRecord, session

log = logging.getLogger("aimass.events")
KINDS = (
    "created",
    "loading",
    "warmed",
    "ready",
    "failed",
    "swapped",
    "traffic",
    "settings",
    "draining",
    "stopped",
)


def record(service: str, kind: str, message: str = "", *, hint: str | None = None, ref: str | None = None):
    """Append one event (and log it)."""
    assert kind in KINDS, kind
    log.info("service %s: %s %s", service, kind, message)
    event = EventRecord(
        service=service,
        kind=kind,
        message=message[:4000],
        hint=hint,
        ref=ref,
        time=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    with session() as s, s.begin():
        s.add(event)


def events(service: str | None = None, limit: int = 100) -> list[dict]:
    """The newest ``limit`` events (of one service, or all), oldest first."""
    query = select(EventRecord).order_by(EventRecord.id.desc()).limit(limit)
    if service:
        query = query.where(EventRecord.service == service)
    with session() as s:
        rows = s.scalars(query).all()
    return [r.to_dict() for r in reversed(rows)]
