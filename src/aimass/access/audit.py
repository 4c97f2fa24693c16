"""The audit log: every management decision and every denial, with the statements behind it.

``aimass audit`` lists rows with filters; ``aimass policy explain REQUEST_ID`` re-reads one
decision in full (its matched statements, near-misses and missing context keys).
"""

from __future__ import annotations

import re

from sqlalchemy import select

from aimass.access import tables
from aimass.access.evaluate import Decision, Ref, explain
from aimass.errors import NotFoundError

MAX_ROWS = 1000
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    r"""``text`` with control characters written as escapes: a name sent with a newline in it
    cannot forge a second line of ``aimass audit``.

    >>> printable("reviews\nadmin key:Create allowed")
    'reviews\\x0aadmin key:Create allowed'
    """
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def record(principal: str, decision: Decision, request_id: str = "", source: str = "rest") -> None:
    """One row: who, what, on which resource, the decision and the statements behind it."""
    row = tables.AuditRecord(
        request_id=request_id,
        principal=printable(principal),
        action=printable(decision.action),
        resource=printable(decision.resource),
        decision=decision.decision,
        matched=[r.to_dict() for r in decision.matched],
        detail=decision.to_dict(),
        source=source,
    )
    with tables.session() as s, s.begin():
        s.add(row)


def query(
    *,
    principal: str | None = None,
    action: str | None = None,
    decision: str | None = None,
    resource: str | None = None,
    since: str | None = None,
    limit: int = 100,
) -> list[dict]:
    """The newest rows first; ``principal`` and ``resource`` match as substrings."""
    t = tables.AuditRecord
    statement = select(t).order_by(t.id.desc()).limit(max(1, min(limit, MAX_ROWS)))
    if principal:
        statement = statement.where(t.principal.contains(principal))
    if action:
        statement = statement.where(t.action == action)
    if decision:
        statement = statement.where(t.decision == decision)
    if resource:
        statement = statement.where(t.resource.contains(resource))
    if since:
        statement = statement.where(t.time >= since)
    with tables.session() as s:
        return [r.to_dict() for r in s.scalars(statement)]


def explain_request(request_id: str) -> dict:
    """Every decision logged for ``request_id``, in full, with the sentence a 403 carried."""
    t = tables.AuditRecord
    with tables.session() as s:
        rows = s.scalars(select(t).where(t.request_id == request_id).order_by(t.id)).all()
    if not rows:
        raise NotFoundError(
            f"No audit record for request '{request_id}'.",
            hint="Allowed predictions are not logged; `aimass audit` lists what is.",
        )
    return {
        "request_id": request_id,
        "decisions": [{**r.to_dict(), **r.detail, "why": _why(r)} for r in rows],
    }


def _why(row) -> str:
    detail = row.detail
    if row.decision == "allowed":
        return "allowed by " + ", ".join(
            f"'{m['sid']}' of '{m['policy']}'" for m in detail.get("matched", [])
        )
    decision = Decision(
        row.decision,
        row.action,
        row.resource,
        _refs(detail.get("matched", [])),
        _refs(detail.get("overridden", [])),
    )
    message, _ = explain(decision, row.principal)
    misses = detail.get("near_misses", [])[:3]
    if row.decision != "explicitDeny" and misses:
        message += (
            " Closest: "
            + "; ".join(f"'{m['sid']}' of '{m['policy']}' ({m['failed']}: {m['detail']})" for m in misses)
            + "."
        )
    return message


def _refs(items: list) -> list:
    return [Ref(**m) for m in items]
