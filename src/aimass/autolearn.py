"""Auto-learning ("ExeML"): labelled data in, a tuned, registered and optionally served model out.

One call detects the task from the data's layout, imports it, picks a backbone, searches
hyper-parameters within the time budget, trains the best, evaluates it on the held-out test split,
tries an ``onnx-int8`` child, registers both and (with ``deploy=True``) serves the chosen one.

>>> from aimass.autolearn import detect_task
>>> from aimass.data import bbc_news_path
>>> detect_task(bbc_news_path())[0]
'text-classification'

How the budget is spent (every phase is timed; the numbers are for BBC News, 2 CPU cores, 5 min):

1. *Up front*: count the items (no model is loaded) and refuse a budget that cannot cover the frozen
   encoder pass, a head and the test evaluation, naming the smallest useful one.
2. *Prepare* (~40 s): the task's estimator with its default settings runs up to stage 2 (backbone,
   frozen-feature cache, the stage-1 head). The cache makes every later fit skip the encoder pass.
3. *Reserve*: the final fit (the estimator's own stage-2 plan, up to 4 text / 12 image epochs),
   the test evaluation, registration, the ONNX int8 child (and deployment) are costed first, from
   rates calibrated on this CPU and scaled by how fast the encoder pass just ran. On a tight budget
   the search goes before the int8 child, which is then tried only if time is left.
4. *Search* (what is left): a learning-rate range test (Smith 2017, fastai's ``lr_find``) of a
   few dozen stage-2 steps on the cached features proposes ``lr_body``; Optuna (seeded TPE,
   median pruning on the validation macro-F1 reported after every epoch) then tries
   ``lr_body`` x ``lr_head`` on a stratified subsample for a couple of epochs each. Trial 0 is
   the task's default, so the search can only match or beat it; another setting replaces it only
   when it scores higher than luck explains (the best of N equal trials gains ~sigma*sqrt(2 ln N))
   and beats it again on another subsample with another seed (a confirmation rung). Short trials
   favour low learning rates (short-horizon bias), so the evidence to leave the default is strict.
5. *Final fit* with the chosen settings and all the time left, then evaluate, register, compress.

Where tasks differ (how stage 2 reads its cached inputs, the default learning rates) lives in one
small tuner per task, found in a table by task name, as the task and backbone tables do. The tuners
reach into their estimator's stage-2 inputs (``_stage_top``'s arguments): they mirror what the
estimator trains so that a trial is a cheaper copy of the real run, not a different model.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aimass import budget as budgets
from aimass.errors import ConfigError, DataError

__all__ = ["auto", "detect_task"]

METHOD = "onnx-int8"
MAX_DROP = 1.0
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
GENERIC_NAMES = {"data", "dataset", "datasets", "images", "files", "train", "corpus"}
TRIALS_WANTED = 6  # trials the search is sized for; fewer than MIN_TRIALS: no search
MIN_TRIALS = 3
LR_STEPS = 24  # steps of the learning-rate range test
DEPLOY_S = 30.0  # what starting (or reusing) a server and one prediction are given in the plan


# ==================================================================== the one call
def auto(
    path,
    *,
    time_budget="10m",
    name=None,
    deploy=False,
    seed=0,
    progress=True,
    on_progress=None,
    run_dir=None,
    resume=False,
) -> dict:
    """Detect, import, search, train, evaluate, compress, register and (optionally) serve.

    Example:
        >>> import aimass
        >>> report = aimass.auto("reviews.csv", time_budget="5m")   # doctest: +SKIP
        >>> report["model"], report["metrics"]["accuracy"]           # doctest: +SKIP
        ('reviews:1', 0.93)

    Args:
        path: a CSV/TSV/JSONL table with a text column, a folder of class sub-folders of .txt
            files, or a folder, archive or manifest of images.
        time_budget: wall time for the whole run, e.g. ``"5m"``; phases that do not fit are skipped
            and the report says so.
        name: model name (default: the data's file or folder name).
        deploy: point ``production`` at the chosen version and serve it on 127.0.0.1.
        seed: makes the split, the search and training repeatable.
        progress: show progress bars of the long stages.
        on_progress: ``on_progress(fraction, message)`` at each phase (fraction in 0..1).
        run_dir: where the final fit keeps its checkpoint (and the search result), so that
            ``resume=True`` continues an interrupted run from there.
        resume: continue the final fit from ``run_dir``'s checkpoint, reusing its search.

    Returns:
        A JSON-able report: task, dataset, choices (what, value, why), search, metrics, model,
        compression, deployed, endpoint, curl, wall_s and timings per phase.

    Raises:
        ConfigError: the budget is too small to train anything useful (said before any work).
        DataError: the data's layout names no task, or the data cannot train a classifier.
    """
    run = _Run(budgets.seconds(time_budget), on_progress, progress, seed, DEPLOY_S if deploy else 0.0)
    if run.total is None:
        raise ConfigError("auto needs a time budget.", hint="Pass --time-budget 5m (or 300s, 1h).")
    with run.phase("detect", 0.0, "detecting the task"):
        task, why = detect_task(path)
        tuner = get_tuner(task)
        source = Path(path).expanduser()
        name = _model_name(name, source)
        run.choose("task", task, why)
        count = tuner.count(source)
        check_budget(tuner, count, run.total)
    with run.phase("import", 0.03, "importing and validating the data"):
        ds = _import(source, name, seed)
        check_budget(tuner, tuner.count_dataset(ds), run.total - run.elapsed())
    state = _State(run_dir, resume)
    params = _search_or_resume(run, tuner, ds, state)
    record, report = _fit_and_register(run, tuner, ds, params, name, state)
    compression = state.saved.get("compression") or _compress(run, record.ref)
    state.save(compression=compression)
    chosen = compression["child"] if compression["kept"] else record.ref
    served = _deploy(run, name, chosen, tuner, ds) if deploy else None
    return _report(run, task, ds, record, report, compression, chosen, served, tuner)


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


@dataclass
class Count:
    """What the up-front estimate needs: how many items, and how long the texts are."""

    items: int
    mean_chars: float = 0.0
    backbone: str | None = None


def check_budget(tuner, count: Count, seconds: float) -> None:
    """Raise ConfigError when ``seconds`` cannot cover the encoder pass, a head and the evaluation."""
    need = tuner.minimum_seconds(count)
    if seconds >= need:
        return
    useful = tuner.useful_seconds(count)
    raise ConfigError(
        f"A {_duration(seconds)} budget is too small for {count.items:,} {tuner.items}: embedding "
        f"them with the frozen backbone, fitting a head and evaluating need about {_duration(need)}.",
        hint=f"Pass --time-budget {_budget_arg(need)} or more; about {_budget_arg(useful)} leaves time "
        "to search hyper-parameters and fine-tune the top blocks.",
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

    A folder, archive or ``path,label`` manifest of images is image classification; a CSV, TSV or
    JSONL table (a text column is found at import) or a folder of class sub-folders holding .txt
    files is text classification.
    """
    from aimass.data import looks_like_images

    source = Path(path).expanduser()
    if not source.exists():
        raise DataError(f"{source} does not exist.", where=str(source), hint="Check the path.")
    if looks_like_images(source):
        kind = "an archive" if source.is_file() else "a folder"
        return "image-classification", f"{kind} of images (class sub-folders or a path,label manifest)"
    if source.is_file() and source.suffix.lower() in TABLE_SUFFIXES:
        return "text-classification", f"a {source.suffix.lower()[1:].upper()} table (text and label columns)"
    if source.is_dir() and next(source.rglob("*.txt"), None) is not None:
        return "text-classification", "a folder of class sub-folders holding .txt files"
    raise DataError(
        f"Cannot tell the task from {source}: it is neither a table nor a folder of texts or images.",
        where=str(source),
        hint="Pass a CSV/TSV/JSONL file with text and label columns, a folder of class sub-folders "
        "(of .txt files or of images), or a .zip/.tar.gz of images.",
    )


def _model_name(name: str | None, source: Path) -> str:
    from aimass.store import registry

    if name is None:
        stem = source.name.split(".")[0] if source.is_file() else source.name
        if stem.lower() in GENERIC_NAMES and source.parent.name:
            stem = source.parent.name
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:100] or "model"
    return registry.check_name(name)


def _import(source: Path, name: str, seed: int):
    from aimass import api

    return api.import_dataset(source, name=name, seed=seed)


# ==================================================================== tuners (one per task)
@dataclass
class Bundle:
    """What stage 2 trains on, cut from a prepared estimator: the net, a training subsample,
    the validation rows and how to get logits for either.

    The head is refitted on the subsample first, so that a trial is the real run in miniature
    (head, then stage 2, on the same rows). Stage 2 on a few rows from a head fitted on all of them
    would reward whatever moves the weights least: the lowest learning rate.
    """

    net: object
    n_top: int
    train: object  # stages.Features of the subsample
    valid: object  # stages.Features of the validation split
    forward: Callable  # training logits of subsample rows
    forward_eval: Callable  # logits of validation rows
    head_params: Callable[[], list]
    snapshot: dict = field(default_factory=dict)

    def restore(self) -> None:
        self.net.load_state_dict(self.snapshot)
        self.net.eval()


class TextTuner:
    """Text classification: MiniLM / e5 encoders, stage 2 on cached hidden states."""

    task = "text-classification"
    items = "texts"
    rate = 0.021  # s per 128-token text for MiniLM's frozen pass on 2 cores (BBC: 35.5 s / 1,701)
    max_epochs = 4  # TextClassifier's stage-2 cap for data that is not few-shot
    trial_epochs = 2
    batch_size = 16
    lr_sweep = (1e-6, 1e-2)
    head_scale = 1 / 3  # TextClassifier trains the head at lr_head / 3 in stage 2
    compress_s = 20.0  # ONNX export, int8 quantisation and latency timing of parent and child (BBC: 29 s)

    def compress_item_s(self, item: float) -> float:
        return 1.5 * item  # the parent's and the child's evaluation of each test text

    def count(self, source: Path) -> Count:
        from aimass.data import read_table

        rows, _, _ = read_table(source)
        chars = statistics.fmean(len(r["text"]) for r in rows) if rows else 0.0
        return Count(len(rows), chars)

    def count_dataset(self, ds) -> Count:
        from aimass.backbones import default_backbone

        texts = ds.texts()
        chars = statistics.fmean(len(t) for t in texts) if texts else 0.0
        return Count(len(texts), chars, default_backbone(ds.manifest.get("language") or "en"))

    def item_seconds(self, count: Count) -> float:
        depth = 2.0 if count.backbone == "multilingual-e5-small" else 1.0  # 12 layers vs 6
        return self.rate * depth * min(1.0, max(0.3, count.mean_chars / 700))

    def minimum_seconds(self, count: Count) -> float:
        return 10.0 + count.items * self.item_seconds(count) + 0.002 * count.items

    def embed_seconds(self, count: Count) -> float:
        return self.item_seconds(count)

    def step_seconds(self, count: Count) -> float:
        """A stage-2 step on two blocks: 0.34 s for BBC's 128-token batches of 16, and not much less
        for short texts (the optimiser and the TF-IDF branch cost the same)."""
        depth = 2.0 if count.backbone == "multilingual-e5-small" else 1.0  # wider e5 blocks
        return 0.34 * depth * min(1.0, max(0.6, count.mean_chars / 700))

    def final_seconds(self, n_train: int, step: float, overhead: float) -> float:
        return overhead + self.max_epochs * step * math.ceil(n_train / self.batch_size) * 1.15

    def view_seconds(self, rows: int) -> float:
        return 0.0  # the hidden states are cached already

    def useful_seconds(self, count: Count) -> float:
        epoch = 0.7 * count.items * self.item_seconds(count)  # a stage-2 epoch ~ the frozen pass
        return self.minimum_seconds(count) * 1.6 + self.max_epochs * epoch * 1.15 + 60

    def default_params(self) -> dict:
        from aimass.tasks.text_classification import TextClassifier

        defaults = TextClassifier().get_params()
        return {"lr_body": defaults["lr_body"], "lr_head": defaults["lr_head"]}

    def searchable(self, ds) -> str | None:
        """Why the search cannot run on ``ds`` (few-shot data has no validation split), or None."""
        from aimass.tasks.text_classification import FEW_SHOT_PER_CLASS

        pool = len(ds.texts("train")) + len(ds.texts("valid"))
        classes = len(set(ds.labels()))
        if pool < FEW_SHOT_PER_CLASS * classes:
            return (
                f"few-shot data ({pool} examples, < {FEW_SHOT_PER_CLASS} per class): there is no validation "
                "split to select on, so the task's few-shot plan (contrastive pairs) is used as is"
            )
        return None

    def prepare(self, ds, seed: int, progress: bool):
        """Fit the default estimator up to stage 2 (fills the feature cache); keep stage 2's inputs."""
        from aimass.tasks.text_classification import TextClassifier

        class Prepared(TextClassifier):
            def _stage_top(self, cfg, train, val, deadline, run_dir, resume, baseline):
                from aimass.train import stages

                self.train_features_, self.valid_features_ = train, val
                return stages.StageResult(skipped="auto: the search trains stage 2")

        return Prepared(seed=seed, time_budget=None).fit(ds, progress=progress)

    def bundle(self, prepared, index) -> Bundle:
        from aimass.lexical import rows
        from aimass.train import stages
        from aimass.train.stages import Features

        net, train, valid = prepared.net_, prepared.train_features_, prepared.valid_features_
        start = net.n_layers - prepared.unfrozen_
        lexical = None if train.lexical is None else rows(train.lexical, index)
        sub = Features(train.pooled[index], train.y[index], train.hidden[index], train.mask[index], lexical)
        stages.fit_head(net, sub, valid, seed=prepared.seed)  # a miniature of the real run, see Bundle

        def logits(features, rows_):
            mask = features.mask[rows_].long()
            width = int(mask.sum(1).max())
            lex = None if features.lexical is None else rows(features.lexical, rows_)
            return net.forward_from(start, features.hidden[rows_, :width].float(), mask[:, :width], lex)

        return Bundle(
            net,
            prepared.unfrozen_,
            sub,
            valid,
            lambda i: logits(sub, i),
            lambda i: logits(valid, i),
            lambda: list(net.head.dense.parameters()),
        )

    def describe_backbone(self, ds) -> tuple[str, str]:
        from aimass.backbones import default_backbone, get_backbone

        language = ds.manifest.get("language") or "en"
        name = default_backbone(language)
        why = f"detected language '{language}' -> {get_backbone(name).description}"
        return name, why


class ImageTuner:
    """Image classification: EfficientNet-Lite0, stage 2 on cached lower-stage outputs of views."""

    task = "image-classification"
    items = "images"
    rate = 0.0045  # s per image: import + decode + the frozen pass at 128 px on 2 cores (Fashion-MNIST)
    max_epochs = 12  # ImageClassifier's stage-2 cap
    trial_epochs = 3
    batch_size = 32
    lr_sweep = (1e-5, 1e-1)
    head_scale = 1 / 3  # ImageClassifier trains the head at lr_head / 3 in stage 2
    compress_s = 15.0

    def compress_item_s(self, item: float) -> float:
        return 0.024  # Fashion-MNIST: 63 s for 2,000 test images (parent and int8 child evaluated)

    def count(self, source: Path) -> Count:
        return Count(_count_images(source))

    def count_dataset(self, ds) -> Count:
        return Count(len(ds.labels()))

    def item_seconds(self, count: Count) -> float:
        return self.rate

    def minimum_seconds(self, count: Count) -> float:
        return 12.0 + count.items * self.rate

    def embed_seconds(self, count: Count) -> float:
        return 0.0032  # the frozen pass alone (Fashion-MNIST: 15.9 s for 5,000 images)

    def step_seconds(self, count: Count) -> float:
        return 0.004 * self.batch_size  # Fashion-MNIST at 128 px: ~18 s per epoch of 4,500 images

    def final_seconds(self, n_train: int, step: float, overhead: float) -> float:
        epochs = self.max_epochs * step * math.ceil(n_train / self.batch_size) * 1.15
        return overhead + self.view_seconds(n_train) + epochs

    def view_seconds(self, rows: int) -> float:
        return rows * 3 * 0.003  # the centre crop and 2 random views through the lower stages

    def useful_seconds(self, count: Count) -> float:
        epoch = 0.7 * count.items * 0.004  # Fashion-MNIST: ~18 s per 4,500 images and epoch
        return self.minimum_seconds(count) * 1.6 + self.max_epochs * epoch * 1.15 + 90

    def default_params(self) -> dict:
        from aimass.tasks.image_classification import ImageClassifier

        defaults = ImageClassifier().get_params()
        return {"lr_body": defaults["lr_body"], "lr_head": defaults["lr_head"]}

    def searchable(self, ds) -> str | None:
        return None  # a validation split is always held out

    def prepare(self, ds, seed: int, progress: bool):
        from aimass.tasks.image_classification import ImageClassifier

        class Prepared(ImageClassifier):
            def _stage_top(self, cfg, pixels, feats, deadline, run_dir, resume, baseline):
                from aimass.train import stages

                self.train_features_, self.valid_features_ = feats
                self.pixels_, self.views_ = pixels, 1 + cfg.augment
                return stages.StageResult(skipped="auto: the search trains stage 2")

        return Prepared(seed=seed, time_budget=None).fit(ds, progress=progress)

    def bundle(self, prepared, index) -> Bundle:
        """The subsample's centre crop and ``augment`` random views through the frozen lower stages,
        as ImageClassifier's stage 2 caches them; one view per image is drawn at each step."""
        import torch

        from aimass.tasks.image_classification import _lower
        from aimass.train import augment, stages
        from aimass.train.stages import Features

        net, (train_px, valid_px) = prepared.net_, prepared.pixels_
        train, valid = prepared.train_features_, prepared.valid_features_
        size, start = prepared.image_size_, net.n_layers - prepared.unfrozen_
        generator = torch.Generator().manual_seed(prepared.seed)
        views = [lambda b: augment.center(b, size)]
        views += [lambda b: augment.augment(b, size, generator)] * (prepared.views_ - 1)
        lower = net.encoder.fuse_for_inference()
        cached = torch.stack([_lower(lower, net.normalise, train_px[index], v, start) for v in views])
        valid_lower = _lower(lower, net.normalise, valid_px, views[0], start)
        last = torch.channels_last

        def forward(rows_):
            pick = torch.randint(0, len(views), (len(rows_),), generator=generator)
            return net.forward_from(start, cached[pick, rows_].float().contiguous(memory_format=last))

        def forward_eval(rows_):
            return net.forward_from(start, valid_lower[rows_].float().contiguous(memory_format=last))

        sub = Features(train.pooled[index], train.y[index])
        stages.fit_head(
            net, sub, valid, seed=prepared.seed, dense_grid=((1.0, 1.0), (10.0, 1.0), (100.0, 1.0))
        )
        return Bundle(
            net,
            prepared.unfrozen_,
            sub,
            valid,
            forward,
            forward_eval,
            lambda: list(net.head.dense.parameters()) + list(net.encoder.head.parameters()),
        )

    def describe_backbone(self, ds) -> tuple[str, str]:
        from aimass.backbones import get_backbone

        return (
            "efficientnet-lite0",
            f"the bundled image backbone: {get_backbone('efficientnet-lite0').description}",
        )


_TUNERS = {t.task: t for t in (TextTuner(), ImageTuner())}


def get_tuner(task: str):
    """The tuner registered for ``task``; a clear error lists what exists."""
    if task not in _TUNERS:
        raise ConfigError(
            f"auto has no search plan for task '{task}'; available: {', '.join(sorted(_TUNERS))}",
            hint="Train it with `aimass train --task ...` instead.",
        )
    return _TUNERS[task]


def _count_images(source: Path) -> int:
    """Images in a folder, archive or manifest, from names only (nothing is decoded)."""
    from aimass.data.archive import archive_kind
    from aimass.data.image_layout import IMAGE_EXTENSIONS, image_files

    if source.is_dir():
        return sum(1 for _ in image_files(source))
    kind = archive_kind(source)
    if kind == "zip":
        import zipfile

        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    elif kind is not None:
        import tarfile

        with tarfile.open(source) as archive:
            names = archive.getnames()
    else:
        with source.open(newline="", encoding="utf-8", errors="replace") as fh:
            return max(0, sum(1 for _ in csv.reader(fh)) - 1)
    return sum(1 for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS)


# ==================================================================== search
class _State:
    """What an interrupted run left in ``run_dir/auto_state.json``: the search result and the final
    fit's exact settings, then the registered version (so a resumed run never registers twice)."""

    def __init__(self, run_dir, resume: bool):
        self.run_dir, self.resume = (Path(run_dir) if run_dir else None), resume
        path = self.path()
        self.saved = json.loads(path.read_text()) if resume and path and path.exists() else {}

    def path(self) -> Path | None:
        return self.run_dir / "auto_state.json" if self.run_dir else None

    def save(self, **values) -> None:
        self.saved.update(values)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.path().write_text(json.dumps(self.saved, indent=2, default=str))


def _search_or_resume(run: _Run, tuner, ds, state: _State) -> dict:
    """The final fit's parameters: from an interrupted run's saved state, or searched now."""
    backbone, why = tuner.describe_backbone(ds)
    run.choose("backbone", backbone, why)
    if "params" in state.saved:
        run.plan = _reserve(run, tuner, ds)
        run.search = state.saved["search"]
        run.choose("hyper-parameters", state.saved["params"], "resumed: the interrupted run's search result")
        return state.saved["params"]
    return _search(run, tuner, ds)


def _search(run: _Run, tuner, ds) -> dict:
    """Prepare, LR range test, Optuna trials; returns the final fit's parameters."""
    defaults = tuner.default_params()
    reason = tuner.searchable(ds)
    run.plan = _reserve(run, tuner, ds)
    if reason is None:
        with run.phase("prepare", 0.08, "embedding with the frozen backbone and fitting the head"):
            prepared = tuner.prepare(ds, run.seed, run.progress)
        run.plan = _plan(run, tuner, ds, prepared)
        reason = run.plan.skip
    if reason is not None:
        run.search = _no_search(reason, defaults)
        run.choose("hyper-parameters", defaults, f"the task's defaults: {reason}")
        return defaults
    return _run_search(run, tuner, prepared, defaults)


def _no_search(reason: str, defaults: dict) -> dict:
    return {
        "trials": 0,
        "pruned": 0,
        "best_params": defaults,
        "best_valid_macro_f1": None,
        "lr_range_test": None,
        "skipped": reason,
    }


@dataclass
class Plan:
    """Seconds given to the phases after preparation (module docstring, step 3)."""

    evaluate_s: float  # test evaluation and registration
    compress_s: float  # the int8 child: export, evaluation and timing of parent and child
    final_s: float = 0.0  # the final fit at the estimator's full stage-2 plan
    search_s: float = 0.0
    step_s: float = 0.0
    confirm_s: float = 0.0  # the default and the winner again, on another subsample
    n_sub: int = 0
    compress_reserved: bool = True  # False: a tight budget searches first, compresses if time is left
    skip: str | None = None

    def reserved(self) -> float:
        """What the final fit must leave for the phases after it."""
        return self.evaluate_s + (self.compress_s if self.compress_reserved else 0.0)


def _reserve(run: _Run, tuner, ds, slow: float = 1.0) -> Plan:
    """The plan without a search: evaluation always, compression when it leaves the fit half the time.
    ``slow``: how much slower than calibrated this machine is running now."""
    n_test = len(ds.labels("test"))
    item = tuner.item_seconds(tuner.count_dataset(ds))
    plan = Plan(n_test * item * slow + 3.0, (tuner.compress_s + n_test * tuner.compress_item_s(item)) * slow)
    free = run.left() - run.deploy_s - run.margin_s - plan.evaluate_s
    plan.compress_reserved = free - plan.compress_s >= free / 2
    return plan


def _plan(run: _Run, tuner, ds, prepared) -> Plan:
    """Cost the final fit, evaluation and compression; the search gets what is left. On a tight
    budget the search goes before compression; with too little for a few trials it is skipped."""
    slow = _slowdown(tuner, prepared, ds)
    plan = _reserve(run, tuner, ds, slow)
    n_train, batch = len(prepared.train_features_), tuner.batch_size
    plan.step_s = step = tuner.step_seconds(tuner.count_dataset(ds)) * slow
    overhead = sum(prepared.timings_.values()) - prepared.timings_.get("embed", 0.0) + 2.0  # cache hit
    plan.final_s = tuner.final_seconds(n_train, step, overhead)
    room = run.left() - plan.final_s - plan.evaluate_s - run.deploy_s - run.margin_s
    # fewer rows than this say little about the full run (and a head on them overfits)
    floor = min(n_train, max(20 * len(prepared.classes_), 8 * batch, n_train // 10))

    def trial(rows: int) -> float:
        return tuner.trial_epochs * step * math.ceil(rows / batch) * 1.15 + 1.0

    def search(rows: int, trials: int) -> float:  # subsample, trials, then the confirmation rung
        return 2 * tuner.view_seconds(rows) + (trials + 2) * trial(rows)

    least = LR_STEPS * step + search(floor, MIN_TRIALS)
    if room - plan.compress_s >= least:
        plan.search_s = room - plan.compress_s
    elif room >= least:
        plan.search_s, plan.compress_reserved = room, False
    else:
        plan.compress_reserved = room >= plan.compress_s
        plan.skip = (
            f"the budget leaves {max(0.0, room):.0f}s after reserving ~{plan.final_s:.0f}s for the final fit "
            f"and ~{plan.evaluate_s:.0f}s for evaluation; the LR range test and {MIN_TRIALS} trials need "
            f"~{least:.0f}s"
        )
        return plan
    rows = n_train
    while rows > floor and search(rows, TRIALS_WANTED) > (plan.search_s - LR_STEPS * step) * 0.85:
        rows = int(rows * 0.9)
    plan.n_sub = min(n_train, max(floor, rows))
    plan.confirm_s = tuner.view_seconds(plan.n_sub) + 2 * trial(plan.n_sub)
    return plan


def _slowdown(tuner, prepared, ds) -> float:
    """How much slower than calibrated this machine embedded just now (1 when the cache answered)."""
    spent = prepared.timings_.get("embed", 0.0)
    expected = len(prepared.train_features_) * 1.15 * tuner.embed_seconds(tuner.count_dataset(ds))
    return 1.0 if expected < 10.0 else min(3.0, max(0.5, spent / expected))  # small data: fixed costs


def _run_search(run: _Run, tuner, prepared, defaults: dict) -> dict:
    import torch

    plan = run.plan
    index = _stratified(prepared.train_features_.y, plan.n_sub, run.seed)
    deadline = time.monotonic() + plan.search_s
    with run.phase("lr_range_test", 0.2, "learning-rate range test on the cached features"):
        bundle = tuner.bundle(prepared, index)
        bundle.snapshot = {k: v.detach().clone() for k, v in bundle.net.state_dict().items()}
        torch.manual_seed(run.seed)
        share = min(deadline, time.monotonic() + 0.3 * plan.search_s)
        lr_test = lr_range_test(bundle, tuner, defaults, run.seed, share)
    run.choose("lr_body proposal", lr_test["suggested_lr_body"], _lr_why(lr_test))
    with run.phase("search", 0.3, "searching hyper-parameters (Optuna)"):
        study = optuna_search(bundle, tuner, defaults, lr_test, deadline - plan.confirm_s, run.seed)
        params, search = _pick(study, defaults, len(bundle.valid))
        if params != defaults:
            params, search = _confirm(run, tuner, prepared, defaults, params, search, deadline)
    search.update(lr_range_test=lr_test, subsample=len(index), epochs_per_trial=tuner.trial_epochs)
    search["planned_s"] = {k: round(v, 1) for k, v in plan.__dict__.items() if k.endswith("_s")}
    search["compression_reserved"] = plan.compress_reserved
    run.search = search
    run.choose("hyper-parameters", params, search["why"])
    return params


def _confirm(run: _Run, tuner, prepared, defaults: dict, params: dict, search: dict, deadline: float):
    """The winner of several noisy trials is optimistic (the winner's curse): it replaces the default
    only if it beats it again, by more than the comparison's noise, on another subsample trained
    with another seed."""
    seed = run.seed + 1
    bundle = tuner.bundle(prepared, _stratified(prepared.train_features_.y, run.plan.n_sub, seed))
    bundle.snapshot = {k: v.detach().clone() for k, v in bundle.net.state_dict().items()}
    scores = {}
    for name, candidate in (("default", defaults), ("winner", params)):
        report = EpochReport(None, bundle.forward_eval, bundle.valid.y)
        scores[name] = max(_fit_scores(bundle, tuner, candidate, report, deadline, seed) or [float("nan")])
    sigma = _noise(scores["default"], len(bundle.valid))
    search["confirmation"] = {"seed": seed, "subsample": run.plan.n_sub, "noise": sigma, **scores}
    if scores["winner"] > scores["default"] + sigma:
        search["why"] += (
            f"; confirmed on another subsample: {scores['winner']:.4f} vs {scores['default']:.4f}"
        )
        return params, search
    search["why"] = (
        f"the task's defaults: trial winner {params} was not confirmed on another subsample "
        f"({scores['winner']:.4f} vs the default's {scores['default']:.4f}; noise {sigma:.4f})"
    )
    search["best_params"], search["best_valid_macro_f1"] = defaults, search["default_valid_macro_f1"]
    return defaults, search


def _lr_why(lr_test: dict) -> str:
    if lr_test["suggested_lr_body"] is None:
        reached = lr_test["points"][-1][0] if lr_test["points"] else lr_test["lr_min"]
        return (
            f"LR range test ran out of time after {lr_test['steps']} steps (lr_body up to {reached:.2g}): "
            "no proposal; the search centres on the default"
        )
    end = f"diverged at {lr_test['diverged_at']:.2g}" if lr_test["diverged_at"] else "no divergence"
    return (
        f"LR range test over {lr_test['steps']} steps: loss lowest at lr_body "
        f"{lr_test['lr_at_min_loss']:.2g} ({end}); a tenth of it is proposed to the search"
    )


def _stratified(y, n: int, seed: int):
    """``n`` row indices drawn per class in proportion, seeded (all rows when ``n`` covers them)."""
    import torch

    if n >= len(y):
        return torch.arange(len(y))
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for label in torch.unique(y):
        rows = torch.nonzero(y == label).flatten()
        take = max(2, round(n * len(rows) / len(y)))
        picked.append(rows[torch.randperm(len(rows), generator=generator)[:take]])
    return torch.sort(torch.cat(picked)).values


def lr_range_test(bundle: Bundle, tuner, defaults: dict, seed: int, deadline: float) -> dict:
    """Stage-2 steps with ``lr_body`` growing geometrically over ``tuner.lr_sweep`` (the head at its
    default rate); the smoothed loss per step, the rate where it was lowest and a tenth of that."""
    import torch

    from aimass.backbones import param_groups
    from aimass.train import stages

    net, lo, hi = bundle.net, *tuner.lr_sweep
    stages.set_trainable(net, bundle.n_top)
    if getattr(net.head, "lexical", None) is not None:
        net.head.lexical.weight.requires_grad_(False)  # as in stage 2: TF-IDF keeps its stage-1 fit
    head = bundle.head_params()
    for p in head:
        p.requires_grad_(True)
    groups = param_groups(net.encoder, head, bundle.n_top, defaults["lr_head"] * tuner.head_scale, 1.0)
    scales = [g["lr"] for g in groups[1:]]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    points, seconds, average, best, diverged = [], [], 0.0, float("inf"), None
    net.train()
    try:
        for step in range(LR_STEPS):
            lr = lo * (hi / lo) ** (step / (LR_STEPS - 1))
            for group, scale in zip(optimizer.param_groups[1:], scales):
                group["lr"] = lr * scale
            rows = torch.randperm(len(bundle.train), generator=generator)[: tuner.batch_size]
            began = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(bundle.forward(rows), bundle.train.y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seconds.append(time.perf_counter() - began)
            average = 0.7 * average + 0.3 * float(loss.detach())
            smooth = average / (1 - 0.7 ** (step + 1))
            points.append([lr, round(smooth, 5)])
            if not math.isfinite(smooth) or smooth > 4 * best:
                diverged = lr
                break
            best = min(best, smooth)
            if time.monotonic() > deadline:
                break
    finally:
        bundle.restore()
    return _lr_summary(points, seconds, diverged, tuner)


def _lr_summary(points: list, seconds: list, diverged, tuner) -> dict:
    """A tenth of the rate at the lowest loss, once the loss has diverged or the sweep is complete;
    a sweep cut short by the clock proposes nothing (its lowest point says nothing about the rest)."""
    lo, hi = tuner.lr_sweep
    kept = points if diverged is None else points[:-1]
    at_min = min(kept, key=lambda p: p[1])[0] if kept else lo
    complete = diverged is not None or len(points) == LR_STEPS
    suggested = float(f"{min(hi / 10, max(lo * 10, at_min / 10)):.3g}") if complete else None
    return {
        "lr_min": lo,
        "lr_max": hi,
        "steps": len(points),
        "lr_at_min_loss": at_min,
        "diverged_at": diverged,
        "suggested_lr_body": suggested,
        "step_s": round(statistics.median(seconds[1:] or seconds or [0.0]), 4),
        "points": points,
    }


class EpochReport:
    """Wraps stage 2's validation forward: once per epoch (after every validation row) it reports
    the validation macro-F1 to the Optuna trial and stops a trial the pruner gives up on."""

    def __init__(self, trial, forward_eval, y):
        self.trial, self.forward_eval, self.y = trial, forward_eval, y
        self.predictions, self.scores = [], []

    def __call__(self, rows):
        logits = self.forward_eval(rows)
        self.predictions.append(logits.argmax(-1))
        if sum(len(p) for p in self.predictions) >= len(self.y):
            self._epoch_done()
        return logits

    def _epoch_done(self) -> None:
        import optuna
        import torch

        from aimass.evaluate import quick_scores

        predicted = torch.cat(self.predictions).numpy()
        self.predictions = []
        score = quick_scores(self.y.numpy(), predicted)["macro_f1"]
        self.scores.append(score)
        if self.trial is None:  # a confirmation run: nothing to prune
            return
        self.trial.report(score, len(self.scores) - 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {len(self.scores)}: macro-F1 {score:.4f} below the median")


def optuna_search(bundle: Bundle, tuner, defaults: dict, lr_test: dict, deadline: float, seed: int):
    """Seeded TPE over ``lr_body`` and ``lr_head`` with median pruning; trial 0 is the default and
    trial 1 the range test's proposal. Trials stop being started when the next would not fit."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    proposal = lr_test["suggested_lr_body"] or defaults["lr_body"]
    body = (min(defaults["lr_body"], proposal) / 2, max(defaults["lr_body"], proposal) * 2)
    head = (defaults["lr_head"] / 3, defaults["lr_head"] * 3)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study.enqueue_trial(defaults, user_attrs={"origin": "default"})
    if abs(math.log(proposal / defaults["lr_body"])) > math.log(1.5):
        study.enqueue_trial({**defaults, "lr_body": proposal}, user_attrs={"origin": "lr range test"})
    trial_s = tuner.trial_epochs * lr_test["step_s"] * math.ceil(len(bundle.train) / tuner.batch_size)
    trial_s = trial_s * 1.15 + 1.0

    def objective(trial):
        params = {
            "lr_body": trial.suggest_float("lr_body", *body, log=True),
            "lr_head": trial.suggest_float("lr_head", *head, log=True),
        }
        return _trial(bundle, tuner, params, trial, deadline, seed)

    def enough_time(study_, _trial):
        if deadline - time.monotonic() < trial_s:
            study_.set_user_attr(
                "stopped", f"{deadline - time.monotonic():.0f}s left, a trial needs ~{trial_s:.0f}s"
            )
            study_.stop()

    enough_time(study, None)
    if "stopped" not in study.user_attrs:
        study.optimize(objective, timeout=max(1.0, deadline - time.monotonic()), callbacks=[enough_time])
    return study


def _trial(bundle: Bundle, tuner, params: dict, trial, deadline: float, seed: int) -> float:
    import optuna

    report = EpochReport(trial, bundle.forward_eval, bundle.valid.y)
    began = time.monotonic()
    try:
        _fit_scores(bundle, tuner, params, report, deadline, seed)
    finally:
        trial.set_user_attr("seconds", round(time.monotonic() - began, 2))
        trial.set_user_attr("epoch_scores", [round(s, 4) for s in report.scores])
    if not report.scores:
        raise optuna.TrialPruned("the search's time ran out before the first epoch ended")
    return max(report.scores)


def _fit_scores(bundle: Bundle, tuner, params: dict, report: EpochReport, deadline: float, seed: int) -> list:
    """Stage 2 on the bundle's subsample with ``params`` (validation reported each epoch), then the
    bundle's weights back; the validation macro-F1 of each epoch."""
    from aimass.train import stages

    try:
        stages.fit_top(
            bundle.net,
            bundle.train,
            bundle.valid,
            n_top=bundle.n_top,
            epochs=tuner.trial_epochs,
            seed=seed,
            lr_head=params["lr_head"] * tuner.head_scale,
            lr_body=params["lr_body"],
            batch_size=tuner.batch_size,
            deadline=deadline,
            forward=bundle.forward,
            forward_eval=report,
            head_params=bundle.head_params(),
        )
    finally:
        bundle.restore()
    return report.scores


def _pick(study, defaults: dict, n_valid: int) -> tuple[dict, dict]:
    """The default unless the best trial beats it by more than luck would: the best of ``N`` noisy
    trials of equal worth exceeds the default by about ``sigma * sqrt(2 ln N)``, where ``sigma`` is
    the standard error of the difference of two scores near the default's on ``n_valid`` items
    (and at least one item's worth). This keeps auto from trading a known-good default for luck."""
    import optuna

    ran = [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING]
    done = [t for t in ran if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in ran if t.state == optuna.trial.TrialState.PRUNED]
    default = next((t for t in done if t.user_attrs.get("origin") == "default"), None)
    best = max(done, key=lambda t: t.value, default=None)
    sigma = _noise(default.value if default is not None else 0.5, n_valid)
    gain = sigma * max(1.0, math.sqrt(2 * math.log(max(1, len(ran)))))
    if best is None or default is None or best.value <= default.value + gain:
        params = defaults
        stopped = study.user_attrs.get("stopped", "")
        base = f"no trial completed ({stopped})" if default is None else f"default scored {default.value:.4f}"
        why = (
            f"the task's defaults: {base}; no trial beat it by > {gain:.4f} validation macro-F1 "
            f"(what the best of {len(ran)} equal trials gains by luck)"
        )
        score = None if default is None else default.value
    else:
        params = {k: float(f"{v:.3g}") for k, v in best.params.items()}
        why = (
            f"trial {best.number} scored {best.value:.4f} validation macro-F1 vs the default's "
            f"{default.value:.4f} (same subsample and epochs; luck explains up to {gain:.4f})"
        )
        score = best.value
    return params, {
        "trials": len(ran),
        "completed": len(done),
        "pruned": len(pruned),
        "best_params": params,
        "best_valid_macro_f1": score,
        "default_valid_macro_f1": None if default is None else default.value,
        "why": why,
        "table": [_trial_row(t) for t in ran],
        "stopped": study.user_attrs.get("stopped"),
        "skipped": None,
    }


def _noise(score: float, n_valid: int) -> float:
    """Standard error of the difference of two validation scores near ``score`` on ``n_valid`` items."""
    f = min(0.99, max(0.01, score))
    return max(1.0 / max(1, n_valid), math.sqrt(2 * f * (1 - f) / max(1, n_valid)))


def _trial_row(trial) -> dict:
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "origin": trial.user_attrs.get("origin", "tpe"),
        "params": {k: float(f"{v:.3g}") for k, v in trial.params.items()},
        "valid_macro_f1": trial.value,
        "epoch_scores": trial.user_attrs.get("epoch_scores", []),
        "seconds": trial.user_attrs.get("seconds"),
    }


# ==================================================================== train, register, compress
def _fit_and_register(run: _Run, tuner, ds, params: dict, name: str, state: _State):
    """The registered version and its test report: trained now, or the one a resumed run made."""
    from aimass.store import registry

    if "model" in state.saved:
        record = registry.get_version(state.saved["model"])
        report = json.loads((registry.open_folder(record) / "evaluation.json").read_text())
        run.choose("final fit", record.ref, "resumed: the interrupted run had registered it")
        return record, report
    model, report, run_id = _train_final(run, tuner, ds, params, state)
    record = _register(run, model, report, name, run_id)
    state.save(model=record.ref)
    return record, report


def _train_final(run: _Run, tuner, ds, params: dict, state: _State):
    """Fit the task's estimator with ``params`` and the time left, then evaluate on the test split."""
    from aimass import paths
    from aimass.store import registry
    from aimass.tasks import get_task

    share = run.left() - run.plan.reserved() - run.deploy_s - run.margin_s
    final = {"seed": run.seed, **params, "time_budget": round(max(10.0, share), 1)}
    if "time_budget" in params:  # resumed: the interrupted run's exact settings
        final = dict(params)
    state.save(params=final, search=run.search)
    model = get_task(tuner.task).estimator(**final)
    found = registry.find_run(tuner.task, model.get_params(), ds.id) if state.resume else None
    record = found or registry.start_run(tuner.task, model.get_params(), ds.id)
    folder = state.run_dir or paths.subdir("runs") / record.id
    try:
        with run.phase("train", 0.45, f"final fit ({final['time_budget']:.0f}s)"):
            model.fit(ds, run_dir=folder, resume=state.resume, progress=run.progress)
        with run.phase("evaluate", 0.8, "evaluating on the held-out test split"):
            report = model.evaluate(ds, "test")
    except BaseException as exc:
        registry.finish_run(record.id, "failed", error=f"{type(exc).__name__}: {exc}"[-4000:])
        raise
    registry.finish_run(record.id, "succeeded", timings=model.timings_)
    _note_final(run, model, final)
    return model, report, record.id


def _note_final(run: _Run, model, final: dict) -> None:
    top = getattr(model, "stages_", {}).get("top", {})
    if top.get("skipped"):
        why = f"stage 2 skipped: {top['skipped']}"
    elif top.get("best_epoch", -1) < 0:
        why = f"stage 2 ran {len(top.get('history', []))} epoch(s) but never beat the head on validation"
    else:
        why = f"best validation macro-F1 {top['best_score']:.4f} at epoch {top['best_epoch'] + 1}"
    run.choose("final fit", {"time_budget_s": final["time_budget"], "stages": _stages(model)}, why)


def _stages(model) -> dict:
    return {
        k: {"best_score": v["best_score"], "epochs": len(v["history"]), "skipped": v["skipped"]}
        for k, v in getattr(model, "stages_", {}).items()
    }


def _register(run: _Run, model, report: dict, name: str, run_id: str):
    from aimass import api

    with run.phase("register", 0.85, "registering the model"):
        return api.register(model, name, report=report, run_id=run_id)


def _compress(run: _Run, ref: str) -> dict:
    """Try the ONNX int8 child; keep it only if it passes the accuracy gate."""
    from aimass import api

    info = {"method": METHOD, "max_drop": MAX_DROP, "kept": False, "child": None, "gate": None}
    need = run.plan.compress_s
    if run.left() < need:
        return {
            **info,
            "reason": f"skipped: {max(0, run.left()):.0f}s left of the budget, it needs ~{need:.0f}s",
        }
    try:
        with run.phase("compress", 0.9, f"trying {METHOD}"):
            result = api.compress(ref, METHOD, max_drop=MAX_DROP)
    except Exception as exc:  # an export that fails keeps the parent; the report says why
        return {**info, "reason": f"failed ({type(exc).__name__}: {str(exc)[:300]}); keeping {ref}"}
    gate, comparison = result["gate"], result["comparison"]
    kept = gate["status"] == "accepted"
    speed = f"p50 latency x{comparison['p50_speedup']:.2f} faster, size x{comparison['size_ratio']:.2f}"
    reason = f"{gate['reason']}; {speed}" if kept else f"rejected: {gate['reason']}; keeping {ref}"
    run.choose("served version", result["model"] if kept else ref, reason)
    return {
        **info,
        "kept": kept,
        "child": result["model"],
        "gate": gate,
        "comparison": comparison,
        "reason": reason,
    }


# ==================================================================== deploy
def _deploy(run: _Run, name: str, ref: str, tuner, ds) -> dict:
    """Point ``production`` at ``ref``, serve it on 127.0.0.1 (reusing a running server) and ask it once."""
    from aimass import client
    from aimass.errors import AimassError
    from aimass.store import registry

    url, info = client.server_url(), {"alias": f"{name}@production", "ref": ref}
    with run.phase("deploy", 0.95, "deploying on 127.0.0.1"):
        registry.set_alias(ref, "production")
        try:
            started = None
            if _ready(url):
                client.call("POST", "/v1/services", json={"model": f"{name}@production"}, server=url)
            else:
                started = _start_server(url)
            answer = client.call("POST", f"/v1/models/{name}/predict", json=_sample(tuner, ds), server=url)
        except AimassError as exc:  # the model is registered and promoted: report, do not lose the run
            run.choose("deployment", None, f"failed: {exc.message} ({exc.hint or 'see logs/server.log'})")
            return {**info, "server": url, "error": exc.to_dict()}
    run.choose("deployment", f"{url} ({info['alias']})", "production points at the served version")
    label = answer["predictions"][0]["label"]
    return {**info, "server": url, "started_pid": started, "prediction": label}


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _start_server(url: str, wait_s: float = 180.0) -> int:
    """``aimass serve`` in the background on 127.0.0.1 (never another interface); its pid."""
    import subprocess
    from urllib.parse import urlparse

    from aimass import paths
    from aimass.errors import Unavailable

    where = urlparse(url)
    if where.hostname not in ("127.0.0.1", "localhost"):
        raise Unavailable(
            f"No aimass server answers at {url}.", hint="Start it there, or unset AIMASS_SERVER."
        )
    port = str(where.port or 8000)
    with open(paths.subdir("logs") / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aimass", "serve", "--host", "127.0.0.1", "--port", port],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (paths.home() / "server.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(
                f"The server exited early (code {proc.returncode}).",
                hint=f"See {paths.home() / 'logs' / 'server.log'}.",
            )
        if _ready(url):
            return proc.pid
        time.sleep(0.5)
    raise Unavailable(f"The server did not become ready within {wait_s:.0f}s.", hint="See logs/server.log.")


def _sample(tuner, ds) -> dict:
    """One real held-out input as a request body."""
    import base64

    item = ds.inputs("test")[0]
    if tuner.items == "images":
        return {"inputs": [base64.b64encode(Path(item).read_bytes()).decode()]}
    return {"inputs": [item[:300]]}


def _curl(url: str, name: str, tuner, ds) -> str:
    if tuner.items == "images":
        body = '{"inputs": ["\'"$(base64 -w0 IMAGE.png)"\'"]}'
    else:
        text = " ".join(ds.inputs("test")[0].split()[:12]).replace("'", "")
        body = json.dumps({"inputs": [text]}, ensure_ascii=False)
    return (
        f"curl -s {url}/v1/models/{name}/predict -H 'Content-Type: application/json' "
        f"-H \"Authorization: Bearer $AIMASS_API_KEY\" -d '{body}'"
    )


# ==================================================================== report
def _report(run: _Run, task, ds, record, report, compression, chosen, served, tuner) -> dict:
    from aimass import client

    summary = ds.summary()
    url = client.server_url()
    out = {
        "task": task,
        "dataset": {
            "id": ds.id,
            "name": ds.name,
            "rows": summary["rows"],
            "rejects": summary["rejects"],
            "splits": summary["splits"],
        },
        "choices": run.choices,
        "search": run.search,
        "metrics": {k: report[k] for k in ("accuracy", "macro_f1", "n") if k in report},
        "model": record.ref,
        "chosen": chosen,
        "compression": compression,
        "deployed": served,
        "endpoint": f"{url}/v1/models/{record.name}/predict",
        "curl": _curl(url, record.name, tuner, ds),
        "budget_s": run.total,
        "wall_s": round(run.elapsed(), 1),
        "timings": run.timings,
    }
    (Path(record.path) / "auto_report.json").write_text(json.dumps(out, indent=2, default=str))
    run.tell(1.0, f"done: {record.ref} in {out['wall_s']:.0f}s")
    return out
