"""Helpers shared by the command-line modules: error handling, JSON or rich output."""

from __future__ import annotations

import errno
import functools
import json
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from aimass.errors import AimassError, InsufficientStorage, PermissionDenied

out = Console()
err = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DEBUG_ENV = "AIMASS_DEBUG"  # set (to anything but 0) to see the traceback of an unexpected error


def command(fn):
    """Turn AimassError into a message + hint on stderr (or JSON) and a non-zero exit, and so a
    full disk, a read-only folder or a forbidden one (an OSError the user fixes, see
    :func:`_disk_error`); any other exception (a bug) into one ``Error (internal)`` line and exit 1,
    its traceback shown only when ``AIMASS_DEBUG`` is set."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AimassError as exc:
            raise typer.Exit(_report(exc, kwargs.get("as_json"))) from None
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):  # typer's own way out
            raise
        except Exception as exc:
            if (known := _disk_error(exc)) is not None:
                raise typer.Exit(_report(known, kwargs.get("as_json"))) from None
            if os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
                raise
            _internal(exc, kwargs.get("as_json"))
            raise typer.Exit(1) from None

    return wrapper


def _report(exc: AimassError, as_json: bool) -> int:
    """Print ``exc`` (message, where, hint) on stderr, or as JSON; the exit code for it."""
    if as_json:
        print(json.dumps({"error": exc.to_dict()}, ensure_ascii=False))
    else:
        # the message, where and hint quote user text (labels, file names, JSON shapes such as
        # `[[start, end, label]]`) that Rich would otherwise read as markup, or fail on
        where = escape(f"{exc.where}: ") if exc.where else ""
        err.print(f"[bold red]Error ({exc.code}):[/] {where}{escape(exc.message)}")
        if exc.hint:
            err.print(f"[yellow]Hint:[/] {escape(exc.hint)}")
    return 2 if exc.http_status < 500 else 1


def _disk_error(exc: Exception) -> AimassError | None:
    """The error to show for an OSError that is the disk's, not aimass's: no space left (or over
    quota), a read-only file system, no permission. Its hint names the path (``exc.filename``)
    where the OSError has one. None for any other exception.

    >>> _disk_error(OSError(errno.EROFS, "Read-only file system", "/srv/aimass/aimass.db")).hint
    '/srv/aimass/aimass.db is read-only: remount it read-write, or point AIMASS_HOME or the output elsewhere.'
    """
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRORS:
        return None
    kind, hint = DISK_ERRORS[exc.errno]
    path = str(exc.filename) if exc.filename else None
    place = path or "the folder aimass writes to (AIMASS_HOME, or the output you named)"
    return kind(exc.strerror or str(exc), hint=hint.format(place=place), where=path)


DISK_ERRORS = {  # errno: (error class, hint)
    errno.ENOSPC: (
        InsufficientStorage,
        "Free some space on the disk holding {place} (df -h), then run it again.",
    ),
    errno.EDQUOT: (
        InsufficientStorage,
        "Free some space on the disk holding {place}: your quota is used up.",
    ),
    errno.EROFS: (
        PermissionDenied,
        "{place} is read-only: remount it read-write, or point AIMASS_HOME or the output elsewhere.",
    ),
    errno.EACCES: (
        PermissionDenied,
        "You have no permission to write (or read) {place}: check its owner and mode.",
    ),
    errno.EPERM: (
        PermissionDenied,
        "You have no permission to write (or read) {place}: check its owner and mode.",
    ),
}


def _internal(exc: Exception, as_json: bool) -> None:
    """One line (or a JSON error) for an exception aimass did not expect."""
    first = next(iter(str(exc).splitlines()), "")
    message = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    hint = f"Rerun with {DEBUG_ENV}=1 to see the traceback; please report it if aimass is at fault."
    if as_json:
        error = {"code": "internal", "message": message, "where": None, "hint": hint}
        print(json.dumps({"error": error}, ensure_ascii=False))
    else:
        err.print(f"[bold red]Error (internal):[/] {escape(message)}")
        err.print(f"[yellow]Hint:[/] {escape(hint)}")


def emit(payload, as_json: bool, render=None) -> None:
    """``payload`` as JSON, through ``render``, or printed as it is (text literally, not as markup)."""
    if as_json:
        print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    elif render is not None:
        render(payload)
    else:
        out.print(payload, markup=False)


def table(rows: list[dict], columns: list[str], title: str | None = None) -> Table:
    """A Rich table of ``rows`` (dicts) under ``columns``. Its headers, cells and title are drawn
    as written: they hold user data (class names, texts, file names) that Rich would otherwise
    read as markup (``[bold]``), or fail on (``[/]`` closing nothing)."""
    grid = Table(title=escape(title) if title else None)
    for column in columns:
        grid.add_column(Text(str(column)))
    for row in rows:
        grid.add_row(*[Text(fmt(row.get(c))) for c in columns])
    return grid


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)
