"""Helpers shared by the command-line modules: error handling, JSON or rich output."""

from __future__ import annotations

import functools
import json
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aimass.errors import AimassError

out = Console()
err = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DEBUG_ENV = "AIMASS_DEBUG"  # set (to anything but 0) to see the traceback of an unexpected error


def command(fn):
    """Turn AimassError into a message + hint on stderr (or JSON) and a non-zero exit; any other
    exception (a bug) into one ``Error (internal)`` line and exit 1, its traceback shown only when
    ``AIMASS_DEBUG`` is set."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AimassError as exc:
            if kwargs.get("as_json"):
                print(json.dumps({"error": exc.to_dict()}, ensure_ascii=False))
            else:
                # the message, where and hint quote user text (labels, file names, JSON shapes such as
                # `[[start, end, label]]`) that Rich would otherwise read as markup, or fail on
                where = escape(f"{exc.where}: ") if exc.where else ""
                err.print(f"[bold red]Error ({exc.code}):[/] {where}{escape(exc.message)}")
                if exc.hint:
                    err.print(f"[yellow]Hint:[/] {escape(exc.hint)}")
            raise typer.Exit(2 if exc.http_status < 500 else 1) from None
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):  # typer's own way out
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
                raise
            _internal(exc, kwargs.get("as_json"))
            raise typer.Exit(1) from None

    return wrapper


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
    if as_json:
        print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    elif render is not None:
        render(payload)
    else:
        out.print(payload)


def table(rows: list[dict], columns: list[str], title: str | None = None) -> Table:
    grid = Table(*columns, title=title)
    for row in rows:
        grid.add_row(*[fmt(row.get(c)) for c in columns])
    return grid


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)
