"""Image classification from an exported folder with onnxruntime, Pillow and numpy only (no torch).

The folder (written by :meth:`aimass.tasks.image_classification.ImageClassifier.export_onnx`):

* ``model.onnx`` / ``model.int8.onnx``: ``pixels`` (float32 RGB in [0, 1], ``[N, 3, S, S]``) ->
  ``logits``; the backbone's normalisation, and the mirror-image average of a model trained with
  ``tta``, are inside the graph;
* ``runtime.json``: classes, the crop size ``S``, the size the shorter side is resized to first;
  for a multi-label model the ``sigmoid`` activation and the threshold.

The preprocessing is :mod:`aimass.backbones.image_preprocess`, which the torch estimator uses
too, so both see the same pixels: decode with the platform limits
(:func:`aimass.data.images.open_image`: pixel limit checked from the header, EXIF orientation,
RGB), resize the shorter side (bicubic), take the centre square, then the centre crop.

Example:
    >>> from aimass.runtime.image import ImageRuntime
    >>> runtime = ImageRuntime("models/digits/v1/onnx")        # doctest: +SKIP
    >>> runtime.predict_proba(["seven.png"]).shape             # doctest: +SKIP
    (1, 3)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aimass.backbones.image_preprocess import center, square, where
from aimass.runtime.onnx_export import session, softmax


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
        self.activation = meta.get("activation", "softmax")  # sigmoid: a multi-label model's labels
        self.threshold_ = meta.get("threshold")
        self.image_size_ = meta["image_size"]
        self.resize_ = meta["resize"]
        self.session = session(folder / ("model.int8.onnx" if int8 else "model.onnx"), threads)

    def predict_proba(self, images: list, batch_size: int = 32) -> np.ndarray:
        """Class probabilities for paths, bytes (what a model worker receives), PIL images or arrays."""
        images = list(images) if isinstance(images, list | tuple) else [images]
        out = np.zeros((len(images), len(self.classes_)), dtype=np.float32)
        for begin in range(0, len(images), batch_size):
            chunk = images[begin : begin + batch_size]
            logits = self.logits(self.pixels(chunk, begin))
            out[begin : begin + len(chunk)] = (
                1 / (1 + np.exp(-logits)) if self.activation == "sigmoid" else softmax(logits)
            )
        return out

    def pixels(self, images: list, offset: int = 0) -> np.ndarray:
        """The graph's input for ``images``: float32 ``[N, 3, S, S]`` in [0, 1]."""
        squares = [square(item, self.resize_, where(item, offset + i)) for i, item in enumerate(images)]
        return center(np.stack([np.asarray(s, dtype=np.uint8) for s in squares]), self.image_size_)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"pixels": pixels})[0]

    def predict(self, images: list) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(images).argmax(axis=1)]
