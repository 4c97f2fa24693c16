"""How an image becomes the image backbone's input, shared by the torch estimator
(:mod:`aimass.backbones.image_net`) and the torch-free ONNX runtime (:mod:`aimass.runtime.image`):
decode with the platform limits (:func:`aimass.data.images.open_image`: pixel limit checked from the
header, EXIF orientation, RGB), resize the shorter side (bicubic), take the centre square, then the
centre crop. Pillow and numpy only: no torch.

An image longer than :data:`MAX_STRETCH` to 1 is resized only where its centre square lies (Pillow's
``box``): resizing it whole would make the shorter side ``size`` pixels and the longer one
thousands of times that (a 100-byte 8000x1 PNG becomes 1.8M x 224 pixels, gigabytes). Up to that
ratio the whole image is resized, then cut, as it always was: the pixels a model was trained on
stay the same.

>>> import numpy as np
>>> square(np.zeros((40, 60, 3), dtype=np.uint8), 32).size
(32, 32)
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from aimass.data.images import open_image

BASE_SCALE = 256 / 224  # images are kept this much larger than the training size, for crops
MAX_STRETCH = 4  # longer images are resized only where their centre square lies


def square(item, size: int, where: str = "") -> Image.Image:
    """One image (path, bytes, PIL image or array) as an RGB ``size x size`` square: the shorter
    side resized to ``size`` (bicubic), then the centre square (see :func:`centre_square`)."""
    if isinstance(item, Image.Image):
        image = item.convert("RGB")
    elif isinstance(item, np.ndarray):
        array = item if item.dtype == np.uint8 else np.clip(item * (255 / max(item.max(), 1e-9)), 0, 255)
        image = Image.fromarray(array.astype(np.uint8)).convert("RGB")
    else:
        image = open_image(item, where=where)
    return centre_square(image, size)


def centre_square(image: Image.Image, size: int) -> Image.Image:
    """The centre ``size x size`` square of ``image`` with its shorter side resized to ``size``
    (bicubic). Never more than :data:`MAX_STRETCH` squares of pixels are made: a longer image is
    resized only where the square lies, which reads the same source pixels.

    >>> centre_square(Image.new("RGB", (8000, 1), "red"), 224).getpixel((0, 0))
    (255, 0, 0)
    """
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if new_w * new_h <= MAX_STRETCH * size * size:
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        return image.crop((left, top, left + size, top + size))
    box = (left * w / new_w, top * h / new_h, (left + size) * w / new_w, (top + size) * h / new_h)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box)


def center(squares: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size x size`` crop of ``uint8 [N, H, W, 3]``, as float32 ``[N, 3, size, size]``
    in [0, 1]."""
    top, left = (squares.shape[1] - size) // 2, (squares.shape[2] - size) // 2
    crop = squares[:, top : top + size, left : left + size].transpose(0, 3, 1, 2)
    return crop.astype(np.float32) / np.float32(255.0)


def bmp_bytes(image: Image.Image) -> bytes:
    """``image`` as an uncompressed BMP file: lossless and quick to write and read back."""
    buffer = io.BytesIO()
    image.save(buffer, format="BMP")
    return buffer.getvalue()


def where(item, i: int) -> str:
    """The name an image goes by in error messages."""
    return str(item) if isinstance(item, str | Path) else f"image {i}"
