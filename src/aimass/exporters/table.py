"""The recipe table: which formats models of a task export to, and how (a :class:`Recipe` each).

An entry comes from :func:`register_export` (the export layer's own recipes, e.g. those of
:mod:`aimass.exporters.classification`) or from the task itself (``Task.export_recipes()``); a
registered entry wins.
"""

from __future__ import annotations

from aimass.errors import ConfigError
from aimass.tasks import get_task
from aimass.tasks.recipe import Recipe

FORMATS = {
    "onnx": "ONNX graph for onnxruntime: no torch needed",
    "safetensors": "the fine-tuned PyTorch weights (a language model: a transformers folder, LoRA merged)",
    "gguf": "a language model for llama.cpp and ollama: LoRA merged, trained projections q8_0",
    "gguf-f16": "as gguf, the trained projections in f16",
}

_RECIPES: dict[tuple[str, str], Recipe] = {}


def register_export(task: str, fmt: str, recipe: Recipe) -> Recipe:
    """Add an entry to the table (ahead of the task's own ``export_recipes()``): models of ``task``
    can then be exported as ``fmt``."""
    _RECIPES[(task, fmt)] = recipe
    return recipe


def recipes(task: str) -> dict[str, Recipe]:
    """Format -> recipe for models of ``task``: the task's own, and any registered here."""
    table = dict(get_task(task).export_recipes())
    table.update({f: r for (t, f), r in _RECIPES.items() if t == task})
    return table


def recipe(task: str, fmt: str) -> Recipe:
    """The recipe of ``task`` for ``fmt``; a ConfigError lists the formats the task has."""
    table = recipes(task)
    if fmt not in table:
        known = ", ".join(table) or "none"
        raise ConfigError(
            f"Models of task '{task}' cannot be exported as {fmt}; formats for this task: {known}.",
            hint="Pick one of those formats.",
        )
    return table[fmt]
