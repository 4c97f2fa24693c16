"""``onnx`` and ``onnx-int8``: the serving engine's ONNX export, kept as a version of its own.

The child holds the parent's files plus ``onnx/`` (the graph, its int8 twin, the preprocessing
and the export check); it predicts through the task's light runtime (onnxruntime, no torch).
An image model's int8 graph is calibrated on a seeded sample of the parent's training images
(:data:`CALIBRATION_IMAGES`); a text model's is quantised dynamically and needs no data.
"""

from __future__ import annotations

import importlib
import random
import shutil
import tempfile
import weakref
from pathlib import Path

from aimass.compressors import Compressor, register_compressor
from aimass.errors import ConfigError
from aimass.tasks import get_task

CALIBRATION_IMAGES = 128


@register_compressor("onnx")
class Onnx(Compressor):
    backend = "onnx"
    int8 = False

    def compress(self, model, data):
        if not hasattr(model, "export_onnx"):
            raise ConfigError(
                f"{type(model).__name__} has no ONNX export.", hint="Use --method int8-dynamic."
            )
        folder = Path(tempfile.mkdtemp(prefix="aimass-onnx-"))
        weakref.finalize(model, shutil.rmtree, folder, True)  # the staging goes with the model
        model.export_onnx_report_ = model.export_onnx(folder / "onnx", **calibration(data))
        model.onnx_staged_ = folder / "onnx"
        return self.restore(model, folder)

    def save(self, model, folder: Path) -> None:
        staged = getattr(model, "onnx_staged_", None)
        target = folder / "onnx"
        if staged is not None and Path(staged) != target:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(staged, target)
        elif not target.exists():
            model.export_onnx(target)

    def restore(self, model, folder: Path):
        module, _, name = get_task(model.task).runtime.partition(":")
        runtime = getattr(importlib.import_module(module), name)
        model.runtime_ = runtime(Path(folder) / "onnx", int8=self.int8)
        return model


def calibration(data, n: int = CALIBRATION_IMAGES, seed: int = 0) -> dict:
    """What the export calibrates its int8 graph on: for an image Dataset, the first ``n`` of a
    seeded shuffle of its train split (never valid or test); nothing otherwise (no data, or text,
    whose export quantises dynamically), where the export falls back to its own check inputs."""
    if getattr(data, "kind", None) != "image":
        return {}
    images = data.inputs("train")
    random.Random(seed).shuffle(images)
    return {"images": images[:n]}


def stored_calibration(digest: str | None) -> dict:
    """:func:`calibration` of the stored dataset a version was trained on (by its digest), for
    exports that get no data (deploy, ``aimass export``); nothing when it is no longer stored."""
    from aimass.data.store import load_dataset
    from aimass.errors import NotFoundError

    if not digest:
        return {}
    try:
        return calibration(load_dataset(digest))
    except NotFoundError:
        return {}


@register_compressor("onnx-int8")
class OnnxInt8(Onnx):
    backend = "onnx-int8"
    int8 = True
