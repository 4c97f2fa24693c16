"""Task ``image-multilabel``: images with any number of labels each (tags: beach, sunset, people).

One yes/no decision per label: a logistic regression per label over the frozen backbone's pooled
features of the centre crop (the image task's stage 1, with a sigmoid per label instead of one
softmax). What a fit compares on the validation split:

* ``network``: the L2-normalised pooled features of EfficientNet-Lite0;
* ``pixels-logreg``: the standardised raw pixels at the images' native size (at most 32 px a side),
  the baseline a careful engineer tries first;

each over a grid of regularisation strengths, scored by micro-F1 at the threshold that suits it best
(one threshold for every label, picked on the same split). The winner becomes the model's network
(:class:`aimass.backbones.image_net.ImageNet`'s head, or a
:class:`aimass.backbones.pixel_net.PixelNet`), so it saves, exports to ONNX and serves like an image
classifier. An image is given every label scoring at least the threshold, or its best label when
none does.

Data: an image manifest whose label column holds a JSON list (JSONL) or labels cut at
``--label-sep`` (CSV): :func:`aimass.data.image_import.import_images`.

>>> from aimass.tasks import get_task
>>> get_task("image-multilabel").estimator().get_params()["backbone"]
'efficientnet-lite0'
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator
from torch import nn

from aimass.backbones.image_net import pixels as _pixels
from aimass.backbones.pixel_net import PixelNet, flat
from aimass.backbones.text_net import Timer
from aimass.data.dataset import HeldOut
from aimass.data.image_layout import manifest_columns
from aimass.data.multilabel import split_labels
from aimass.data.read import loads_json
from aimass.errors import DataError
from aimass.estimator import parse_config
from aimass.tasks import label_sets, portfolio, register_task
from aimass.tasks.baselines import MAX_SIDE, standardiser
from aimass.tasks.image_classification import Handler as ImageHandler
from aimass.tasks.image_classification import (
    ImageClassification,
    ImageClassifier,
    _item_bytes,
    _sample_png,
    _where,
    median_side,
)

# the backbone's own size, even for small images (unlike one label an image, where 128 px suits
# them): on Fashion-MNIST mosaics of 1-3 products (bench/image_multilabel.py) the features at 224 px
# scored 0.78 test micro-F1 against 0.74 at 128
AUTO_SIZE = 224
NETWORK_C = (10.0, 1.0, 100.0)  # on the L2-normalised pooled features, most promising first
PIXELS_C = (0.1, 0.01, 1.0)  # on the standardised pixels


class Config(BaseModel):
    """Validated hyper-parameters (checked in ``fit``, never in ``__init__``)."""

    backbone: str = "efficientnet-lite0"
    image_size: int | Literal["auto"] = "auto"
    threshold: float | None = Field(default=None, gt=0, lt=1)
    baselines: bool = True
    seed: int = 0

    @field_validator("image_size")
    @classmethod
    def _size(cls, value):
        if value != "auto" and not 32 <= value <= 512:
            raise ValueError("must be 'auto' or an int in [32, 512]")
        return value


class MultiLabelImageClassifier(label_sets.SetPredictor, ImageClassifier):
    """Give each image every label that applies (any number), from a frozen pretrained backbone,
    or from its raw pixels when validation says they do better.

    Example:
        >>> ds = aimass.import_dataset("photos.jsonl")  # {"image": "a.jpg", "labels": [..]}  # doctest: +SKIP
        >>> model = MultiLabelImageClassifier().fit(ds)                                # doctest: +SKIP
        >>> model.predict(["beach.jpg"])                                              # doctest: +SKIP
        [['beach', 'sunset']]

    Args:
        backbone: an image backbone from the backbone table.
        image_size: the size the backbone sees; ``auto``: 224 (:data:`AUTO_SIZE`).
        threshold: the score from which a label is given; None: picked on the validation split.
        baselines: also try the raw pixels and keep them when they score better on validation.
        seed: makes the validation hold-out repeatable.
    """

    task = "image-multilabel"
    FITTED = ("classes_", "backbone_", "image_size_", "resize_", "unfrozen_", "threshold_", "data_digest_")
    activation = "sigmoid"  # how the ONNX runtime turns logits into scores (aimass.runtime.image)
    tta = False

    def __init__(
        self, backbone="efficientnet-lite0", image_size="auto", threshold=None, baselines=True, seed=0
    ):
        self.backbone = backbone
        self.image_size = image_size
        self.threshold = threshold
        self.baselines = baselines
        self.seed = seed

    # ----------------------------------------------------------------- fit
    def fit(
        self, data, valid=None, *, run_dir: Path | None = None, resume: bool = False, progress: bool = True
    ) -> MultiLabelImageClassifier:
        """Train on a ``multilabel-image`` Dataset (its train/valid splits) or on
        ``(images, label lists)``."""
        cfg = parse_config(Config, self.get_params(), "MultiLabelImageClassifier")
        if cfg.image_size == "auto":  # several objects an image: small ones too are seen at full size
            cfg = cfg.model_copy(update={"image_size": AUTO_SIZE})
        timer = Timer()
        train, val, digest = _splits(data, valid, cfg.seed)
        self._setup(cfg, train)
        timer.lap("load_backbone")
        pixels = (_pixels(train[0], self.resize_), _pixels(val[0], self.resize_))
        timer.lap("decode")
        pooled = self._pooled(cfg, digest, pixels, len(train[0]))
        features = [nn.functional.normalize(pooled[s].float(), dim=-1).numpy() for s in ("train", "valid")]
        timer.lap("embed")
        targets = [label_sets.multi_hot(split[1], self.classes_) for split in (train, val)]
        n = label_sets.settings_per_candidate(len(self.classes_))
        grids = {portfolio.NETWORK: ((_c(c), *features) for c in NETWORK_C[:n])}
        if cfg.baselines:
            grids["pixels-logreg"] = _pixel_grid(train[0], val[0], n)
        choice = label_sets.choose(grids, targets, cfg.threshold, cfg.seed)
        self._install(choice)
        timer.lap("train_head")
        self.stages_ = {}  # no training stages: the regressions are fitted whole, in seconds
        self.timings_ = timer.stages
        self.data_digest_ = digest
        return self

    @staticmethod
    def _classes_of(labels: list) -> list[str]:
        return label_sets.classes_of(labels)

    def _install(self, choice: label_sets.Choice) -> None:
        """The winner's weights become the network: the backbone's head, or a PixelNet."""
        self.chosen_, self.threshold_, self.candidates_ = choice.name, choice.threshold, choice.candidates
        weight = torch.tensor(choice.coef, dtype=torch.float32)
        bias = torch.tensor(choice.bias, dtype=torch.float32)
        if choice.name == portfolio.NETWORK:
            with torch.no_grad():
                self.net_.head.dense.weight.copy_(weight)
                self.net_.head.dense.bias.copy_(bias)
            return
        side, grey, mean, scale = choice.settings["_pixels"]
        self.net_ = PixelNet(side, grey, len(self.classes_)).set_weights(mean, scale, weight, bias)
        self.image_size_ = self.resize_ = side  # the squares are side x side: no crop

    # ------------------------------------------------------------- predict
    def _proba_batch(self, net, images: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(net(images)).numpy()

    def evaluate(self, data, split: str = "test", top_k: int = 12) -> dict:
        """Subset accuracy, micro-, macro- and samples-F1, Hamming loss, per-label scores, the
        images with the highest loss and the portfolio's choice."""
        if hasattr(data, "inputs"):
            images, labels = data.inputs(split), [split_labels(x) for x in data.labels(split)]
        else:
            images, labels = data[0], [label_sets.label_list(x) for x in data[1]]
        if not images:
            raise DataError(
                f"There are no images in the '{split}' split to evaluate on.",
                hint="Evaluate on another split or pass --data MANIFEST_OR_ARCHIVE.",
            )
        names = [_where(item, i) for i, item in enumerate(images)]
        report = self._sets_report(names, images, labels, top_k)
        for row in report["top_losses"]:
            row["image"] = row.pop("text")
        return report


def _c(c: float) -> dict:
    return {"C": c}


def _pixel_grid(train: list, valid: list, n: int):
    """The pixel baseline's settings with their designs: standardised raw pixels at the images'
    native size (at most ``MAX_SIDE``), grey when every training image is."""
    side = int(min(MAX_SIDE, max(4, round(median_side(train, MAX_SIDE)))))
    raw = _pixels(train, side)
    grey = bool(torch.equal(raw[:, 0], raw[:, 1]) and torch.equal(raw[:, 1], raw[:, 2]))
    x_train = flat(raw.float() / 255.0, grey).numpy()
    x_valid = flat(_pixels(valid, side).float() / 255.0, grey).numpy()
    mean, scale = standardiser(x_train)
    for c in PIXELS_C[:n]:
        yield (
            {"C": c, "_pixels": (side, grey, mean, scale)},
            (x_train - mean) / scale,
            (x_valid - mean) / scale,
        )


def _splits(data, valid, seed: int) -> tuple[tuple, tuple, str]:
    """(train, valid, digest), labels as lists; a validation split is held out of the training
    images when there is none."""
    if hasattr(data, "inputs"):
        if data.kind != "multilabel-image":
            raise DataError(
                f"Dataset '{data.name}' holds {data.kind}, not images with label lists.",
                hint="Import an image manifest whose labels are lists (JSONL), or cut at --label-sep (CSV).",
            )
        train = (data.inputs("train"), [split_labels(x) for x in data.labels("train")])
        val = (data.inputs("valid"), [split_labels(x) for x in data.labels("valid")])
        digest = data.digest
    else:
        images, labels = data
        if len(images) != len(labels):
            raise DataError(
                f"Got {len(images)} images but {len(labels)} label lists.",
                hint="Pass one list of labels per image.",
            )
        train = (list(images), [label_sets.label_list(x) for x in labels])
        val = (list(valid[0]), [label_sets.label_list(x) for x in valid[1]]) if valid else ([], [])
        digest = hashlib.sha256()
        for item, row in zip(*train):
            digest.update(_item_digest(item) + b"\0" + "|".join(row).encode() + b"\0")
        digest = digest.hexdigest()
    if not val[0]:
        train, val = label_sets.holdout(train, seed)
    return train, val, digest


def _item_digest(item) -> bytes:
    return hashlib.sha256(_item_bytes(item)).digest()


class Handler(ImageHandler):
    """The image handler (requests decoded and checked in the server), answering every label from
    the model's threshold."""

    estimator = MultiLabelImageClassifier

    def encode_response(self, proba: np.ndarray) -> dict:
        return label_sets.encode_label_sets(self.model.classes_, proba, self.model.threshold_)


@register_task("image-multilabel")
class ImageMultiLabel(ImageClassification):
    """The task spec the CLI, server and registry look up (the hooks: :class:`aimass.tasks.base.Task`)."""

    estimator = MultiLabelImageClassifier
    config = Config
    data_kind = "multilabel-image"
    response = label_sets.PredictResponse
    handler = Handler
    tuner = "aimass.autolearn.multilabel:MultiLabelImageTuner"
    compression: dict = {}  # no distill or prune: the backbone is frozen, int8 and ONNX only
    baselines: dict = {}  # the pixel baseline is one of the fit's own candidates
    sniff_order = 5  # before image-classification and text-multilabel: a manifest whose labels are lists
    fast_params: dict = {}

    @classmethod
    def sniff(cls, path: Path) -> str | None:
        """A JSONL image manifest whose label field holds lists (in its first 50 lines)."""
        columns = manifest_columns(path) if path.suffix.lower() in (".jsonl", ".ndjson") else None
        if columns is None:
            return None
        with open(path, encoding="utf-8", errors="replace") as fh:
            for _, line in zip(range(50), fh):
                with contextlib.suppress(ValueError):
                    row = loads_json(line)
                    if isinstance(row, dict) and isinstance(row.get(columns["label"]), list):
                        return "an image manifest whose labels are lists (several labels per image)"
        return None

    @classmethod
    def sample_data(cls, per_class: int = 12) -> tuple[list[bytes], list[list[str]]]:
        """2 x 2 mosaics of scikit-learn's scanned handwritten digits 0, 1 and 7 (blank tiles
        between): each image is labelled with the digits it shows, one or two of them."""
        from sklearn.datasets import load_digits  # heavy: scikit-learn, sample data only

        digits = load_digits()
        tiles = {d: digits.images[digits.target == d] for d in (0, 1, 7)}
        sets = ((0,), (1,), (7,), (0, 1), (0, 7), (1, 7))
        images, labels = [], []
        for i in range(per_class):
            for j, chosen in enumerate(sets):
                grid = [np.zeros((8, 8))] * 4
                for k, d in enumerate(chosen):
                    grid[(i + j + 2 * k) % 4] = tiles[d][(i * 3 + j + k) % len(tiles[d])]
                mosaic = np.block([[grid[0], grid[1]], [grid[2], grid[3]]])
                images.append(base64.b64decode(_sample_png((mosaic * 255 / 16).astype(np.uint8))))
                labels.append([str(d) for d in chosen])
        return images, labels

    @classmethod
    def eval_data(cls, path: Path, import_dataset) -> tuple[list, list] | None:
        """Every usable image of a manifest or archive (held-out data, not stored), labels as lists."""
        found = ImageClassification.eval_data(path, import_dataset)
        return (
            None if found is None else HeldOut(found[0], [split_labels(x) for x in found[1]], found.rejects)
        )

    @classmethod
    def plots(cls, report: dict, folder: Path) -> list[Path]:
        from aimass.evaluation.plots import per_label_png  # heavy: matplotlib

        return [per_label_png(report, Path(folder) / "per_label.png")]


__all__ = ["ImageMultiLabel", "MultiLabelImageClassifier"]
