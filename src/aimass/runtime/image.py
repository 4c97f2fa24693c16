"""Image classification from an exported folder with onnxruntime, Pillow and numpy only (no torch).

The folder (written by :meth:`aimass.tasks.image_classification.ImageClassifier.export_onnx`):

* ``model.onnx`` / ``model.int8.onnx``: ``pixels`` (float32 RGB in [0, 1], ``[N, 3, S, S]``) ->
  ``logits``; the backbone's normalisation, and the mirror-image average of a model trained with
  ``tta``, are inside the graph;
* ``runtime.json``: classes, the crop size ``S``, the size the shorter side is resized to first.

The preprocessing here is also what the torch estimator uses (:func:`square`), so both see the
same pixels: decode with the platform limits (:func:`aimass.data.images.open_image`: pixel limit
checked from the header, EXIF orientation, RGB), resize the shorter side (bicubic), take the
centre square, then the centre crop.

Example:
    >>> from aimass.runtime.image import ImageRuntime
    >>> runtime = ImageRuntime("models/digits/v1/onnx")        # doctest: +SKIP
    >>> runtime.predict_proba(["seven.png"]).shape             # doctest: +SKIP
    (1, 3)
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from aimass.data.images import open_image
from aimass.runtime.onnx_export import session, softmax


def square(item, size: int, where: str = "") -> Image.Image:
    """One image (path, bytes, PIL image or array) as an RGB ``size x size`` square: the shorter
    side resized to ``size`` (bicubic), then the centre square."""
    if isinstance(item, Image.Image):
        image = item.convert("RGB")
    elif isinstance(item, np.ndarray):
        array = item if item.dtype == np.uint8 else np.clip(item * (255 / max(item.max(), 1e-9)), 0, 255)
        image = Image.fromarray(array.astype(np.uint8)).convert("RGB")
    else:
        image = open_image(item, where=where)
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


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


class ImageRuntime:
    """``predict_proba(images)`` like the estimator's, from an ONNX folder.

    Args:
        folder: an exported folder.
        int8: use ``model.int8.onnx``.
        threads: intra-op threads (default: every core this process may use).
    """

    def __init__(self, folder: str | Path, *, int8: bool = False, threads: int | None = None):
        folder = Path(folder)
        self.folder, self.int8 = folder, int8
        meta = json.loads((folder / "runtime.json").read_text())
        self.classes_ = meta["classes"]
        self.image_size_ = meta["image_size"]
        self.resize_ = meta["resize"]
        self.session = session(folder / ("model.int8.onnx" if int8 else "model.onnx"), threads)

    def predict_proba(self, images: list, batch_size: int = 32) -> np.ndarray:
        """Class probabilities for paths, bytes (what a model worker receives), PIL images or arrays."""
        images = list(images) if isinstance(images, list | tuple) else [images]
        out = np.zeros((len(images), len(self.classes_)), dtype=np.float32)
        for begin in range(0, len(images), batch_size):
            chunk = images[begin : begin + batch_size]
            out[begin : begin + len(chunk)] = softmax(self.logits(self.pixels(chunk, begin)))
        return out

    def pixels(self, images: list, offset: int = 0) -> np.ndarray:
        """The graph's input for ``images``: float32 ``[N, 3, S, S]`` in [0, 1]."""
        squares = [square(item, self.resize_, where(item, offset + i)) for i, item in enumerate(images)]
        return center(np.stack([np.asarray(s, dtype=np.uint8) for s in squares]), self.image_size_)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"pixels": pixels})[0]

    def predict(self, images: list) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(images).argmax(axis=1)]
