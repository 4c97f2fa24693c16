"""``onnx`` and ``onnx-int8``: the serving engine's ONNX export, kept as a version of its own.

The child holds the parent's files plus ``onnx/`` (the graph, its int8 twin, the preprocessing
and the export check); it predicts through the task's light runtime (onnxruntime, no torch).
What the int8 graph is calibrated on is the task's (``Task.calibration``): an image model's on a
seeded sample of 128 of the parent's training images; a text model's is quantised dynamically.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

from aimass.compressors import Compressor, register_compressor
from aimass.data.storage import load_dataset
from aimass.errors import ConfigError, NotFoundError


@register_compressor("onnx")
class Onnx(Compressor):
    backend = "onnx"
    int8 = False

    def compress(self, model, data, spec):
        if not spec.supports_onnx():
            raise ConfigError(
                f"{type(model).__name__} has no ONNX export.", hint="Use --method int8-dynamic."
            )
        folder = Path(tempfile.mkdtemp(prefix="aimass-onnx-"))
        weakref.finalize(model, shutil.rmtree, folder, True)  # the staging goes with the model
        model.export_onnx_report_ = model.export_onnx(folder / "onnx", **calibration(data, spec))
        model.onnx_staged_ = folder / "onnx"
        return self.restore(model, folder, spec)

    def save(self, model, folder: Path) -> None:
        staged = getattr(model, "onnx_staged_", None)
        target = folder / "onnx"
        if staged is not None and Path(staged) != target:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(staged, target)
        elif not target.exists():
            model.export_onnx(target)

    def restore(self, model, folder: Path, spec):
        model.runtime_ = spec.load_runtime(Path(folder) / "onnx", int8=self.int8)
        return model


def calibration(data, spec) -> dict:
    """What the export of a model of the task ``spec`` calibrates its int8 graph on, drawn from its
    training Dataset ``data`` (``Task.calibration``: an image task's first training images); nothing
    for no data, or a task whose export quantises dynamically (the export then uses its own check
    inputs)."""
    return spec.calibration(data) if data is not None else {}


def stored_calibration(digest: str | None, spec) -> dict:
    """:func:`calibration` of the stored dataset a version was trained on (by its digest), for
    exports that get no data (deploy, ``aimass export``); nothing when it is no longer stored."""
    if not digest:
        return {}
    try:
        return calibration(load_dataset(digest), spec)
    except NotFoundError:
        return {}


@register_compressor("onnx-int8")
class OnnxInt8(Onnx):
    backend = "onnx-int8"
    int8 = True
