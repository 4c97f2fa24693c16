"""Why a job failed, in words: the cause, the message, a hint and the traceback's last lines."""

from __future__ import annotations

import os
import re
import signal
import sys
import traceback

from aimass.errors import AimassError, DataError

TAIL_LINES = 15


class ScriptFailed(Exception):
    """The script exited non-zero; ``tail`` holds the last lines it printed."""

    def __init__(self, returncode: int, entry: str, tail: str = ""):
        self.returncode, self.entry, self.tail = returncode, entry, tail
        super().__init__(f"{entry} exited with code {returncode}")


def _tail(exc: BaseException) -> str:
    """The traceback's last lines, each file named from its import root (``aimass/jobs/kinds.py``):
    a job's submitter reads where it broke, not where the server is installed."""
    lines = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    return _FILE.sub(lambda m: f'File "{_short(m.group(1))}"', "\n".join(lines[-TAIL_LINES:]))


_FILE = re.compile(r'File "([^"]+)"')


def _short(path: str) -> str:
    """``path`` from the longest import root holding it, else its file name alone.

    >>> _short(os.path.join(os.path.dirname(os.__file__), "json", "decoder.py"))  # the standard library
    'json/decoder.py'
    >>> _short("/srv/aimass-home/jobs/0a1b/train.py")
    'train.py'
    """
    roots = sorted({os.path.abspath(p) for p in sys.path if p}, key=len, reverse=True)
    full = os.path.abspath(path)
    for root in roots:
        if full.startswith(root.rstrip(os.sep) + os.sep):
            return full[len(root.rstrip(os.sep)) + 1 :].replace(os.sep, "/")
    return os.path.basename(path) if os.path.isabs(path) else path


def failure(exc: BaseException) -> dict:
    """A failed attempt's error record from the exception that ended it."""
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return {
            "cause": "out_of_memory",
            "message": f"The job ran out of memory ({type(exc).__name__}).",
            "hint": "Lower the batch size or max_length, use a smaller backbone, or free memory.",
            "traceback": _tail(exc),
        }
    if isinstance(exc, DataError):
        where = f"{exc.where}: " if exc.where else ""
        return {
            "cause": "data_error",
            "code": exc.code,
            "message": f"{where}{exc.message}",
            "hint": exc.hint or "Fix the data and retry the job.",
            "traceback": _tail(exc),
        }
    if isinstance(exc, AimassError):
        return {
            "cause": exc.code,
            "code": exc.code,
            "message": exc.message,
            "hint": exc.hint or "Fix the job's parameters and submit it again.",
            "traceback": _tail(exc),
        }
    if isinstance(exc, ScriptFailed):
        killed_by_oom = exc.returncode == -signal.SIGKILL
        if killed_by_oom or "MemoryError" in exc.tail or "out of memory" in exc.tail.lower():
            return {
                "cause": "out_of_memory",
                "message": f"{exc.entry} ran out of memory (exit code {exc.returncode}).",
                "hint": "Use smaller batches or less data per step in the script, or free memory.",
                "traceback": exc.tail,
            }
        return {
            "cause": "script_failed",
            "message": f"{exc.entry} exited with code {exc.returncode}.",
            "hint": "The traceback holds the script's last lines; `aimass jobs logs JOB` has them all.",
            "traceback": exc.tail,
        }
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return {
            "cause": "interrupted",
            "message": f"The job was interrupted ({type(exc).__name__}).",
            "hint": "Retry it with `aimass jobs retry JOB`.",
            "traceback": _tail(exc),
        }
    last = "".join(traceback.format_exception_only(exc)).strip()
    return {
        "cause": "exception",
        "message": last[:2000],
        "hint": "The traceback's last lines show where it broke; `aimass jobs logs JOB` has the full log.",
        "traceback": _tail(exc),
    }


def killed(returncode: int, attempts_left: int, log_tail: str) -> dict:
    """An attempt whose process died without recording an end state."""
    signum = -returncode if returncode < 0 else None
    if signum == signal.SIGKILL:
        oom = "killed process" in log_tail.lower() or "out of memory" in log_tail.lower()
        return {
            "cause": "out_of_memory" if oom or not attempts_left else "killed",
            "message": "The worker process was killed (SIGKILL), most often by the kernel's OOM killer.",
            "hint": "Lower the batch size or max_length, or give the machine more memory; then retry.",
            "traceback": log_tail,
        }
    name = signal.Signals(signum).name if signum else f"exit code {returncode}"
    return {
        "cause": "crashed",
        "message": f"The worker process died ({name}) without recording a result.",
        "hint": "The log's last lines show what it was doing; retry the job with `aimass jobs retry JOB`.",
        "traceback": log_tail,
    }


def timeout(seconds: float) -> dict:
    return {
        "cause": "timeout",
        "message": f"The job ran longer than its timeout of {seconds:g} s and was stopped.",
        "hint": "Give it a longer --timeout, or a smaller --time-budget so training plans to end sooner.",
        "traceback": "",
    }
