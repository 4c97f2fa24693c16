"""The job runner: claims queued jobs and runs each attempt in its own worker process.

One runner per ``AIMASS_HOME`` (a file lock says so) runs at most ``parallel`` workers at once.
Workers live in their own process group, so a runner killed with SIGKILL leaves them working:
the next runner adopts the ones still alive and requeues the attempts whose worker died, which
then resume from their checkpoints. A worker that dies ``max_attempts`` times fails the job with
an explanation. Cancelling kills the worker's whole process group. Pausing lets a worker whose
kind checkpoints (train, auto) stop at its next checkpoint, for at most ``pause_grace_s``; the
others, and one that overruns, are stopped at once (they resume from their last checkpoint).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aimass import paths
from aimass.access import directory
from aimass.errors import JobError
from aimass.jobs import explain, state
from aimass.jobs.kinds import get_kind
from aimass.jobs.logs import log_path, log_tail

log = logging.getLogger("aimass.jobs")

PAUSE_GRACE_S = 120.0  # how long a pause waits for a checkpointing job's next checkpoint


@dataclass
class Attempt:
    job_id: str
    attempt: int
    pid: int
    began: float
    process: subprocess.Popen | None = None  # None: adopted from a runner that died
    pause_seen: float | None = None  # when the runner first saw a pause asked of it

    def exit_code(self) -> int | None:
        """The exit code once the worker is gone (-9 for an adopted worker that vanished)."""
        if self.process is not None:
            return self.process.poll()
        return None if alive(self.pid, self.job_id) else -signal.SIGKILL


def alive(pid: int | None, job_id: str) -> bool:
    """Is ``pid`` a live worker of ``job_id`` (not a recycled pid of something else)?"""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and b"aimass.jobs.worker" in cmdline and job_id.encode() in cmdline


def find_worker(job_id: str) -> int | None:
    """The pid of a live worker of ``job_id`` (also one its runner died before recording)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name), job_id):
            return int(entry.name)
    return None


class Runner:
    """Run queued jobs, ``parallel`` at a time, until stopped (or idle, with ``until_idle``)."""

    def __init__(self, parallel: int = 2, poll_s: float = 0.5, pause_grace_s: float = PAUSE_GRACE_S):
        self.parallel, self.poll_s, self.pause_grace_s = max(1, int(parallel)), poll_s, pause_grace_s
        self.attempts: dict[str, Attempt] = {}
        self._lock = None

    # --------------------------------------------------------- lifecycle
    def acquire(self) -> None:
        path = paths.subdir("jobs") / "runner.lock"
        handle = open(path, "a+")  # noqa: SIM115 — held for the runner's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise JobError(
                f"A job runner is already running for {paths.home()} (pid {owner}).",
                code="runner_already_running",
                hint="Jobs you submit are picked up by it; stop it first to start another.",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def run(self, *, until_idle: bool = False, stop=None) -> None:
        """Also sends the webhooks' deliveries (:mod:`aimass.jobs.webhooks`), in a thread of its own."""
        from aimass.jobs import webhooks

        self.acquire()
        halt = threading.Event()
        sender = threading.Thread(target=webhooks.Deliverer().run, args=(halt,), name="webhooks", daemon=True)
        sender.start()
        try:
            self.recover()
            while stop is None or not stop.is_set():
                try:
                    busy = self.tick()
                except Exception:  # noqa: BLE001 — a busy database (locked past its timeout): next pass
                    log.exception("job runner: this pass failed; trying again")
                    busy = True  # a database held 10 s by another process stopped every job for good
                if until_idle and not busy:
                    return
                time.sleep(self.poll_s)
        finally:
            halt.set()
            self.release()

    # -------------------------------------------------------------- work
    def recover(self) -> None:
        """Adopt live workers of running jobs; requeue (or fail) the attempts whose worker died."""
        for job in state.list_jobs("running", limit=10_000):
            if job.id in self.attempts:
                continue
            pid = job.worker_pid if alive(job.worker_pid, job.id) else find_worker(job.id)
            if pid is not None:
                self.attempts[job.id] = Attempt(job.id, job.attempt, pid, time.monotonic())
                state.event(
                    job.id,
                    "adopted",
                    f"a new runner (pid {os.getpid()}) took over the worker",
                    attempt=job.attempt,
                )
            else:
                self._died(job.id, job.attempt, -signal.SIGKILL, "its runner stopped and the worker is gone")

    def tick(self) -> bool:
        """One pass: reap, enforce cancel/timeout, start new attempts. True while work remains."""
        for job_id in list(self.attempts):
            self.tick_one(job_id)
        while len(self.attempts) < self.parallel and (job_id := self._next()) is not None:
            self._start(job_id)
        return bool(self.attempts) or self._next() is not None

    def tick_one(self, job_id: str) -> None:
        """Reap the attempt if its worker is gone; else enforce cancel and timeout."""
        attempt = self.attempts[job_id]
        code = attempt.exit_code()
        if code is not None:
            del self.attempts[job_id]
            self._ended(attempt, code)
        else:
            self._police(attempt)

    def _next(self) -> str | None:
        return state.next_queued(projects_of)

    def _start(self, job_id: str) -> None:
        job = state.claim(job_id, os.getpid())
        if job is None:
            return
        log = log_path(job_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as handle:
            handle.write(f"\n===== attempt {job.attempt} (pid of runner {os.getpid()}) =====\n".encode())
            handle.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "aimass.jobs.worker", job_id, str(job.attempt)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: survives the runner, dies whole on cancel
                env={**os.environ, "AIMASS_HOME": str(paths.home()), "PYTHONUNBUFFERED": "1"},
                cwd=_folder(job),
            )
        state.set_worker(job_id, job.attempt, process.pid)
        self.attempts[job_id] = Attempt(job_id, job.attempt, process.pid, time.monotonic(), process)

    def _police(self, attempt: Attempt) -> None:
        job = state.get(attempt.job_id)
        if job.status != "running" or job.attempt != attempt.attempt:
            return
        if job.cancel_requested:
            self._kill(attempt)
            error = {"cause": "cancelled", "message": "Cancelled by request.", "hint": None, "traceback": ""}
            state.finish(job.id, attempt.attempt, "cancelled", error=error)
        elif job.pause_requested:
            self._pause(attempt, job)
        elif job.timeout_s and state.ran_seconds(job.id) > job.timeout_s:  # every attempt's time
            self._kill(attempt)
            state.finish(job.id, attempt.attempt, "failed", error=explain.timeout(job.timeout_s))

    def _pause(self, attempt: Attempt, job) -> None:
        """Stop the attempt now, or once it has had ``pause_grace_s`` to reach a checkpoint."""
        now = time.monotonic()
        attempt.pause_seen = attempt.pause_seen or now
        graceful = get_kind(job.kind).checkpoints
        if graceful and now - attempt.pause_seen < self.pause_grace_s:
            return  # its worker hears it within a heartbeat and pauses after its next checkpoint
        self._kill(attempt)
        why = (
            f"it reached no checkpoint within {self.pause_grace_s:g} s; it resumes from its last one"
            if graceful
            else f"a {job.kind} job is stopped at once; resumed, it goes on from what it saved"
        )
        state.pause(job.id, attempt.attempt, f"paused: {why}")

    def _kill(self, attempt: Attempt) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(attempt.pid, signal.SIGKILL)
        if attempt.process is not None:
            attempt.process.wait(timeout=30)
        self.attempts.pop(attempt.job_id, None)

    def _ended(self, attempt: Attempt, code: int) -> None:
        job = state.get(attempt.job_id)
        if job.status == "running" and job.attempt == attempt.attempt:  # died without an end state
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            self._died(job.id, job.attempt, code, f"the worker process ended ({how}) before the job did")

    def _died(self, job_id: str, attempt: int, code: int, reason: str) -> None:
        job = state.get(job_id)
        if job.cancel_requested:
            error = {"cause": "cancelled", "message": "Cancelled by request.", "hint": None, "traceback": ""}
            state.finish(job_id, attempt, "cancelled", error=error)
        elif job.pause_requested:
            state.pause(job_id, attempt, f"paused ({reason}); it resumes from its last checkpoint")
        elif attempt < job.max_attempts:
            state.requeue(job_id, attempt, f"{reason}; it will resume from its last checkpoint")
        else:
            error = explain.killed(code, 0, log_tail(job_id))
            error["message"] += f" It died {attempt} times; giving up."
            state.finish(job_id, attempt, "failed", error=error)


def _folder(job) -> str:
    """Where a job's worker starts: the submitter's working folder (a relative path in its params
    means what it meant to the submitter, and to the server that checked a REST job's paths, not
    what it means where this runner was started); the home when that folder is gone."""
    if job.cwd and os.path.isdir(job.cwd):
        return job.cwd
    return str(paths.home())


def projects_of(job_ids) -> dict[str, str]:
    """Each job's project (``default`` for one nobody assigned)."""
    owners = directory.owners("job")
    return {job_id: owners.get(job_id, directory.DEFAULT_PROJECT) for job_id in job_ids}
