"""Classify images with the fine-tuned weights of an aimass image classifier, in PyTorch.

Needs only torch, safetensors, numpy and pillow (README.md has the versions). The network
(EfficientNet-Lite0 + a linear head) is defined below; its weights are model.safetensors, so you
can also fine-tune it further or take its 1280-d features. Run it from anywhere:

    python predict.py cat.jpg dog.png

Each image gives one JSON line: {"input": ..., "label": ..., "scores": {label: probability}}.
From Python: ``load(folder)`` gives ``(net, labels, prep)``; ``ImageModel(folder).predict_proba(paths)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
# (blocks, kernel, stride of the first block, expansion, output channels) of the 7 stages
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112))
STAGES += ((4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


# ------------------------------------------------------------------ network
class ConvBN(nn.Module):
    """Convolution with TensorFlow's "same" padding, BatchNorm (eps 1e-3) and optionally ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        pad = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride, kernel = self.conv.stride[0], self.conv.kernel_size[0]
        if stride > 1:  # TF pads the bottom/right one more than the top/left when it must
            pads = []
            for length in (x.shape[-1], x.shape[-2]):
                total = max((-(-length // stride) - 1) * stride + kernel - length, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise convolution, 1x1 projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, mid: int | None = None):
        super().__init__()
        self.shape = (cin, cout, kernel, stride, expand)
        mid = mid or cin * expand  # fewer after pruning
        self.expand = ConvBN(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """The backbone: pixels normalised as ``(x * 255 - 127) / 128`` -> pooled 1280-d features."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 32, 3, 2)
        stages, cin = [], 32
        for blocks, kernel, stride, expand, cout in STAGES:
            stage = [
                MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
                for i in range(blocks)
            ]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = ConvBN(cin, 1280, 1)

    def reshape(self, structure: dict) -> None:
        """A distilled or pruned model's smaller stages: blocks kept per stage, expansion widths."""
        for stage, keep in structure.get("blocks", {}).items():
            self.stages[int(stage)] = nn.Sequential(*[self.stages[int(stage)][i] for i in keep])
        for key, width in structure.get("mid", {}).items():
            stage, block = (int(part) for part in key.split("."))
            self.stages[stage][block] = MBConv(*self.stages[stage][block].shape, mid=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x).mean(dim=(2, 3))


class Head(nn.Module):
    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.dense = nn.Linear(dim, n_classes)


class Classifier(nn.Module):
    """Pixels in [0, 1], ``[N, 3, S, S]`` -> logits: backbone, L2-normalised features, linear head."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.encoder = EfficientNetLite0()
        self.head = Head(1280, n_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.encoder((pixels * 255.0 - 127.0) / 128.0)
        return self.head.dense(F.normalize(features, dim=-1))


class PixelClassifier(nn.Module):
    """Pixels in [0, 1], ``[N, 3, S, S]`` -> logits: (channel mean), flatten, standardise, linear
    (a logistic regression on the raw pixels, what aimass picked when it beat the network)."""

    def __init__(self, side: int, grey: bool, n_classes: int):
        super().__init__()
        self.grey = grey
        dim = side * side * (1 if grey else 3)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.mean(1) if self.grey else pixels
        return self.linear((x.flatten(1) - self.mean) / self.scale)


def load(folder: str | Path = HERE) -> tuple[nn.Module, list[str], dict]:
    """(network in eval mode, labels, preprocessing settings) from an exported folder."""
    folder = Path(folder)
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    prep = json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
    if prep.get("pixels"):
        net = PixelClassifier(**prep["pixels"])
        net.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        return net.eval(), labels, prep
    net = Classifier(len(labels))
    net.encoder.reshape(prep.get("structure") or {})
    net.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return net.eval(), labels, prep


# ------------------------------------------------------------ preprocessing
# shared: image_prep.py (`aimass export` writes that file's code here: predict.py stands alone)
from aimass.standalone.image_prep import ALPHA_MODES, FORMATS, read_image, square, to_rgb, value_range  # noqa: E402, F401

# end shared
# isort: split
# shared: answer.py
from aimass.standalone.answer import labels_of  # noqa: E402, F401

# end shared


def pixels(images: list, prep: dict) -> torch.Tensor:
    """Float RGB in [0, 1], ``[N, 3, S, S]``: the centre crop of each image's :func:`square`."""
    crop, top = prep["image_size"], (prep["resize"] - prep["image_size"]) // 2
    squares = [
        np.asarray(square(read_image(item, prep["max_pixels"], prep["max_bytes"]), prep["resize"]))
        for item in images
    ]
    cut = np.stack(squares)[:, top : top + crop, top : top + crop]
    return torch.from_numpy(np.ascontiguousarray(cut)).permute(0, 3, 1, 2).float() / 255.0


class ImageModel:
    """``predict_proba(images)`` / ``predict(images)`` for paths or bytes."""

    def __init__(self, folder: str | Path = HERE):
        self.net, self.labels, self.prep = load(folder)
        self.sigmoid = self.prep.get("activation") == "sigmoid"  # multi-label: one yes/no score per label
        self.threshold = self.prep.get("threshold")

    @torch.inference_mode()
    def predict_proba(self, images: list, batch_size: int = 32) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            x = pixels(images[start : start + batch_size], self.prep)
            proba = self.net(x).sigmoid() if self.sigmoid else self.net(x).softmax(-1)
            if self.prep.get("tta"):  # the model was trained to average with the mirror image
                proba = (proba + self.net(x.flip(-1)).softmax(-1)) / 2
            out.append(proba.numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, images: list) -> list:
        return [self.answer(row) for row in self.predict_proba(images)]

    def answer(self, row: np.ndarray):
        """One row of probabilities as a label, or (multi-label) every label from the threshold."""
        return labels_of(row, self.labels, self.threshold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images; prints one JSON line per image.")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, BMP or GIF)")
    args = parser.parse_args(argv)
    model = ImageModel(HERE)
    for path, row in zip(args.images, model.predict_proba(args.images)):
        scores = {label: round(float(p), 6) for label, p in zip(model.labels, row)}
        key = "label" if model.threshold is None else "labels"
        print(json.dumps({"input": path, key: model.answer(row), "scores": scores}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
