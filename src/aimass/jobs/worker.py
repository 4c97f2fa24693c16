"""Run one attempt of one job: ``python -m aimass.jobs.worker JOB_ID ATTEMPT``.

The worker owns the attempt the runner claimed for it: it beats a heartbeat (with progress and
ETA), runs the job's kind and writes the end state itself, once. Its stdout/stderr are the job's
log. If it is killed, the runner sees the attempt still ``running`` and starts the next one,
which resumes from the checkpoints in the job's run folder. When the job is paused, the
heartbeat hears it and the fit stops right after its next checkpoint (:func:`pause_point`):
the worker records ``paused`` and exits.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError

from aimass.jobs import explain, kinds, state
from aimass.jobs.adopt import adopt, confine
from aimass.jobs.logs import METRICS, run_dir
from aimass.store import claims
from aimass.train.progress import Paused, observe, observe_metrics, request_pause

BEAT_S = 2.0


@dataclass
class Context:
    """What a kind's ``run`` gets besides its params."""

    job_id: str
    attempt: int
    run_dir: str
    resume: bool
    started: float = field(default_factory=time.monotonic)
    state: dict = field(default_factory=lambda: {"progress": 0.0, "message": "", "eta_s": None})

    @property
    def run_id(self) -> str:
        return f"job-{self.job_id}"

    def progress(self, fraction: float, message: str = "") -> None:
        """Overall progress in [0, 1] and what is happening; the ETA follows from the rate so far."""
        fraction = min(1.0, max(0.0, float(fraction)))
        elapsed = time.monotonic() - self.started
        eta = elapsed * (1 - fraction) / fraction if fraction >= 0.02 else None
        self.state.update(progress=fraction, eta_s=eta, message=message or self.state["message"])
        print(f"[progress {fraction:.0%}] {message}", flush=True)


def _stage_progress(ctx: Context):
    """Map a stage's own (done, total) onto the job: the kind's last fraction moves toward 0.95."""
    floor = {"value": None, "stage": None, "printed": -1.0}

    def hear(stage: str, done: float, total: float) -> None:
        if not total:
            return
        if floor["value"] is None or done <= 1:
            floor["value"] = ctx.state["progress"]
        share = done / total
        if stage != floor["stage"] or share - floor["printed"] >= 0.1 or done >= total:
            floor["stage"], floor["printed"] = stage, share
            print(f"[{stage}] {done:g}/{total:g}", flush=True)  # the job's log shows each stage
        base = floor["value"]
        ctx.state["progress"] = base + (0.95 - base) * min(1.0, done / total) * 0.5
        elapsed = time.monotonic() - ctx.started
        fraction = max(ctx.state["progress"], 1e-6)
        ctx.state.update(message=f"{stage}: {done:g}/{total:g}", eta_s=elapsed * (1 - fraction) / fraction)

    return hear


def _log_metrics(stage: str, metrics: dict) -> None:
    """A training metric as one line of the job's log (``[metrics] {JSON}``: the fine-tuning
    API's metric events)."""
    print(METRICS + json.dumps({"stage": stage, "at": round(time.time(), 3), **metrics}), flush=True)


def _heartbeat(ctx: Context, stop: threading.Event) -> None:
    while not stop.wait(BEAT_S):
        values = {k: ctx.state[k] for k in ("progress", "eta_s")}
        values["message"] = str(ctx.state["message"])[:1000]
        try:
            state.beat(ctx.job_id, ctx.attempt, **values)
            if state.pause_requested(ctx.job_id):
                request_pause()
        except Exception as exc:  # a busy database must not kill the work; the next beat retries
            print(f"[heartbeat] {exc}", file=sys.stderr, flush=True)


def execute(job_id: str, attempt: int) -> str:
    """Run the attempt in this process; returns the end state it recorded (or "lost")."""
    job = state.get(job_id)
    if not state.set_worker(job_id, attempt, os.getpid()):  # the attempt was requeued or ended
        print(f"attempt {attempt} of job {job_id} is no longer current; not running it", flush=True)
        return "lost"
    ctx = Context(job_id, attempt, str(run_dir(job_id)), resume=attempt > 1)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(ctx, stop), daemon=True)
    beat.start()
    try:
        claims.install(confine(job_id))  # versions only under the job's project's names, or new ones
        with observe(_stage_progress(ctx)), observe_metrics(_log_metrics):
            result = kinds.get_kind(job.kind).run(job.params, ctx)
        if made := adopt(job_id, result):  # new models and datasets belong to the job's project
            print(f"assigned to the job's project: {made}", flush=True)
        status, payload = "succeeded", {"result": result}
    except Paused as paused:
        status, payload = "paused", {"message": f"{paused}; `aimass jobs resume {job_id}` continues it"}
    except BaseException as exc:  # noqa: BLE001 — every failure is explained, then recorded
        status, payload = "failed", {"error": explain.failure(exc)}
        print(payload["error"].get("traceback", ""), file=sys.stderr, flush=True)
    finally:
        claims.install(None)
        stop.set()
        beat.join(timeout=5)
    if status == "paused":
        ended = _patiently(lambda: state.pause(job_id, attempt, payload["message"]))
    else:
        ended = _patiently(lambda: state.finish(job_id, attempt, status, **payload))
    return status if ended else "lost"


def _patiently(record, tries: int = 12):
    """``record()`` (the attempt's end state), tried again while the database stays locked past its
    busy timeout (another process holding a write for long): a finished job whose last write failed
    was run again from the start. About two minutes in all."""
    for attempt in range(tries):
        try:
            return record()
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            print(f"[state] the database is busy; recording the end again ({exc.orig})", file=sys.stderr)
            time.sleep(min(2.0 * (attempt + 1), 10.0))
    return False


def main(argv: list[str] | None = None) -> int:
    job_id, attempt = (argv or sys.argv[1:])[:2]
    status = execute(job_id, int(attempt))
    return 0 if status in ("succeeded", "failed", "paused") else 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
