"""The task registry: a task type is one file that registers itself here.

Each registered spec is a subclass of :class:`aimass.tasks.base.Task` (the written contract);
code outside this package looks a task up and asks it, never branching on its name.

>>> from aimass.tasks import get_task, available_tasks
>>> "text-classification" in available_tasks()
True
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from aimass.errors import ConfigError, NotFoundError

if TYPE_CHECKING:  # importing the contract (pydantic) here would slow every CLI start
    from aimass.tasks.base import Task

T = TypeVar("T")
_TASKS: dict[str, type[Task]] = {}
DEFAULT_TASK = "text-classification"  # what `aimass train` and a train job use when no task is named


def register_task(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator: ``@register_task("text-classification")`` on a :class:`Task` subclass.

    A name already taken by another class is a ConfigError (a plug-in would otherwise replace a
    task silently); ``replace=True`` replaces it on purpose. The same class again, or the same
    class defined again by reloading its module, simply takes its place.
    """

    from aimass.tasks.base import Task

    def wrap(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"task '{name}': {cls!r} is not a subclass of aimass.tasks.base.Task")
        old = _TASKS.get(name)
        if old is not None and not replace and _origin(old) != _origin(cls):
            raise ConfigError(
                f"task '{name}' is already registered (by module {old.__module__})",
                hint=f"Register {cls.__qualname__} under another name, or pass "
                f"register_task({name!r}, replace=True) to replace that task on purpose.",
            )
        cls.name = name
        _TASKS[name] = cls
        return cls

    return wrap


def _origin(cls: type) -> tuple[str, str]:
    """Where a class is defined: a module reloaded defines the same class again, under the same name."""
    return cls.__module__, cls.__qualname__


def unregister_task(name: str) -> None:
    """Remove a task registered at run time (a test's example task); unknown names are ignored."""
    _TASKS.pop(name, None)


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def available_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    _discover()
    return sorted(_TASKS)


def sniff(path: str | Path) -> tuple[str, str] | None:
    """``(task, why)`` of the first task (by ``sniff_order``) that reads the data at ``path``."""
    _discover()
    for spec in sorted(_TASKS.values(), key=lambda s: (s.sniff_order, s.name)):
        why = spec.sniff(Path(path))
        if why:
            return spec.name, why
    return None


def task_for_kind(kind: str) -> str | None:
    """The first task (in ``sniff_order``) that reads stored data of ``kind`` (``Task.data_kind``),
    or None."""
    _discover()
    for spec in sorted(_TASKS.values(), key=lambda s: (s.sniff_order, s.name)):
        if spec.data_kind == kind:
            return spec.name
    return None


def get_task(name: str) -> type[Task]:
    """The task spec registered under ``name``; a clear error lists what exists."""
    _discover()
    if name not in _TASKS:
        raise NotFoundError(
            f"Unknown task '{name}'; available: {', '.join(sorted(_TASKS))}",
            hint="Pass one of the available task names with --task.",
        )
    return _TASKS[name]
