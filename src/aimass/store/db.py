"""Metadata in SQLite (WAL) through SQLAlchemy: datasets, training runs, model versions.

Paths inside ``AIMASS_HOME`` are stored relative to it, so a home copied or moved elsewhere
reads its own files: ``path`` columns as ``models/reviews/v1`` (:class:`HomePath`), and path
strings inside JSON columns as ``$AIMASS_HOME/models/reviews/v1`` (:class:`HomeJSON`). Read
back, both are absolute paths in the home in use, so callers never see the stored form.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import (
    JSON,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy import text as sql_text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.schema import CreateColumn
from sqlalchemy.types import TypeDecorator

from aimass import paths


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


HOME_MARK = "$AIMASS_HOME"


class HomePath(TypeDecorator):
    """A path column: stored relative to ``AIMASS_HOME`` when inside it, read back absolute.

    Rows written by older versions hold absolute paths; see :func:`aimass.paths.from_home`
    for how one from a home that has since moved is found in the current home.
    """

    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else paths.to_home(value)

    def process_result_value(self, value, dialect):
        return None if value is None else paths.from_home(value)


class HomeJSON(TypeDecorator):
    """A JSON column whose strings that are absolute paths inside ``AIMASS_HOME`` are stored
    as ``$AIMASS_HOME/<relative path>`` and read back as absolute paths in the home in use."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value, dialect):
        root = str(paths.home())
        return _map_strings(value, lambda text: _marked(text, root))

    def process_result_value(self, value, dialect):
        root = str(paths.home())
        return _map_strings(value, lambda text: _unmarked(text, root))


def _map_strings(value, change):
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: _map_strings(item, change) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, change) for item in value]
    return value


def _marked(text: str, root: str) -> str:
    if text == root or text.startswith(root + "/"):
        return HOME_MARK + text[len(root) :]
    return text


def _unmarked(text: str, root: str) -> str:
    if text == HOME_MARK or text.startswith(HOME_MARK + "/"):
        return root + text[len(HOME_MARK) :]
    return text


class Base(DeclarativeBase):
    type_annotation_map = {dict: HomeJSON, list: JSON}


class DatasetRecord(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    path: Mapped[str] = mapped_column(HomePath(1000))
    language: Mapped[str] = mapped_column(String(16), default="")
    summary: Mapped[dict] = mapped_column(default=dict)
    created: Mapped[str] = mapped_column(String(32), default=now)


class RunRecord(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), nullable=True)
    params: Mapped[dict] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running")
    timings: Mapped[dict] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(String(4000), nullable=True)
    started: Mapped[str] = mapped_column(String(32), default=now)
    finished: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ModelVersionRecord(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(HomePath(1000))
    backbone: Mapped[str] = mapped_column(String(300), default="")
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    dataset_digest: Mapped[str] = mapped_column(String(64), default="")
    params: Mapped[dict] = mapped_column(default=dict)
    metrics: Mapped[dict] = mapped_column(default=dict)
    parent: Mapped[str | None] = mapped_column(String(220), nullable=True)
    aimass_version: Mapped[str] = mapped_column(String(32), default="")
    created: Mapped[str] = mapped_column(String(32), default=now)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict:
        keys = (
            "name",
            "version",
            "task",
            "path",
            "backbone",
            "run_id",
            "dataset_digest",
            "params",
            "metrics",
            "parent",
            "aimass_version",
            "created",
        )
        return {"ref": self.ref, **{k: getattr(self, k) for k in keys}}


class DeletedVersionRecord(Base):
    """A deleted model version: its number is never given out again, and a reference to it (a
    child's ``parent``) says it was deleted instead of "no such model"."""

    __tablename__ = "deleted_versions"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    deleted: Mapped[str] = mapped_column(String(32), default=now)


class AliasRecord(Base):
    """``production`` / ``staging`` (or any name) pointing at one version of a model."""

    __tablename__ = "aliases"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated: Mapped[str] = mapped_column(String(32), default=now)


class EventRecord(Base):
    """One line of a service's events log (created, loading, warmed, ready, failed, ...)."""

    __tablename__ = "service_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(String(4000), default="")
    hint: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    ref: Mapped[str | None] = mapped_column(String(220), nullable=True)
    time: Mapped[str] = mapped_column(String(40), default=now)

    def to_dict(self) -> dict:
        keys = ("time", "service", "kind", "ref", "message", "hint")
        return {k: getattr(self, k) for k in keys}


class ApiKeyRecord(Base):
    """An API key: only its sha256 is stored; ``id`` is the public part shown in lists."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list] = mapped_column(default=list)
    rate_limit: Mapped[float | None] = mapped_column(nullable=True)  # requests per second
    quota: Mapped[int | None] = mapped_column(nullable=True)  # metered items per quota_period
    quota_period: Mapped[str | None] = mapped_column(String(8), nullable=True)  # day or month (UTC)
    created: Mapped[str] = mapped_column(String(32), default=now)
    revoked: Mapped[str | None] = mapped_column(String(32), nullable=True)

    def to_dict(self) -> dict:
        """JSON-safe: a non-finite ``rate_limit`` (inf or NaN, left by an older version) reads None."""
        keys = ("id", "name", "scopes", "rate_limit", "quota", "quota_period", "created", "revoked")
        info = {k: getattr(self, k) for k in keys}
        rate = self.rate_limit
        finite = isinstance(rate, int | float) and abs(rate) < float("inf")  # False for NaN too
        return {**info, "rate_limit": rate if finite else None}


class WebhookRecord(Base):
    """An endpoint that is sent job events (:mod:`aimass.jobs.webhooks`). ``secret`` signs them, so
    it is kept as given (a receiver checks it; it grants nothing here); ``key_id``: who made it,
    whose read access picks the events; ``cursor``: the last job event looked at."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list] = mapped_column(default=list)
    secret: Mapped[str] = mapped_column(String(100))
    old_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    old_until: Mapped[float | None] = mapped_column(nullable=True)
    key_id: Mapped[str] = mapped_column(String(16))
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[float] = mapped_column()
    updated: Mapped[float] = mapped_column()


class DeliveryRecord(Base):
    """One event for one webhook and how sending it went (pending, delivered, failed)."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(40), index=True)
    event_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[float] = mapped_column(default=0.0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created: Mapped[float] = mapped_column()
    delivered: Mapped[float | None] = mapped_column(nullable=True)

    def to_dict(self) -> dict:
        keys = ("event_id", "type", "status", "attempts", "last_status", "last_error", "created", "delivered")
        return {k: getattr(self, k) for k in keys} | {
            "next_at": self.next_at if self.status == "pending" else None
        }


class UsageRecord(Base):
    """Requests, items and compute time of one key on one model in one minute."""

    __tablename__ = "usage"
    __table_args__ = (UniqueConstraint("key_id", "model", "minute"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(16), index=True)
    model: Mapped[str] = mapped_column(String(200))
    minute: Mapped[str] = mapped_column(String(20), index=True)  # 2026-11-22T20:33
    requests: Mapped[int] = mapped_column(Integer, default=0)
    items: Mapped[int] = mapped_column(Integer, default=0)
    compute_ms: Mapped[float] = mapped_column(default=0.0)


class JobRecord(Base):
    """A long operation (import, train, auto, compress, evaluate, custom) and where it stands.

    ``attempt`` counts starts: a worker killed mid-run is started again (resuming from its
    checkpoint) until ``max_attempts``. Every state change is a conditional UPDATE on
    (status, attempt), so a job can end only once.
    """

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    timeout_s: Mapped[float | None] = mapped_column(nullable=True)
    runner_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat: Mapped[float | None] = mapped_column(nullable=True)
    progress: Mapped[float] = mapped_column(default=0.0)
    eta_s: Mapped[float | None] = mapped_column(nullable=True)
    message: Mapped[str] = mapped_column(String(1000), default="")
    result: Mapped[dict] = mapped_column(default=dict)
    error: Mapped[dict | None] = mapped_column(nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    pause_requested: Mapped[bool] = mapped_column(default=False, server_default=sql_text("0"))
    retry_of: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created: Mapped[str] = mapped_column(String(32), default=now)
    started: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished: Mapped[str | None] = mapped_column(String(32), nullable=True)
    meta: Mapped[dict | None] = mapped_column(nullable=True)  # the submitter's key-value labels
    # the submitter's working folder: its worker reads a relative path in params from there, as the
    # submitter (and the server's check of a REST job's paths) did; not shown to callers
    cwd: Mapped[str | None] = mapped_column(String(4096), nullable=True)

    def to_dict(self) -> dict:
        keys = (
            "id",
            "kind",
            "status",
            "params",
            "attempt",
            "max_attempts",
            "timeout_s",
            "progress",
            "eta_s",
            "message",
            "result",
            "error",
            "cancel_requested",
            "pause_requested",
            "retry_of",
            "created",
            "started",
            "finished",
        )
        return {**{k: getattr(self, k) for k in keys}, "metadata": self.meta}


class JobEventRecord(Base):
    """One line of a job's events (queued, started, progress milestones, resumed, ended)."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(String(4000), default="")
    hint: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    time: Mapped[str] = mapped_column(String(40), default=now)

    def to_dict(self) -> dict:
        keys = ("time", "job_id", "attempt", "kind", "message", "hint")
        return {k: getattr(self, k) for k in keys}


def _wal(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _add_new_columns(engine, metadata=None) -> None:
    """Add the columns a table (of ``metadata``, default the registry's) gained since this home's
    database was made (``ALTER TABLE ... ADD COLUMN``, each with its server default), so a home made
    by an older aimass opens as it is."""
    found = inspect(engine)
    for table in (metadata or Base.metadata).sorted_tables:
        have = {c["name"] for c in found.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            ddl = CreateColumn(column).compile(dialect=engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.execute(sql_text(f'ALTER TABLE "{table.name}" ADD COLUMN {ddl}'))
            except OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise


def create_tables(metadata, engine, tries: int = 5) -> None:
    """``metadata.create_all``, safe when processes race to create the same tables: SQLite's
    "already exists" means another process created one between the check and the CREATE, and
    "locked" that one wrote between this one's check and its CREATE; either way the check runs
    again (two workers starting at once on a new home did fail a job this way)."""
    for attempt in range(tries):
        try:
            metadata.create_all(engine)
            return
        except OperationalError as exc:
            raced = "already exists" in str(exc) or "database is locked" in str(exc)
            if not raced or attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _owner_only(database: str | None) -> None:
    """Create the database file mode 0600 before SQLite opens it, and tighten one an older aimass
    left 0644 (with its ``-wal`` and ``-shm``): it holds the webhooks' signing secrets, the keys'
    hashes and who did what. SQLite gives the ``-wal`` and ``-shm`` it creates the database file's
    mode, so they are 0600 too. A file of another user, or on a read-only disk, is left as it is."""
    if not database or database == ":memory:":
        return
    with contextlib.suppress(OSError):  # there already (or not ours to make: SQLite says why when it opens)
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for path in (database, f"{database}-wal", f"{database}-shm"):
        try:
            found = os.stat(path)
            if found.st_mode & 0o077 and found.st_uid == os.getuid():
                os.chmod(path, 0o600)
        except OSError:  # absent, or a read-only disk
            continue


@lru_cache(maxsize=8)
def _sessionmaker(url: str) -> sessionmaker:
    engine = create_engine(url, json_serializer=lambda o: json.dumps(o, ensure_ascii=False))
    _owner_only(engine.url.database)
    event.listen(engine, "connect", _wal)
    create_tables(Base.metadata, engine)
    _add_new_columns(engine)
    return sessionmaker(engine, expire_on_commit=False)


def session():
    """A new session on ``AIMASS_HOME/aimass.db`` (the tables are created on first use)."""
    return _sessionmaker(f"sqlite:///{paths.home() / 'aimass.db'}")()


@lru_cache(maxsize=32)
def _created(metadata, engine) -> bool:
    create_tables(metadata, engine)
    _add_new_columns(engine, metadata)
    return True


def session_with(metadata):
    """A :func:`session` on which the tables of ``metadata`` (a declarative base of their own, as
    the access and vector store tables have) exist, created on first use per database."""
    s = session()
    _created(metadata, s.get_bind())
    return s
