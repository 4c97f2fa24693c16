"""The task registry: a task type is one file that registers itself here.

>>> from aimass.tasks import get_task, available_tasks
>>> "text-classification" in available_tasks()
True
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TypeVar

from aimass.errors import NotFoundError

T = TypeVar("T")
_TASKS: dict[str, type] = {}


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register_task("text-classification")``."""

    def wrap(cls: T) -> T:
        cls.name = name
        _TASKS[name] = cls
        return cls

    return wrap


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def available_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    _discover()
    return sorted(_TASKS)


def get_task(name: str):
    """The task spec registered under ``name``; a clear error lists what exists."""
    _discover()
    if name not in _TASKS:
        raise NotFoundError(
            f"Unknown task '{name}'; available: {', '.join(sorted(_TASKS))}",
            hint="Pass one of the available task names with --task.",
        )
    return _TASKS[name]
