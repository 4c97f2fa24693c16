"""One run's clock and phases, the up-front budget check, task detection, naming and import."""

from __future__ import annotations

import math
import re
import time
from contextlib import contextmanager
from pathlib import Path

from aimass import workflow
from aimass.autolearn.settings import GENERIC_NAMES
from aimass.autolearn.tuners import Count, get_tuner
from aimass.errors import ConfigError, DataError
from aimass.store import registry
from aimass.store.claims import claim
from aimass.tasks import sniff, task_for_kind


# ==================================================================== budget and phases
class _Run:
    """The clock, the phase timings, the choices made and the progress callback of one run."""

    def __init__(self, total, on_progress, progress, seed, deploy_s):
        self.total, self.on_progress, self.progress, self.seed = total, on_progress, progress, seed
        self.deploy_s = deploy_s  # what deployment is given in the plan (0 without it)
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.choices: list[dict] = []
        self.search: dict = {}
        self.plan = None  # a Plan, once the data is known
        self.margin_s = 2.0 + min(6.0, 0.03 * (total or 0))  # bookkeeping and timing noise

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.total - self.elapsed()

    def choose(self, what: str, value, why: str) -> None:
        self.choices.append({"what": what, "value": value, "why": why})

    def tell(self, fraction: float, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(round(min(1.0, max(0.0, fraction)), 3), message)

    @contextmanager
    def phase(self, name: str, fraction: float, message: str):
        self.tell(fraction, message)
        began = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.monotonic() - began, 2)


LEAST_BUDGET_S = 10.0  # no task's ``minimum_seconds`` is below it (text: 10 s plus its items)


def check_budget(tuner, count: Count, seconds: float) -> None:
    """Raise ConfigError when ``seconds`` cannot cover the encoder pass, a head and the evaluation."""
    need = tuner.minimum_seconds(count)
    if seconds >= need:
        return
    useful = tuner.useful_seconds(count)
    raise ConfigError(
        f"A {_duration(seconds)} budget is too small for {count.items:,} {tuner.items}: "
        f"{tuner.least_work} need about {_duration(need)}.",
        hint=f"Pass --time-budget {_budget_arg(need)} or more; about {_budget_arg(useful)} leaves time "
        f"{tuner.more_time}.",
    )


def check_held_out(ds) -> None:
    """Raise DataError when ``ds`` holds no test rows, before any training: the run could search and
    fit but never evaluate. The random split keeps a class of fewer than 3 rows in train (one row
    each for train, validation and test), so data of many tiny classes has no held-out rows at all."""
    counts = ds.manifest["counts"]
    if counts["by_split"].get("test"):
        return
    held = counts["by_split_class"]
    small = [c for c in counts["by_class"] if not any(c in held.get(s, {}) for s in ("valid", "test"))]
    why = (
        f"{len(small):,} of its {len(counts['by_class']):,} classes have too few rows to hold any out "
        "(a class needs 3: one each for train, validation and test)"
        if small
        else "no row is held out"
    )
    raise DataError(
        f"Dataset '{ds.name}' has no rows in the test split to evaluate on: {why}.",
        hint="Give each class more rows (10 or more works much better), merge rare classes into fewer, "
        "or choose the held-out rows yourself: a split column (train/valid/test) in the table, or "
        "`aimass data import FILE --test-file TEST.csv` and then `aimass auto --data NAME`.",
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _budget_arg(seconds: float) -> str:
    """A round value for ``--time-budget``: 30 s steps up to 5 min, whole minutes after."""
    if seconds <= 300:
        return f"{int(math.ceil(seconds / 30) * 30)}s"
    return f"{int(math.ceil(seconds / 60))}m"


# ==================================================================== task detection
def detect_task(path) -> tuple[str, str]:
    """``(task, why)`` from the data's layout; a clear DataError when the layout names no task.

    Each registered task is asked in turn (``Task.sniff``, in ``sniff_order``): a folder, archive or
    ``path,label`` manifest of images is image classification; a CSV, TSV or JSONL table (a text
    column is found at import) or a folder (or archive) of class sub-folders holding documents
    (.txt, .pdf, .docx, .html) is text classification.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise DataError(f"{source} does not exist.", where=str(source), hint="Check the path.")
    found = sniff(source)
    if found is not None:
        return found
    raise DataError(
        f"Cannot tell the task from {source}: it is neither a table nor a folder of texts or images.",
        where=str(source),
        hint="Pass a CSV/TSV/JSONL file with text and label columns, or a folder of class sub-folders "
        "(of documents such as .txt, .pdf, .docx, or of images), or a .zip/.tar.gz of such a folder.",
    )


def dataset_task(ds) -> tuple[str, str]:
    """``(task, why)`` of a stored dataset: the first task (in ``sniff_order``) that reads its kind
    of items (``Task.data_kind``), so a dataset imported once is never read again to tell."""
    task = task_for_kind(ds.kind)
    if task is not None:
        return task, f"the stored dataset '{ds.name}' holds {ds.kind} items"
    raise DataError(
        f"No task reads the {ds.kind} items of dataset '{ds.name}' ({ds.id}).",
        hint="Import the data again with this version of aimass.",
    )


def _model_name(name: str | None, source: Path) -> str:
    if name is None:
        stem = source.name.split(".")[0] if source.is_file() else source.name
        if stem.lower() in GENERIC_NAMES and source.parent.name:
            stem = source.parent.name
        name = _clean(stem)
    return claim("dataset", claim("model", registry.check_name(name)))  # the data is imported as it


def _clean(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:100] or "model"


def from_path(run: _Run, path, name: str | None):
    """Detect the task of the data at ``path`` and import it: (dataset, task, tuner, model name)."""
    with run.phase("detect", 0.0, "detecting the task"):
        task, why = detect_task(path)
        tuner = get_tuner(task)
        source = Path(path).expanduser()
        name = _model_name(name, source)
        run.choose("task", task, why)
        check_budget(tuner, tuner.count(source), run.total)
    with run.phase("import", 0.03, "importing and validating the data"):
        ds = workflow.import_dataset(source, name=name, seed=run.seed)
        check_held_out(ds)
        check_budget(tuner, tuner.count_dataset(ds), run.total - run.elapsed())
    return ds, task, tuner, name


def from_dataset(run: _Run, data: str, name: str | None):
    """A stored dataset (id or name), nothing imported: (dataset, task, tuner, model name)."""
    with run.phase("detect", 0.0, "reading the stored dataset"):
        ds = workflow.load_dataset(str(data))
        task, why = dataset_task(ds)
        tuner = get_tuner(task)
        name = claim("model", registry.check_name(name) if name is not None else _clean(ds.name))
        run.choose("task", task, why)
        check_held_out(ds)
        check_budget(tuner, tuner.count_dataset(ds), run.total)
    return ds, task, tuner, name
