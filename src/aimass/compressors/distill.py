"""``distill``: a smaller student learns from the fitted parent (and, optionally, more teachers).

The student is the parent's encoder cut to ``layers`` blocks (every k-th, ending at the top, so it
starts from the parent's fine-tuned blocks), with the parent's tokenizer and TF-IDF branch. It
trains on the teachers' temperature-softened probabilities (KL * T^2, weight ``alpha``) plus
cross-entropy on the true labels (weight ``1 - alpha``); extra unlabelled texts get only the soft
targets. :func:`fit_student` does the training, :mod:`aimass.compressors.prune` reuses it:

1. the teachers' probabilities on the train texts (and the unlabelled ones);
2. the student embeds those texts once; its embedding layer stays frozen, so every block trains
   on the cached embedding output, as stage 2 of ``fit`` trains the top blocks on cached states;
3. its head starts from a linear probe on its own embeddings and the TF-IDF features
   (:func:`aimass.train.stages.fit_head`), so it is never worse than a probe on the valid split;
4. every block and the head train with :func:`aimass.train.stages.train_top` on the distillation
   loss, keeping the best epoch by validation macro-F1, within ``time_budget``.

The child saves every block it keeps (``structure_`` records what was kept) and loads, evaluates,
exports and serves like any other version.

Example:
    >>> from aimass.compressors import get_compressor
    >>> method = get_compressor("distill", layers=2, time_budget="2m")
    >>> child = method.compress(parent, dataset, get_task(parent.task))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import torch
from pydantic import BaseModel, Field, field_validator
from torch import nn

from aimass.backbones import layers
from aimass.backbones.text_net import Timer, embed
from aimass.compressors import Compressor, register_compressor, structure
from aimass.data.split import holdout
from aimass.errors import ConfigError, DataError
from aimass.estimator import parse_config
from aimass.store import registry
from aimass.tfidf.branch import rows
from aimass.train import stages

IGNORE = -100  # the label of an unlabelled text (cross-entropy's ignore_index)
# seconds; on BBC News (2 cores) the default model's 2-layer student spends ~30 s on the teacher's
# probabilities, ~15 s embedding and 2 epochs of ~35 s: 115 s in all
TIME_BUDGET = 150.0


class Training(BaseModel):
    """Settings every student-training method shares (validated in ``compress``)."""

    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1)
    unlabeled: str | list[str] | None = None
    time_budget: float | None = Field(default=TIME_BUDGET, gt=0)
    epochs: int = Field(default=8, ge=1, le=100)
    batch_size: int = Field(default=16, ge=1, le=1024)
    lr: float = Field(default=2e-4, gt=0, lt=1)
    seed: int = 0


class Settings(Training):
    """``distill`` settings: student depth and extra teachers (registered refs)."""

    layers: int | None = Field(default=None, ge=1)
    teachers: list[str] = []

    @field_validator("teachers", mode="before")
    @classmethod
    def _split(cls, value):
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def settings(model: type[Training], given: dict, method: str) -> Training:
    """``given`` validated; a bad value is a ConfigError naming the setting."""
    return parse_config(model, {"time_budget": TIME_BUDGET, **given}, f"the '{method}' method")


@register_compressor("distill")
class Distill(Compressor):
    """A student with fewer encoder layers, trained on the teachers' soft targets and the labels.

    Settings: ``layers`` (default: a third of the parent's, at least 1: 6 -> 2, 12 -> 4),
    ``teachers`` (more registered versions, e.g. ``["news:3"]``; their probabilities are averaged
    with the parent's), ``temperature`` (2.0), ``alpha`` (0.5: weight of the soft-target loss),
    ``unlabeled`` (a ``.txt`` file with one text per line, or a list), ``time_budget`` (150 s),
    ``epochs`` (at most 8), ``batch_size`` (16), ``lr`` (2e-4, the top block's), ``seed``.
    """

    per_task = True  # the task's strategy: an encoder loses layers, an image net top-stage blocks
    trains = True

    def compress(self, model, data, spec):
        return self.strategy(spec)(model, data, self.settings)


def distill_encoder(model, data, given: dict):
    """``distill`` for a transformer encoder: the student keeps ``layers`` evenly spaced blocks."""
    cfg = settings(Settings, given, "distill")
    deadline = None if cfg.time_budget is None else time.monotonic() + cfg.time_budget
    teachers = [model, *_load_teachers(cfg.teachers, model)]
    child = student_of(model)
    n = child.net_.n_layers
    k = cfg.layers or max(1, round(n / 3))
    if k > n:
        raise ConfigError(
            f"The 'layers' setting of distill must be at most {n} (the parent's). Got {k} instead.",
            hint=f"Pass --set layers={max(1, round(n / 3))}.",
        )
    keep = pick_layers(n, k)
    structure.keep_layers(child.net_.encoder, keep)
    child.structure_ = {key: [child.structure_[key][i] for i in keep] for key in child.structure_}
    fit_student(child, teachers, data, cfg, deadline)
    return child


def pick_layers(n: int, k: int) -> list[int]:
    """``k`` of ``n`` blocks, evenly spaced and ending with the top one (6, 2 -> [2, 5])."""
    return [round((i + 1) * n / k) - 1 for i in range(k)]


def _load_teachers(refs: list[str], parent) -> list:
    teachers = [_load(ref, parent) for ref in refs]
    for ref, teacher in zip(refs, teachers, strict=True):
        if list(getattr(teacher, "classes_", [])) != list(parent.classes_):
            raise ConfigError(
                f"Teacher {ref} predicts {getattr(teacher, 'classes_', None)}, the parent {parent.classes_}.",
                hint="Every teacher must be trained on the same labels as the parent.",
            )
    return teachers


def _load(ref: str, parent):
    """The registered version ``ref``, loaded by the parent's estimator class (a teacher is a model
    of the parent's task; compressors sit below the task registry)."""
    record = registry.get_version(ref)
    if record.task != parent.task:
        raise ConfigError(
            f"Teacher {ref} is a {record.task} model, the parent a {parent.task} model.",
            hint="Every teacher must be trained on the same labels as the parent.",
        )
    return type(parent).load(registry.open_folder(record))


def student_of(parent):
    """A new fitted model sharing the parent's tokenizer and TF-IDF vocabulary (never changed)
    with a deep copy of its network; the parent itself is left alone."""
    net = getattr(parent, "net_", None)
    if net is None or not any(type(m) is nn.Linear for m in layers(net.encoder)[0].modules()):
        raise ConfigError(
            "This version cannot be trained further (it has no float torch network).",
            hint="Compress its parent version instead (distill or prune before int8 or onnx).",
        )
    _check_encoder(parent, net)
    child = type(parent)(**parent.get_params())
    skip = {"net_", "runtime_", "compression_", "stages_", "timings_", "structure_"}
    for key, value in vars(parent).items():
        if key.endswith("_") and not key.startswith("_") and key not in skip:
            setattr(child, key, value)
    child.classes_ = list(parent.classes_)
    child.net_ = copy.deepcopy(net).eval()
    child.structure_ = copy.deepcopy(getattr(parent, "structure_", None) or structure.full(net.encoder))
    return child


def _check_encoder(parent, net) -> None:
    """Refuse, before any work, an encoder a student cannot be cut from (blocks of a layout
    :mod:`~aimass.compressors.structure` does not know) or trained on: :func:`fit_student` runs the
    blocks one by one on cached embeddings, which DeBERTa's cannot do (they need the relative
    positions their encoder makes; :meth:`~aimass.backbones.text_net.TextNet.runs_blockwise`)."""
    backbone = getattr(parent, "backbone_", "")
    structure.layout_of(net.encoder, backbone)
    if not net.runs_blockwise(parent.tokenizer_):
        raise ConfigError(
            f"Backbone {backbone!r} ({type(net.encoder).__name__}) cannot be distilled or pruned: the "
            "student trains its blocks one by one, and this encoder's blocks do not run on their own.",
            hint=structure.HINT,
        )


def fit_student(child, teachers: list, data, cfg: Training, deadline: float | None) -> None:
    """Train every block of ``child`` and its head on the teachers' soft targets and the labels."""
    timer = Timer()
    train, valid = splits(data, cfg.seed)
    train, strays = _known(train, child.classes_)
    valid = _known(valid, child.classes_)[0] if valid else None
    extra = strays + unlabeled_texts(cfg.unlabeled, len(train[0]), cfg.seed)
    soft = soft_targets(teachers, train[0] + extra, cfg.temperature)
    timer.lap("teachers")
    feats, val = _features(child, train, extra), (_features(child, valid) if valid and valid[0] else None)
    timer.lap("embed")
    n = len(train[0])
    labeled = stages.Features(feats.pooled[:n], feats.y[:n], lexical=_first(feats.lexical, n))
    probe = stages.fit_head(child.net_, labeled, val, seed=cfg.seed)
    timer.lap("train_head")
    loss = distill_loss(soft, feats.y, cfg.temperature, cfg.alpha)
    top = _train_blocks(child, feats, val, loss, cfg, deadline, probe.best_score)
    timer.lap("train_student")
    child.stages_ = {"head": probe.__dict__, "student": top.__dict__}
    child.timings_ = timer.stages


def _train_blocks(child, feats, val, loss, cfg: Training, deadline, baseline: float) -> stages.StageResult:
    """Every block and the head's dense layer, as many epochs as ``deadline`` leaves room for."""
    net = child.net_
    child.unfrozen_ = net.n_layers  # every block of the student trains
    stages.set_trainable(net, net.n_layers)
    per_epoch = stages.estimate_epoch_seconds(net, 0, feats, cfg.batch_size)
    left = float("inf") if deadline is None else deadline - time.monotonic()
    learn = stages.top_learner(net, feats, val, start=0, seed=cfg.seed, batch_size=cfg.batch_size, loss=loss)
    result = stages.train_top(
        learn.unfreeze(net.n_layers),
        max(1, min(cfg.epochs, int(left // (per_epoch * 1.15)))),
        (cfg.lr, 1e-3),
        decay=0.8,
        deadline=deadline,
        baseline=baseline if val is not None else -float("inf"),
    )
    net.eval()
    return result


def splits(data, seed: int) -> tuple[tuple, tuple | None]:
    """(train, valid) texts and labels of a Dataset, or of ``(texts, labels)`` with 10% held out."""
    if hasattr(data, "texts"):
        train = (data.texts("train"), data.labels("train"))
        valid = (data.texts("valid"), data.labels("valid"))
        return train, (valid if valid[0] else None)
    texts, labels = list(data[0]), list(data[1])
    if len(texts) != len(labels):
        raise DataError(f"Got {len(texts)} texts but {len(labels)} labels.", hint="Pass one label per text.")
    try:
        return holdout((texts, labels), seed)
    except DataError:  # too few texts to hold any out: train the planned epochs without selection
        return (texts, labels), None


def unlabeled_texts(source: str | list[str] | None, n_train: int, seed: int) -> list[str]:
    """The extra texts (a ``.txt`` file, one per line, or a list), at most twice ``n_train`` of
    them (a seeded sample): each costs a teacher pass and a training step per epoch."""
    if source is None:
        return []
    if isinstance(source, str):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(
                f"The unlabeled file {path} does not exist.",
                hint="Pass a .txt file with one text per line, or a list of texts.",
            )
        source = path.read_text(encoding="utf-8").splitlines()
    texts = [t.strip() for t in source if t and t.strip()]
    if len(texts) > 2 * n_train:
        texts = random.Random(seed).sample(texts, 2 * n_train)
    return texts


def soft_targets(teachers: list, texts: list[str], temperature: float) -> torch.Tensor:
    """The teachers' mean probabilities at ``temperature`` (softmax of log-probability / T)."""
    total = 0.0
    for teacher in teachers:
        log_p = torch.from_numpy(teacher.predict_proba(texts)).clamp_min(1e-12).log()
        total = total + torch.softmax(log_p / temperature, -1)
    return total / len(teachers)


def distill_loss(soft: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float):
    """``loss(logits, index)``: ``alpha`` * KL(teachers || student) * T^2 on the soft targets of
    rows ``index`` plus ``1 - alpha`` * cross-entropy on the labelled ones among them."""

    def loss(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        log_p = nn.functional.log_softmax(logits / temperature, -1)
        kl = nn.functional.kl_div(log_p, soft[index], reduction="batchmean") * temperature**2
        target = y[index]
        known = target != IGNORE
        ce = nn.functional.cross_entropy(logits[known], target[known]) if known.any() else kl * 0
        return alpha * kl + (1 - alpha) * ce

    return loss


def _known(split: tuple, classes: list[str]) -> tuple[tuple, list[str]]:
    """(the rows whose label the parent knows, the texts of the others: soft targets only)."""
    known = set(classes)
    keep = [i for i, label in enumerate(split[1]) if label in known]
    others = [t for t, label in zip(*split, strict=True) if label not in known]
    return ([split[0][i] for i in keep], [split[1][i] for i in keep]), others


def _features(child, split: tuple, extra: list[str] = ()) -> stages.Features:
    """The student's pooled embeddings, its cached embedding-layer output, TF-IDF and labels."""
    texts = list(split[0]) + list(extra)
    index = {c: i for i, c in enumerate(child.classes_)}
    labels = [index[label] for label in split[1]] + [IGNORE] * len(extra)
    cache = embed(
        child.net_.encoder,
        child.tokenizer_,
        child._prefixed(texts),
        max_length=child.max_length_,
        keep_layer=0,
    )
    lexical = child.lexical_.transform(texts) if child.lexical_ else None
    return stages.Features(cache["pooled"], torch.tensor(labels), cache["hidden"], cache["mask"], lexical)


def _first(lexical, n: int):
    return None if lexical is None else rows(lexical, torch.arange(n))
