"""Batch image augmentation in torch: random resized crop, flip and light colour jitter.

Images are kept as ``uint8`` tensors ``[N, 3, S, S]`` at a base size a little larger than
the training size; :func:`center` gives the evaluation view and :func:`augment` a random
training view of the same size. Both return float tensors in ``[0, 1]``.

>>> import torch
>>> batch = torch.randint(0, 255, (4, 3, 36, 36), dtype=torch.uint8)
>>> augment(batch, 32, torch.Generator().manual_seed(0)).shape
torch.Size([4, 3, 32, 32])
>>> center(batch, 32).shape
torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def center(images: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` crop, as floats in [0, 1]."""
    top = (images.shape[-2] - size) // 2
    left = (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size].float() / 255.0


def augment(
    images: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    jitter: float = 0.2,
) -> torch.Tensor:
    """A random resized crop of each image, a horizontal flip half of the time and brightness /
    contrast / saturation jitter of up to ``jitter``."""
    out = torch.empty(len(images), 3, size, size)
    for i, image in enumerate(images):
        top, left, h, w = _crop_box(image.shape[-2], image.shape[-1], scale, ratio, generator)
        crop = image[:, top : top + h, left : left + w].float().unsqueeze(0) / 255.0
        out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[
            0
        ]
    flip = torch.rand(len(images), generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return _jitter(out, jitter, generator) if jitter else out


def _crop_box(height: int, width: int, scale, ratio, generator) -> tuple[int, int, int, int]:
    area = height * width
    for _ in range(10):
        target = area * _uniform(*scale, generator)
        aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), generator))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    return 0, 0, height, width


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _jitter(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    n = len(x)

    def factors():
        return (1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * amount).to(x.dtype)

    x = x * factors()  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factors() + mean  # contrast
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * factors() + grey  # saturation
    return x.clamp(0.0, 1.0)
