"""Where a job's files live: its run folder and log (``AIMASS_HOME/jobs/<id>/``)."""

from __future__ import annotations

from pathlib import Path

from aimass import paths

METRICS = "[metrics] "  # a log line with a training metric as JSON follows this


def run_dir(job_id: str) -> Path:
    """The job's folder: checkpoints, outputs and its log."""
    return paths.subdir("jobs") / job_id


def log_path(job_id: str) -> Path:
    return run_dir(job_id) / "log.txt"


def log_tail(job_id: str, lines: int = 20) -> str:
    """The last ``lines`` lines of the job's log (from its last 16 KiB), or ``""``."""
    path = log_path(job_id)
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 16384))
        text = handle.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
