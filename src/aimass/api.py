"""The Python API: a few short functions over the data, task, training and registry layers.

A thin front: the workflows are :mod:`aimass.workflow` (what jobs, auto-learning and exports call
too), auto-learning is :func:`aimass.autolearn.auto` and exports are :mod:`aimass.exporters`.
Nothing inside the package imports this module; the shells (CLI, REST) do.

>>> import aimass
>>> len(aimass.available_tasks()) >= 2
True
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from aimass import autolearn
from aimass.scoring import predict_file
from aimass.sharing import pull_model, push_model, remote_models
from aimass.workflow import (
    available_tasks,
    compare_models,
    compress,
    compression_methods,
    continue_model,
    delete_model,
    evaluate,
    finetune,
    import_dataset,
    list_datasets,
    list_models,
    load,
    load_dataset,
    predict,
    register,
    show_model,
    train_model,
)
from aimass.workflow import delete_dataset as _delete_dataset

if TYPE_CHECKING:  # loaded on first use (__getattr__ below)
    from aimass.curation import dataset_issues, fix_dataset

__all__ = [
    "auto",
    "available_tasks",
    "compare_models",
    "compress",
    "compression_methods",
    "continue_model",
    "dataset_issues",
    "delete_dataset",
    "delete_model",
    "evaluate",
    "export",
    "finetune",
    "fix_dataset",
    "import_dataset",
    "list_datasets",
    "list_models",
    "load",
    "load_dataset",
    "predict",
    "predict_file",
    "pull_model",
    "push_model",
    "register",
    "remote_models",
    "show_model",
    "train_model",
]


def auto(path: str | Path | None = None, **options) -> dict:
    """Detect the task, search hyper-parameters within a time budget, train, evaluate, compress,
    register and optionally serve (``data=`` a stored dataset instead of ``path``): see
    :func:`aimass.autolearn.auto` for the options and the report."""
    return autolearn.auto(path, **options)


def delete_dataset(ref: str, *, force: bool = False) -> dict:
    """Delete a stored dataset by id or name (refused while a job that has not ended names it, and
    while versions trained on it are registered unless ``force``): see
    :func:`aimass.workflow.delete_dataset`."""
    from aimass import jobs

    found = load_dataset(ref)
    return _delete_dataset(ref, force=force, jobs=jobs.using_dataset(found))


def export(ref: str, fmt: str = "onnx", out: str | Path | None = None, *, force: bool = False) -> dict:
    """Write a version to a folder that runs without aimass (see :mod:`aimass.exporters`)."""
    from aimass import exporters  # torch: imported when a command needs it, not by `data list`

    return exporters.export(ref, fmt, out, force=force)


_LAZY = {"dataset_issues": "aimass.curation", "fix_dataset": "aimass.curation"}  # scikit-learn


def __getattr__(name: str):
    """The functions of heavy modules load on first use, so `aimass data list` starts in a second."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aimass.api' has no attribute {name!r}")
