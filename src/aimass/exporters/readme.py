"""The README.md of an exported folder: what is in it, how to install and run it, what it prints,
how to use it from Python and how close it is to aimass."""

from __future__ import annotations

import json
import shlex

from aimass.tasks.recipe import Recipe

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


def readme(manifest: dict, recipe: Recipe, files: list[str], example: dict) -> str:
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
