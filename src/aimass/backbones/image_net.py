"""The image classifier's network and preprocessing, next to the backbone it wraps: images to
``uint8`` pixel squares (the decode the torch-free runtime shares), the backbone plus an
L2-normalised linear head (:class:`ImageNet`), and the cached outputs of its lower stages.

Used by the ``image-classification`` task, its ONNX export, its compressors and its tuner; none of
them reaches into the task file for these.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aimass.backbones import layers
from aimass.backbones.efficientnet import normalise
from aimass.backbones.image_preprocess import BASE_SCALE, square
from aimass.backbones.text_net import Head

__all__ = ["BASE_SCALE", "ImageNet", "build", "lower", "pixels", "to_pixels"]


def to_pixels(item, size: int, where: str = "") -> torch.Tensor:
    """One image (path, bytes, PIL image or array) as ``uint8 [3, size, size]``: the shorter side
    resized to ``size``, then the centre square (:func:`aimass.backbones.image_preprocess.square`, which the
    torch-free runtime uses too)."""
    return torch.from_numpy(np.asarray(square(item, size, where), dtype=np.uint8).copy()).permute(2, 0, 1)


def pixels(items: list, size: int) -> torch.Tensor:
    """Many images as ``uint8 [N, 3, size, size]`` (see :func:`to_pixels`)."""
    out = torch.empty(len(items), 3, size, size, dtype=torch.uint8)
    for i, item in enumerate(items):
        out[i] = to_pixels(item, size, where=item if isinstance(item, str) else f"image {i}")
    return out


class ImageNet(nn.Module):
    """Backbone + linear head over the L2-normalised pooled features."""

    def __init__(self, encoder: nn.Module, head: Head, normalise):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.normalise = normalise

    @property
    def n_layers(self) -> int:
        return len(layers(self.encoder))

    def forward_from(self, start: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.normalize(self.encoder.features_from(start, hidden), dim=-1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for float images in [0, 1], ``[N, 3, H, W]``."""
        x = self.normalise(images).contiguous(memory_format=torch.channels_last)
        return self.forward_from(0, self.encoder.stem_forward(x))

    def inference(self) -> ImageNet:
        """A copy to predict and export with: BatchNorm folded into the convolutions."""
        self.eval()
        return ImageNet(self.encoder.fuse_for_inference(), self.head, self.normalise).eval()


def build(encoder, n_classes: int, feature_dim: int) -> ImageNet:
    encoder = encoder.to(memory_format=torch.channels_last)
    return ImageNet(encoder, Head(feature_dim, n_classes), normalise).eval()


@torch.inference_mode()
def lower(frozen, normalise, pixels: torch.Tensor, view, start: int, batch_size: int = 64) -> torch.Tensor:
    """Output (fp16) of the stem and stages ``0..start-1`` for ``view(batch)`` of every image."""
    out = []
    for begin in range(0, len(pixels), batch_size):
        x = normalise(view(pixels[begin : begin + batch_size]))
        out.append(
            frozen.forward_until(start, x.contiguous(memory_format=torch.channels_last)).half().contiguous()
        )
    return torch.cat(out)
