"""Webhooks: a signed POST to a URL of yours when a job starts, pauses or ends.

OpenAI's webhook endpoints API manages them (``client.webhooks.create/list/retrieve/update/
delete/rotate_secret/test``, over :mod:`aimass.serve.webhook_routes`), and each delivery is signed
as Standard Webhooks sign them (``webhook-id``, ``webhook-timestamp``, ``webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">``), so ``client.webhooks.unwrap(body, headers,
secret=...)`` checks it.

Events come from the jobs' event log, which is in the database: the job runner's
:class:`Deliverer` reads the events after each endpoint's cursor, keeps those of the types the
endpoint asked for and of jobs its creator's key may read (``job:Read``, decided as a list route
decides it), and queues one delivery each in the transaction that moves the cursor, so an event
is queued once even across restarts. A delivery without a 2xx answer within 10 s is sent again
after 5 s, 30 s, 2 min, 10 min, 30 min, 2 h and 8 h, with the same event id, then marked failed.
Only public addresses are sent to, unless the operator allows more (:mod:`aimass.jobs.egress`).
Endpoints are sent to side by side (up to 8 at once), each one's deliveries in order: a slow or
dead receiver holds up only its own, and after a failure it gets nothing more until the next tick.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, func, select, update

from aimass.access import directory
from aimass.access.authorizer import Authorizer
from aimass.errors import ConfigError, DataError, NotFoundError
from aimass.jobs import egress
from aimass.store.db import ApiKeyRecord, DeliveryRecord, JobEventRecord, JobRecord, WebhookRecord, session

log = logging.getLogger("aimass.webhooks")
JOB_TYPES = {k: f"job.{k}" for k in ("started", "paused", "succeeded", "failed", "cancelled")}
OPENAI_TYPES = {  # a batch's and a fine-tune's ends, under OpenAI's names
    "batch": {"succeeded": "batch.completed", "failed": "batch.failed", "cancelled": "batch.cancelled"},
    "fine_tuning": {k: f"fine_tuning.job.{k}" for k in ("succeeded", "failed", "cancelled")},
}
EVENT_TYPES = sorted({*JOB_TYPES.values(), *(t for m in OPENAI_TYPES.values() for t in m.values())})
BACKOFF_S = (5, 30, 120, 600, 1800, 7200, 28800)  # after attempt 1, 2, ...; then failed
TIMEOUT_S = 10.0
SENDERS = 8  # endpoints sent to at once
KEEP_S = 7 * 86400  # sent and failed deliveries are listed for a week
MAX_ENDPOINTS = 1000  # on the server, the operator's own aside
MAX_OWN = 10  # a user's (or an unbound key's): one caller cannot take every other's room
ADMIN = "admin"


# ------------------------------------------------------------ endpoints
def check_url(url) -> str:
    """An http(s) URL with a host and no user:password part, at most 2,000 characters, whose host
    is a public address or one the operator allows (:mod:`aimass.jobs.egress`)."""
    text = url if isinstance(url, str) else ""
    parts = urlsplit(text) if len(text) <= 2000 else None
    if not parts or parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ConfigError(
            f"url must be an http(s) URL with a host (at most 2,000 characters); got {str(url)[:200]!r}.",
            hint="e.g. https://ci.example.com/hooks/aimass; put a token in the path, not user:password@",
            where="url",
        )
    egress.check(text)
    return text


def check_types(types) -> list[str]:
    """One or more known event types, each once."""
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise ConfigError(
            "event_types must be a non-empty list of event types.", hint=f"Any of {EVENT_TYPES}."
        )
    unknown = sorted({t for t in types if t not in EVENT_TYPES})
    if unknown:
        raise ConfigError(
            f"aimass sends no events of type {unknown}.",
            hint=f"It sends {EVENT_TYPES}.",
            where="event_types",
        )
    return list(dict.fromkeys(types))


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def view(record: WebhookRecord, *, with_secret: bool = False) -> dict:
    """OpenAI's ``webhook_endpoint`` object (``signing_secret`` only at creation and rotation)."""
    out = {
        "id": record.id,
        "object": "webhook_endpoint",
        "name": record.name,
        "url": record.url,
        "event_types": list(record.events),
        "created_at": int(record.created),
        "updated_at": int(record.updated),
        "signing_secret_hint": f"whsec_...{record.secret[-4:]}",
    }
    return {**out, "signing_secret": record.secret} if with_secret else out


def create(name: str, url: str, event_types: list[str], key_id: str) -> dict:
    """A new endpoint, sent the events from now on; the answer holds its signing secret."""
    url, types, now = check_url(url), check_types(event_types), time.time()
    with session() as s, s.begin():
        creators = list(s.scalars(select(WebhookRecord.key_id)))
        if key_id != ADMIN:
            mine = {creator for creator in set(creators) if creator != ADMIN and _manages(key_id, creator)}
            own = sum(creator in mine for creator in creators)
            if own >= MAX_OWN:
                raise ConfigError(
                    f"You have {own} webhook endpoints, the most one user (or key) may have.",
                    hint="Delete one you no longer need (DELETE /v1/webhook_endpoints/{id}), or send "
                    "several event types to one endpoint.",
                )
            if sum(creator != ADMIN for creator in creators) >= MAX_ENDPOINTS:
                raise ConfigError(
                    f"The server holds {MAX_ENDPOINTS} webhook endpoints.", hint="Ask the operator."
                )
        cursor = s.scalar(select(func.max(JobEventRecord.id))) or 0
        record = WebhookRecord(
            id=f"we_{secrets.token_hex(12)}",
            name=str(name or "")[:200],
            url=url,
            events=types,
            secret=_secret(),
            key_id=key_id,
            cursor=cursor,
            created=now,
            updated=now,
        )
        s.add(record)
    return view(record, with_secret=True)


def get(webhook_id: str) -> WebhookRecord:
    with session() as s:
        record = s.get(WebhookRecord, webhook_id)
    if record is None:
        raise NotFoundError(
            f"No webhook endpoint '{webhook_id}'.", hint="GET /v1/webhook_endpoints lists them."
        )
    return record


def list_endpoints(key_id: str | None = None) -> list[dict]:
    """Every endpoint (the operator's CLI), or with ``key_id`` those that key may manage (:func:`mine`)."""
    with session() as s:
        found = s.scalars(select(WebhookRecord).order_by(WebhookRecord.created)).all()
    return [view(r) for r in found if key_id is None or _manages(key_id, r.key_id)]


def mine(webhook_id: str, key_id: str) -> WebhookRecord:
    """The endpoint, if the key ``key_id`` may manage it: the operator's (``admin``), the key that
    made it or another key of the same user; else the same 404 as for none. An endpoint hears what
    its creator may read, so another caller who could change its URL would hear it instead."""
    record = get(webhook_id)
    if not _manages(key_id, record.key_id):
        raise NotFoundError(
            f"No webhook endpoint '{webhook_id}'.", hint="GET /v1/webhook_endpoints lists them."
        )
    return record


def _manages(key_id: str, creator: str) -> bool:
    if key_id in (ADMIN, creator):
        return True
    user = directory.key_binding(key_id)["user"]
    return user is not None and user == directory.key_binding(creator)["user"]


def change(webhook_id: str, *, name=None, url=None, event_types=None) -> dict:
    """Rename it, point it elsewhere or change its event types (what is None stays)."""
    values = {}
    if name is not None:
        values["name"] = str(name)[:200]
    if url is not None:
        values["url"] = check_url(url)
    if event_types is not None:
        values["events"] = check_types(event_types)
    with session() as s, s.begin():
        record = s.get(WebhookRecord, webhook_id)
        if record is None:
            raise NotFoundError(
                f"No webhook endpoint '{webhook_id}'.", hint="GET /v1/webhook_endpoints lists them."
            )
        if any(getattr(record, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(record, key, value)
            record.updated = time.time()
    return view(record)


def rotate(webhook_id: str, keep_old_secret_active_for_24_hours: bool = False) -> dict:
    """A new signing secret; the old one also signs for 24 h if asked (both signatures sent)."""
    with session() as s, s.begin():
        record = s.get(WebhookRecord, webhook_id)
        if record is None:
            raise NotFoundError(
                f"No webhook endpoint '{webhook_id}'.", hint="GET /v1/webhook_endpoints lists them."
            )
        keep = bool(keep_old_secret_active_for_24_hours)
        record.old_secret, record.old_until = (record.secret, time.time() + 86400) if keep else (None, None)
        record.secret, record.updated = _secret(), time.time()
    return view(record, with_secret=True)


def remove(webhook_id: str) -> dict:
    """Delete an endpoint and its deliveries (nothing more is sent to it)."""
    with session() as s, s.begin():
        gone = s.execute(delete(WebhookRecord).where(WebhookRecord.id == webhook_id)).rowcount
        s.execute(delete(DeliveryRecord).where(DeliveryRecord.webhook_id == webhook_id))
    if not gone:
        raise NotFoundError(
            f"No webhook endpoint '{webhook_id}'.", hint="GET /v1/webhook_endpoints lists them."
        )
    return {"id": webhook_id, "object": "webhook_endpoint.deleted", "deleted": True}


def deliveries(webhook_id: str, limit: int = 50) -> list[dict]:
    """The endpoint's latest deliveries, newest first: type, status, attempts, its last answer."""
    get(webhook_id)
    query = (
        select(DeliveryRecord)
        .where(DeliveryRecord.webhook_id == webhook_id)
        .order_by(DeliveryRecord.id.desc())
        .limit(max(1, min(int(limit), 500)))
    )
    with session() as s:
        return [d.to_dict() for d in s.scalars(query).all()]


def test(webhook_id: str, event_type: str, client: httpx.Client | None = None) -> dict:
    """Send a sample ``event_type`` now (``data.id`` is ``job_test``); its answer's status code.

    Raises:
        ConfigError: its host is no longer allowed (:mod:`aimass.jobs.egress`).
        DataError: the endpoint could not be reached (the reason: refused, timed out, ...).
    """
    record, (kind,) = get(webhook_id), check_types([event_type])
    egress.check(record.url)
    event_id = f"evt_{secrets.token_hex(12)}"
    payload = _payload(event_id, kind, time.time(), {"id": "job_test", "kind": "test", "status": "test"})
    status, error = send(record, event_id, payload, client)
    if status is None:
        raise DataError(f"The endpoint {record.url} could not be reached: {error}.", hint="Is it listening?")
    return {
        "object": "webhook_endpoint.test",
        "webhook_endpoint_id": record.id,
        "event_type": kind,
        "status_code": status,
        "success": True,
    }


# ------------------------------------------------------------ sending
def signature(secret_keys: list[str], event_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks' ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` per secret, space-separated."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    out = []
    for secret in secret_keys:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        out.append("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode())
    return " ".join(out)


def send(record: WebhookRecord, event_id: str, payload: dict, client: httpx.Client | None = None):
    """POST ``payload`` signed; ``(status code, None)`` or ``(None, why)`` when nothing answered.
    Redirects are not followed and the answer's body is not read."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    stamp = int(time.time())
    keys = [record.secret] + (
        [record.old_secret] if record.old_secret and (record.old_until or 0) > stamp else []
    )
    headers = {
        "content-type": "application/json",
        "user-agent": "aimass-webhooks",
        "webhook-id": event_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature(keys, event_id, stamp, body),
    }
    try:  # checked again now, and sent to the address checked (not to what the name resolves to next)
        url, host, extensions = egress.pinned(record.url)
    except ConfigError as exc:
        return None, f"not sent: {exc.message} {exc.hint}"[:480]
    own = client is None
    client = client or httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
    try:
        with client.stream(
            "POST", url, content=body, headers={**headers, **host}, extensions=extensions
        ) as answer:
            return answer.status_code, None
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:480]
    finally:
        if own:
            client.close()


def _payload(event_id: str, kind: str, when: float, data: dict) -> dict:
    return {"id": event_id, "object": "event", "created_at": int(when), "type": kind, "data": data}


def event_type(job: JobRecord, event_kind: str) -> list[str]:
    """The types an event of ``job`` may be sent as, most specific first."""
    family = "batch" if job.kind == "batch" else None
    if job.kind == "train" and (job.params or {}).get("task") == "text-generation":
        family = "fine_tuning"
    found = OPENAI_TYPES.get(family, {}).get(event_kind)
    return [t for t in (found, JOB_TYPES.get(event_kind)) if t]


class Deliverer:
    """Queues and sends deliveries; :meth:`run` does it every ``poll_s`` until ``stop`` is set
    (the job runner runs one). ``client``: the HTTP client (tests hand in their own)."""

    def __init__(self, poll_s: float = 1.0, client: httpx.Client | None = None, clock=time.time):
        self.poll_s, self.clock = poll_s, clock
        self.client = client or httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
        self.authorizer = Authorizer()
        self._pruned = 0.0

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 — the database may be busy: the next tick tries again
                log.exception("webhook deliveries: will try again")

    def tick(self) -> int:
        """Queue new events, then send what is due; how many were sent."""
        self.collect()
        return self.send_due()

    def collect(self) -> int:
        """Queue a delivery for each new event an endpoint wants and may see; how many."""
        with session() as s:
            hooks = list(s.scalars(select(WebhookRecord)).all())
            if not hooks:
                return 0
            query = (
                select(JobEventRecord)
                .where(
                    JobEventRecord.id > min(h.cursor for h in hooks), JobEventRecord.kind.in_(list(JOB_TYPES))
                )
                .order_by(JobEventRecord.id)
                .limit(1000)
            )
            found = list(s.scalars(query).all())
            jobs = {
                j.id: j
                for j in s.scalars(select(JobRecord).where(JobRecord.id.in_({e.job_id for e in found})))
            }
        queued = 0
        for hook in hooks:
            seen = [e for e in found if e.id > hook.cursor]
            if not seen:
                continue
            mine = [e for e in seen if e.job_id in jobs]  # a deleted job's events are passed over
            readable = self._readable(hook.key_id, [jobs[e.job_id] for e in mine]) if mine else set()
            rows = []
            for item in mine:
                job = jobs[item.job_id]
                kind = next((t for t in event_type(job, item.kind) if t in hook.events), None)
                if kind is None or job.id not in readable:
                    continue
                event_id = f"evt_{secrets.token_hex(12)}"
                data = {"id": job.id, "kind": job.kind, "status": item.kind, "attempt": item.attempt}
                data.update(message=item.message, metadata=job.meta or {})
                payload = _payload(event_id, kind, _epoch(item.time), data)
                rows.append(
                    DeliveryRecord(
                        webhook_id=hook.id,
                        event_id=event_id,
                        type=kind,
                        payload=payload,
                        created=self.clock(),
                    )
                )
            with session() as s, s.begin():  # the cursor moves once: a second deliverer queues nothing
                moved = s.execute(
                    update(WebhookRecord)
                    .where(WebhookRecord.id == hook.id, WebhookRecord.cursor == hook.cursor)
                    .values(cursor=seen[-1].id)
                ).rowcount
                if moved:
                    s.add_all(rows)
                    queued += len(rows)
        return queued

    def send_due(self, limit: int = 50) -> int:
        """Send the pending deliveries that are due (oldest first); how many were sent."""
        now = self.clock()
        if now - self._pruned > 3600:  # a write at most hourly: an idle runner takes no write lock
            self._pruned = now
            with session() as s, s.begin():
                old = (DeliveryRecord.status != "pending", DeliveryRecord.created < now - KEEP_S)
                s.execute(delete(DeliveryRecord).where(*old))
        with session() as s:
            due = list(
                s.scalars(
                    select(DeliveryRecord)
                    .where(DeliveryRecord.status == "pending", DeliveryRecord.next_at <= now)
                    .order_by(DeliveryRecord.id)
                    .limit(limit)
                ).all()
            )
        by_endpoint: dict[str, list[DeliveryRecord]] = {}
        for item in due:
            by_endpoint.setdefault(item.webhook_id, []).append(item)
        if len(by_endpoint) <= 1:
            return sum(self._send_in_order(items) for items in by_endpoint.values())
        # one thread per endpoint: a slow or dead receiver holds up only its own deliveries
        with ThreadPoolExecutor(
            max_workers=min(SENDERS, len(by_endpoint)), thread_name_prefix="webhook"
        ) as pool:
            return sum(pool.map(self._send_in_order, by_endpoint.values()))

    def _send_in_order(self, items: list[DeliveryRecord]) -> int:
        """Send one endpoint's due deliveries, oldest first, until one fails (the rest wait for
        the next tick: a receiver that is down gets one try a tick, not a burst); how many were sent."""
        sent = 0
        for item in items:
            with session() as s, s.begin():  # a lease: nobody else sends it while this one does
                lease = self.clock() + 3 * TIMEOUT_S
                taken = s.execute(
                    update(DeliveryRecord)
                    .where(DeliveryRecord.id == item.id, DeliveryRecord.next_at == item.next_at)
                    .values(next_at=lease)
                ).rowcount
                hook = s.get(WebhookRecord, item.webhook_id)
            if not taken or hook is None:
                continue
            status, error = send(hook, item.event_id, item.payload, self.client)
            sent += 1
            self._record(item, status, error)
            if status is None or not 200 <= status < 300:
                break
        return sent

    def _record(self, item: DeliveryRecord, status: int | None, error: str | None) -> None:
        attempts, now = item.attempts + 1, self.clock()
        values = {"attempts": attempts, "last_status": status, "last_error": error}
        if status is not None and 200 <= status < 300:
            values.update(status="delivered", delivered=now, last_error=None)
        elif attempts > len(BACKOFF_S):
            values.update(status="failed")
            values["last_error"] = error or f"answered {status}"
        else:
            values.update(next_at=now + BACKOFF_S[attempts - 1])
            values["last_error"] = error or f"answered {status}"
        with session() as s, s.begin():
            s.execute(update(DeliveryRecord).where(DeliveryRecord.id == item.id).values(**values))

    def _readable(self, key_id: str, jobs: list[JobRecord]) -> set[str]:
        """The jobs the endpoint's creator may read (none once its key is revoked)."""
        if key_id == ADMIN:
            return {j.id for j in jobs}
        with session() as s:
            key = s.get(ApiKeyRecord, key_id)
        if key is None or key.revoked:
            return set()
        principal = self.authorizer.principal(key_id, tuple(key.scopes))
        owners = directory.owners("job")
        now = datetime.now(UTC)
        base = {
            "aimass:CurrentTime": now.isoformat(timespec="seconds"),
            "aimass:EpochTime": int(now.timestamp()),
        }
        readable = set()
        for kind in {j.kind for j in jobs}:
            arns = {directory.arn("job", j.id, owners.get(j.id)): j.id for j in jobs if j.kind == kind}
            context = {**base, "aimass:JobKind": kind}
            allowed = self.authorizer.allowed_many(principal, "job:Read", set(arns), context)
            readable |= {arns[a] for a in allowed}
        return readable


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return time.time()
