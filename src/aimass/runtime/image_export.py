"""Write a fitted ImageClassifier as a self-contained ONNX folder (see :mod:`aimass.runtime.image`)
and check it against torch.

The graph takes the centre crop as float pixels in [0, 1] and holds everything after it: the
backbone's normalisation, the network with BatchNorm folded into its convolutions, and, for a
model trained with ``tta``, the average with the mirror image. Decoding, resizing and cropping stay
outside (Pillow), in the one function both torch and the runtime call.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from aimass.backbones.image_net import to_pixels
from aimass.backbones.image_preprocess import center, square, where
from aimass.data.images import byte_limit, pixel_limit
from aimass.runtime.image import ImageRuntime
from aimass.runtime.onnx_export import export_graph, quantize_static_int8
from aimass.train import augment
from aimass.version import __version__

FORMAT = 1
CALIBRATION_BATCH = 16


class ImageLogits(nn.Module):
    """Pixels -> logits; with ``tta`` the log of the mean of the image's and its mirror image's
    probabilities, so that a softmax of the output is exactly what the estimator averages."""

    def __init__(self, net: nn.Module, tta: bool):
        super().__init__()
        self.net, self.tta = net, tta

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.net(pixels)
        if not self.tta:
            return logits
        both = torch.stack([logits.log_softmax(-1), self.net(pixels.flip(-1)).log_softmax(-1)])
        return torch.logsumexp(both, 0) - math.log(2.0)


def check_images() -> list[bytes]:
    """Small images that exercise the preprocessing: wide and tall, smaller and larger than the
    model's size, grey with alpha, and a JPEG whose EXIF says to rotate it."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:90, 0:160]
    gradient = np.stack([x * 255 // 159, y * 255 // 89, (x + y) * 255 // 248], -1).astype(np.uint8)
    noise = rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)
    grey_alpha = np.stack([y[:64, :64] * 4 % 256, x[:64, :64] * 4 % 256], -1).astype(np.uint8)
    out = []
    for array, fmt, mode in ((gradient, "PNG", "RGB"), (noise, "PNG", "RGB"), (grey_alpha, "PNG", "LA")):
        buffer = io.BytesIO()
        Image.fromarray(array, mode=mode).save(buffer, format=fmt)
        out.append(buffer.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, format="JPEG", quality=90, exif=exif)
    return out + [buffer.getvalue()]


def graph_net(model) -> ImageLogits:
    """What the graph computes: a fresh BatchNorm-folded copy of the net (built outside inference
    mode, so the tracer can use its weights) behind :class:`ImageLogits`. A model whose portfolio
    picked the pixel baseline (:class:`aimass.backbones.pixel_net.PixelNet`) is its own copy."""
    return ImageLogits(model.net_.inference(), bool(model.tta)).eval()


def export_image(model, folder: str | Path, *, int8: bool = True, images: list | None = None) -> dict:
    """Export ``model`` to ``folder``; returns the files and the largest differences from torch.

    ``images`` (e.g. a sample of the training images) and the built-in :func:`check_images` are
    what the export is checked on and what the int8 graph is calibrated on: its activations are
    quantised statically (dynamic quantisation leaves a CNN's convolutions in float and loses tens
    of accuracy points), with ranges measured on these images preprocessed as at inference. Without
    ``images`` the check images alone calibrate it: it still works, less accurately.
    """
    began = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    given = list(images or [])
    images = given + check_images()
    size = model.image_size_
    net = graph_net(model)
    example = torch.rand(2, 3, size, size)
    export_graph(net, (example,), folder / "model.onnx", ["pixels"], {"pixels": {0: "batch"}})
    meta = {
        "format": FORMAT,
        "task": model.task,
        "classes": list(model.classes_),
        "activation": getattr(model, "activation", "softmax"),  # sigmoid: one yes/no per label
        "threshold": getattr(model, "threshold_", None),
        "input": "pixels: float32 RGB in [0, 1], [batch, 3, image_size, image_size]",
        "image_size": size,
        "resize": model.resize_,
        "resample": "bicubic",
        "normalisation": "in the graph",
        "tta": "in the graph" if model.tta else False,
        "max_pixels": pixel_limit(),
        "max_bytes": byte_limit(),
        "backbone": model.backbone_,
        "chosen": getattr(model, "chosen_", "network"),
        "aimass_version": __version__,
    }
    if int8:
        feeds = calibration_feeds(images, meta["resize"], size)
        quantize_static_int8(folder / "model.onnx", folder / "model.int8.onnx", feeds)
        meta["int8"] = {
            "method": "static",
            "format": "QOperator",
            "weights": "int8, per channel",
            "activations": "uint8, min/max calibration",
            "calibration_images": len(images),
            "calibrated_on": "the images given and the check images" if given else "the check images only",
        }
    (folder / "runtime.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    report = {"seconds": 0.0, **check(model, net, folder, images, int8)}
    report["files"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    report["seconds"] = round(time.perf_counter() - began, 2)
    (folder / "export.json").write_text(json.dumps(report, indent=2))
    return report


def calibration_feeds(images: list, resize: int, size: int) -> list[dict[str, np.ndarray]]:
    """``images`` as the graph's input, in batches, preprocessed exactly as
    :meth:`aimass.runtime.image.ImageRuntime.pixels` does it: the square, its centre crop, float32
    pixels in [0, 1]."""
    feeds = []
    for begin in range(0, len(images), CALIBRATION_BATCH):
        chunk = images[begin : begin + CALIBRATION_BATCH]
        squares = [square(item, resize, where(item, begin + i)) for i, item in enumerate(chunk)]
        feeds.append({"pixels": center(np.stack([np.asarray(s, dtype=np.uint8) for s in squares]), size)})
    return feeds


@torch.inference_mode()
def check(model, net: ImageLogits, folder: Path, images: list, int8: bool) -> dict:
    """Largest absolute differences between torch and the exported graph(s), on the same images."""
    fp32 = ImageRuntime(folder)
    base = torch.stack([to_pixels(item, fp32.resize_) for item in images])
    torch_pixels = augment.center(base, fp32.image_size_)
    pixels = fp32.pixels(images)
    want = model.predict_proba(images)
    out = {
        "max_abs_diff_pixels": float(np.abs(pixels - torch_pixels.numpy()).max()),
        "max_abs_diff_logits": float(np.abs(fp32.logits(pixels) - net(torch_pixels).numpy()).max()),
        "max_abs_diff_proba": float(np.abs(fp32.predict_proba(images) - want).max()),
        "check_images": len(images),
    }
    if int8:
        q = ImageRuntime(folder, int8=True).predict_proba(images)
        out["int8_max_abs_diff_proba"] = float(np.abs(q - want).max())
        out["int8_same_label"] = float(np.mean(q.argmax(1) == want.argmax(1)))
    return out
