"""Reading images for the standalone image scripts: one source, written into each exported
``predict.py`` by ``aimass export`` (see :func:`aimass.standalone.script`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
MAX_STRETCH = 4  # longer images are resized only where their centre square lies


def read_image(source: str | Path | bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """Decode a file (or its bytes) as the model was trained: the size checked from the header
    before decoding, EXIF orientation applied, RGB with transparency on white."""
    name = "image" if isinstance(source, bytes) else str(source)
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    if size > max_bytes:
        raise ValueError(f"{name} is {size} bytes, over the limit of {max_bytes}")
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    if image.width * image.height > max_pixels:
        raise ValueError(f"{name} is {image.width}x{image.height} pixels, over the limit of {max_pixels}")
    image.load()
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB; 16- and 32-bit images scaled to 8 bits, transparency composited on white."""
    if image.mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        low, high = (0.0, 65535.0) if image.mode.startswith("I;16") else value_range(values)
        scaled = (values - low) * (255.0 / max(high - low, 1.0))
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def value_range(values: np.ndarray) -> tuple[float, float]:
    """What 0 and 255 stand for in a 32-bit integer image: 8-bit, 16-bit or its own range."""
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low >= 0 and high <= 255:
        return 0.0, 255.0
    if low >= 0 and high <= 65535:
        return 0.0, 65535.0
    return low, high


def square(image: Image.Image, size: int) -> Image.Image:
    """The shorter side resized to ``size`` (bicubic), then the centre square. An image longer than
    ``MAX_STRETCH`` to 1 is resized only where that square lies: resized whole, an 8000x1 image
    would become 1.8M x 224 pixels. As aimass does it (``aimass.backbones.image_preprocess``)."""
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if new_w * new_h <= MAX_STRETCH * size * size:
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        return image.crop((left, top, left + size, top + size))
    box = (left * w / new_w, top * h / new_h, (left + size) * w / new_w, (top + size) * h / new_h)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box)
