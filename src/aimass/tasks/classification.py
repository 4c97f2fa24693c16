"""What every classification task shares, written once: the estimator's predict/evaluate/save/load
bookkeeping (:class:`Classifier`), request checks, the response schema, one serving handler
(:class:`Handler`) and the task spec's defaults (:class:`ClassificationTask`). The validation
hold-out is :func:`aimass.data.split.holdout` and the config parser
:func:`aimass.estimator.parse_config` (compressors use them too).

>>> import numpy as np
>>> encode_scores(["neg", "pos"], np.array([[0.2, 0.8]]))["predictions"][0]["label"]
'pos'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from aimass.errors import VersionError
from aimass.estimator import Estimator
from aimass.tasks import portfolio
from aimass.tasks.base import Task, load_ref
from aimass.version import __version__

FORMAT = 1  # of model.json; a model written with another format fails to load with both versions named


class Prediction(BaseModel):
    label: str
    scores: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


def encode_scores(classes: list[str], proba: np.ndarray) -> dict:
    """``{"predictions": [{"label", "scores": {label: probability}}]}`` for rows of ``proba``."""
    return {
        "predictions": [
            {
                "label": classes[int(row.argmax())],
                "scores": {c: round(float(p), 6) for c, p in zip(classes, row)},
            }
            for row in proba
        ]
    }


def check_encodable(text: str, where: str) -> None:
    """Refuse text that cannot be written as UTF-8 (a lone surrogate such as ``"\\ud800"``, which
    JSON's ``\\u`` escapes can carry): a ``ValueError`` naming ``where`` and the position, so the
    request is a 422 before it reaches a batch it could break.

    >>> check_encodable("ok", "inputs[0]")
    >>> check_encodable("a\\ud800", "inputs[3]")
    Traceback (most recent call last):
    ...
    ValueError: inputs[3] has a lone surrogate (U+D800) at character 1; send valid Unicode text
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(text[exc.start])
        raise ValueError(
            f"{where} has a lone surrogate (U+{bad:04X}) at character {exc.start}; send valid Unicode text"
        ) from None


def check_items(items: list, max_items: int, noun: str, example: str) -> list:
    """The request's list of inputs, refused (a ValueError: 422) when empty or longer than ``max_items``."""
    if not items:
        raise ValueError(f"send at least one {noun}, e.g. {example}")
    if len(items) > max_items:
        raise ValueError(f"send at most {max_items} {noun}s per request (got {len(items)}); split the list")
    return items


# ----------------------------------------------------------------- estimator
class Classifier(Estimator):
    """The bookkeeping every classifier estimator shares. A subclass implements ``fit``,
    ``predict_proba`` and ``_build(meta, path)`` (the network from the saved metadata) and lists
    what it saves in ``FITTED`` (learned attributes) and ``_extra_meta()``."""

    FITTED: ClassVar[tuple[str, ...]] = ("classes_", "data_digest_")
    PORTFOLIO: ClassVar[tuple[str, ...]] = ("chosen_", "candidates_")  # saved by every classifier

    def predict(self, items: list) -> list[str]:
        """The most probable label of each input."""
        proba = self.predict_proba(items)
        return [self.classes_[i] for i in proba.argmax(1)]

    def _report(self, items: list, labels: list, top_k: int, names: list | None = None, column: str = "text"):
        """Accuracy, macro-F1, per-class scores, confusion matrix, top losses and unknown labels
        (a DataError when no label of the data is one of the model's classes)."""
        from aimass.evaluation import check_labels, classification_report, top_losses  # heavy: scikit-learn

        check_labels(labels, self.classes_)
        proba = self.predict_proba(items)
        predicted = [self.classes_[i] for i in proba.argmax(1)]
        report = classification_report(list(labels), predicted, self.classes_)
        report["top_losses"] = top_losses(names or items, list(labels), proba, self.classes_, top_k)
        if column != "text":
            for row in report["top_losses"]:
                row[column] = row.pop("text")
        unknown = sorted(set(labels) - set(self.classes_))
        if unknown:
            report["unknown_labels"] = unknown
        chosen = portfolio.summary(self)
        if chosen:
            report["portfolio"] = chosen
        return report

    # ---------------------------------------------------------- save/load
    def _write_meta(self, path: Path, **extra) -> None:
        """``model.json``: format, task, aimass version, params, the ``FITTED`` state, ``extra``."""
        fitted = {k: getattr(self, k) for k in self.FITTED}
        fitted.update({k: getattr(self, k) for k in self.PORTFOLIO if hasattr(self, k)})
        if getattr(self, "structure_", None):  # a distilled or pruned child's smaller network
            fitted["structure_"] = self.structure_
        meta = {
            "format": FORMAT,
            "task": self.task,
            "aimass_version": __version__,
            "params": self.get_params(),
            "fitted": fitted,
            **extra,
        }
        (Path(path) / "model.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))

    @classmethod
    def _read_meta(cls, path: Path) -> tuple[Classifier, dict]:
        """An unfitted model with the saved params and fitted state set, and ``model.json``;
        a VersionError naming both versions when another format wrote it."""
        meta = json.loads((Path(path) / "model.json").read_text())
        if meta.get("format") != FORMAT:
            raise VersionError(
                f"{path} was written by aimass {meta.get('aimass_version')} (format "
                f"{meta.get('format')}); this is aimass {__version__} (format {FORMAT}).",
                hint="Retrain the model with this version, or install the version that wrote it.",
            )
        model = cls(**meta["params"])
        model.structure_ = None
        model.chosen_, model.candidates_ = portfolio.NETWORK, {}  # a model saved before the portfolio
        for key, value in meta["fitted"].items():
            setattr(model, key, value)
        return model, meta

    @staticmethod
    def _load_state(net, state: dict, path: Path, backbone: str) -> None:
        """Load the saved tensors into ``net``; a VersionError when they do not fit it."""
        unknown = set(state) - set(net.state_dict())
        if unknown:
            raise VersionError(f"{path}: weights do not fit backbone {backbone}: {sorted(unknown)[:3]}")
        net.load_state_dict(state, strict=False)


# ------------------------------------------------------------------- serving
class Handler:
    """LitServe-style handler: setup / decode_request / predict / encode_response.

    A task's handler sets ``estimator`` and ``runtime`` (``"module:Class"`` of its ONNX runtime)."""

    estimator: ClassVar[type]
    runtime: ClassVar[str]

    def __init__(self, model_dir: Path | None = None, model=None):
        self.model_dir = model_dir
        self.model = model

    def setup(self, device: str = "cpu", backend: str = "torch") -> None:
        """Load the model; ``backend`` ``onnx``/``onnx-int8`` serves the version's exported folder."""
        if backend.startswith("onnx"):
            self.model = load_ref(self.runtime)(Path(self.model_dir) / "onnx", int8=backend == "onnx-int8")
        elif self.model is None:
            self.model = self.estimator.load(self.model_dir)

    def decode_request(self, request) -> list:
        return request.inputs

    def predict(self, items: list) -> np.ndarray:
        return self.model.predict_proba(items)

    def encode_response(self, proba: np.ndarray) -> dict[str, Any]:
        return encode_scores(self.model.classes_, proba)


class ClassificationTask(Task):
    """Defaults of a classification task spec: the shared response schema and a confusion-matrix plot."""

    response = PredictResponse

    @classmethod
    def plots(cls, report: dict, folder: Path) -> list[Path]:
        from aimass.evaluation.plots import confusion_png  # heavy: matplotlib

        return [confusion_png(report, Path(folder) / "confusion_matrix.png")]
