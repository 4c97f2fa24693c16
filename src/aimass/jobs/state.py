"""Job state in the metadata database. Every transition is one conditional UPDATE.

A job moves ``queued -> running -> succeeded | failed | cancelled``; a running job whose worker
was killed goes back to ``queued`` (and resumes). A pause takes a queued job, or a running one at
its next checkpoint, to ``paused``; resuming queues it again (the next attempt resumes from that
checkpoint), and a paused job may also be cancelled. Each UPDATE names the state (and attempt) it
expects, so two processes racing on one job cannot both win: a job starts once per attempt and
ends exactly once.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime

from sqlalchemy import literal_column, select, update

from aimass.errors import ConfigError, NotFoundError
from aimass.store.db import JobEventRecord, JobRecord, now, session

STATES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
ENDED = ("succeeded", "failed", "cancelled")


def create(
    kind: str,
    params: dict,
    *,
    timeout_s: float | None = None,
    retry_of: str | None = None,
    metadata: dict | None = None,
    cwd: str | None = None,
) -> JobRecord:
    """Queue a job; ``cwd``: the folder its relative paths are read from (default: this process's
    working folder, where the submitter, or the server checking a REST job, read them)."""
    job = JobRecord(
        id=uuid.uuid4().hex[:12],
        kind=kind,
        params=params,
        timeout_s=timeout_s,
        retry_of=retry_of,
        meta=metadata or None,
        cwd=cwd or _cwd(),
    )
    with session() as s, s.begin():
        s.add(job)
        s.add(JobEventRecord(job_id=job.id, kind="queued", message=f"{kind} job queued"))
    return job


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except FileNotFoundError:  # the working folder was deleted: the worker starts in the home
        return None


def get(job_id: str) -> JobRecord:
    with session() as s:
        job = s.get(JobRecord, job_id)
    if job is None:
        # no list of other jobs here: over REST it would name jobs the caller may not read
        raise NotFoundError(
            f"No job '{job_id}'.", hint="List the jobs you may read with `aimass jobs list` (GET /v1/jobs)."
        )
    return job


def list_jobs(status: str | None = None, limit: int = 100, metadata: dict | None = None) -> list[JobRecord]:
    """Jobs, newest first: of ``status``, and whose metadata holds every pair of ``metadata``."""
    if status is not None and status not in STATES:
        raise ConfigError(f"Unknown job status {status!r}.", hint=f"Use one of: {', '.join(STATES)}.")
    query = select(JobRecord).order_by(JobRecord.created.desc(), JobRecord.id).limit(limit)
    query = query.where(JobRecord.status == status) if status else query
    for key, value in (metadata or {}).items():
        query = query.where(JobRecord.meta[key].as_string() == value)
    with session() as s:
        return list(s.scalars(query).all())


def events(job_id: str) -> list[JobEventRecord]:
    with session() as s:
        query = select(JobEventRecord).where(JobEventRecord.job_id == job_id).order_by(JobEventRecord.id)
        return list(s.scalars(query).all())


def event(job_id: str, kind: str, message: str = "", *, hint: str | None = None, attempt: int = 0) -> None:
    with session() as s, s.begin():
        s.add(JobEventRecord(job_id=job_id, attempt=attempt, kind=kind, message=message[:4000], hint=hint))


def _change(s, job_id: str, expect: dict, values: dict) -> bool:
    query = update(JobRecord).where(JobRecord.id == job_id)
    for key, value in expect.items():
        column = getattr(JobRecord, key)
        query = query.where(column.in_(value) if isinstance(value, tuple) else column == value)
    return s.execute(query.values(**values)).rowcount == 1


def claim(job_id: str, runner_pid: int) -> JobRecord | None:
    """queued -> running (attempt + 1) for this runner; None if someone else got it first."""
    with session() as s, s.begin():
        job = s.get(JobRecord, job_id)
        if job is None or job.status != "queued":
            return None
        attempt = job.attempt + 1
        values = {"status": "running", "attempt": attempt, "runner_pid": runner_pid, "worker_pid": None}
        values["pause_requested"] = False
        values.update(heartbeat=time.time(), started=job.started or now())
        if not _change(s, job_id, {"status": "queued", "attempt": job.attempt}, values):
            return None
        kind = "started" if attempt == 1 else "resumed"
        text = f"attempt {attempt} of {job.max_attempts}" + (
            ", from the last checkpoint" if attempt > 1 else ""
        )
        s.add(JobEventRecord(job_id=job_id, attempt=attempt, kind=kind, message=text))
    return get(job_id)


def set_worker(job_id: str, attempt: int, pid: int) -> bool:
    with session() as s, s.begin():
        return _change(s, job_id, {"status": "running", "attempt": attempt}, {"worker_pid": pid})


def beat(job_id: str, attempt: int, **values) -> bool:
    """Heartbeat (and progress/eta/message) of the running attempt; False if it no longer owns the job."""
    with session() as s, s.begin():
        return _change(
            s, job_id, {"status": "running", "attempt": attempt}, {"heartbeat": time.time(), **values}
        )


def finish(
    job_id: str,
    attempt: int,
    status: str,
    *,
    result: dict | None = None,
    error: dict | None = None,
) -> bool:
    """running (this attempt) -> an end state, with its event, in one transaction; once only."""
    assert status in ENDED
    values = {"status": status, "finished": now(), "heartbeat": time.time()}
    if status == "succeeded":
        values.update(progress=1.0, eta_s=0.0, result=result or {})
    if error is not None:
        values["error"] = error
    with session() as s, s.begin():
        if not _change(s, job_id, {"status": "running", "attempt": attempt}, values):
            return False
        message = (error or {}).get("message", "") if status != "succeeded" else _summary(result or {})
        hint = (error or {}).get("hint")
        s.add(JobEventRecord(job_id=job_id, attempt=attempt, kind=status, message=message, hint=hint))
    return True


OPENS = ("started", "resumed")  # an attempt begins running
CLOSES = ("interrupted", "paused", "succeeded", "failed", "cancelled")  # it stops


def ran_seconds(job_id: str, at: float | None = None) -> float:
    """How long the job has run over all its attempts (from its events: each ``started`` or
    ``resumed`` to the ``interrupted``, ``paused`` or end that followed; the running one to ``at``,
    default now). A job's timeout is held to this: counted per attempt, a job whose worker or runner
    kept dying ran five times its timeout, and one adopted by each new runner never timed out.

    >>> ran_seconds("no-such-job")
    0.0
    """
    with session() as s:
        events = s.execute(
            select(JobEventRecord.kind, JobEventRecord.time)
            .where(JobEventRecord.job_id == job_id, JobEventRecord.kind.in_(OPENS + CLOSES))
            .order_by(JobEventRecord.id)
        ).all()
    total, opened = 0.0, None
    for kind, stamp in events:
        when = datetime.fromisoformat(stamp).timestamp()
        if kind in OPENS:
            opened = when
        elif opened is not None:
            total, opened = total + max(0.0, when - opened), None
    if opened is not None:
        total += max(0.0, (time.time() if at is None else at) - opened)
    return total


def requeue(job_id: str, attempt: int, reason: str) -> bool:
    """running -> queued after the worker died: the next attempt resumes from the checkpoint."""
    with session() as s, s.begin():
        values = {"status": "queued", "worker_pid": None, "runner_pid": None}
        if not _change(s, job_id, {"status": "running", "attempt": attempt}, values):
            return False
        s.add(JobEventRecord(job_id=job_id, attempt=attempt, kind="interrupted", message=reason))
    return True


def cancel_queued(job_id: str) -> bool:
    """queued or paused -> cancelled."""
    with session() as s, s.begin():
        job = s.get(JobRecord, job_id)
        if job is None or job.status not in ("queued", "paused"):
            return False
        values = {"status": "cancelled", "finished": now(), "cancel_requested": True}
        if not _change(s, job_id, {"status": job.status, "attempt": job.attempt}, values):
            return False
        message = "cancelled before it started" if job.attempt == 0 else "cancelled while paused"
        s.add(JobEventRecord(job_id=job_id, attempt=job.attempt, kind="cancelled", message=message))
    return True


def pause_queued(job_id: str) -> bool:
    """queued -> paused: no runner starts it until it is resumed."""
    with session() as s, s.begin():
        if not _change(s, job_id, {"status": "queued"}, {"status": "paused", "pause_requested": False}):
            return False
        s.add(JobEventRecord(job_id=job_id, kind="paused", message="paused before its next attempt started"))
    return True


def request_pause(job_id: str) -> bool:
    """Ask the running attempt to stop at its next checkpoint (the runner stops it by force
    after a grace period)."""
    with session() as s, s.begin():
        if not _change(s, job_id, {"status": "running"}, {"pause_requested": True}):
            return False
        job = s.get(JobRecord, job_id)
        s.add(JobEventRecord(job_id=job_id, attempt=job.attempt, kind="pause_requested", message=""))
    return True


def pause_requested(job_id: str) -> bool:
    with session() as s:
        return bool(s.scalar(select(JobRecord.pause_requested).where(JobRecord.id == job_id)))


def pause(job_id: str, attempt: int, message: str) -> bool:
    """running (this attempt) -> paused. The attempt does not count toward ``max_attempts``:
    pausing is not dying."""
    with session() as s, s.begin():
        job = s.get(JobRecord, job_id)
        if job is None:
            return False
        values = {"status": "paused", "worker_pid": None, "runner_pid": None, "pause_requested": False}
        values.update(max_attempts=job.max_attempts + 1, eta_s=None)
        if not _change(s, job_id, {"status": "running", "attempt": attempt}, values):
            return False
        s.add(JobEventRecord(job_id=job_id, attempt=attempt, kind="paused", message=message))
    return True


def resume(job_id: str) -> bool:
    """paused -> queued: a runner starts its next attempt, from its last checkpoint."""
    with session() as s, s.begin():
        job = s.get(JobRecord, job_id)
        if job is None or not _change(
            s, job_id, {"status": "paused", "attempt": job.attempt}, {"status": "queued"}
        ):
            return False
        message = "queued again; it resumes from its last checkpoint" if job.attempt else "queued again"
        s.add(JobEventRecord(job_id=job_id, attempt=job.attempt, kind="resume_requested", message=message))
    return True


def request_cancel(job_id: str) -> bool:
    with session() as s, s.begin():
        return _change(s, job_id, {"status": "running"}, {"cancel_requested": True})


def _summary(result: dict) -> str:
    parts = [f"{k}={result[k]}" for k in ("model", "dataset", "accuracy") if k in result]
    return ", ".join(parts) or "done"


FAIR_WINDOW = 500  # queued jobs (oldest first) and recent starts the next pick looks at
UNFINISHED = ("queued", "running", "paused")


def next_queued(project_of) -> str | None:
    """The queued job to start next: the oldest one of the project served longest ago (whose
    latest job started first, or that never had one), so one project's flood of jobs waits its
    turn behind the others' instead of before them. ``project_of(job ids) -> {id: project}``."""
    with session() as s:
        queued = list(
            s.scalars(
                select(JobRecord.id)
                .where(JobRecord.status == "queued")
                .order_by(JobRecord.created, literal_column("jobs.rowid"))  # as submitted
                .limit(FAIR_WINDOW)
            )
        )
        if len(queued) < 2:
            return queued[0] if queued else None
        started = s.execute(
            select(JobRecord.id, JobRecord.started)
            .where(JobRecord.started.is_not(None))
            .order_by(JobRecord.started.desc())
            .limit(FAIR_WINDOW)
        ).all()
    projects = project_of([*queued, *(job_id for job_id, _ in started)])
    served: dict[str, str] = {}
    for job_id, when in started:
        served.setdefault(projects[job_id], when)
    return min(queued, key=lambda job_id: served.get(projects[job_id], ""))  # the oldest of the least served


def unfinished_ids() -> list[str]:
    """Every job queued, running or paused."""
    with session() as s:
        return list(s.scalars(select(JobRecord.id).where(JobRecord.status.in_(UNFINISHED))))
