"""The pixel baseline as a network: pixels -> (grey) -> flatten -> standardise -> linear.

A logistic regression on the raw pixels, written as a tiny torch module so that a model whose
portfolio picked it (:mod:`aimass.tasks.portfolio`) predicts, saves, exports to ONNX and serves
through the same paths as the fine-tuned backbone. The resize happens before it, in the shared
preprocessing (:mod:`aimass.backbones.image_preprocess`): the model's ``image_size_`` is the
baseline's side, so the squares it gets are already ``side x side``.

>>> import torch
>>> net = PixelNet(side=8, grey=True, n_classes=3)
>>> net(torch.rand(2, 3, 8, 8)).shape
torch.Size([2, 3])
>>> net.dim
64
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["PixelNet", "flat"]


def flat(pixels: torch.Tensor, grey: bool) -> torch.Tensor:
    """Float pixels ``[N, 3, S, S]`` in [0, 1] -> ``[N, S*S]`` (the channel mean) or ``[N, 3*S*S]``."""
    x = pixels.mean(1) if grey else pixels
    return x.flatten(1)


class PixelNet(nn.Module):
    """A linear classifier over standardised pixels (``mean``/``scale`` are buffers, so the
    standardisation travels with the weights)."""

    def __init__(self, side: int, grey: bool, n_classes: int):
        super().__init__()
        self.side, self.grey = int(side), bool(grey)
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("scale", torch.ones(self.dim))
        self.linear = nn.Linear(self.dim, n_classes)

    @property
    def dim(self) -> int:
        return self.side * self.side * (1 if self.grey else 3)

    def config(self) -> dict:
        """What :meth:`__init__` needs to rebuild it (stored in ``model.json``)."""
        return {"side": self.side, "grey": self.grey, "n_classes": self.linear.out_features}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits for float images in [0, 1], ``[N, 3, side, side]``."""
        return self.linear((flat(pixels, self.grey) - self.mean) / self.scale)

    def inference(self) -> PixelNet:
        """The network to predict and export with (nothing to fold: itself)."""
        return self.eval()

    @torch.no_grad()
    def set_weights(self, mean: np.ndarray, scale: np.ndarray, weight: torch.Tensor, bias: torch.Tensor):
        """Standardisation and linear layer (one row per class) from a fitted logistic regression."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(bias)
        return self.eval()
