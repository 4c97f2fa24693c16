"""Image-classification quality benchmark: aimass against a baseline computed in the same run.

Rows (each with its bar, PASS/FAIL):

1. ``fashion``: Fashion-MNIST (Debian ``dataset-fashion-mnist``), 5,000 training images drawn
   stratified with seed 0 from the official training set and 2,000 test images from the official
   test set, written as PNG folders (``train/<class>``, ``test/<class>``) and imported with
   ``aimass.import_dataset`` (a validation split is carved out of train). Logistic regression on
   the raw pixels (fitted on the same train + valid images) vs ``aimass.train_model`` with the
   default settings. Bars: accuracy >= 0.90 and >= the baseline + 5 points; the wall time of each
   training stage is reported.
2. ``features``: frozen-feature extraction with EfficientNet-Lite0 at 224 px (batch 32, 2 threads):
   images/s of the plain network (the baseline) and of the channels-last, BatchNorm-folded one aimass
   uses. Bar: >= 50 images/s.

Usage::

    python bench/image_quality.py                  # ~6-8 min on 2 cores
    python bench/image_quality.py --budget 10m     # a different training budget

Prints one table, writes ``bench/results/image_quality.json`` and exits 0 whatever the bars say.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "image_quality.json"
MIN_ACC, GAP, MIN_RATE = 0.90, 5.0, 50.0
console = Console(width=200)


def scores(truth, predicted) -> dict:
    from sklearn.metrics import f1_score

    truth, predicted = np.asarray(truth), np.asarray(predicted)
    return {
        "accuracy": float((truth == predicted).mean()),
        "macro_f1": float(f1_score(truth, predicted, average="macro")),
    }


def pixel_baseline(ds) -> dict:
    """Logistic regression on raw grey pixels in [0, 1], fitted on train + valid."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    def load(split):
        x = np.stack(
            [np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() / 255 for p in ds.inputs(split)]
        )
        return x, ds.labels(split)

    start = time.perf_counter()
    (xa, ya), (xb, yb), (xt, yt) = load("train"), load("valid"), load("test")
    model = LogisticRegression(C=0.1, max_iter=3000).fit(np.vstack([xa, xb]), ya + yb)
    return {**scores(yt, model.predict(xt)), "wall_s": time.perf_counter() - start}


def bench_fashion(work: Path, budget: str) -> list[dict]:
    import aimass.api as api
    from aimass.data.bundled import fashion_mnist_folder

    folder = fashion_mnist_folder(work / "fashion-mnist", train=5000, test=2000, seed=0)
    started = time.perf_counter()
    ds = api.import_dataset(folder, name="fashion-mnist", seed=0)
    import_s = time.perf_counter() - started
    summary = ds.summary()
    label = f"Fashion-MNIST 5k/2k (test n={len(ds.labels('test'))})"
    base = pixel_baseline(ds)
    rows = [
        {"dataset": label, "system": "raw pixels + LogReg (C=0.1)", **base, "bar": "reference", "status": "-"}
    ]
    started = time.perf_counter()
    result = api.train_model("image-classification", ds, name="fashion", time_budget=budget, progress=False)
    wall = time.perf_counter() - started
    acc = result["metrics"]["accuracy"]
    gap = 100 * (acc - base["accuracy"])
    ok = acc >= MIN_ACC and gap >= GAP
    stages = ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items())
    rows.append(
        {
            "dataset": label,
            "system": f"aimass.train_model (budget {budget})",
            "accuracy": acc,
            "macro_f1": result["metrics"]["macro_f1"],
            "wall_s": wall,
            "bar": f"acc >= {MIN_ACC} and >= baseline + {GAP:.0f} pts",
            "status": "PASS" if ok else "FAIL",
            "note": f"gap {gap:+.2f} pts; stages (s): {stages}; import {import_s:.1f}s",
            "timings": result["timings"],
            "stages": result["stages"],
            "model": result["model"],
            "dataset_summary": {k: summary.get(k) for k in ("rows", "splits", "rejects", "layout")},
        }
    )
    model = api.load(result["model"])  # the same model, each prediction averaged with its mirror image
    model.tta = True
    started = time.perf_counter()
    tta = model.evaluate(ds)
    rows.append(
        {
            "dataset": label,
            "system": "aimass, same model with tta=True",
            "accuracy": tta["accuracy"],
            "macro_f1": tta["macro_f1"],
            "wall_s": time.perf_counter() - started,
            "bar": f"acc >= {MIN_ACC} and >= baseline + {GAP:.0f} pts",
            "status": "PASS"
            if tta["accuracy"] >= MIN_ACC and 100 * (tta["accuracy"] - base["accuracy"]) >= GAP
            else "FAIL",
            "note": "wall = evaluation of the test split only",
        }
    )
    return rows


def bench_features(repeats: int = 5, batch: int = 32) -> list[dict]:
    import torch

    from aimass.backbones import get_backbone

    torch.set_num_threads(2)
    _, encoder = get_backbone("efficientnet-lite0").load()
    x = torch.rand(batch, 3, 224, 224)

    def rate(net, memory_format) -> float:
        inputs = x.contiguous(memory_format=memory_format)
        times = []
        with torch.inference_mode():
            net.forward_features(inputs)
            for _ in range(repeats):
                began = time.perf_counter()
                net.forward_features(inputs)
                times.append(time.perf_counter() - began)
        return batch / float(np.median(times))

    plain = rate(encoder.eval(), torch.contiguous_format)
    fused = rate(encoder.fuse_for_inference().to(memory_format=torch.channels_last), torch.channels_last)
    label = "EfficientNet-Lite0 features, 224 px, batch 32"
    return [
        {
            "dataset": label,
            "system": "plain (contiguous, BatchNorm)",
            "images_s": plain,
            "bar": "reference",
            "status": "-",
        },
        {
            "dataset": label,
            "system": "aimass (channels_last, BN folded)",
            "images_s": fused,
            "bar": f">= {MIN_RATE:.0f} images/s",
            "status": "PASS" if fused >= MIN_RATE else "FAIL",
            "note": f"{fused / plain:.2f}x the plain network",
        },
    ]


def render(rows: list[dict]) -> None:
    table = Table(title="aimass image benchmark")
    for column in (
        "dataset",
        "system",
        "accuracy",
        "macro-F1",
        "images/s",
        "wall s",
        "bar",
        "status",
        "note",
    ):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r["dataset"],
            r["system"],
            f"{r['accuracy']:.4f}" if "accuracy" in r else "",
            f"{r['macro_f1']:.4f}" if "macro_f1" in r else "",
            f"{r['images_s']:.1f}" if "images_s" in r else "",
            f"{r['wall_s']:.1f}" if "wall_s" in r else "",
            r["bar"],
            r["status"],
            r.get("note", ""),
        )
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="5m", help="aimass training budget (default 5m)")
    parser.add_argument("--only", action="append", choices=("fashion", "features"))
    args = parser.parse_args(argv)
    parts = args.only or ["features", "fashion"]
    work = Path(tempfile.mkdtemp(prefix="aimass-bench-"))
    atexit.register(shutil.rmtree, work, True)  # models, data, backbone copies
    os.environ["AIMASS_HOME"] = str(work / "home")
    started = time.perf_counter()
    rows: list[dict] = []
    if "features" in parts:
        rows += bench_features()
    if "fashion" in parts:
        rows += bench_fashion(work, args.budget)
    render(rows)
    import torch

    RESULTS.parent.mkdir(exist_ok=True)
    out = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "budget": args.budget,
        "total_wall_s": time.perf_counter() - started,
        "versions": {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(out, indent=2))
    failed = [f"{r['dataset']}: {r['system']}" for r in rows if r["status"] == "FAIL"]
    print("failed bars:", "; ".join(failed) if failed else "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
