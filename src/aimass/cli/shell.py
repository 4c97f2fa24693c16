"""Helpers shared by the command-line modules: error handling, JSON or rich output."""

from __future__ import annotations

import functools
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from aimass.errors import AimassError

out = Console()
err = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def command(fn):
    """Turn AimassError into a message + hint on stderr (or JSON) and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AimassError as exc:
            if kwargs.get("as_json"):
                print(json.dumps({"error": exc.to_dict()}, ensure_ascii=False))
            else:
                err.print(
                    f"[bold red]Error ({exc.code}):[/] {exc.where + ': ' if exc.where else ''}{exc.message}"
                )
                if exc.hint:
                    err.print(f"[yellow]Hint:[/] {exc.hint}")
            raise typer.Exit(2 if exc.http_status < 500 else 1) from None

    return wrapper


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
