"""Writing an export folder: :func:`export` for a registered version, :func:`write_folder` for any
fitted model; both check the folder's own ``predict.py`` against aimass before they return."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from aimass import standalone, workflow
from aimass.errors import ConfigError
from aimass.exporters import table
from aimass.exporters.readme import readme
from aimass.runtime.onnx_export import quiet_quantizer
from aimass.store import registry
from aimass.tasks.recipe import Recipe
from aimass.version import __version__


def export(ref: str, fmt: str = "onnx", out: str | Path | None = None, *, force: bool = False) -> dict:
    """Write version ``ref`` to ``out`` as a self-contained folder; returns what export.json holds.

    Args:
        ref: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
        fmt: ``onnx`` or ``safetensors``; a language model: ``safetensors``, ``gguf`` or ``gguf-f16``.
        out: the folder to write; it must not exist or be empty (default: ``NAME-vVERSION-FORMAT``
            in the current directory).
        force: replace a folder that an earlier export wrote (never any other folder).

    Raises:
        ConfigError: unknown format, a format the task has no export to, or ``out`` is in use.
        NotFoundError: no such model version.
    """
    began = time.perf_counter()
    if fmt not in table.FORMATS:
        raise ConfigError(
            f"Unknown export format '{fmt}'; available: {', '.join(table.FORMATS)}.",
            hint="Use --format onnx (onnxruntime, no torch) or safetensors (PyTorch); a language model: "
            "safetensors (transformers, vLLM), gguf or gguf-f16 (llama.cpp, ollama).",
        )
    record = registry.get_version(ref)
    recipe = table.recipe(record.task, fmt)
    out = Path(out if out is not None else f"{record.name}-v{record.version}-{fmt}").expanduser().resolve()
    _check_out(out, force)
    model = workflow.load(record.ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        manifest = _write(record, model, recipe, fmt, staging)
        shareable(staging)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest["out"] = str(out)
    manifest["seconds"] = round(time.perf_counter() - began, 2)
    return manifest


def write_folder(model, fmt: str, folder: str | Path, ref: str | None = None) -> dict:
    """Write a fitted ``model`` (registered or not) as ``fmt`` into the empty ``folder``; returns
    the manifest. What :func:`export` does for a registered version, without the registry
    (:func:`aimass.testing.check_task` checks every recipe of a task with it)."""
    record = SimpleNamespace(
        ref=ref or f"{model.task}:unregistered", task=model.task, backbone=getattr(model, "backbone_", None)
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return _write(record, model, table.recipe(model.task, fmt), fmt, folder)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder.", hint="Pass --out with a new folder name.")
    if not out.exists() or not any(out.iterdir()):
        return
    earlier = (out / "export.json").is_file() and (out / "README.md").is_file()
    if not force:
        raise ConfigError(
            f"{out} already exists and is not empty.",
            hint="Pass --out with a new folder"
            + (", or --force to replace this earlier export." if earlier else "."),
        )
    if not earlier:
        raise ConfigError(
            f"{out} is not a folder that `aimass export` wrote; --force replaces only those.",
            hint="Pass --out with a new folder, or empty this one yourself.",
        )


def _write(record, model, recipe: Recipe, fmt: str, folder: Path) -> dict:
    """Every file of the export into ``folder``; returns the manifest (also written as export.json)."""
    if recipe.folder is not None:
        return _write_whole(record, model, recipe, fmt, folder)
    with quiet_quantizer():
        checks = recipe.write(model, folder)
    labels = [str(c) for c in model.classes_]
    (folder / "labels.json").write_text(json.dumps(labels, indent=2, ensure_ascii=False) + "\n")
    if recipe.script is not None:
        (folder / "predict.py").write_text(standalone.script(recipe.script), encoding="utf-8")
    pinned = write_requirements(folder, recipe.packages)
    first = _check_script(model, recipe, folder, checks)
    manifest = {
        "ref": record.ref,
        "task": record.task,
        "format": fmt,
        "backbone": record.backbone,
        "labels": labels,
        "packages": pinned,
        "exported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "aimass_version": __version__,
        "check": checks,
    }
    example = {
        "label": labels[int(first.argmax())],
        "scores": {c: round(float(p), 6) for c, p in zip(labels, first)},
    }
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    (folder / "README.md").write_text(readme(manifest, recipe, files, example))
    manifest["files"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    (folder / "export.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _write_whole(record, model, recipe: Recipe, fmt: str, folder: Path) -> dict:
    """A recipe that writes its whole folder (a language model's): its files and the manifest."""
    manifest = {
        "ref": record.ref,
        "task": record.task,
        "format": fmt,
        "backbone": record.backbone,
        "exported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "aimass_version": __version__,
        "check": recipe.folder(model, folder),
    }
    manifest["files"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    (folder / "export.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _check_script(model, recipe: Recipe, folder: Path, checks: dict) -> np.ndarray:
    """Run the folder's own ``predict.py`` (imported from the folder) on the check inputs and add
    how far it is from aimass to ``checks``; returns its probabilities of the first input."""
    samples = recipe.samples()
    got = getattr(import_script(folder), recipe.runner)(folder).predict_proba(samples)
    want = model.predict_proba(samples)
    checks["check_inputs"] = len(samples)
    checks["predict_py_max_abs_diff_proba"] = float(np.abs(got - want).max())
    checks["predict_py_same_label"] = float(np.mean(got.argmax(1) == want.argmax(1)))
    return got[0]


def import_script(folder: Path):
    """The folder's own ``predict.py``, imported as a module (what a check runs against aimass)."""
    spec = importlib.util.spec_from_file_location(f"aimass_export_check_{os.getpid()}", folder / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shareable(folder: Path) -> None:
    """Files 0644, folders 0755: mkdtemp made the folder private, and some writers (transformers'
    ``save_pretrained``) leave 0600 files that another user (a container's) cannot read."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def write_requirements(folder: Path, packages: tuple[str, ...]) -> dict[str, str]:
    """``requirements.txt`` pinning ``packages`` (:func:`pins`); returns the pins."""
    pinned = pins(packages)
    (folder / "requirements.txt").write_text("".join(f"{name}=={v}\n" for name, v in pinned.items()))
    return pinned


def pins(packages: tuple[str, ...]) -> dict[str, str]:
    """``package -> version``: aimass's own pin (pyproject.toml), else the installed version without
    its local label (``torch`` ``2.13.0+cpu`` is ``2.13.0``: PyPI holds no ``+cpu`` builds, so pip
    could not install the pin).

    >>> pins(("numpy",))["numpy"].count("+")
    0
    """
    declared = {}
    for requirement in metadata.requires("aimass") or []:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^;\s]+)", requirement.strip())
        if match:
            declared[_canonical(match[1])] = match[2]
    return {
        name: declared.get(_canonical(name)) or metadata.version(name).partition("+")[0] for name in packages
    }


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
