"""A rich progress bar with ETA, as a loop callback and for the embedding pass."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_observers: list[Callable[[str, float, float], None]] = []
_metric_observers: list[Callable[[str, dict], None]] = []
_pause = threading.Event()


class Paused(BaseException):  # noqa: N818 — not an error (no `except Exception` may swallow it)
    """A fit stopped at a checkpoint it just wrote because its job was asked to pause."""


def request_pause() -> None:
    """Ask the fits of this process to stop at their next checkpoint (a job's worker calls this
    when its job is paused): :func:`pause_point` then raises :class:`Paused`."""
    _pause.set()


def pause_requested() -> bool:
    return _pause.is_set()


def clear_pause() -> None:
    """Forget a pause asked of this process (before fitting again in it, from the checkpoint)."""
    _pause.clear()


def pause_point(where: str) -> None:
    """Call right after a checkpoint is written: raises :class:`Paused` if a pause was asked for."""
    if _pause.is_set():
        raise Paused(f"paused {where}, right after its checkpoint was written")


@contextlib.contextmanager
def observe(callback: Callable[[str, float, float], None]):
    """Within the block, ``callback(stage, done, total)`` hears every progress update
    (embedding passes, training epochs) — how a job reports progress and ETA."""
    _observers.append(callback)
    try:
        yield callback
    finally:
        _observers.remove(callback)


def notify(stage: str, done: float, total: float) -> None:
    for callback in list(_observers):
        callback(stage, done, total)


@contextlib.contextmanager
def observe_metrics(callback: Callable[[str, dict], None]):
    """Within the block, ``callback(stage, metrics)`` hears every training metric a loop
    publishes (a language model's step loss and token accuracy, its validation scores)."""
    _metric_observers.append(callback)
    try:
        yield callback
    finally:
        _metric_observers.remove(callback)


def publish_metrics(stage: str, metrics: dict) -> None:
    for callback in list(_metric_observers):
        callback(stage, metrics)


class _Forwarding(Progress):
    """A rich ``Progress`` that also tells the observers (even when the bar is not shown)."""

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        if _observers:
            task = self._tasks[task_id]
            notify(task.description, task.completed, task.total or 0)


def make_progress(enabled: bool = True) -> Progress:
    return _Forwarding(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled or not sys.stderr.isatty(),
        transient=False,
    )


class ProgressBar:
    """Shows steps of each stage and the latest validation scores."""

    def __init__(self, progress: Progress, description: str, total_steps: int):
        self.progress, self.description, self.total = progress, description, total_steps
        self.task = None

    def before_fit(self, loop) -> None:
        self.task = self.progress.add_task(self.description, total=self.total, info="")

    def after_batch(self, loop) -> None:
        self.progress.update(self.task, advance=1, info=f"loss {loop.loss:.3f}")

    def after_epoch(self, loop) -> None:
        f1 = loop.metrics.get("macro_f1", 0.0)
        self.progress.update(self.task, info=f"epoch {loop.epoch + 1} valid macro-F1 {f1:.4f}")

    def after_fit(self, loop) -> None:
        self.progress.update(self.task, completed=self.total)
