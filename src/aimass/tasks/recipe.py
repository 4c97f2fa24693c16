"""What a task's export looks like, as data: a :class:`Recipe` per task and format, which
:meth:`aimass.tasks.base.Task.export_recipes` returns and :mod:`aimass.exporters` writes a folder
from. A module of its own (no pydantic), so that the export layer imports it without the task
contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """How models of one task are exported to one format (``aimass export``): what a task's
    :meth:`Task.export_recipes` returns, and what :mod:`aimass.exporters` writes a folder from.

    Attributes:
        write: ``write(model, folder) -> dict`` writes the model files (the dict: check numbers).
        script: the file of :mod:`aimass.standalone` copied as ``predict.py`` (an absolute path: that
            file; None: ``write`` writes ``predict.py`` itself).
        runner: the class in that script that predicts (``TextModel`` / ``ImageModel``).
        packages: what ``predict.py`` imports (pip names, pinned in the README).
        samples: ``samples() -> list`` of check inputs for ``predict.py`` against aimass.
        unit: what one input is, for the README (``text`` / ``image``).
        example: example inputs for the README's command lines.
        how: the README's paragraph on what ``predict.py`` does.
        folder: for models that do not classify, ``folder(model, folder) -> dict`` writes every
            file (README, requirements, scripts) and returns the check numbers; ``write`` and the
            classification fields are then unused.
    """

    write: Callable
    script: str | None
    runner: str
    packages: tuple[str, ...]
    samples: Callable[[], list]
    unit: str
    example: tuple[str, ...]
    how: str
    folder: Callable | None = None
