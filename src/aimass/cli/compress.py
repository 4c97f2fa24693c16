"""``aimass compress``: a thin shell over :func:`aimass.api.compress`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aimass.cli.shell import JsonFlag, command, emit, out, table
from aimass.compressors.measure import COLUMNS
from aimass.errors import ConfigError


def attach(app: typer.Typer) -> None:
    app.command()(compress)


@command
def compress(
    model: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
    method: Annotated[str, typer.Option(help="int8-dynamic, onnx, onnx-int8, distill or prune")],
    max_drop: Annotated[
        float, typer.Option(help="Accuracy points (0-100) the result may lose before it is rejected.")
    ] = 1.0,
    data: Annotated[str | None, typer.Option(help="Evaluate on this dataset or file instead.")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--set", help="A method setting KEY=VALUE (repeatable), e.g. --set layers=4."),
    ] = None,
    as_json: JsonFlag = False,
):
    """Make a smaller, faster child version; both are measured on the parent's test split."""
    from aimass import api

    result = api.compress(model, method, max_drop=max_drop, data=data, **settings(option or []))
    emit(result, as_json, render)


def settings(pairs: list[str]) -> dict:
    """``["layers=4", "teachers=[\\"a:1\\"]"]`` -> ``{"layers": 4, "teachers": ["a:1"]}``."""
    out_ = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r} is not KEY=VALUE.", hint="For example --set layers=4.")
        try:
            out_[key.strip().replace("-", "_")] = json.loads(value)
        except ValueError:
            out_[key.strip().replace("-", "_")] = value
    return out_


def render(result: dict) -> None:
    title = f"{result['method']}: {result['parent']} -> {result['model']}"
    out.print(table(result["table"], COLUMNS, title=title))
    c = result["comparison"]
    out.print(
        f"accuracy {-c['accuracy_drop_points']:+.2f} points, p50 x{c['p50_speedup']:.2f} faster, "
        f"throughput x{c['throughput_ratio']:.2f}, size x{c['size_ratio']:.2f}"
    )
    gate = result["gate"]
    colour = "green" if gate["status"] == "accepted" else "red"
    out.print(f"gate: [{colour}]{gate['status']}[/] ({gate['reason']})")
