"""The workflows behind the Python API: import, train, register, load, evaluate and compress,
each a short composition of the data, task, compressor and registry layers.

:mod:`aimass.api` is the front that re-exports these (with ``auto`` and ``export``, which sit
above); the layers that run workflows themselves (jobs, auto-learning, exports) import this
module, never the front.

>>> from aimass import workflow
>>> "text-classification" in workflow.available_tasks()
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import traceback
import uuid
from pathlib import Path

from aimass import paths
from aimass.compressors import Compressor, available_compressors, get_compressor, measure
from aimass.compressors.onnx import stored_calibration
from aimass.data import Dataset, list_datasets, load_dataset
from aimass.data import import_dataset as _import_dataset
from aimass.data.dataset import KINDS
from aimass.data.storage import datasets_dir, deleted_dataset
from aimass.errors import ConfigError, DataError, IntegrityError, InUseError, NotFoundError
from aimass.estimator import Estimator
from aimass.store import artifacts, registry
from aimass.store.artifacts import write_atomic
from aimass.store.claims import claim
from aimass.tasks import DEFAULT_TASK, available_tasks, get_task, sniff, task_for_kind
from aimass.train.progress import Paused

__all__ = [
    "available_tasks",
    "compress",
    "continue_model",
    "dataset",
    "evaluate",
    "finetune",
    "import_dataset",
    "list_datasets",
    "list_models",
    "load",
    "load_dataset",
    "predict",
    "register",
    "show_model",
    "train_model",
]


def import_dataset(path: str | Path, **options) -> Dataset:
    """Read, check, split and store a CSV/TSV/JSONL file or a folder of class sub-folders.

    Options: ``name``, ``text_col``, ``label_col``, ``split_col``, ``seed``, ``valid_frac``, ``test_frac``,
    ``valid_path`` and ``test_path`` (tables of validation and test rows; ``path`` then holds the
    training rows). Importing the same file twice returns the same dataset.
    """
    dataset = _import_dataset(path, **options)
    registry.record_dataset(dataset)
    return dataset


def dataset(data: Dataset | str | Path, **options) -> Dataset:
    """A Dataset from a Dataset, a stored id/name, or a path to import (anything else: a DataError)."""
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, str | os.PathLike):
        raise DataError(
            f"The data must be a Dataset, a stored dataset's name or id, or a path. "
            f"Got a {type(data).__name__} instead.",
            hint="Pass in-memory data to finetune as a tuple, e.g. aimass.finetune(task, (texts, labels)).",
        )
    try:
        return load_dataset(str(data))
    except NotFoundError:
        if Path(str(data)).expanduser().exists():
            return import_dataset(data, **options)
        raise


def finetune(task: str, data, **params) -> Estimator:
    """One line: fit the task's estimator on ``data`` (a Dataset, a stored name, a path or an
    in-memory tuple such as ``(texts, labels)``); an option the task does not take is a ConfigError."""
    check_options(task, params)
    data = dataset(data) if not isinstance(data, tuple) else data
    return get_task(task).estimator(**params).fit(data)


def train_model(
    task: str | None,
    data,
    *,
    name: str | None = None,
    resume: bool = False,
    progress: bool = True,
    run_id: str | None = None,
    continue_from: str | None = None,
    replay: int | None = None,
    valid_data=None,
    **params,
) -> dict:
    """Fit, evaluate on the held-out test split, register and return a summary.

    The run is recorded; with ``resume=True`` an interrupted run with the same
    settings continues from its last checkpoint. ``run_id`` names the run (a job passes its
    own): a run that already registered its version returns that version instead of training
    again, so a job resumed after a crash never registers twice. ``task`` None: the default task
    (or, when continuing, the parent's).

    ``continue_from`` (``NAME:VERSION``) continues that version on ``data`` instead of training
    from scratch (:func:`continue_model`, with ``replay`` rows per class of its old data).

    ``valid_data`` (conversations only): train on every conversation of ``data`` and validate and
    test on those of ``valid_data`` (:func:`aimass.data.chat_validation.with_validation`: the
    pair is stored as a dataset of its own, ``DATA-with-VALID``).
    """
    if valid_data is not None and continue_from is not None:
        raise ConfigError(
            "A separate validation set is not taken when continuing a version.",
            hint="Drop the validation data, or train from scratch.",
        )
    if continue_from is not None:
        if resume:
            raise ConfigError(
                "--from continues a registered version and --resume an interrupted run; pass one of them.",
                hint="Drop --resume: a continued fit trains only the head and is quick to run again.",
            )
        return continue_model(
            continue_from,
            data,
            task=task,
            name=name,
            replay=replay,
            progress=progress,
            run_id=run_id,
            **params,
        )
    if replay is not None:
        raise ConfigError(
            "--replay only applies when continuing a version.",
            hint="Add --from NAME:VERSION, or drop --replay.",
        )
    data = dataset(data)
    task = task or task_for_kind(data.kind) or DEFAULT_TASK
    name = claim("model", registry.check_name(name or data.name))  # before the work, not after
    if valid_data is not None:
        from aimass.data.chat_validation import with_validation

        data = with_validation(data, dataset(valid_data))
        registry.record_dataset(data)
    check_options(task, params)
    model = get_task(task).estimator(**params)
    if run_id is not None and (done := registry.version_of_run(run_id)) is not None:
        return _summary(done, data, get_task(task).estimator.load(registry.open_folder(done)))
    run = registry.get_run(run_id) if run_id is not None else None
    if run is None and resume and run_id is None:
        run = registry.find_run(task, model.get_params(), data.id)
    run = run or registry.start_run(task, model.get_params(), data.id, run_id=run_id)
    run_dir = paths.subdir("runs") / run.id
    try:
        model.fit(data, run_dir=run_dir, resume=resume, progress=progress)
        report = model.evaluate(data, "test")
    except Paused:  # its job was paused: the run goes on when it resumes
        raise
    except BaseException as exc:
        registry.finish_run(run.id, "failed", error="".join(traceback.format_exception_only(exc))[-4000:])
        raise
    record = register(model, name, report=report, run_id=run.id)
    registry.finish_run(run.id, "succeeded", timings=model.timings_)
    return _summary(record, data, model)


def check_options(task: str, params: dict) -> None:
    """A ConfigError naming the options ``task`` does not take (the task may come from the data,
    after the command line was read), with the ones it does."""
    known = get_task(task).options()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"Task '{task}' has no option {', '.join(map(repr, unknown))}.",
            hint=f"Its options: {', '.join(sorted(known))} (`aimass tasks` shows their defaults).",
        )


REPLAY = 200  # old training rows per class a continued fit replays by default


def continue_model(
    parent: str,
    data,
    *,
    task: str | None = None,
    name: str | None = None,
    replay: int | None = None,
    progress: bool = True,
    run_id: str | None = None,
    **params,
) -> dict:
    """Continue the registered version ``parent`` on new ``data`` (new classes welcome) and
    register the result as a child version (of ``name``, default the parent's name) whose lineage
    names the parent.

    The child replays up to ``replay`` rows per class of the parent's training data; its test
    report adds ``old_test`` (parent and child on the parent's test split), ``forgetting`` (the
    child's drop there, in accuracy points), ``new_test`` and ``all_test`` (both splits together).
    ``params`` override the parent's (e.g. ``time_budget``).
    """
    record = registry.get_version(parent)
    spec = _continuable(record, task)
    replay = REPLAY if replay is None else replay
    if not isinstance(replay, int) or isinstance(replay, bool) or replay < 0:
        raise ConfigError(
            f"replay must be a whole number >= 0. Got {replay!r} instead.", hint="e.g. --replay 200"
        )
    data = dataset(data)
    if data.kind != spec.data_kind and (spec.data_kind, data.kind) != ("multilabel", "text"):
        raise ConfigError(  # a multi-label model reads single-label rows too: one label each
            f"{record.ref} is a {record.task} model; dataset {data.name!r} holds {data.kind} rows.",
            hint=f"Continue it on {spec.data_kind} data, or train a new model on this dataset.",
        )
    name = claim("model", registry.check_name(name or record.name))
    if run_id is not None and (done := registry.version_of_run(run_id)) is not None:
        return _summary(done, data, spec.estimator.load(registry.open_folder(done)))
    old = _parent_data(record, replay)
    model = spec.estimator(**{**record.params, **params})
    settings = {**model.get_params(), "from": record.ref, "replay": replay}
    run = registry.get_run(run_id) if run_id is not None else None
    run = run or registry.start_run(spec.name, settings, data.id, run_id=run_id)
    try:
        began = time.perf_counter()
        before = spec.estimator.load(registry.open_folder(record))
        loaded = round(time.perf_counter() - began, 2)
        model.fit_from(before, data, old=old, replay=replay, progress=progress)
        model.timings_ = {"load_parent": loaded, **model.timings_}  # a retrain loads its backbone too
        report = model.evaluate(data, "test")
        report.update(_forgetting(before, model, old, data, report), replay=model.replay_)
    except Paused:  # its job was paused: the run goes on when it resumes
        raise
    except BaseException as exc:
        registry.finish_run(run.id, "failed", error="".join(traceback.format_exception_only(exc))[-4000:])
        raise
    new = register(model, name, report=report, run_id=run.id, parent=record.ref)
    registry.finish_run(run.id, "succeeded", timings=model.timings_)
    return _summary(new, data, model)


def _continuable(record, task: str | None):
    """The parent's task spec; a ConfigError when ``task`` names another task or the task's
    estimator cannot continue a fitted model (no ``fit_from``)."""
    if task is not None and task != record.task:
        raise ConfigError(
            f"{record.ref} is a {record.task} model; a {task} model cannot continue from it.",
            hint=f"Drop --task (the parent's task is used), or continue from a {task} version.",
        )
    spec = get_task(record.task)
    if not callable(getattr(spec.estimator, "fit_from", None)):
        able = [t for t in available_tasks() if callable(getattr(get_task(t).estimator, "fit_from", None))]
        raise ConfigError(
            f"Continuing is supported for {', '.join(able)}; {record.ref} is a {record.task} model.",
            hint=f"Train a new {record.task} version on all the data instead (aimass train --data ...).",
        )
    return spec


def _parent_data(record, replay: int):
    """The dataset that trained ``record`` (its replay and old test split), or None when it is
    gone and nothing is to be replayed."""
    try:
        return _eval_data(record, None)
    except NotFoundError as exc:
        if replay == 0:
            return None
        raise NotFoundError(
            exc.message, hint="Pass --replay 0 to continue without replaying old data."
        ) from None


def _forgetting(parent, child, old, data, report: dict) -> dict:
    """``old_test``, ``forgetting`` (points), ``new_test`` and ``all_test`` of a continued fit, in
    accuracy (a multi-label model's: micro-F1, what it is judged by; ``metric`` names it)."""
    metric = "micro_f1" if "micro_f1" in report else "accuracy"
    new_n = report["n"]
    out = {"new_test": {"child": report[metric], "n": new_n, "dataset": data.id, "metric": metric}}
    if old is None:
        return out
    before = parent.evaluate(old, "test", top_k=0)
    after = child.evaluate(old, "test", top_k=0)
    n = before["n"]
    out["old_test"] = {
        "parent": before[metric],
        "child": after[metric],
        "n": n,
        "dataset": old.id,
        "metric": metric,
    }
    out["forgetting"] = round(100 * (before[metric] - after[metric]), 2)
    if metric == "accuracy":  # rows right on each split, added up
        both = (after["accuracy"] * n + report["accuracy"] * new_n) / (n + new_n)
    else:  # micro-F1 pools every decision: score both splits as one
        rows = (old.texts("test") + data.texts("test"), old.labels("test") + data.labels("test"))
        both = child.evaluate(rows, top_k=0)[metric]
    out["all_test"] = {"child": round(both, 6), "n": n + new_n, "metric": metric}
    return out


HEADLINE = (
    "n",
    "accuracy",
    "macro_f1",
    "micro_f1",  # multi-label: over every row-label decision
    "precision",  # entities: over every entity (micro)
    "recall",
    "samples_f1",
    "hamming_loss",
    "threshold",
    "per_class",
    "loss",
    "perplexity",
    "mean_token_accuracy",
    "perplexity_base",
    "rouge_l",
    "rouge_l_base",
)
KEPT = ("portfolio",)  # stored with the headline: the candidates a classifier's fit compared, its choice
CONTINUED = ("old_test", "new_test", "all_test", "forgetting", "replay")  # a continued fit's


def _summary(record, data, model) -> dict:
    return {
        "model": record.ref,
        "path": record.path,
        "run": record.run_id,
        "dataset": data.id,
        "metrics": {k: record.metrics[k] for k in HEADLINE if k in record.metrics},
        "timings": getattr(model, "timings_", {}),
        "stages": _stages(model),
        **({"portfolio": record.metrics["portfolio"]} if "portfolio" in record.metrics else {}),
        **({"parent": record.parent} if record.parent else {}),
        **{k: record.metrics[k] for k in CONTINUED if k in record.metrics},
    }


def register(
    model: Estimator,
    name: str,
    *,
    report: dict | None = None,
    run_id: str | None = None,
    parent: str | None = None,
):
    """Store ``model`` as the next version of ``name`` with its metrics, plots and lineage."""
    record = registry.register(model, name, metrics=_headline(report or {}), run_id=run_id, parent=parent)
    if report:
        _write_report(model, Path(record.path), report)
    return record


log = logging.getLogger("aimass.workflow")


def _write_report(model: Estimator, folder: Path, report: dict) -> None:
    """Store ``report`` as the version's ``evaluation.json``, then draw its task's plots beside it.
    The version is registered by then: a plot that fails is logged, not raised, so the command
    that registered it still answers, and the version keeps its report (a picture is written to
    a temporary name and renamed, never left half-written)."""
    text = json.dumps(report, indent=2, ensure_ascii=False)
    write_atomic(folder / "evaluation.json", lambda tmp: Path(tmp).write_text(text))
    try:
        get_task(model.task).plots(report, folder)
    except Exception as exc:  # a picture is an extra: evaluation.json holds every number
        log.warning(
            "The plots of %s were not drawn (%s: %s); its evaluation.json holds the report.",
            folder,
            type(exc).__name__,
            exc,
        )


def _headline(report: dict) -> dict:
    return {k: report[k] for k in HEADLINE + KEPT + CONTINUED if k in report}


def _stages(model) -> dict:
    return {
        k: {
            "best_score": v["best_score"],
            "best_epoch": v["best_epoch"],
            "skipped": v["skipped"],
            "epochs": len(v["history"]),
            **({"fusion": v["fusion"]} if v.get("fusion") else {}),
            **({"precision": v["precision"]} if v.get("precision", "fp32") != "fp32" else {}),
        }
        for k, v in getattr(model, "stages_", {}).items()
    }


def load(ref: str) -> Estimator:
    """A registered model by ``NAME`` (latest version) or ``NAME:VERSION``."""
    record = registry.get_version(ref)
    return get_task(record.task).estimator.load(registry.open_folder(record))


def predict(ref: str, inputs: list) -> list:
    """Labels for ``inputs`` from a registered model."""
    return load(ref).predict(inputs)


def evaluate(ref: str, data: str | Path | None = None, *, save: bool = False) -> dict:
    """Metrics of a registered model on its test split, another dataset's test split, or a file."""
    record = registry.get_version(ref)
    if save:  # rewrites the version's report and metrics: a write, as a new version is
        claim("model", record.name)
    model = get_task(record.task).estimator.load(registry.open_folder(record))
    split_data = _eval_data(record, data)
    report = model.evaluate(split_data, "test")
    _report_rejects(report, getattr(split_data, "rejects", None), data)
    overlap = _overlap_with_train(record, split_data)
    if overlap is not None:
        report["overlap_with_train"] = overlap
    if save:
        _write_report(model, Path(record.path), report)
        kept = {k: record.metrics[k] for k in CONTINUED if k in record.metrics}  # of its own fit
        registry.update_metrics(record.ref, {**kept, **_headline(report)})
    return report


def _report_rejects(report: dict, rejects: list[dict] | None, data) -> None:
    """Say in ``report`` how many rows of the held-out file or folder ``data`` were left out and why
    (``rejected``, and a line in ``warnings`` the CLI prints): nothing is dropped unsaid."""
    if not rejects:
        return
    first = rejects[0]
    where = f"{first.get('file') or data}" + (f":{first['line']}" if first.get("line") else "")
    report["rejected"] = len(rejects)
    report.setdefault("warnings", []).append(
        f"{len(rejects)} row(s) of {data} were left out of the evaluation (unreadable, conflicting or "
        f"repeated), e.g. {where}: {first.get('reason')}"
    )


def _trained_on(record) -> Dataset | None:
    """The stored dataset the version was trained on (its lineage), or None when it is gone."""
    match = [d for d in list_datasets() if d.digest == record.dataset_digest]
    return match[-1] if match else None


def _overlap_with_train(record, data) -> int | None:
    """How many of the evaluated rows are rows the version was trained or validated on, by content
    (a text's hash; a stored image's file name, its sha256); None when its dataset is gone."""
    trained = _trained_on(record)
    if trained is None:
        return None
    stored = KINDS[trained.kind].stored_file
    seen = {
        (_file_key if stored else _content_key)(item)
        for split in ("train", "valid")
        for item in trained.inputs(split)
    }
    items = data.inputs("test") if hasattr(data, "inputs") else data[0]
    return sum((_image_sha if stored else _content_key)(item) in seen for item in items)


def _content_key(item) -> bytes:
    text = item if isinstance(item, str) else json.dumps(item, sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _file_key(item) -> str:
    return Path(item).stem  # stored images are named by their content's sha256


def _image_sha(item) -> str:
    """The sha256 of an evaluated image: a stored one's name, else its bytes' (held-out files)."""
    if isinstance(item, bytes | bytearray):
        return hashlib.sha256(item).hexdigest()
    path = Path(item)
    if path.is_relative_to(datasets_dir()):
        return path.stem
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _eval_data(record, data):
    """What ``record`` is scored on: the dataset that trained it (``data`` None), or a stored
    dataset or file of the kind its task reads; data of another kind (entity-tagged texts for a
    classifier) is a DataError naming both kinds, checked before the file is read."""
    if data is None:
        trained = _trained_on(record)
        if trained is None:
            gone = deleted_dataset(record.dataset_digest)
            when = f" (deleted on {gone['deleted']})" if gone else ""
            raise NotFoundError(
                f"The dataset {record.dataset_digest[:12]} that trained {record.ref} is gone{when}.",
                hint="Pass --data FILE_OR_DATASET to evaluate on other data.",
            )
        return trained
    path = Path(str(data)).expanduser()
    if not isinstance(data, Dataset) and path.exists() and (found := sniff(path)):
        _check_kind(record, get_task(found[0]).data_kind, f"{data} is {found[1]}")
    read = get_task(record.task).eval_data(path, import_dataset)
    if read is not None:
        return read
    stored = dataset(data)
    _check_kind(record, stored.kind, f"Dataset {stored.name!r} holds {_kind_words(stored.kind)}")
    return stored


def _check_kind(record, kind: str, what: str) -> None:
    """A DataError unless ``record``'s task scores data of ``kind`` (``what`` says what the data is)."""
    needs = get_task(record.task).data_kind
    if kind == needs or (needs in KINDS and kind == KINDS[needs].covers):
        return
    fits = task_for_kind(kind) or kind
    raise DataError(
        f"{what}: data for a {fits} model. {record.ref} is a {record.task} model; it needs "
        f"{_kind_words(needs)}.",
        hint=f"Evaluate a {fits} model on it (`aimass train --task {fits}` trains one), or give "
        f"{record.ref} {_kind_words(needs)} (its own test split: leave out --data).",
    )


def _kind_words(kind: str) -> str:
    """What rows of ``kind`` hold, as :data:`~aimass.data.dataset.KINDS` words it."""
    return KINDS[kind].words if kind in KINDS and KINDS[kind].words else f"{kind} data"


def compress(
    ref: str, method: str, *, max_drop: float = 1.0, data=None, run_id: str | None = None, **settings
) -> dict:
    """Compress a registered version with ``method`` into a child version of the same model.

    Parent and child are evaluated on the parent's held-out test split (or ``data``) and timed
    in this process; the comparison is stored with the child. A child that loses more than
    ``max_drop`` accuracy points is marked rejected: it cannot become ``production`` without force.
    Methods that train (distill, prune) learn from the parent's dataset, never from ``data``.
    """
    max_drop = check_max_drop(max_drop)  # before any work: NaN would pass every gate
    record = registry.get_version(ref)
    claim("model", record.name)  # the child is a version of the parent's model
    spec = get_task(record.task)
    compressor = get_compressor(method, **settings)
    _check_supports(compressor, spec)
    if run_id is not None and (done := registry.version_of_run(run_id)) is not None:
        info = done.metrics.get("compression", {})
        return {"model": done.ref, "parent": done.parent, **info, "gate": done.metrics.get("gate")}
    if run_id is not None and registry.get_run(run_id) is None:
        registry.start_run(record.task, {"compress": method, **settings}, run_id=run_id)
    test = _eval_data(record, data)
    source = test if data is None else None  # what a training method learns from: never ``data``
    if compressor.trains and source is None:
        source = _eval_data(record, None)  # the parent's dataset (its train and valid splits)
    began = time.perf_counter()
    parent = spec.estimator.load(registry.open_folder(record))
    parent_load = time.perf_counter() - began
    _check_network(parent, compressor, record.ref)
    items = _test_items(spec, test)
    parent_report = parent.evaluate(test, "test")
    served = _served_runtime(record, spec, parent)
    parent_row = measure.row(record.ref, "parent", parent, parent_report, items, parent_load, served=served)
    child = compressor.mark(compressor.compress(parent, source, spec), record.ref)
    staged = paths.subdir("tmp") / f"compress-{uuid.uuid4().hex[:12]}"
    try:
        child.save(staged)
        began = time.perf_counter()
        child = spec.estimator.load(staged)
        child_load = time.perf_counter() - began
        report = child.evaluate(test, "test")
        child_row = measure.row("(new)", method, child, report, items, child_load)
        comparison = measure.compare(parent_row, child_row)
        gate = _gate(comparison["accuracy_drop_points"], max_drop)
        info = {**child.compression_, "table": [parent_row, child_row], "comparison": comparison}
        metrics = {**_headline(report), "compression": info, "gate": gate}
        new = registry.register(
            child, record.name, metrics=metrics, parent=record.ref, staged=staged, run_id=run_id
        )
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    child_row["model"] = new.ref  # its number is known only now: the stored table said "(new)"
    registry.update_metrics(new.ref, metrics)
    _write_report(child, Path(new.path), report)
    (Path(new.path) / "compression_report.json").write_text(json.dumps(new.metrics, indent=2, default=str))
    return {"model": new.ref, "parent": record.ref, **info, "gate": gate}


def served_backend(record, spec) -> str:
    """The backend the server runs ``record`` on by default: a compressed version's own (an
    ``onnx-int8`` child on ONNX int8, an ``int8-dynamic`` one on torch), else ONNX when the task
    exports it, else torch."""
    method = compression_method(record)
    own = get_compressor(method).backend if method else None
    return own or ("onnx" if spec.supports_onnx() else "torch")


def compression_method(record) -> str | None:
    """The compression method that made ``record`` (from its ``compression.json``), or None."""
    path = Path(record.path) / "compression.json"
    return json.loads(path.read_text())["method"] if path.exists() else None


def _served_runtime(record, spec, model):
    """What answers ``record``'s requests on the server when that is not ``model`` itself: the
    ONNX runtime over its served folder (:func:`served_onnx`). The parent of a compression is timed
    on it, as its child is on its own: a parent timed on torch (spinning OpenMP threads) against a
    child on onnxruntime made a lossless ONNX conversion look 70 times faster. None when ``model``
    already runs the way it is served (on torch, or a child on its own ONNX runtime)."""
    backend = served_backend(record, spec)
    if not backend.startswith("onnx") or getattr(model, "runtime_", None) is not None:
        return None
    served_onnx(record, spec)
    return spec.load_runtime(Path(record.path) / "onnx", int8=backend == "onnx-int8")


def served_onnx(record, spec) -> dict:
    """The version's ONNX folder (``models/NAME/vN/onnx``) as the server runs it, checked, and its
    export report.

    The version's own files are checked against its ``SHA256SUMS`` first (an ``onnx`` child's
    folder is among them). Any other version's folder is a cache, exported (and checked against
    torch) on first use and sealed with a ``SHA256SUMS`` of its own when written: it is checked
    before each use, and one that no longer matches (a changed ``runtime.json``'s class order
    answered with other labels) is exported again."""
    version = registry.open_folder(record)
    folder = version / "onnx"
    if _sealed_with_version(version):  # the version's own graphs, checked with it just now
        done = folder / "export.json"
        return json.loads(done.read_text()) if done.is_file() else {}
    if _intact(folder):
        return json.loads((folder / "export.json").read_text())
    model = spec.estimator.load(version)
    tmp = version / f".onnx.tmp-{uuid.uuid4().hex[:12]}"
    try:
        report = model.export_onnx(tmp, **stored_calibration(record.dataset_digest, spec))
        artifacts.seal(tmp)
        _replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _sealed_with_version(version: Path) -> bool:
    return any(name.startswith("onnx/") for name in artifacts.read_sums(version))


def _intact(folder: Path) -> bool:
    """Whether the cached ONNX ``folder`` is complete and matches its own ``SHA256SUMS``."""
    if not (folder / artifacts.SUMS).is_file() or not (folder / "export.json").is_file():
        return False  # unsealed: written before the cache was sealed, or torn
    try:
        return artifacts.verify(folder) > 0
    except IntegrityError:
        return False


def _replace_folder(new: Path, folder: Path) -> None:
    """Put ``new`` at ``folder``: a stale one is moved aside first (one rename each, so a reader
    sees the old folder or the new one). When another process put its own there meanwhile, that
    one is kept (the same export) and ``new`` goes."""
    if _intact(folder):  # another process exported it again while this one did
        shutil.rmtree(new, ignore_errors=True)
        return
    if folder.exists():
        stale = folder.with_name(f".onnx.stale-{uuid.uuid4().hex[:12]}")
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            os.replace(folder, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(new, folder)
    except OSError:  # another process exported it meanwhile
        shutil.rmtree(new, ignore_errors=True)


def _check_supports(compressor: Compressor, spec) -> None:
    """A ConfigError naming the tasks and methods that fit when ``compressor`` cannot compress
    models of the task ``spec``."""
    if compressor.supports(spec):
        return
    tasks = [t for t in available_tasks() if compressor.supports(get_task(t))]
    methods = [m for m in available_compressors() if get_compressor(m).supports(spec)]
    raise ConfigError(
        f"Method '{compressor.name}' does not support {spec.name} models (it supports {', '.join(tasks)}).",
        hint=spec.compress_instead or f"Use one of: {', '.join(methods)}.",
    )


def _check_network(parent, compressor: Compressor, ref: str) -> None:
    """A ConfigError when a method that reshapes the network meets a version whose portfolio kept a
    baseline (a linear model: nothing to distill or prune)."""
    chosen = getattr(parent, "chosen_", "network")
    if compressor.per_task and chosen != "network":
        raise ConfigError(
            f"{ref} is the '{chosen}' baseline its fit picked over the network; "
            f"'{compressor.name}' compresses networks.",
            hint="A linear baseline is already small: serve it as it is, or use --method onnx-int8.",
        )


def _test_items(spec, data) -> list:
    """A few held-out inputs to time predictions on (short ones for text: <= 32 tokens)."""
    items = data.inputs("test") if hasattr(data, "inputs") else list(data[0])
    return spec.latency_inputs(items[:64])


def check_max_drop(value) -> float:
    """``value`` as the accuracy points a compressed child may lose before the gate rejects it: a
    finite number 0-100 (a number or its text, as a form or a JSON body sends it). NaN passed
    every gate (``drop > nan`` is False), and a word failed only after the whole compression.

    >>> check_max_drop(1), check_max_drop(" 2.5 ")
    (1.0, 2.5)
    """
    try:
        drop = float(str(value).strip())
    except ValueError:
        drop = float("nan")
    if not 0 <= drop <= 100:  # False for NaN too
        raise ConfigError(
            f"max_drop (the accuracy points a compressed version may lose) must be a number 0-100; "
            f"got {str(value)[:20]!r}.",
            hint="e.g. 1 (the default): a result that loses more points than this is rejected.",
        )
    return drop


def _gate(drop_points: float, max_drop: float) -> dict:
    status = "rejected" if drop_points > max_drop else "accepted"
    reason = f"accuracy drop {drop_points:.2f} points {'>' if status == 'rejected' else '<='} {max_drop:g}"
    return {"status": status, "max_drop": max_drop, "drop_points": drop_points, "reason": reason}


def list_models() -> list[dict]:
    """Every registered version with its metrics and lineage."""
    return [r.to_dict() for r in registry.list_versions()]


def show_model(ref: str) -> dict:
    """One version: lineage, params, metrics and the stored evaluation."""
    record = registry.get_version(ref)
    info = record.to_dict()
    report = Path(record.path) / "evaluation.json"
    if report.exists():
        info["evaluation"] = json.loads(report.read_text())
    return info


def delete_model(ref: str, *, served: dict[str, list[str]] | None = None, force: bool = False) -> dict:
    """Delete one version (record, aliases pointing at it, folder); refused while ``served`` says a
    service serves it, or while an alias points at it unless ``force``. See
    :func:`aimass.store.registry.delete_version`."""
    return registry.delete_version(ref, served=served, force=force)


def delete_dataset(ref: str, *, force: bool = False, jobs: list[str] | tuple = ()) -> dict:
    """Delete the stored dataset ``ref`` (its id, or a name: the newest import of it), the upload
    it came from and nothing of the user's own disk (:mod:`aimass.data.removal`); refused while
    ``jobs`` (the queued or running jobs that name it, as the caller knows them) is not empty, and
    while registered versions were trained on it unless ``force`` (they keep their lineage, which
    then says the dataset was deleted, and when).

    A dataset made from it for one fine-tuning job (a training file paired with its validation
    file, :mod:`aimass.data.chat_validation`) holds its rows too and goes with it (``derived``).

    The feature cache (text and image embeddings of every dataset,
    :func:`~aimass.data.removal.clear_features`) is cleared too: a cached file does not say whose
    rows it holds, and a delete must not leave any.

    Returns the tombstone (``id``, ``names``, ``digest``, ``deleted``) with ``uploads_removed``,
    ``derived`` (the ids of those pairs), ``models`` (the versions trained on it or on them) and
    ``cache_files_removed``.

    Raises:
        NotFoundError: no such dataset (or it was deleted already: the message says when).
        InUseError: a job names it, or a version was trained on it and ``force`` is not set.
    """
    from aimass.data.removal import clear_features, remove_dataset

    ds = load_dataset(ref) if ref in _ids_and_names() else _no_prefix(ref)
    if jobs:
        raise InUseError(
            f"Dataset {ds.name} ({ds.id}) is named by job(s) {', '.join(jobs)} that have not ended.",
            hint="Wait for them to end, or cancel them (`aimass jobs cancel ID`), then delete it.",
        )
    derived = [d for d in list_datasets() if ds.id in _parent_ids(d)]
    trained = [v for d in (ds, *derived) for v in registry.versions_trained_on(d.digest)]
    if trained and not force:
        raise InUseError(
            f"Dataset {ds.name} ({ds.id}) trained {', '.join(trained)}; their lineage names it.",
            hint="Delete those versions first, or force the delete (--force, ?force=true): they stay "
            "registered and their lineage says the dataset was deleted.",
        )
    for pair in derived:
        remove_dataset(pair)
        registry.forget_dataset(pair.id)
    gone = remove_dataset(ds)
    registry.forget_dataset(ds.id)
    cleared = clear_features()  # embeddings of its texts or images may be among them
    return {**gone, "derived": [d.id for d in derived], "models": trained, "cache_files_removed": cleared}


def _parent_ids(ds: Dataset) -> set[str]:
    return {p.get("id") for p in (ds.manifest.get("parents") or {}).values() if isinstance(p, dict)}


def _ids_and_names() -> set[str]:
    return {key for d in list_datasets() for key in (d.id, *d.names)}


def _no_prefix(ref: str) -> Dataset:
    """A delete names a dataset whole: an id prefix is refused (a 404 that says so)."""
    load_dataset(ref)  # no such dataset (or a deleted one): its own message
    raise NotFoundError(
        f"{ref!r} is not the whole id or a name of a dataset.",
        hint="Give the whole id (`aimass data list` shows it) to delete a dataset.",
    )


def compression_methods(task: str) -> list[str]:
    """The compression methods that can compress models of ``task`` (what the console offers)."""
    spec = get_task(task)
    return [m for m in available_compressors() if get_compressor(m).supports(spec)]


COMPARED_METRICS = ("accuracy", "macro_f1", "n", "loss", "perplexity")
LINEAGE = ("task", "backbone", "dataset_digest", "parent", "run_id", "aimass_version", "created")


def compare_models(a: str, b: str) -> dict:
    """Two versions side by side: lineage, params, metrics, per-class F1 and size, each row with
    ``same`` (or ``delta`` = b - a for numbers), so a reader sees what changed.

    >>> compare_models("reviews:1", "reviews:2")["metrics"][0]   # doctest: +SKIP
    {'key': 'accuracy', 'a': 0.91, 'b': 0.93, 'delta': 0.02, 'same': False}
    """
    left, right = show_model(a), show_model(b)
    for info in (left, right):
        info["size_bytes"] = _folder_size(Path(info["path"]))
    metrics = [k for k in COMPARED_METRICS if k in left["metrics"] or k in right["metrics"]]
    classes = sorted(set(_f1s(left)) | set(_f1s(right)))
    params = sorted(set(left["params"]) | set(right["params"]))
    return {
        "a": _side(left),
        "b": _side(right),
        "lineage": [_row(k, left.get(k), right.get(k)) for k in LINEAGE],
        "params": [_row(k, left["params"].get(k), right["params"].get(k)) for k in params],
        "metrics": [_row(k, left["metrics"].get(k), right["metrics"].get(k)) for k in metrics],
        "per_class_f1": [_row(c, _f1s(left).get(c), _f1s(right).get(c)) for c in classes],
        "size": [_row("size_bytes", left["size_bytes"], right["size_bytes"])],
    }


def _side(info: dict) -> dict:
    return {"ref": info["ref"], "name": info["name"], "version": info["version"], "task": info["task"]}


def _f1s(info: dict) -> dict:
    per_class = (info.get("evaluation") or {}).get("per_class") or {}
    return {str(c): row.get("f1") for c, row in per_class.items() if isinstance(row, dict)}


def _row(key: str, a, b) -> dict:
    row = {"key": key, "a": a, "b": b, "same": a == b}
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if numbers:
        row["delta"] = round(b - a, 6)
    return row


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
