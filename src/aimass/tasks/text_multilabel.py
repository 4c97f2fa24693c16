"""Task ``text-multilabel``: texts with any number of labels each (tags, topics, intents).

One yes/no decision per label: a logistic regression per label over the frozen encoder's pooled
embedding and the TF-IDF branch (the text task's stage 1, with a sigmoid per label instead of one
softmax). What a fit compares on the validation split, like the single-label portfolio:

* ``network``: embedding and TF-IDF together (the embedding weighted by ``w``);
* ``tfidf-logreg``: TF-IDF alone, the baseline a careful engineer tries first;

each over a grid of regularisation strengths, scored by micro-F1 at the threshold that suits it
best (one threshold for every label, picked on the same split). The winner becomes the model's
head, so it saves, exports to ONNX, serves and compresses like the text classifier. A row is
given every label scoring at least the threshold, or its best label when none does.

Data: a JSON list of labels per row, or a table cell cut at ``--label-sep`` when importing
(:mod:`aimass.data.multilabel`).

>>> from aimass.tasks import get_task
>>> get_task("text-multilabel").estimator().get_params()["backbone"]
'auto'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file

from aimass.backbones import default_backbone, get_backbone
from aimass.backbones.text_net import Head, TextNet, Timer, token_budget, token_counts
from aimass.data import bbc_news_path, bbc_news_text, detect_language
from aimass.data.dataset import HeldOut
from aimass.data.multilabel import split_labels
from aimass.data.read import loads_json
from aimass.errors import DataError
from aimass.estimator import parse_config
from aimass.tasks import label_sets, portfolio, register_task
from aimass.tasks.classification import ClassificationTask
from aimass.tasks.classification import Handler as ClassifierHandler
from aimass.tasks.text_classification import PredictRequest, TextClassification, TextClassifier
from aimass.tfidf import settings_for
from aimass.tfidf.branch import Lexical
from aimass.train.cache import cache_path

# the candidates' settings, most promising first: (C, the embedding's weight beside TF-IDF)
NETWORK_GRID = (
    (10.0, 1.0),
    (10.0, 0.3),
    (100.0, 1.0),
    (1.0, 1.0),
    (10.0, 3.0),
    (100.0, 0.3),
    (1.0, 0.3),
    (100.0, 3.0),
    (1.0, 3.0),
)
TFIDF_GRID = ((10.0, 0.0), (100.0, 0.0), (1.0, 0.0))


class Config(BaseModel):
    """Validated hyper-parameters (checked in ``fit``, never in ``__init__``)."""

    backbone: str = "auto"
    time_budget: float | None = Field(default=None, gt=0)
    max_length: int = Field(default=128, ge=8, le=512)
    lexical: bool = True
    threshold: float | None = Field(default=None, gt=0, lt=1)
    baselines: bool = True
    seed: int = 0


class MultiLabelTextClassifier(label_sets.SetPredictor, TextClassifier):
    """Give each text every label that applies (any number), from a frozen pretrained encoder and
    TF-IDF.

    Example:
        >>> ds = aimass.import_dataset("tickets.jsonl")  # {"text": ..., "labels": [...]}  # doctest: +SKIP
        >>> model = MultiLabelTextClassifier().fit(ds)                                      # doctest: +SKIP
        >>> model.predict(["refund my double charge now"])                                 # doctest: +SKIP
        [['billing', 'urgent']]

    Args:
        backbone: ``auto`` (by detected language), a name from the backbone table,
            ``hf:ORG/NAME`` or a local model folder.
        max_length: the most tokens per text the encoder sees (less if the data needs less).
        time_budget: wall-time budget for fit, e.g. ``"1m"``; None: no bound. The encoder embeds
            every text whatever the budget (one pass, cached); the grid of regressions is what it
            bounds: once it is spent, each candidate stops after the settings it has tried (always
            at least its first, most promising one; ``settings_tried`` in ``candidates_``).
        lexical: add the TF-IDF branch (and compare against TF-IDF alone).
        threshold: the score from which a label is given; None: picked on the validation split.
        baselines: also try TF-IDF alone and keep it when it scores better on validation.
        seed: makes the validation hold-out repeatable.
    """

    task = "text-multilabel"
    FITTED = (
        "classes_",
        "language_",
        "backbone_",
        "prefix_",
        "max_length_",
        "unfrozen_",
        "threshold_",
        "data_digest_",
    )
    activation = "sigmoid"  # how the ONNX runtime turns logits into scores (aimass.runtime.text)

    def __init__(
        self,
        backbone="auto",
        max_length=128,
        lexical=True,
        threshold=None,
        baselines=True,
        seed=0,
        time_budget=None,
    ):
        self.backbone = backbone
        self.time_budget = time_budget
        self.max_length = max_length
        self.lexical = lexical
        self.threshold = threshold
        self.baselines = baselines
        self.seed = seed

    # ----------------------------------------------------------------- fit
    def fit(self, data, valid=None, *, run_dir=None, resume=False, progress=True) -> MultiLabelTextClassifier:
        """Train on a Dataset (its train/valid splits) or on ``(texts, label lists)``."""
        cfg = parse_config(Config, self.get_params(), "MultiLabelTextClassifier")
        deadline = _deadline(cfg)
        timer = Timer()
        train, val, digest, language = _splits(data, valid, cfg.seed)
        self.classes_ = label_sets.classes_of(train[1])
        self._prepare(cfg, language, train[0])
        timer.lap("load_backbone")
        pooled = self._embed(train[0] + val[0], digest, progress)
        timer.lap("embed")
        lexical = [self.lexical_.transform(part) if self.lexical_ else None for part in (train[0], val[0])]
        parts = [(pooled[: len(train[0])], lexical[0]), (pooled[len(train[0]) :], lexical[1])]
        targets = [label_sets.multi_hot(train[1], self.classes_), label_sets.multi_hot(val[1], self.classes_)]
        self._choose(cfg, parts, targets, deadline)
        timer.lap("train_head")
        self.stages_ = {}
        self.timings_ = timer.stages
        self.data_digest_ = digest
        return self

    def fit_from(
        self, parent: MultiLabelTextClassifier, data, *, old=None, replay: int = 200, progress: bool = True
    ) -> MultiLabelTextClassifier:
        """Continue the fitted ``parent`` on ``data`` (new labels welcome) without embedding its
        old data again.

        The parent's encoder, window and TF-IDF vocabulary stay (the vocabulary widens to the new
        texts' terms); up to ``replay`` rows per label of ``old`` (the parent's Dataset; a row counts
        for each of its labels) join the new training and validation rows, their
        embeddings read from the parent's feature cache while it is on disk. The regressions are
        then fitted and chosen as in :meth:`fit` (seconds). An old row has none of the new labels:
        a tag that did not exist then counts as absent. ``replay_`` records what was replayed.
        """
        cfg = parse_config(Config, self.get_params(), "MultiLabelTextClassifier")
        deadline = _deadline(cfg)
        timer = Timer()
        self._inherit(parent)
        train, val, digest, _ = _splits(data, None, cfg.seed)
        self.classes_ = list(parent.classes_) + sorted(
            {x for row in train[1] for x in row} - set(parent.classes_)
        )
        old_rows, old_pooled, self.replay_ = self._replay(parent, old, replay, cfg.seed)
        timer.lap("replay")
        new_pooled = self._embed(train[0] + val[0], digest, progress)
        if old_pooled is None:
            old_pooled = self._embed(old_rows[0][0] + old_rows[1][0], f"replay|{digest}", progress)
        timer.lap("embed")
        cut, old_cut = len(train[0]), len(old_rows[0][0])
        train = (train[0] + old_rows[0][0], train[1] + old_rows[0][1])
        val = (val[0] + old_rows[1][0], val[1] + old_rows[1][1])
        pooled = (
            np.concatenate([new_pooled[:cut], old_pooled[:old_cut]]),
            np.concatenate([new_pooled[cut:], old_pooled[old_cut:]]),
        )
        self.lexical_ = parent.lexical_.widen(train[0]) if parent.lexical_ is not None else None
        n_lex = self.lexical_.size if self.lexical_ else 0
        self.net_ = TextNet(
            parent.net_.encoder, Head(parent.net_.encoder.config.hidden_size, len(self.classes_), n_lex)
        ).eval()
        lexical = [self.lexical_.transform(part) if self.lexical_ else None for part in (train[0], val[0])]
        targets = [label_sets.multi_hot(train[1], self.classes_), label_sets.multi_hot(val[1], self.classes_)]
        self._choose(cfg, [(pooled[0], lexical[0]), (pooled[1], lexical[1])], targets, deadline)
        timer.lap("train_head")
        self.stages_ = {}  # no training stages: the regressions are fitted whole, in seconds
        self.timings_ = timer.stages
        self.data_digest_ = digest
        return self

    def _replay(self, parent, old, n: int, seed: int) -> tuple[tuple, np.ndarray | None, dict]:
        """((old train rows, old valid rows), their pooled embeddings from the parent's cache or
        None, what was replayed): up to ``n`` rows per label of each split as the parent's fit
        made them (:func:`_replay_rows`)."""
        none = (([], []), ([], []))
        if old is None or n <= 0:
            return none, None, {"per_class": 0, "rows": 0, "valid_rows": 0, "from_cache": False}
        o_train, o_val, digest, _ = _splits(old, None, parent.seed)
        picks, valid_picks = _replay_rows(o_train[1], n, seed), _replay_rows(o_val[1], n, seed)
        rows = (_take(o_train, picks), _take(o_val, valid_picks))
        texts = self._prefixed(o_train[0] + o_val[0])
        path = cache_path(f"multilabel|{self.backbone_}|{digest}|{self.max_length_}", texts)
        pooled = None
        if path.exists():
            with contextlib.suppress(Exception):  # a torn file: embed instead
                index = picks + [len(o_train[0]) + i for i in valid_picks]
                pooled = load_file(str(path))["pooled"][torch.tensor(index, dtype=torch.long)].numpy()
        info = {
            "per_class": n,
            "rows": len(picks),
            "valid_rows": len(valid_picks),
            "from_cache": pooled is not None,
        }
        return rows, pooled, info

    def _prepare(self, cfg: Config, language: str, texts: list[str]) -> None:
        """Backbone, tokenizer, token window, TF-IDF branch and the network (encoder frozen)."""
        self.language_ = language
        self.backbone_ = default_backbone(language) if cfg.backbone == "auto" else cfg.backbone
        spec = get_backbone(self.backbone_)
        self.tokenizer_, encoder = spec.load()
        self.prefix_ = spec.prefix
        self.max_length_ = token_budget(token_counts(self.tokenizer_, self._prefixed(texts)), cfg.max_length)
        self.lexical_ = Lexical(settings_for(language)).fit(texts) if cfg.lexical else None
        n_lex = self.lexical_.size if self.lexical_ else 0
        self.net_ = TextNet(encoder, Head(encoder.config.hidden_size, len(self.classes_), n_lex)).eval()
        self.unfrozen_, self.structure_ = 0, None
        for p in encoder.parameters():
            p.requires_grad_(False)

    def _embed(self, texts: list[str], digest: str, progress: bool) -> np.ndarray:
        return self._pooled(
            texts, f"multilabel|{self.backbone_}|{digest}|{self.max_length_}", progress
        ).numpy()

    def _choose(self, cfg: Config, parts: list, targets: list[np.ndarray], deadline: float | None) -> None:
        """Fit every candidate on the training rows, keep the best by validation micro-F1 (then
        macro-F1; the network wins a tie) and copy it into the head. Past ``deadline`` (a
        ``time.monotonic()``), a candidate tries no further settings after its first."""
        n = label_sets.settings_per_candidate(targets[0].shape[1])

        def grid(settings):
            for k, (c, w) in enumerate(settings[:n]):
                if k and deadline is not None and time.monotonic() > deadline:
                    return
                yield {"C": c, "w": w}, _design(*parts[0], w), _design(*parts[1], w)

        grids = {portfolio.NETWORK: grid(NETWORK_GRID)}
        if self.lexical_ is not None and cfg.baselines:
            grids["tfidf-logreg"] = grid(TFIDF_GRID)
        choice = label_sets.choose(grids, targets, cfg.threshold, cfg.seed)
        self.chosen_, self.threshold_, self.candidates_ = choice.name, choice.threshold, choice.candidates
        coef, w, dim = choice.coef, choice.settings["w"], parts[0][0].shape[1]
        head = self.net_.head
        with torch.no_grad():
            head.dense.weight.copy_(torch.tensor(coef[:, -dim:] * w, dtype=torch.float32))
            head.dense.bias.copy_(torch.tensor(choice.bias, dtype=torch.float32))
            if head.lexical is not None:
                head.lexical.weight.copy_(torch.tensor(coef[:, :-dim], dtype=torch.float32))

    # ------------------------------------------------------------- predict
    def _proba_batch(self, batch: list[str]) -> np.ndarray:
        return torch.sigmoid(self.logits(batch)).numpy()

    def evaluate(self, data, split: str = "test", top_k: int = 10) -> dict:
        """Subset accuracy, micro-, macro- and samples-F1, Hamming loss, per-label scores, the
        rows with the highest loss and the portfolio's choice."""
        if hasattr(data, "texts"):
            texts, labels = data.texts(split), [split_labels(x) for x in data.labels(split)]
        else:
            texts, labels = data[0], [label_sets.label_list(x) for x in data[1]]
        if not texts:
            raise DataError(
                f"There are no rows in the '{split}' split to evaluate on.",
                hint="Evaluate on another split or pass --data FILE.",
            )
        return self._sets_report(texts, texts, labels, top_k)


def _deadline(cfg: Config) -> float | None:
    """The ``time.monotonic()`` by which the fit's time budget is spent (None: no budget)."""
    return None if cfg.time_budget is None else time.monotonic() + cfg.time_budget


def _splits(data, valid, seed: int) -> tuple[tuple, tuple, str, str]:
    """(train, valid, digest, language), labels as lists; a validation split is held out of the
    training rows when there is none."""
    if hasattr(data, "texts"):
        train = (data.texts("train"), [split_labels(x) for x in data.labels("train")])
        val = (data.texts("valid"), [split_labels(x) for x in data.labels("valid")])
        language = data.manifest.get("language") or detect_language(train[0])
        digest = data.digest
    else:
        texts, labels = data
        if len(texts) != len(labels):
            raise DataError(
                f"Got {len(texts)} texts but {len(labels)} label lists.",
                hint="Pass one list of labels per text.",
            )
        train = (list(texts), [label_sets.label_list(x) for x in labels])
        val = (list(valid[0]), [label_sets.label_list(x) for x in valid[1]]) if valid else ([], [])
        language = detect_language(train[0])
        digest = hashlib.sha256(json.dumps([train[0], train[1]]).encode()).hexdigest()
    if not val[0]:
        train, val = label_sets.holdout(train, seed)
    return train, val, digest, language


def _replay_rows(sets: list[list[str]], n: int, seed: int) -> list[int]:
    """Indices of rows to replay (in row order): in a seeded random order, each row that has a
    label with fewer than ``n`` rows taken yet, so every label gets up to ``n`` (a row counts for
    each of its labels)."""
    order = list(range(len(sets)))
    random.Random(seed).shuffle(order)
    taken, keep = Counter(), []
    for i in order:
        if any(taken[x] < n for x in sets[i]):
            keep.append(i)
            taken.update(sets[i])
    return sorted(keep)


def _take(split: tuple, index: list[int]) -> tuple[list, list]:
    return [split[0][i] for i in index], [split[1][i] for i in index]


def _design(pooled: np.ndarray, lexical, w: float):
    """[TF-IDF, w * embedding] as one sparse matrix (the embedding alone without TF-IDF)."""
    from scipy import sparse

    dense = sparse.csr_matrix(pooled * w) if w else sparse.csr_matrix(pooled.shape, dtype=np.float32)
    if lexical is None:
        return dense
    lex = sparse.csr_matrix(
        (lexical.values().numpy(), lexical.col_indices().numpy(), lexical.crow_indices().numpy()),
        shape=tuple(lexical.shape),
    )
    return sparse.hstack([lex, dense]).tocsr()


# ------------------------------------------------------------------ serving
class Handler(ClassifierHandler):
    """The classifier handler, answering every label from the model's threshold."""

    estimator = MultiLabelTextClassifier
    runtime = "aimass.runtime.text:TextRuntime"

    def encode_response(self, proba: np.ndarray) -> dict:
        return label_sets.encode_label_sets(self.model.classes_, proba, self.model.threshold_)


@register_task("text-multilabel")
class TextMultiLabel(ClassificationTask):
    """The task spec the CLI, server and registry look up (the hooks: :class:`aimass.tasks.base.Task`)."""

    estimator = MultiLabelTextClassifier
    config = Config
    data_kind = "multilabel"
    item_noun = "texts"
    request = PredictRequest
    response = label_sets.PredictResponse
    handler = Handler
    runtime = "aimass.runtime.text:TextRuntime"
    tuner = "aimass.autolearn.multilabel:MultiLabelTuner"
    sniff_order = 40  # before text-classification: a table whose labels are lists
    sample_request = {"inputs": ["The minister said the new phone tax would hit music sales."]}
    max_upload_bytes = TextClassification.max_upload_bytes
    fast_params = {"backbone": "minilm-l6", "max_length": 64}

    @classmethod
    def plots(cls, report: dict, folder: Path) -> list[Path]:
        from aimass.evaluation.plots import per_label_png  # heavy: matplotlib

        return [per_label_png(report, Path(folder) / "per_label.png")]

    cli_inputs = TextClassification.cli_inputs
    features = TextClassification.features  # for data curation: the text's embeddings and TF-IDF
    request_item = TextClassification.request_item
    curl_item = TextClassification.curl_item
    latency_inputs = TextClassification.latency_inputs

    @classmethod
    def sniff(cls, path: Path) -> str | None:
        """A JSONL table whose label field holds lists."""
        if not (path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson")):
            return None
        with open(path, encoding="utf-8", errors="replace") as fh:
            for _, line in zip(range(50), fh):
                try:
                    row = loads_json(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and any(
                    isinstance(v, list) and k != "messages" for k, v in row.items()
                ):
                    return "a JSONL table whose labels are lists (several labels per text)"
        return None

    @classmethod
    def sample_data(cls, per_class: int = 12) -> tuple[list[str], list[list[str]]]:
        """BBC News openings, alone (one label) or two of different topics joined (two labels)."""
        by_topic = {
            folder.name: [bbc_news_text(p)[:200] for p in sorted(folder.glob("*.txt"))[: 2 * per_class]]
            for folder in sorted(bbc_news_path().iterdir())
        }
        topics = sorted(by_topic)
        texts, labels = [], []
        for i in range(per_class):
            for j, topic in enumerate(topics):
                texts.append(by_topic[topic][i])
                labels.append([topic])
                other = topics[(j + 1 + i % (len(topics) - 1)) % len(topics)]
                texts.append(by_topic[topic][per_class + i] + " " + by_topic[other][per_class + i])
                labels.append(sorted([topic, other]))
        return texts, labels

    @classmethod
    def eval_data(cls, path: Path, import_dataset=None) -> tuple[list, list] | None:
        """The text and label columns of a table file (labels as lists; rejected rows left out)."""
        found = TextClassification.eval_data(path, import_dataset)
        return (
            None if found is None else HeldOut(found[0], [split_labels(x) for x in found[1]], found.rejects)
        )


__all__ = ["MultiLabelTextClassifier", "TextMultiLabel"]
