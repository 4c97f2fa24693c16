"""Jobs: long operations (import, train, auto, compress, evaluate, custom) with persistent state.

>>> from aimass import jobs
>>> job = jobs.submit("import", {"path": "reviews.csv"})    # doctest: +SKIP
>>> jobs.run_foreground(job["id"])["status"]                # doctest: +SKIP
'succeeded'

``submit`` checks and queues; a runner (``aimass jobs runner``, or the server's) executes queued
jobs; ``run_foreground`` runs one in this terminal. ``show``/``logs``/``cancel``/``retry`` do what
they say, here and over REST; ``pause`` stops a job at its next checkpoint (a queued one before it
starts) and ``resume`` queues it again, to go on from there. A custom job runs code stored with
``upload_code`` (never a folder of the host), and submitting one over REST needs the ``jobs:code``
scope (``kind_of(job).scope``).
"""

from __future__ import annotations

import re
import time

from aimass.access import directory
from aimass.errors import JobError
from aimass.jobs import custom, state
from aimass.jobs.kinds import KINDS, Kind, exports, get_kind, reads
from aimass.jobs.logs import log_path, log_tail
from aimass.jobs.runner import Runner

__all__ = [
    "KINDS",
    "Runner",
    "cancel",
    "check_metadata",
    "exports",
    "get_kind",
    "kind_of",
    "list_jobs",
    "logs",
    "pause",
    "reads",
    "resume",
    "retry",
    "run_foreground",
    "show",
    "submit",
    "upload_code",
    "using_dataset",
    "wait",
]


def upload_code(source) -> dict:
    """Store code for custom jobs (a folder, an archive file or an open archive); returns its id
    as ``{"code": ...}``. See :func:`aimass.jobs.custom.upload_code`."""
    return custom.upload_code(source)


def kind_of(job_id: str) -> Kind:
    """The kind of a stored job (its ``scope`` says who may submit or retry it)."""
    return get_kind(state.get(job_id).kind)


METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512  # OpenAI's limits on a job's metadata


def submit(
    kind: str,
    params: dict | None = None,
    *,
    timeout_s: float | None = None,
    metadata: dict | None = None,
    guard=None,
) -> dict:
    """Check ``params`` for ``kind`` (nothing runs if a check fails) and queue the job.
    ``metadata``: up to 16 string pairs of the caller's own (a team, a ticket) that the job keeps
    and :func:`list_jobs` filters on. ``guard(kind, params)``, after the kind's own check, may
    refuse what this caller may not name."""
    spec = get_kind(kind)
    params = spec.check(dict(params or {}))
    metadata = check_metadata(metadata)
    if guard is not None:
        guard(kind, params)
    if timeout_s is not None and timeout_s <= 0:
        raise JobError("The timeout must be positive.", code="timeout_invalid", hint="e.g. --timeout 30m.")
    return state.create(kind, params, timeout_s=timeout_s, metadata=metadata).to_dict()


def check_metadata(metadata) -> dict | None:
    """``metadata`` if it is at most 16 pairs of strings (keys up to 64 characters, values up to
    512), else a JobError naming what is wrong."""
    if metadata is None:
        return None
    hint = (
        'e.g. {"team": "nlp", "ticket": "AI-12"}: at most 16 pairs, keys <= 64 and values <= 512 characters.'
    )
    if not isinstance(metadata, dict):
        raise JobError(
            "metadata must be an object of string keys and values.", code="metadata_invalid", hint=hint
        )
    if len(metadata) > METADATA_PAIRS:
        raise JobError(
            f"metadata holds {len(metadata)} pairs; at most {METADATA_PAIRS} are kept.",
            code="metadata_invalid",
            hint=hint,
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise JobError(f"metadata[{key!r}] must be a string.", code="metadata_invalid", hint=hint)
        if not 0 < len(key) <= METADATA_KEY or len(value) > METADATA_VALUE:
            raise JobError(
                f"metadata[{key[:70]!r}] is too long (keys 1-{METADATA_KEY}, values up to {METADATA_VALUE} "
                "characters).",
                code="metadata_invalid",
                hint=hint,
            )
    return dict(metadata) or None


def using_dataset(ds) -> list[str]:
    """The queued, running and paused jobs whose ``data`` (or ``valid_data``) names dataset ``ds`` (by id,
    digest or one of its names): what must end before it is deleted."""
    keys = {ds.id, ds.digest, *ds.names}
    return [
        job.id
        for status in ("queued", "running", "paused")
        for job in state.list_jobs(status, 10_000)
        if any(str(job.params.get(k) or "").strip() in keys for k in ("data", "valid_data"))
    ]


def list_jobs(status: str | None = None, limit: int = 100, metadata: dict | None = None) -> list[dict]:
    """Jobs, newest first: of ``status``, and whose metadata holds every pair in ``metadata``."""
    return [j.to_dict() for j in state.list_jobs(status, limit, metadata)]


def show(job_id: str) -> dict:
    """The job, its events and the last lines of its log."""
    info = state.get(job_id).to_dict()
    info["events"] = [e.to_dict() for e in state.events(job_id)]
    info["log_tail"] = log_tail(job_id, 10)
    return info


def logs(job_id: str, tail: int | None = None) -> str:
    state.get(job_id)
    path = log_path(job_id)
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-tail:]) if tail else text


def cancel(job_id: str) -> dict:
    """Cancel a queued job now, or ask the runner to stop a running one."""
    job = state.get(job_id)
    if job.status in state.ENDED:
        raise JobError(
            f"Job {job_id} already ended ({job.status}).",
            code="job_already_ended",
            hint="Only queued, running or paused jobs can be cancelled; `aimass jobs retry` starts it again.",
        )
    if not state.cancel_queued(job_id):
        state.request_cancel(job_id)
    return state.get(job_id).to_dict()


def pause(job_id: str) -> dict:
    """Pause a job: a queued one stays queued-but-held until resumed; a running train or auto
    job stops right after its next checkpoint (others at once), and ``resume`` continues it from
    there. Pausing is not failing: a paused attempt does not count toward ``max_attempts``."""
    job = state.get(job_id)
    if job.status not in ("queued", "running"):
        raise JobError(
            f"Job {job_id} is {job.status}; only queued or running jobs can be paused.",
            code="job_not_pausable",
            hint="A paused job is resumed with `aimass jobs resume`; an ended one is retried.",
        )
    if not state.pause_queued(job_id):
        state.request_pause(job_id)
    return state.get(job_id).to_dict()


def resume(job_id: str) -> dict:
    """Queue a paused job again: its next attempt goes on from its last checkpoint."""
    job = state.get(job_id)
    if not state.resume(job_id):
        hint = (
            "It is still pausing: wait for its status to be paused."
            if job.status == "running" and job.pause_requested
            else "Only paused jobs are resumed; `aimass jobs retry` starts a failed or cancelled one again."
        )
        raise JobError(f"Job {job_id} is {job.status}, not paused.", code="job_not_paused", hint=hint)
    return state.get(job_id).to_dict()


def retry(job_id: str, *, guard=None) -> dict:
    """Queue a new job with the same kind and params as a failed or cancelled one, in its project.
    ``guard(kind, params)`` as for :func:`submit` (who retries must be able to name what it names)."""
    job = state.get(job_id)
    if job.status not in ("failed", "cancelled"):
        raise JobError(
            f"Job {job_id} is {job.status}; only failed or cancelled jobs can be retried.",
            code="job_not_retryable",
            hint="Wait for it to end, or submit a new job.",
        )
    get_kind(job.kind).check(dict(job.params))
    if guard is not None:
        guard(job.kind, dict(job.params))
    # a guarded retry (REST, the console) read the params' paths here, so they are read here; the
    # operator's own retry reads them where the first attempt did
    cwd = job.cwd if guard is None else None
    new = state.create(
        job.kind, job.params, timeout_s=job.timeout_s, retry_of=job.id, metadata=job.meta, cwd=cwd
    )
    if (project := directory.project_of("job", job.id)) != directory.DEFAULT_PROJECT:
        directory.assign("job", new.id, project)  # it writes where the first attempt would have
    state.event(job.id, "retried", f"retried as job {new.id}")
    return new.to_dict()


def wait(job_id: str, timeout_s: float | None = None, poll_s: float = 0.5) -> dict:
    """Block until the job ends (or ``timeout_s`` passes); returns it."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while (job := state.get(job_id)).status not in state.ENDED:
        if deadline is not None and time.monotonic() > deadline:
            break
        time.sleep(poll_s)
    return job.to_dict()


def run_foreground(job_id: str, *, echo=None) -> dict:
    """Run one queued job here (in worker processes, resumed if one dies) until it ends.

    ``echo(text)`` receives the log as it grows. If a background runner holds the job, this
    just follows it.
    """
    runner = Runner(parallel=1, poll_s=0.3)
    offset = 0
    while True:
        job = state.get(job_id)
        if job.status == "queued":
            runner._start(job_id)
        elif job.status == "running" and job_id in runner.attempts:
            runner.tick_one(job_id)
        if echo is not None:
            offset = _echo(job_id, offset, echo)
        if job.status in state.ENDED or job.status == "paused":
            return show(job_id)
        time.sleep(0.3)


def _echo(job_id: str, offset: int, echo) -> int:
    """Pass what the job's log gained since ``offset`` to ``echo``; the first attempt's banner stays
    in the log only (a later attempt's says the job was resumed, which its follower should see)."""
    path = log_path(job_id)
    if not path.exists() or path.stat().st_size <= offset:
        return offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    text = (
        FIRST_BANNER.sub("", chunk.decode("utf-8", "replace"))
        if offset == 0
        else chunk.decode("utf-8", "replace")
    )
    if text:
        echo(text)
    return offset + len(chunk)


FIRST_BANNER = re.compile(r"\A\n?===== attempt 1 \(pid of runner \d+\) =====\n")
