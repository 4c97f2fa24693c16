"""Task ``image-classification``: config, estimator, metrics, request/response and handler.

>>> from aimass.tasks.image_classification import ImageClassifier
>>> ImageClassifier(time_budget="2m").get_params()["backbone"]
'efficientnet-lite0'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import random
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, Field, field_validator
from safetensors.torch import load_file, save_file
from torch import nn

from aimass import compressors, paths
from aimass.backbones import get_backbone, layers
from aimass.backbones.image_net import BASE_SCALE, ImageNet, to_pixels
from aimass.backbones.image_net import build as _build
from aimass.backbones.image_net import lower as _lower
from aimass.backbones.image_net import pixels as _pixels
from aimass.backbones.image_preprocess import bmp_bytes, square
from aimass.backbones.pixel_net import PixelNet
from aimass.backbones.text_net import Timer
from aimass.compressors import image_student
from aimass.data import looks_like_images
from aimass.data.image_import import read_held_out
from aimass.data.images import byte_limit, check_image, total_pixels
from aimass.data.split import holdout
from aimass.errors import ConfigError, DataError, TooLargeError
from aimass.estimator import parse_config
from aimass.runtime.image_export import export_image
from aimass.tasks import get_task, portfolio, register_task
from aimass.tasks.classification import (
    ClassificationTask,
    Classifier,
    check_items,
)
from aimass.tasks.classification import (
    Handler as ClassifierHandler,
)
from aimass.train import augment, stages
from aimass.train.cache import cached

MAX_ITEMS = 64
ASCII_SPACE = dict.fromkeys(map(ord, " \t\n\r\f\v"))  # line-wrapped base64 (MIME, `base64` without -w0)


class Config(BaseModel):
    """Validated hyper-parameters (checked in ``fit``, never in ``__init__``)."""

    backbone: str = "efficientnet-lite0"
    time_budget: float | None = Field(default=300.0, gt=0)
    image_size: int | Literal["auto"] = "auto"
    unfreeze: int | Literal["auto"] = "auto"
    epochs_top: int | None = Field(default=None, ge=0, le=100)
    augment: int = Field(default=2, ge=0, le=8)
    tta: bool = False
    average: float = Field(default=2.0, ge=0, le=20)
    lr_head: float = Field(default=3e-3, gt=0, lt=1)
    lr_body: float = Field(default=2e-3, gt=0, lt=1)
    batch_size: int = Field(default=32, ge=2, le=1024)
    baselines: bool = True
    seed: int = 0

    @field_validator("image_size")
    @classmethod
    def _size(cls, value):
        if value != "auto" and not 32 <= value <= 512:
            raise ValueError("must be 'auto' or an int in [32, 512]")
        return value


def _config(params: dict) -> Config:
    return parse_config(Config, params, "ImageClassifier")


def _splits(data, valid) -> tuple[tuple, tuple | None, str]:
    """(train, valid, digest) from an image Dataset or from (images, labels)."""
    if hasattr(data, "inputs"):
        if data.kind != "image":
            raise DataError(
                f"Dataset '{data.name}' holds {data.kind}, not images.",
                hint="Import a folder or archive of images, or pick the task that fits the data.",
            )
        train = (data.inputs("train"), data.labels("train"))
        val = (data.inputs("valid"), data.labels("valid"))
        return train, val if val[0] else None, data.digest
    images, labels = data
    if len(images) != len(labels):
        raise DataError(
            f"Got {len(images)} images but {len(labels)} labels.", hint="Pass one label per image."
        )
    digest = hashlib.sha256()
    for item, label in zip(images, labels):
        digest.update(_item_bytes(item) + b"\0" + str(label).encode() + b"\0")
    return (list(images), list(labels)), valid, digest.hexdigest()


def _item_bytes(item) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str | Path):
        return Path(item).read_bytes()
    return np.asarray(item).tobytes()


def auto_size(items: list, default: int = 224) -> int:
    """The training size: the backbone's 224, or less for small images (Fashion-MNIST, icons),
    where upscaling adds compute but no detail."""
    return default if median_side(items, default) >= 160 else 128


def median_side(items: list, default: float) -> float:
    """The median shorter side of about 50 of ``items`` (``default`` when there are none)."""
    sample = items[:: max(1, len(items) // 50)]
    sides = []
    for item in sample:
        if isinstance(item, str | Path | bytes):
            info = check_image(item)
            sides.append(min(info.width, info.height))
        else:
            sides.append(min(np.asarray(item).shape[:2]) if not hasattr(item, "size") else min(item.size))
    return float(np.median(sides)) if sides else default


class ImageClassifier(Classifier):
    """Fine-tune a pretrained image backbone for classification, staged for a CPU.

    Example:
        >>> import aimass
        >>> ds = aimass.import_dataset("photos/")                 # doctest: +SKIP
        >>> model = ImageClassifier(time_budget="5m").fit(ds)      # doctest: +SKIP
        >>> model.predict(["cat.jpg"])                             # doctest: +SKIP

    Args:
        backbone: an image backbone from the backbone table (``auto``: efficientnet-lite0).
        time_budget: wall-time budget for fit, e.g. ``"5m"``; stages that do not fit are skipped.
        image_size: training and inference size; ``auto``: 224, or 128 when the images are small.
        unfreeze: how many top backbone stages to fine-tune in stage 2 (0 = head only);
            ``auto``: 3 of EfficientNet-Lite0's 7.
        epochs_top: epochs for stage 2; ``None`` lets the time budget decide (at most 12).
        augment: how many random views (resized crop, flip, colour jitter) of each training image
            stage 2 draws from, besides the centre crop (0 = centre crops only).
        tta: average the predictions of the image and its mirror image.
        average: stage 2 validates and keeps a moving average of the weights over about this many
            epochs rather than the last step's weights (0 = off).
        lr_head, lr_body: peak learning rates of the head and the top stage.
        batch_size: stage-2 batch size.
        baselines: also fit the task's cheap baselines and keep whichever candidate scores best on
            the validation split (:mod:`aimass.tasks.portfolio`); False: the network alone.
        seed: makes splits, initialisation, augmentation and shuffling repeatable.
    """

    task = "image-classification"
    FITTED = ("classes_", "backbone_", "image_size_", "resize_", "unfrozen_", "data_digest_")

    def __init__(
        self,
        backbone="efficientnet-lite0",
        time_budget=300.0,
        image_size="auto",
        unfreeze="auto",
        epochs_top=None,
        augment=2,
        tta=False,
        average=2.0,
        lr_head=3e-3,
        lr_body=2e-3,
        batch_size=32,
        baselines=True,
        seed=0,
    ):
        self.backbone = backbone
        self.time_budget = time_budget
        self.image_size = image_size
        self.unfreeze = unfreeze
        self.epochs_top = epochs_top
        self.augment = augment
        self.tta = tta
        self.average = average
        self.lr_head = lr_head
        self.lr_body = lr_body
        self.batch_size = batch_size
        self.baselines = baselines
        self.seed = seed

    # ----------------------------------------------------------------- fit
    def fit(
        self, data, valid=None, *, run_dir: Path | None = None, resume: bool = False, progress: bool = True
    ) -> ImageClassifier:
        """Train on an image Dataset (its train/valid splits) or on ``(images, labels)``."""
        cfg = _config(self.get_params())
        deadline = None if cfg.time_budget is None else time.monotonic() + cfg.time_budget
        timer = Timer()
        train, val, digest = _splits(data, valid)
        train, val = (train, val) if val is not None else holdout(train, cfg.seed)
        self._setup(cfg, train)
        timer.lap("load_backbone")
        floor = portfolio.fit_baselines(self, train, val, cfg.seed, on=cfg.baselines)
        timer.lap("baselines")
        pixels = (_pixels(train[0], self.resize_), _pixels(val[0], self.resize_))
        timer.lap("decode")
        feats = self._features(cfg, digest, pixels, train, val)
        timer.lap("embed")
        head = stages.fit_head(
            self.net_, *feats, seed=cfg.seed, dense_grid=((1.0, 1.0), (10.0, 1.0), (100.0, 1.0))
        )
        self.stages_ = {"head": head.__dict__}
        timer.lap("train_head")
        top = self._stage_top(cfg, pixels, feats, deadline, run_dir, resume, head.best_score)
        self.stages_["top"] = top.__dict__
        timer.lap("train_top")
        portfolio.choose(self, train, val, floor, on=cfg.baselines)
        timer.lap("choose")
        self.timings_ = timer.stages
        self.data_digest_ = digest
        return self

    def _setup(self, cfg: Config, train: tuple) -> None:
        torch.manual_seed(cfg.seed)
        self.classes_ = self._classes_of(train[1])
        name = "efficientnet-lite0" if cfg.backbone == "auto" else cfg.backbone
        spec = get_backbone(name)
        if spec.modality != "image":
            raise ConfigError(
                f"Backbone '{name}' reads {spec.modality}, not images.",
                hint="Use an image backbone, e.g. efficientnet-lite0.",
            )
        self.backbone_ = name
        self.image_size_ = auto_size(train[0]) if cfg.image_size == "auto" else cfg.image_size
        self.resize_ = round(self.image_size_ * BASE_SCALE)  # the side resized to before the centre crop
        _, encoder = spec.load()
        n_stages = len(layers(encoder))
        unfreeze = getattr(cfg, "unfreeze", 0)  # a config without it (multi-label) keeps the backbone frozen
        self.unfrozen_ = max(0, min(3 if unfreeze == "auto" else unfreeze, n_stages))
        self.net_ = _build(encoder, len(self.classes_), spec.feature_dim)
        for p in encoder.parameters():
            p.requires_grad_(False)

    @staticmethod
    def _classes_of(labels: list) -> list[str]:
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise DataError("Training needs at least two classes.", hint="Add images of another class.")
        return classes

    def _features(self, cfg, digest, pixels, train, val) -> tuple[stages.Features, stages.Features]:
        """Stage-1 inputs: pooled features of the centre crops from the frozen (BN-folded) net."""
        pooled = self._pooled(cfg, digest, pixels, len(train[0]))
        index = {c: i for i, c in enumerate(self.classes_)}

        def split(name, labels):
            y = torch.tensor([index.get(label, -1) for label in labels])
            return stages.Features(nn.functional.normalize(pooled[name], dim=-1), y)

        return split("train", train[1]), split("valid", val[1])

    def _pooled(self, cfg, digest: str, pixels: tuple, n_train: int) -> dict[str, torch.Tensor]:
        """``{"train", "valid"}``: the frozen (BN-folded) net's pooled features of the centre crops,
        cached by data and size."""
        size = self.image_size_
        key = f"{self.backbone_}|{digest}|{size}|{n_train}|{cfg.seed}"
        path = (
            paths.subdir(paths.FEATURES) / f"img-{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"
        )
        frozen = self.net_.encoder.fuse_for_inference()

        def compute():
            out = {}
            for name, px in zip(("train", "valid"), pixels):
                out[name] = _embed(frozen, self.net_.normalise, px, size)
            return out

        return cached(path, compute)

    def _stage_top(self, cfg, pixels, feats, deadline, run_dir, resume, baseline) -> stages.StageResult:
        if not self.unfrozen_:
            return stages.StageResult(skipped="unfreeze=0")
        net, start = self.net_, self.net_.n_layers - self.unfrozen_
        stages.set_trainable(net, self.unfrozen_)
        top = list(net.encoder.head.parameters())  # the 1x1 conv to the pooled features trains too
        for p in top:
            p.requires_grad_(True)
        generator = torch.Generator().manual_seed(cfg.seed)
        train_px, valid_px = pixels
        cached, valid = self.stage_inputs(pixels, start, generator)

        def forward(index):
            pick = torch.randint(0, len(cached), (len(index),), generator=generator)
            return net.forward_from(
                start, cached[pick, index].float().contiguous(memory_format=torch.channels_last)
            )

        def forward_eval(index):
            return net.forward_from(start, valid[index].float().contiguous(memory_format=torch.channels_last))

        per_epoch = self._epoch_seconds(train_px, start, cfg.batch_size, forward)
        ckpt = Path(run_dir) / "checkpoint" if run_dir else None
        epochs = (stages.planned_epochs(ckpt) if resume else None) or cfg.epochs_top
        if epochs is None:
            left = float("inf") if deadline is None else deadline - time.monotonic()
            epochs = int(min(12, left // (per_epoch * 1.15)))
        if epochs < 1:
            return stages.StageResult(skipped=f"time budget: an epoch needs ~{per_epoch:.0f}s")
        learn = stages.top_learner(
            net,
            *feats,
            start=start,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            forward=forward,
            forward_eval=forward_eval,
            head_params=list(net.head.dense.parameters()) + top,
        )
        result = stages.train_top(
            learn.unfreeze(self.unfrozen_),
            epochs,
            (cfg.lr_body, cfg.lr_head / 3),
            deadline=deadline,
            baseline=baseline,
            checkpoint_dir=ckpt,
            resume=resume,
            average=cfg.average,
        )
        net.eval()
        return result

    def stage_inputs(self, pixels: tuple, start: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """What the top stages train on: ``[views, N, ...]`` cached outputs of the frozen stages below
        ``start`` for the training images, and the validation images' centre crops.

        The frozen stages run once per view: the centre crop plus ``augment`` random views (resized
        crop, flip, colour jitter) of each image; training draws one per image and step, so stage 2
        costs only the top stages.
        """
        size = self.image_size_
        lower = self.net_.encoder.fuse_for_inference()
        views = [lambda b: augment.center(b, size)]
        views += [lambda b: augment.augment(b, size, generator)] * self.augment
        train_px, valid_px = pixels
        cached = torch.stack([_lower(lower, self.net_.normalise, train_px, view, start) for view in views])
        return cached, _lower(lower, self.net_.normalise, valid_px, views[0], start)

    def _epoch_seconds(self, train_px, start: int, batch_size: int, forward) -> float:
        """The fastest of three timed training steps (the first also builds kernels) times the steps."""
        index = torch.arange(min(batch_size, len(train_px)))
        times = []
        for _ in range(3):
            began = time.perf_counter()
            loss = nn.functional.cross_entropy(forward(index), torch.zeros(len(index), dtype=torch.long))
            loss.backward()
            self.net_.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - began)
        return min(times) * len(train_px) / len(index)

    # ------------------------------------------------------------- predict
    @torch.inference_mode()
    def predict_proba(self, images: list, batch_size: int = 32) -> np.ndarray:
        """Class probabilities (columns in the order of ``classes_``) for paths, bytes, PIL
        images or arrays."""
        self.check_fitted()
        images = list(images) if isinstance(images, list | tuple) else [images]
        if getattr(self, "runtime_", None) is not None:  # a compressed child runs on its runtime
            return self.runtime_.predict_proba(images, batch_size)
        frozen = self._inference_net()
        out = np.zeros((len(images), len(self.classes_)), dtype=np.float32)
        for begin in range(0, len(images), batch_size):
            chunk = images[begin : begin + batch_size]
            base = self.resize_  # the same view as in training: resize, centre crop
            px = torch.stack([to_pixels(item, base, _where(item, begin + i)) for i, item in enumerate(chunk)])
            out[begin : begin + len(chunk)] = self._proba_batch(frozen, augment.center(px, self.image_size_))
        return out

    def _proba_batch(self, net: ImageNet | PixelNet, images: torch.Tensor) -> np.ndarray:
        proba = torch.softmax(net(images), -1)
        if self.tta:
            proba = (proba + torch.softmax(net(images.flip(-1)), -1)) / 2
        return proba.numpy()

    def _inference_net(self) -> ImageNet | PixelNet:
        """The network with BatchNorm folded into the convolutions (built once, after fit/load)."""
        cached_net = getattr(self, "_fused", None)
        if cached_net is None or cached_net[0] is not self.net_:
            cached_net = (self.net_, self.net_.inference())
            self._fused = cached_net
        return cached_net[1]

    def evaluate(self, data, split: str = "test", top_k: int = 12) -> dict:
        """Accuracy, macro-F1, per-class scores, confusion matrix and top losses."""
        images, labels = (data.inputs(split), data.labels(split)) if hasattr(data, "inputs") else data
        if not images:
            raise DataError(
                f"There are no images in the '{split}' split to evaluate on.",
                hint="Evaluate on another split or pass --data FOLDER_OR_ARCHIVE.",
            )
        names = [_where(item, i) for i, item in enumerate(images)]
        return self._report(images, labels, top_k, names=names, column="image")

    def export_onnx(self, folder: str | Path, *, int8: bool = True, images: list | None = None) -> dict:
        """Write a self-contained ONNX folder that :class:`aimass.runtime.image.ImageRuntime` serves
        without torch; returns the largest differences from this model on ``images`` plus a few
        built-in check images (and the files)."""
        self.check_fitted()
        return export_image(self, folder, int8=int8, images=images)

    # ---------------------------------------------------------- save/load
    def save(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` (head and fine-tuned stages) and ``model.json``."""
        self.check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if isinstance(self.net_, PixelNet):  # the portfolio picked the pixel baseline: all of it
            save_file(
                {f"net.{k}": v.contiguous() for k, v in self.net_.state_dict().items()},
                str(path / "model.safetensors"),
            )
            self._write_meta(path, pixels=self.net_.config())
            compressors.saved(self, path)
            return path
        start = self.net_.n_layers - self.unfrozen_
        keep = (
            ["head."] + [f"encoder.stages.{i}." for i in range(start, self.net_.n_layers)] + ["encoder.head."]
        )
        keep = keep if self.unfrozen_ else ["head."]
        state = {k: v for k, v in self.net_.state_dict().items() if any(k.startswith(p) for p in keep)}
        save_file({f"net.{k}": v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
        self._write_meta(path, feature_dim=self.net_.head.dense.in_features)
        compressors.saved(self, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ImageClassifier:
        """Rebuild from a folder written by :meth:`save` (no dataset, no network)."""
        path = Path(path)
        model, meta = cls._read_meta(path)
        if not hasattr(model, "resize_"):  # saved before resize_ was stored
            model.resize_ = round(model.image_size_ * BASE_SCALE)
        if "pixels" in meta:  # the portfolio's pixel baseline: no backbone to load
            model.net_ = PixelNet(**meta["pixels"])
            model.net_.load_state_dict(
                {k[4:]: v for k, v in load_file(str(path / "model.safetensors")).items()}
            )
            model.net_.eval()
            return compressors.restore(model, path, get_task(cls.task))
        _, encoder = get_backbone(model.backbone_).load()
        if model.structure_:
            image_student.apply(encoder, model.structure_)  # before the weights: shapes change
        model.net_ = _build(encoder, len(model.classes_), meta["feature_dim"])
        state = {k[4:]: v for k, v in load_file(str(path / "model.safetensors")).items()}
        cls._load_state(model.net_, state, path, model.backbone_)
        model.net_.eval()
        return compressors.restore(model, path, get_task(cls.task))


@torch.inference_mode()
def _embed(frozen, normalise, pixels: torch.Tensor, size: int, batch_size: int = 64) -> torch.Tensor:
    out = []
    for begin in range(0, len(pixels), batch_size):
        x = normalise(augment.center(pixels[begin : begin + batch_size], size))
        out.append(frozen.forward_features(x.contiguous(memory_format=torch.channels_last)))
    return torch.cat(out)


def _where(item, i: int) -> str:
    return str(item) if isinstance(item, str | Path) else f"image {i}"


# ------------------------------------------------------------------ serving
class PredictRequest(BaseModel):
    """``{"inputs": ["<base64 image>", ...]}`` (or one string); multipart uploads arrive as bytes."""

    inputs: str | bytes | list[str | bytes] = Field(
        ..., description=f"One base64-encoded image or a list of at most {MAX_ITEMS}."
    )

    @field_validator("inputs")
    @classmethod
    def _check(cls, value):
        items = value if isinstance(value, list) else [value]
        return check_items(items, MAX_ITEMS, "image", '{"inputs": ["<base64 of a JPEG>"]}')


def decode_item(item: str | bytes, i: int) -> bytes:
    """Bytes of one request item: raw bytes (multipart) or base64 text (JSON, data: URLs too). ASCII
    whitespace in the text is dropped first: the ``base64`` tool, Python's ``encodebytes`` and Java's
    MIME encoder wrap their lines; anything else that is not base64 is refused."""
    if isinstance(item, bytes):
        data = item
    else:
        text = item.split(",", 1)[1] if item.startswith("data:") else item
        try:
            data = base64.b64decode(text.translate(ASCII_SPACE), validate=True)
        except (binascii.Error, ValueError):
            raise DataError(
                f"inputs[{i}] is not base64.",
                hint="Send each image as base64 text, or upload it as multipart.",
            ) from None
    if len(data) > byte_limit():
        raise TooLargeError(f"inputs[{i}] is {len(data)} bytes; the limit is {byte_limit()} bytes per image.")
    return data


class Handler(ClassifierHandler):
    """The classifier handler (:class:`aimass.tasks.classification.Handler`) on image models; requests
    are decoded and checked in the server."""

    estimator = ImageClassifier
    runtime = "aimass.runtime.image:ImageRuntime"

    def decode_request(self, request: PredictRequest) -> list[bytes]:
        """Each image decoded and checked here, in the server (a corrupt one is a 422, an oversized
        one a 413 naming the limit), then cut to the square the model resizes images to and sent on
        as a BMP file: lossless, at most ~200 KB and quick to read, it is a plain image file for the
        torch model and for the ONNX runtime in a model worker process alike (the worker protocol
        carries text or bytes), and it makes resizing there a no-op.

        Before any image is decoded, every header is read and the pixels of the whole request are
        added up (:func:`aimass.data.images.total_pixels`, ``AIMASS_MAX_REQUEST_PIXELS``): a request
        of small, highly compressed files that would decode to gigapixels is a 413 at once."""
        files = [decode_item(item, i) for i, item in enumerate(request.inputs)]
        total_pixels(files)
        size = self.model.resize_
        return [bmp_bytes(square(data, size, where=f"inputs[{i}]")) for i, data in enumerate(files)]


def _sample_png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@register_task("image-classification")
class ImageClassification(ClassificationTask):
    """The task spec the CLI, server and registry look up (the hooks: :class:`aimass.tasks.base.Task`)."""

    estimator = ImageClassifier
    config = Config
    data_kind = "image"
    item_noun = "images"
    request = PredictRequest
    heavy_decode = True  # decoding images is real work: the server runs it off the event loop
    # a real 8x8 PNG of a handwritten 7 (scikit-learn digits), base64-encoded
    sample_request = {
        "inputs": [
            "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAARUlEQVR42iXGQRVAMAAA0M9znwZE0IAGNLEGIsggAU2m"
            "yUjAYaf/K9Z2GZ6+xhOv+wVbChrjJFoOujPnEfjm4p5DSZrhB4Y6EAnMn8s2AAAAAElFTkSuQmCC"
        ]
    }
    handler = Handler
    runtime = "aimass.runtime.image:ImageRuntime"  # what a model worker process loads (no torch)
    tuner = "aimass.autolearn.tuners:ImageTuner"
    compression = {  # the fine-tuned top stages lose blocks (distill) or expansion channels (prune)
        "distill": "aimass.compressors.image_student:distill",
        "prune": "aimass.compressors.image_student:prune",
    }
    baselines = {"pixels-logreg": "aimass.tasks.baselines:PixelLogReg"}  # the portfolio's floor
    sniff_order = 10  # before text: a folder of images can hold .txt notes
    max_body_bytes = 32 * 1024 * 1024  # base64 JSON or multipart uploads of several photos
    fast_params = {"image_size": 64, "unfreeze": 1, "epochs_top": 1, "batch_size": 16}

    @classmethod
    def sniff(cls, path: Path) -> str | None:
        """A folder, archive or ``path,label`` manifest of images."""
        if not looks_like_images(path):
            return None
        kind = "an archive" if path.is_file() else "a folder"
        return f"{kind} of images (class sub-folders or a path,label manifest)"

    @classmethod
    def features(cls, data, *, lexical: bool = True, progress: bool = False, size: int | None = None):
        """Pooled features of the centre crops (at ``size``, default :func:`auto_size`) from the frozen
        EfficientNet-Lite0 (cached on disk); images have no lexical part."""
        items = data.inputs()
        spec = get_backbone(Config().backbone)
        size = size or auto_size(items)
        content = hashlib.sha256("".join(row["sha256"] for row in data.rows()).encode()).hexdigest()
        key = f"features|{spec.name}|{size}|{content}"  # by content: a relabelled version reuses it
        path = (
            paths.subdir(paths.FEATURES) / f"img-{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"
        )

        def compute():
            _, encoder = spec.load()
            net = _build(encoder, 2, spec.feature_dim)
            pixels = _pixels(items, round(size * BASE_SCALE))
            return {"pooled": _embed(net.encoder.fuse_for_inference(), net.normalise, pixels, size)}

        pooled = cached(path, compute)["pooled"]
        return nn.functional.normalize(pooled.float(), dim=-1).numpy(), None

    @classmethod
    def issue_plots(cls, issues: list[dict], folder: Path, limit: int = 40) -> list[Path]:
        """A grid of the worst ``limit`` flagged images, each with its given and suggested label."""
        from aimass.evaluation.plots import issues_png  # heavy: matplotlib

        return [issues_png(issues[:limit], Path(folder) / "issues.png")]

    @classmethod
    def sample_data(cls, per_class: int = 12) -> tuple[list[bytes], list[str]]:
        """A small real dataset (scikit-learn's scanned handwritten digits 0, 1 and 7, as PNGs)."""
        from sklearn.datasets import load_digits  # heavy: scikit-learn, sample data only

        digits = load_digits()
        images, labels = [], []
        for digit in (0, 1, 7):
            for array in digits.images[digits.target == digit][:per_class]:
                images.append(base64.b64decode(_sample_png((array * 255 / 16).astype(np.uint8))))
                labels.append(str(digit))
        return images, labels

    @classmethod
    def eval_data(cls, path: Path, import_dataset) -> tuple[list, list] | None:
        """Every usable image of a folder, manifest or archive, as held-out data (not stored)."""
        if not (path.exists() and looks_like_images(path)):
            return None
        return read_held_out(path)

    @classmethod
    def plots(cls, report: dict, folder: Path) -> list[Path]:
        from aimass.evaluation.plots import top_losses_png  # heavy: matplotlib

        out = super().plots(report, folder)
        if report.get("top_losses"):
            classes = report.get("confusion_matrix", {}).get("labels")
            out.append(top_losses_png(report["top_losses"], Path(folder) / "top_losses.png", classes=classes))
        return out

    @classmethod
    def cli_inputs(cls, values: list[str]) -> list[str]:
        """Image paths from the command line (each checked when read)."""
        missing = [v for v in values if not Path(v).is_file()]
        if missing:
            raise DataError(f"No such image file: {missing[0]}", hint="Pass paths of image files.")
        return list(values)

    @classmethod
    def request_item(cls, item: str) -> str:
        """A stored image file as base64 text."""
        return base64.b64encode(Path(item).read_bytes()).decode()

    @classmethod
    def curl_item(cls, item) -> str:
        return '"\'"$(base64 -w0 IMAGE.png)"\'"'

    @classmethod
    def calibration(cls, data, n: int = 128, seed: int = 0) -> dict:
        """The int8 graph's calibration images: the first ``n`` of a seeded shuffle of the training
        split of an image Dataset (never valid or test)."""
        if getattr(data, "kind", None) != cls.data_kind:
            return {}
        images = data.inputs("train")
        random.Random(seed).shuffle(images)
        return {"images": images[:n]}
