"""A rich progress bar with ETA, as a loop callback and for the embedding pass."""

from __future__ import annotations

import sys

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def make_progress(enabled: bool = True) -> Progress:
    return Progress(
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
