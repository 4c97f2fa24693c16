"""``aimass auto``: a thin shell over :func:`aimass.autolearn.auto`."""

from __future__ import annotations

import json
import signal
import threading
from contextlib import contextmanager
from typing import Annotated

import typer

from aimass.cli.shell import JsonFlag, command, emit, err, out, table


def attach(app: typer.Typer) -> None:
    app.command()(auto)


@command
def auto(
    path: Annotated[
        str | None,
        typer.Argument(
            help="A CSV/TSV/JSONL table, a folder or archive of documents or images, or chat JSONL."
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Instead of PATH: a stored dataset's id or name (nothing re-imported).")
    ] = None,
    time_budget: Annotated[
        str, typer.Option(help="Wall time for everything, e.g. 5m, 300s, 1h (search, training, compression).")
    ] = "10m",
    deploy: Annotated[
        bool, typer.Option(help="Point production at the chosen version and serve it on 127.0.0.1.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Model name (default: the data's name).")] = None,
    seed: int = 0,
    as_json: JsonFlag = False,
):
    """Detect the task, search hyper-parameters within the budget, train, evaluate, compress, register.

    Conversations (chat or prompt/completion JSONL, source/target columns) fine-tune a language
    model with LoRA, sized to the budget, and deploy behind the OpenAI-compatible chat route."""
    from aimass.autolearn import auto as run

    def tell(fraction: float, message: str) -> None:
        err.print(f"[dim]{fraction:4.0%}[/] {message}")

    with stopped_by_sigterm():
        report = run(
            path,
            data=data,
            time_budget=time_budget,
            name=name,
            deploy=deploy,
            seed=seed,
            progress=not as_json,
            on_progress=None if as_json else tell,
        )
    emit(report, as_json, render)


class Terminated(SystemExit):
    """SIGTERM as an exception: what ``timeout``, systemd and ``docker stop`` send ends the run the
    way Ctrl-C does (its training run is marked failed), and the process exits 143 (128 + 15)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)

    def __str__(self) -> str:
        return "stopped by SIGTERM"


def _terminate(signum, frame) -> None:
    raise Terminated


@contextmanager
def stopped_by_sigterm():
    """For the block's duration SIGTERM raises :class:`Terminated`; the old handler comes back
    after. Without it the signal kills the process at once and leaves its run 'running' forever.
    Only the main thread may set handlers (a CLI run in a thread keeps the old one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)  # None: set outside Python


def render(report: dict) -> None:
    out.print(
        f"[bold green]{report['model']}[/] ({report['task']}) in {report['wall_s']:.0f}s of a "
        f"{report['budget_s']:.0f}s budget: {_metrics(report['metrics'])}"
    )
    d = report["dataset"]
    out.print(f"data: {d['name']} ({d['id']}), {d['rows']:,} rows, {d['rejects']:,} rejected")
    rows = [{**c, "value": _short(c["value"])} for c in report["choices"]]
    out.print(table(rows, ["what", "value", "why"], title="What auto chose and why"))
    out.print(_search_line(report["search"]))
    method = report["compression"]["method"]
    out.print(f"compression{f' ({method})' if method else ''}: {report['compression']['reason']}")
    dep = report["deployed"]
    if dep and dep.get("error"):
        out.print(f"[red]not deployed[/]: {dep['error']['message']} (hint: {dep['error']['hint']})")
    elif dep:
        out.print(
            f"deployed {dep['alias']} -> {dep['ref']} at {dep['server']}; it answered {dep['prediction']!r}"
        )
    else:
        out.print("not deployed: `aimass serve` (or `aimass auto ... --deploy`) serves it")
    out.print(f"endpoint: {report['endpoint']}")
    out.print(f"try it:   {report['curl']}")
    out.print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items()))


def _metrics(m: dict) -> str:
    """The test metrics in a line: a classifier's accuracy and macro-F1 (a multi-label one's micro-F1
    and exact match first), a language model's perplexity and ROUGE-L (against its base model's)."""
    if "micro_f1" in m and "accuracy" not in m:  # entities: each right when its span and label are
        return (
            f"test entity micro-F1 {m['micro_f1']:.4f}, precision {m['precision']:.4f}, "
            f"recall {m['recall']:.4f} (n={m['n']} texts)"
        )
    if "micro_f1" in m:
        return (
            f"test micro-F1 {m['micro_f1']:.4f}, exact match {m['accuracy']:.4f}, "
            f"macro-F1 {m['macro_f1']:.4f} (n={m['n']})"
        )
    if "accuracy" in m:
        return f"test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n={m['n']})"
    return (
        f"test perplexity {m['perplexity']:.2f} (base model {m['perplexity_base']:.2f}), ROUGE-L "
        f"{m['rouge_l']:.4f} (base model {m['rouge_l_base']:.4f}) (n={m['n']})"
    )


def _search_line(search: dict) -> str:
    if search.get("skipped"):
        return f"search: skipped ({search['skipped']})"
    proposal = search["lr_range_test"]["suggested_lr_body"]
    best = search["best_valid_macro_f1"]
    score = "n/a" if best is None else f"{best:.4f}"
    return (
        f"search: {search['trials']} trials ({search['pruned']} pruned) on {search['subsample']} rows x "
        f"{search['epochs_per_trial']} epochs; LR range test proposed lr_body "
        f"{'nothing' if proposal is None else f'{proposal:.2g}'}; best valid macro-F1 {score} with "
        f"{_short(search['best_params'])}"
    )


def _short(value, limit: int = 120) -> str:
    """A choice's value in one table cell: a dict as ``key=value`` pairs, whole pairs only (it was cut
    mid-object at 120 characters), the rest counted.

    >>> _short({"lr_body": 0.000123456, "backbone": "minilm-l6", "unfreeze": 2}, limit=40)
    'lr_body=0.000123, backbone=minilm-l6, … 1 more (--json has all)'
    """
    if not isinstance(value, dict):
        return str(value)
    pairs = [f"{k}={_cell(v)}" for k, v in value.items()]
    shown: list[str] = []
    for pair in pairs:
        if shown and len(", ".join([*shown, pair])) > limit:
            break
        shown.append(pair)
    rest = len(pairs) - len(shown)
    return ", ".join(shown) + (f", … {rest} more (--json has all)" if rest else "")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return value if isinstance(value, str) else json.dumps(value, default=str)
