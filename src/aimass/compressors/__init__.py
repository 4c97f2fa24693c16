"""Compressors: a registry of methods, each a fitted model in and a new fitted model out.

A method is one module in this package that registers a :class:`Compressor` subclass::

    @register_compressor("onnx-int8")
    class OnnxInt8(Compressor):
        def compress(self, model, data, spec):   # a new model (the parent is left alone)
            ...
        def save(self, model, folder):           # files the estimator's own save does not write
            ...
        def restore(self, model, folder, spec):  # re-applied when the saved child is loaded
            ...

A compressed model carries ``compression_`` (method, settings, parent); the task estimators
call :func:`saved` at the end of ``save`` and :func:`restore` at the end of ``load``, so a child
version saves, loads, evaluates and serves like any other version.

Compressors sit below the tasks: what differs per task comes in as ``spec``, the model's task
spec (:class:`aimass.tasks.base.Task`: its ``compression`` strategies, ONNX runtime and
calibration data), never from a lookup in the task registry.

>>> from aimass.compressors import available_compressors
>>> "onnx-int8" in available_compressors()
True
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

from aimass.errors import NotFoundError

T = TypeVar("T")
_METHODS: dict[str, type[Compressor]] = {}
FILE = "compression.json"


class Compressor:
    """Base class. ``__init__`` stores the method's settings; nothing else happens there.

    ``backend``: how the server runs the result by default (``onnx``, ``onnx-int8``; ``torch``:
    only on torch; None: like any version of its task).
    ``per_task``: what the method does depends on the task's network; it supports the tasks whose
    spec names a strategy for it (``Task.compression``) and runs that strategy (:meth:`strategy`).
    ``spec`` below is the model's task spec (:class:`aimass.tasks.base.Task`).
    """

    name: ClassVar[str] = ""
    backend: ClassVar[str | None] = None
    per_task: ClassVar[bool] = False
    trains: ClassVar[bool] = False  # learns from the parent's training data (never from test data)

    def __init__(self, **settings):
        self.settings = settings

    @classmethod
    def supports(cls, spec) -> bool:
        """Whether models of the task ``spec`` can be compressed with this method."""
        return spec.compress_instead is None and (not cls.per_task or cls.name in spec.compression)

    def strategy(self, spec):
        """The task's function for this method: ``strategy(spec)(model, data, settings)``."""
        return spec.compressor(self.name)

    def compress(self, model, data, spec):  # pragma: no cover - interface
        """A new fitted model from the fitted ``model``; ``data`` is the parent's Dataset."""
        raise NotImplementedError

    def save(self, model, folder: Path) -> None:
        """Write what the estimator's own ``save`` does not (default: nothing)."""

    def restore(self, model, folder: Path, spec):
        """Re-apply the method to a loaded child (default: nothing to do)."""
        return model

    def mark(self, model, parent: str | None = None):
        """Record on ``model`` that it came from this method (what save/load carry)."""
        model.compression_ = {"method": self.name, "settings": self.settings, "parent": parent}
        return model


def register_compressor(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register_compressor("onnx-int8")``."""

    def wrap(cls: T) -> T:
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def available_compressors() -> list[str]:
    """Every registered method, sorted."""
    _discover()
    return sorted(_METHODS)


def get_compressor(method: str, **settings) -> Compressor:
    """An instance of ``method`` with ``settings``; a clear error lists what exists. Whether it fits
    a model's task is :meth:`Compressor.supports` (``aimass.compress`` checks it)."""
    _discover()
    if method not in _METHODS:
        raise NotFoundError(
            f"Unknown compression method '{method}'; available: {', '.join(sorted(_METHODS))}.",
            hint="Pass one of the available methods with --method.",
        )
    return _METHODS[method](**settings)


def saved(model, folder: Path) -> None:
    """Called at the end of an estimator's ``save``: writes the method's files and FILE."""
    info = getattr(model, "compression_", None)
    if not info:
        return
    get_compressor(info["method"], **info["settings"]).save(model, Path(folder))
    (Path(folder) / FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))


def restore(model, folder: Path, spec):
    """Called at the end of an estimator's ``load`` with its task spec: re-applies the method of a
    compressed child."""
    path = Path(folder) / FILE
    if not path.exists():
        return model
    info = json.loads(path.read_text())
    model.compression_ = info
    return get_compressor(info["method"], **info["settings"]).restore(model, Path(folder), spec)
