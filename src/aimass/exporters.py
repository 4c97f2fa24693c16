"""Export a registered model to a folder that runs without aimass (``aimass export``).

Two formats:

* ``onnx``: the network as ONNX (fp32 and int8), its tokenizer or image preprocessing, the labels
  and a ``predict.py`` that needs only onnxruntime, numpy and tokenizers (text) or pillow (images):
  no torch, no aimass. A text model's TF-IDF branch is applied in ``predict.py`` from JSON and
  ``.npy`` files (numpy reads them without pickle).
* ``safetensors``: every fine-tuned weight (backbone, head, TF-IDF branch) for PyTorch users, with
  the encoder's config, the tokenizer or preprocessing, the labels and a ``predict.py`` that
  rebuilds the network with torch (and transformers for text).

Each folder also holds a README.md (what is in it, what to install, how to run it, what it prints),
requirements.txt and export.json (the source version and how close ``predict.py`` came to aimass's
own predictions on a few check inputs, measured when the folder was written).

What differs per task and format is a :class:`Recipe`, the way backbones are table entries: the
writer of the model files, the ``predict.py`` (a file of :mod:`aimass.standalone`) and the packages
it needs. A task names its recipes (``Task.export_recipes()``); the recipes of the classification
tasks are defined below (``TEXT_ONNX``, ``IMAGE_SAFETENSORS`` ...).

Example:
    >>> from aimass.exporters import export
    >>> export("reviews:3", "onnx", "reviews-onnx")["files"]["model.onnx"]   # doctest: +SKIP
    90873412
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from aimass.errors import ConfigError
from aimass.version import __version__

FORMATS = {
    "onnx": "ONNX graph for onnxruntime: no torch needed",
    "safetensors": "the fine-tuned PyTorch weights",
}


@dataclass(frozen=True)
class Recipe:
    """How models of one task are exported to one format.

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
    """

    write: Callable
    script: str | None
    runner: str
    packages: tuple[str, ...]
    samples: Callable[[], list]
    unit: str
    example: tuple[str, ...]
    how: str


_RECIPES: dict[tuple[str, str], Recipe] = {}


def register_export(task: str, fmt: str, recipe: Recipe) -> Recipe:
    """Add an entry to the table (ahead of the task's own ``export_recipes()``): models of ``task``
    can then be exported as ``fmt``."""
    _RECIPES[(task, fmt)] = recipe
    return recipe


def export(ref: str, fmt: str = "onnx", out: str | Path | None = None, *, force: bool = False) -> dict:
    """Write version ``ref`` to ``out`` as a self-contained folder; returns what export.json holds.

    Args:
        ref: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
        fmt: ``onnx`` or ``safetensors``.
        out: the folder to write; it must not exist or be empty (default: ``NAME-vVERSION-FORMAT``
            in the current directory).
        force: replace a folder that an earlier export wrote (never any other folder).

    Raises:
        ConfigError: unknown format, a format the task has no export to, or ``out`` is in use.
        NotFoundError: no such model version.
    """
    from aimass import api
    from aimass.store import registry

    began = time.perf_counter()
    if fmt not in FORMATS:
        raise ConfigError(
            f"Unknown export format '{fmt}'; available: {', '.join(FORMATS)}.",
            hint="Use --format onnx (onnxruntime, no torch) or --format safetensors (PyTorch).",
        )
    record = registry.get_version(ref)
    recipe = _recipe(record.task, fmt)
    out = Path(out if out is not None else f"{record.name}-v{record.version}-{fmt}").expanduser().resolve()
    _check_out(out, force)
    model = api.load(record.ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        manifest = _write(record, model, recipe, fmt, staging)
        staging.chmod(0o755)  # mkdtemp made it private; the export is meant to be shared
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest["out"] = str(out)
    manifest["seconds"] = round(time.perf_counter() - began, 2)
    return manifest


def recipes(task: str) -> dict[str, Recipe]:
    """Format -> recipe for models of ``task``: the task's own, and any registered here."""
    from aimass.tasks import get_task

    table = dict(get_task(task).export_recipes())
    table.update({f: r for (t, f), r in _RECIPES.items() if t == task})
    return table


def write_folder(model, fmt: str, folder: str | Path, ref: str | None = None) -> dict:
    """Write a fitted ``model`` (registered or not) as ``fmt`` into the empty ``folder``; returns
    the manifest. What :func:`export` does for a registered version, without the registry
    (:func:`aimass.testing.check_task` checks every recipe of a task with it)."""
    from types import SimpleNamespace

    record = SimpleNamespace(
        ref=ref or f"{model.task}:unregistered", task=model.task, backbone=getattr(model, "backbone_", None)
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return _write(record, model, _recipe(model.task, fmt), fmt, folder)


def _recipe(task: str, fmt: str) -> Recipe:
    table = recipes(task)
    if fmt not in table:
        known = ", ".join(table) or "none"
        raise ConfigError(
            f"Models of task '{task}' cannot be exported as {fmt}; formats for this task: {known}.",
            hint="Pick one of those formats.",
        )
    return table[fmt]


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder.", hint="Pass --out with a new folder name.")
    if not out.exists() or not any(out.iterdir()):
        return
    earlier = (out / "export.json").is_file() and (out / "predict.py").is_file()
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
    from aimass import standalone

    checks = recipe.write(model, folder)
    labels = [str(c) for c in model.classes_]
    (folder / "labels.json").write_text(json.dumps(labels, indent=2, ensure_ascii=False) + "\n")
    if recipe.script is not None:
        shutil.copyfile(Path(standalone.__file__).parent / recipe.script, folder / "predict.py")
    pins = _pins(recipe.packages)
    (folder / "requirements.txt").write_text("".join(f"{name}=={v}\n" for name, v in pins.items()))
    first = _check_script(model, recipe, folder, checks)
    manifest = {
        "ref": record.ref,
        "task": record.task,
        "format": fmt,
        "backbone": record.backbone,
        "labels": labels,
        "packages": pins,
        "exported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "aimass_version": __version__,
        "check": checks,
    }
    example = {
        "label": labels[int(first.argmax())],
        "scores": {c: round(float(p), 6) for c, p in zip(labels, first)},
    }
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    (folder / "README.md").write_text(_readme(manifest, recipe, files, example))
    manifest["files"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    (folder / "export.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _check_script(model, recipe: Recipe, folder: Path, checks: dict) -> np.ndarray:
    """Run the folder's own ``predict.py`` (imported from the folder) on the check inputs and add
    how far it is from aimass to ``checks``; returns its probabilities of the first input."""
    samples = recipe.samples()
    spec = importlib.util.spec_from_file_location(f"aimass_export_check_{os.getpid()}", folder / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    got = getattr(module, recipe.runner)(folder).predict_proba(samples)
    want = model.predict_proba(samples)
    checks["check_inputs"] = len(samples)
    checks["predict_py_max_abs_diff_proba"] = float(np.abs(got - want).max())
    checks["predict_py_same_label"] = float(np.mean(got.argmax(1) == want.argmax(1)))
    return got[0]


def _pins(packages: tuple[str, ...]) -> dict[str, str]:
    """``package -> version``: aimass's own pin (pyproject.toml), else the installed version."""
    declared = {}
    for requirement in metadata.requires("aimass") or []:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^;\s]+)", requirement.strip())
        if match:
            declared[_canonical(match[1])] = match[2]
    return {name: declared.get(_canonical(name)) or metadata.version(name) for name in packages}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------- writers
def _onnx_files(model, folder: Path) -> dict:
    """The estimator's own ONNX export, with runtime.json named preprocessing.json and any
    safetensors file turned into ``.npy`` files (``lexical.safetensors`` -> ``lexical_idf.npy``,
    ``lexical_weight.npy``) so that the folder needs no safetensors package."""
    from safetensors.numpy import load_file

    from aimass.compressors.onnx import stored_calibration

    work = folder / ".onnx"
    served = _served_onnx(model)
    if served is not None:  # an onnx / onnx-int8 version: the very graphs it serves, no second export
        shutil.copytree(served, work)
        report = json.loads((work / "export.json").read_text())
    else:
        report = model.export_onnx(
            work, **stored_calibration(getattr(model, "data_digest_", None), model.task)
        )
    for path in sorted(work.iterdir()):
        if path.suffix == ".safetensors":
            for key, array in load_file(str(path)).items():
                np.save(folder / f"{path.stem}_{key}.npy", np.ascontiguousarray(array), allow_pickle=False)
        elif path.name == "runtime.json":
            path.rename(folder / "preprocessing.json")
        elif path.name != "export.json":
            path.rename(folder / path.name)
    shutil.rmtree(work)
    return {k: v for k, v in report.items() if k not in ("files", "seconds")}


def _served_onnx(model) -> Path | None:
    """The ONNX folder a compressed version already predicts from (both graphs and the check
    report the compressor wrote), or None for a torch model."""
    folder = getattr(getattr(model, "runtime_", None), "folder", None)
    if folder is None:
        return None
    needed = ("model.onnx", "model.int8.onnx", "export.json")
    return Path(folder) if all((Path(folder) / f).is_file() for f in needed) else None


def _float_state(state: dict, drop: tuple[str, ...] = ()) -> dict:
    """``state`` as plain contiguous tensors; quantised weights cannot be stored as safetensors."""
    import torch

    out = {}
    for key, value in state.items():
        if key.startswith(drop):
            continue
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            raise ConfigError(
                "This version holds quantised weights (int8-dynamic), which safetensors cannot store.",
                hint="Export the version it was compressed from, or use --format onnx.",
            )
        out[key] = value.detach().contiguous()
    return out


def _text_weights(model, folder: Path) -> dict:
    """model.safetensors (encoder, head, TF-IDF weights), config.json, tokenizer.json, the TF-IDF
    vocabulary and idf, preprocessing.json."""
    from safetensors.torch import save_file

    net = model.net_.eval()
    save_file(_float_state(net.state_dict()), str(folder / "model.safetensors"), metadata={"format": "pt"})
    net.encoder.config.to_json_file(str(folder / "config.json"))
    tokenizer = model.tokenizer_
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    if model.lexical_ is not None:
        meta, tensors = model.lexical_.state()
        (folder / "lexical.json").write_text(json.dumps(meta, ensure_ascii=False))
        np.save(folder / "lexical_idf.npy", tensors["lexical.idf"].numpy(), allow_pickle=False)
    prep = {
        "prefix": model.prefix_,
        "max_length": model.max_length_,
        "pad_id": tokenizer.pad_token_id,
        "pad_token": tokenizer.pad_token,
        "pooling": "mean of the token vectors over the attention mask, L2-normalised",
        "backbone": model.backbone_,
    }
    (folder / "preprocessing.json").write_text(json.dumps(prep, indent=2, ensure_ascii=False) + "\n")
    return {}


def _image_weights(model, folder: Path) -> dict:
    """model.safetensors (backbone with its BatchNorm statistics, head) and preprocessing.json."""
    from safetensors.torch import save_file

    from aimass.backbones.image_net import BASE_SCALE
    from aimass.data.images import byte_limit, pixel_limit

    state = _float_state(model.net_.eval().state_dict(), drop=("encoder.classifier.",))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    prep = {
        "image_size": model.image_size_,
        "resize": round(model.image_size_ * BASE_SCALE),
        "resample": "bicubic",
        "normalisation": "(x * 255 - 127) / 128 on RGB in [0, 1]",
        "tta": bool(model.tta),
        "max_pixels": pixel_limit(),
        "max_bytes": byte_limit(),
        "backbone": model.backbone_,
        "structure": getattr(model, "structure_", None),  # a distilled/pruned child's smaller stages
    }
    (folder / "preprocessing.json").write_text(json.dumps(prep, indent=2) + "\n")
    return {}


def _text_samples() -> list[str]:
    from aimass.runtime.text_export import CHECK_TEXTS

    return list(CHECK_TEXTS)


def _image_samples() -> list[bytes]:
    from aimass.runtime.image_export import check_images

    return check_images()


_TEXT_EXAMPLE = ("The striker scored twice in the final.", "Shares fell 3% after the forecast.")
_IMAGE_EXAMPLE = ("photo1.jpg", "photo2.png")
_TEXT_HOW = (
    "Each text (after the prefix in `preprocessing.json`, if any) is split into tokens by `tokenizer.json`, "
    "truncated to `max_length` tokens and padded to the longest text of its batch. The network turns the "
    "token ids and attention mask into one score per label. If the model has a TF-IDF branch "
    "(`lexical.json`), predict.py adds its scores: the text's n-grams (lower-cased words, or characters, "
    "as `lexical.json` says) that are in the vocabulary, weighted (1 + log count) x idf, scaled to unit "
    "length, times the branch's weights. A softmax of the sum gives the probabilities."
)
_TEXT_TORCH_HOW = (
    "`transformers` builds the encoder from `config.json` (nothing is downloaded) and the fine-tuned "
    "weights are loaded from `model.safetensors` (keys `encoder.*`, `head.dense.*` and, with a TF-IDF "
    "branch, `head.lexical.weight`). The logits are a linear layer over the mean of the encoder's token "
    "vectors (over the attention mask, L2-normalised). " + _TEXT_HOW
)
_IMAGE_HOW = (
    "Each image is decoded as aimass decodes it for training: the pixel count is checked against "
    "`max_pixels` from the file header before decoding, the EXIF orientation is applied, transparency "
    "is flattened on white and the image is converted to RGB. Its shorter side is resized to `resize` "
    "pixels (bicubic), the centre square is kept, then the centre `image_size` x `image_size` crop, as "
    "floats in [0, 1] (divided by 255), channels first. The network turns those into one score per label "
    "and a softmax gives the probabilities."
)
_IMAGE_ONNX_HOW = _IMAGE_HOW + (
    " The backbone's normalisation is part of the graph, and so is the average with the mirror image "
    "when the model was trained with test-time augmentation."
)
_IMAGE_TORCH_HOW = _IMAGE_HOW + (
    " The network (EfficientNet-Lite0, an L2-normalised 1280-d feature, a linear layer) is defined in "
    "predict.py; it scales the pixels as (x * 255 - 127) / 128 itself. When `preprocessing.json` says "
    "`tta`, the probabilities are averaged with those of the mirror image."
)

TEXT_ONNX = Recipe(
    _onnx_files,
    "text_onnx.py",
    "TextModel",
    ("onnxruntime", "numpy", "tokenizers"),
    _text_samples,
    "text",
    _TEXT_EXAMPLE,
    _TEXT_HOW,
)
IMAGE_ONNX = Recipe(
    _onnx_files,
    "image_onnx.py",
    "ImageModel",
    ("onnxruntime", "numpy", "pillow"),
    _image_samples,
    "image",
    _IMAGE_EXAMPLE,
    _IMAGE_ONNX_HOW,
)
TEXT_SAFETENSORS = Recipe(
    _text_weights,
    "text_torch.py",
    "TextModel",
    ("torch", "transformers", "safetensors", "tokenizers", "numpy"),
    _text_samples,
    "text",
    _TEXT_EXAMPLE,
    _TEXT_TORCH_HOW,
)
IMAGE_SAFETENSORS = Recipe(
    _image_weights,
    "image_torch.py",
    "ImageModel",
    ("torch", "safetensors", "numpy", "pillow"),
    _image_samples,
    "image",
    _IMAGE_EXAMPLE,
    _IMAGE_TORCH_HOW,
)


# -------------------------------------------------------------------- README
FILE_NOTES = {
    "predict.py": "the script to run (it can also be imported: see *From Python*)",
    "model.onnx": "the network as an ONNX graph, float32",
    "model.int8.onnx": "the same graph with int8 weights: smaller and faster, scores differ slightly",
    "model.safetensors": "every fine-tuned weight, float32 (safetensors: no pickle)",
    "config.json": "the text encoder's configuration (Hugging Face transformers)",
    "tokenizer.json": "the tokenizer (Hugging Face tokenizers)",
    "preprocessing.json": "how an input becomes the network's input: sizes, limits, text prefix, padding",
    "labels.json": "the labels, in the order of the model's output columns",
    "lexical.json": "the TF-IDF branch: its n-gram settings and vocabulary",
    "lexical_idf.npy": "the TF-IDF branch: inverse document frequencies (numpy, no pickle)",
    "lexical_weight.npy": "the TF-IDF branch: its weights, one row per label (numpy, no pickle)",
    "requirements.txt": "the packages predict.py needs, pinned",
    "README.md": "this file",
    "export.json": "where this folder came from, and how close predict.py came to aimass on check inputs",
}


def _readme(manifest: dict, recipe: Recipe, files: list[str], example: dict) -> str:
    """The folder's README.md: contents, install, run, output, use from Python, how close it is."""
    check, onnx = manifest["check"], manifest["format"] == "onnx"
    args = " ".join(shlex.quote(x) for x in recipe.example)
    runner = recipe.runner
    present = set(files) | {"README.md", "export.json"}
    int8 = check.get("int8_max_abs_diff_proba")
    closeness = (
        f"On {check['check_inputs']} check inputs, when this folder was written, the probabilities of "
        f"`predict.py` differed from aimass's own by at most {check['predict_py_max_abs_diff_proba']:.1e}"
    )
    if int8 is not None:
        closeness += f"; with `--int8` by at most {int8:.1e} (same label on {check['int8_same_label']:.0%})"
    lines = [
        f"# {manifest['ref']}: {manifest['task']}, exported as {manifest['format']}",
        "",
        f"Model `{manifest['ref']}` (backbone {manifest['backbone']}), exported by aimass "
        f"{manifest['aimass_version']} on {manifest['exported'][:10]}. The folder stands on its own: "
        f"`predict.py` needs {', '.join(manifest['packages'])} and nothing else, not aimass.",
        "",
        "## What is in this folder",
        "",
        "| file | what it is |",
        "| --- | --- |",
        *[f"| `{name}` | {note} |" for name, note in FILE_NOTES.items() if name in present],
        "",
        "## Install",
        "",
        "Python 3.11 or later, in a fresh virtual environment:",
        "",
        "```bash",
        "python -m venv .venv && . .venv/bin/activate",
        "pip install " + " ".join(f"{p}=={v}" for p, v in manifest["packages"].items()),
        "```",
        "",
        "These are the versions aimass uses, which this export was checked with; `requirements.txt` "
        "has the same pins (`pip install -r requirements.txt`).",
        "",
        "## Run",
        "",
        "```bash",
        f"python predict.py {args}",
    ]
    if onnx:
        lines += [
            f"python predict.py --file inputs.txt   # one {recipe.unit if recipe.unit == 'text' else 'path'} "
            "per line, or a .json list",
            f"python predict.py --int8 {args}",
        ]
    lines += [
        "```",
        "",
        "## Output",
        "",
        f"One JSON line per {recipe.unit}, in the order given, for example:",
        "",
        "```json",
        json.dumps({"input": recipe.example[0], **example}, ensure_ascii=False),
        "```",
        "",
        "`scores` holds the probability of every label of `labels.json` (they add up to 1; rounded to 6 "
        "decimals) and `label` is the most probable one.",
        "",
        "## From Python",
        "",
        "```python",
        "import sys",
        "",
        'sys.path.insert(0, "path/to/this/folder")',
        f"from predict import {runner}",
        "",
        f'model = {runner}("path/to/this/folder")',
        f"proba = model.predict_proba(inputs)  # numpy: one row per {recipe.unit}, columns as labels.json",
        "labels = model.predict(inputs)",
        "```",
        "",
        "## What predict.py does",
        "",
        recipe.how,
        "",
        "## How close it is to aimass",
        "",
        closeness + ". `export.json` has the numbers.",
        "",
    ]
    return "\n".join(lines)
