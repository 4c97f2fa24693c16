"""Baseline floor benchmark: aimass's image classifier against logistic regression on the raw
pixels, trained in the same run on the same split (issue 26, item 1).

Rows (each with its bar, PASS/FAIL):

1. ``digits``: scikit-learn's 8x8 handwritten digits (``load_digits``, 1,797 images, 10 classes)
   written as grey PNGs (0..16 scaled to 0..255), upscaled to 64x64 as the issue's user saved them
   (``--digits-size 8`` keeps the native 8x8), in ``train/<digit>`` and
   ``test/<digit>`` folders, a 70/30 split stratified with seed 0. aimass imports the folder with
   ``aimass.import_dataset`` (it carves its validation split out of train) and trains with
   ``aimass.train_model`` (the registry path ``aimass train`` takes) at the default settings;
   scikit-learn's ``LogisticRegression`` (default C, max_iter 5000) fits the raw pixels of the
   whole 70%. Bar: aimass's test accuracy >= the baseline's.
2. ``fashion`` (unless ``--only digits``): Fashion-MNIST, 2,000 training and 1,000 test images
   (:func:`aimass.data.bundled.fashion_mnist_folder`, seed 0), aimass at ``--fashion-budget``
   against the same logistic regression on the raw pixels (C=0.1, as in image_quality.py). Bar: the same.

Usage::

    python bench/baseline_floor.py                    # ~8 min on 2 cores
    python bench/baseline_floor.py --only digits      # ~5 min

Prints one table, writes ``bench/results/baseline_floor.json`` and exits 0 whatever the bars say.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "baseline_floor.json"
console = Console(width=200)


def digits_folder(dest: Path, seed: int = 0, size: int = 64) -> Path:
    """load_digits as ``size`` x ``size`` grey PNGs (8: the native 8x8; 64: upscaled as the issue's
    user saved them) in ``dest/{train,test}/<digit>/``, a 70/30 stratified split."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train, test = train_test_split(index, test_size=0.3, stratify=digits.target, random_state=seed)
    for split, rows in (("train", train), ("test", test)):
        for i in rows:
            folder = dest / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            array = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
            image = Image.fromarray(array)
            if size != 8:
                image = image.resize((size, size), Image.BILINEAR)
            image.save(folder / f"{i:04d}.png")
    return dest


def logreg_pixels(ds, c: float) -> dict:
    """Logistic regression on the raw grey pixels in [0, 1] of train + valid (aimass's whole
    training share), scored on the test split."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    def load(split):
        x = [np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() / 255 for p in ds.inputs(split)]
        return np.stack(x), ds.labels(split)

    began = time.perf_counter()
    (xa, ya), (xb, yb), (xt, yt) = load("train"), load("valid"), load("test")
    model = LogisticRegression(C=c, max_iter=5000).fit(np.vstack([xa, xb]), ya + yb)
    predicted = model.predict(xt)
    return {"accuracy": float(np.mean(predicted == np.array(yt))), "wall_s": time.perf_counter() - began}


def compare(label: str, folder: Path, name: str, budget: str | None, c: float) -> list[dict]:
    """The baseline row and aimass's row on one image folder."""
    import aimass.api as api

    ds = api.import_dataset(folder, name=name, seed=0)
    n_test = len(ds.labels("test"))
    base = logreg_pixels(ds, c)
    params = {"time_budget": budget} if budget else {}
    began = time.perf_counter()
    result = api.train_model("image-classification", ds, name=name, progress=False, **params)
    wall = time.perf_counter() - began
    acc, portfolio = result["metrics"]["accuracy"], result.get("portfolio") or {}
    ok = acc >= base["accuracy"]
    candidates = portfolio.get("candidates", {})
    valid = ", ".join(f"{k} {v.get('accuracy', float('nan')):.4f}" for k, v in candidates.items())
    return [
        {
            "dataset": f"{label} (test n={n_test})",
            "system": f"raw pixels + sklearn LogReg (C={c:g})",
            **base,
            "bar": "reference",
            "status": "-",
        },
        {
            "dataset": f"{label} (test n={n_test})",
            "system": f"aimass.train_model (budget {budget or 'default'})",
            "accuracy": acc,
            "macro_f1": result["metrics"]["macro_f1"],
            "wall_s": wall,
            "bar": "aimass >= best baseline",
            "status": "PASS" if ok else "FAIL",
            "note": f"chosen {portfolio.get('chosen')}; valid acc: {valid}",
            "portfolio": portfolio,
            "timings": result["timings"],
            "model": result["model"],
        },
    ]


def render(rows: list[dict]) -> None:
    table = Table(title="aimass baseline floor")
    for column in ("dataset", "system", "test accuracy", "wall s", "bar", "status", "note"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r["dataset"],
            r["system"],
            f"{r['accuracy']:.4f}",
            f"{r['wall_s']:.1f}",
            r["bar"],
            r["status"],
            r.get("note", ""),
        )
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default=None, help="aimass budget on digits (default: the task's, 5m)")
    parser.add_argument("--fashion-budget", default="2m", help="aimass budget on Fashion-MNIST (default 2m)")
    parser.add_argument("--only", action="append", choices=("digits", "fashion"))
    parser.add_argument("--digits-size", type=int, default=64, help="digits PNG side in pixels (default 64)")
    args = parser.parse_args(argv)
    parts = args.only or ["digits", "fashion"]
    work = Path(tempfile.mkdtemp(prefix="aimass-bench-"))
    atexit.register(shutil.rmtree, work, True)
    os.environ["AIMASS_HOME"] = str(work / "home")
    started = time.perf_counter()
    rows: list[dict] = []
    if "digits" in parts:
        size = args.digits_size
        folder = digits_folder(work / "digits", size=size)
        rows += compare(f"digits 8x8 as {size} px PNGs, 70/30", folder, "digits", args.budget, 1.0)
    if "fashion" in parts:
        from aimass.data.bundled import fashion_mnist_folder

        folder = fashion_mnist_folder(work / "fashion-mnist", train=2000, test=1000, seed=0)
        rows += compare("Fashion-MNIST 2k/1k", folder, "fashion", args.fashion_budget, 0.1)
    render(rows)
    import torch

    RESULTS.parent.mkdir(exist_ok=True)
    out = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "total_wall_s": time.perf_counter() - started,
        "versions": {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(out, indent=2, default=str))
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
