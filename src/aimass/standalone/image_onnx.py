"""Classify images with an exported aimass image classifier.

Needs only onnxruntime, numpy and pillow (README.md has the versions). Run it from anywhere:

    python predict.py cat.jpg dog.png
    python predict.py --file images.txt          # one path per line, or a JSON list of paths

Each image gives one JSON line: {"input": ..., "label": ..., "scores": {label: probability}}; a
multi-label model's (``preprocessing.json`` has ``"activation": "sigmoid"`` and a ``threshold``)
gives {"input": ..., "labels": [every label scoring at least the threshold, else the best one],
"scores": ...}.
From Python: ``ImageModel(folder).predict_proba(paths_or_bytes)`` gives one row per image, one
column per label of labels.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
# shared: image_prep.py (`aimass export` writes that file's code here: predict.py stands alone)
from aimass.standalone.image_prep import ALPHA_MODES, FORMATS, read_image, square, to_rgb, value_range  # noqa: E402, F401

# end shared
# isort: split
# shared: answer.py
from aimass.standalone.answer import labels_of  # noqa: E402, F401

# end shared


class ImageModel:
    """The exported model: ``predict_proba(images)`` and ``predict(images)``.

    Args:
        folder: the exported folder (default: the one this file is in).
        int8: use ``model.int8.onnx`` (smaller and faster; scores differ slightly).
        threads: CPU threads for onnxruntime (default: its own choice).
    """

    def __init__(self, folder: str | Path = HERE, int8: bool = False, threads: int | None = None):
        folder = Path(folder)
        self.labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        self.prep = json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
        self.sigmoid = self.prep.get("activation") == "sigmoid"  # multi-label: one yes/no score per label
        self.threshold = self.prep.get("threshold")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        graph = folder / ("model.int8.onnx" if int8 else "model.onnx")
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def pixels(self, images: list) -> np.ndarray:
        """The graph's input: float32 RGB in [0, 1], ``[N, 3, size, size]``, centre crops."""
        prep, crop = self.prep, self.prep["image_size"]
        squares = np.stack(
            [
                np.asarray(square(read_image(item, prep["max_pixels"], prep["max_bytes"]), prep["resize"]))
                for item in images
            ]
        )
        top = (prep["resize"] - crop) // 2
        cut = squares[:, top : top + crop, top : top + crop].transpose(0, 3, 1, 2)
        return cut.astype(np.float32) / np.float32(255.0)

    def predict_proba(self, images: list, batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(images), len(self.labels)), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            pixels = self.pixels(images[start : start + batch_size])
            logits = self.session.run(["logits"], {"pixels": pixels})[0]
            out[start : start + batch_size] = 1 / (1 + np.exp(-logits)) if self.sigmoid else softmax(logits)
        return out

    def predict(self, images: list) -> list:
        return [self.answer(row) for row in self.predict_proba(images)]

    def answer(self, row: np.ndarray):
        """One row of probabilities as a label, or (multi-label) every label from the threshold."""
        return labels_of(row, self.labels, self.threshold)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def read_paths(path: str) -> list[str]:
    """A JSON list of paths, or one path per non-empty line."""
    content = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        return [str(p) for p in json.loads(content)]
    return [line.strip() for line in content.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images; prints one JSON line per image.")
    parser.add_argument("images", nargs="*", help="image files (JPEG, PNG, WebP, BMP or GIF)")
    parser.add_argument("--file", help="a UTF-8 file: one image path per line, or a .json list of paths")
    parser.add_argument("--int8", action="store_true", help="use the int8 model (smaller, faster)")
    args = parser.parse_args(argv)
    paths = list(args.images) + (read_paths(args.file) if args.file else [])
    if not paths:
        parser.error("give at least one image file, or --file FILE")
    model = ImageModel(HERE, int8=args.int8)
    for path, row in zip(paths, model.predict_proba(paths)):
        scores = {label: round(float(p), 6) for label, p in zip(model.labels, row)}
        key = "label" if model.threshold is None else "labels"
        print(json.dumps({"input": path, key: model.answer(row), "scores": scores}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
