"""Multi-label image benchmark: aimass's ``image-multilabel`` against the baselines a careful
engineer tries first, trained in the same run on the same split.

Data: no multi-label image set ships in a package, so this one is built from Fashion-MNIST (Debian
``dataset-fashion-mnist``: real 28 x 28 product photos, 10 classes). Each image is a 2 x 2 mosaic
(56 x 56) with one to three product photos of different classes in random tiles, the other tiles
black (the photos' own background); its labels are the classes it shows. Training mosaics use only
the official training photos (each photo once), test mosaics only the official test photos. The
mosaics are written as PNGs with a JSONL manifest (``{"image", "labels": [...]}``), imported with
``aimass.import_dataset`` (which holds a validation split out of the training file) and trained
with ``aimass.train_model`` (the path ``aimass train`` takes, the task picked from the data); the
test mosaics are the manifest's given ``test`` split (its ``split`` column; validation is drawn from
the training mosaics) and scored with ``model.evaluate``.

Peers, fitted on the same training mosaics (validation ones included):

* ``pixels-ovr``: the standardised raw pixels at the native 56 x 56 (grey) + one scikit-learn
  ``LogisticRegression`` per label (C=0.1), labels from 0.5 (its best label when none is);
* ``features-ovr``: the same regression (C=10) on the L2-normalised pooled features of aimass's frozen
  EfficientNet-Lite0 at aimass's size (``ImageClassification.features``, the embedding time not
  counted for it).

Bar: aimass's test micro-F1 >= the best peer's. Also printed: macro-F1, exact match, fit seconds.

Usage::

    python bench/image_multilabel.py                 # ~2 min on 2 cores

Writes ``bench/results/image_multilabel.json`` (``--output``); exits 0 whatever the bar says.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "image_multilabel.json"
console = Console(width=160)


def mosaics(part: str, n: int, seed: int, folder: Path) -> list[dict]:
    """``n`` mosaics of Fashion-MNIST's ``part`` ("train" / "t10k") photos written under ``folder``,
    and their manifest rows."""
    from PIL import Image

    from aimass.data.bundled import FASHION_CLASSES, fashion_mnist_arrays

    images, labels = fashion_mnist_arrays(part)
    rng = np.random.default_rng(seed)
    unused = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(len(FASHION_CLASSES))}
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        k = int(rng.choice([1, 1, 2, 2, 3]))
        classes = rng.choice(len(FASHION_CLASSES), size=k, replace=False)
        tiles = [np.zeros((28, 28), np.uint8)] * 4
        for tile, c in zip(rng.permutation(4)[:k], classes):
            tiles[tile] = images[unused[int(c)].pop()]
        mosaic = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])
        Image.fromarray(mosaic).save(folder / f"{i:05d}.png")
        rows.append(
            {"image": f"{folder.name}/{i:05d}.png", "labels": sorted(FASHION_CLASSES[c] for c in classes)}
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    from sklearn.metrics import f1_score

    return {
        "micro_f1": round(float(f1_score(truth, predicted, average="micro", zero_division=0)), 4),
        "macro_f1": round(float(f1_score(truth, predicted, average="macro", zero_division=0)), 4),
        "exact_match": round(float((truth == predicted).all(1).mean()), 4),
    }


def ovr(x_train, y_train, x_test, c: float) -> np.ndarray:
    """One logistic regression per label; labels from 0.5, the best one when none is."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from aimass.evaluation.metrics import decide

    clf = OneVsRestClassifier(LogisticRegression(C=c, max_iter=3000)).fit(x_train, y_train)
    return decide(clf.predict_proba(x_test), 0.5)


def grey_pixels(paths: list[str]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() / 255 for p in paths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=1500, help="training mosaics")
    parser.add_argument("--test", type=int, default=600, help="test mosaics")
    parser.add_argument("--output", default=str(RESULTS), help="the JSON written")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aimass-bench-iml-"))
    os.environ["AIMASS_HOME"] = str(home)
    import aimass
    from aimass.data.multilabel import split_labels
    from aimass.evaluation.metrics import multi_hot
    from aimass.tasks.image_multilabel import ImageMultiLabel

    data = home / "data"
    train_rows = mosaics("train", args.train, args.seed, data / "train")
    test_rows = mosaics("t10k", args.test, args.seed + 1, data / "test")
    given = [dict(r, split="train") for r in train_rows] + [dict(r, split="test") for r in test_rows]
    began = time.perf_counter()
    ds = aimass.import_dataset(write_jsonl(data / "mosaics.jsonl", given))  # valid drawn from train
    result = aimass.train_model(None, ds.id)
    fit_s = time.perf_counter() - began
    model = aimass.load(result["model"])
    report = model.evaluate(ds, "test")
    rows = {
        "aimass": {
            "micro_f1": round(report["micro_f1"], 4),
            "macro_f1": round(report["macro_f1"], 4),
            "exact_match": round(report["accuracy"], 4),
            "fit_s": round(fit_s, 1),
            "chosen": model.chosen_,
            "threshold": model.threshold_,
            "image_size": model.image_size_,
        }
    }
    classes = list(model.classes_)
    fitted = [r["split"] != "test" for r in ds.rows()]
    labels = [split_labels(x) for x in ds.labels()]
    y_train = multi_hot([x for x, f in zip(labels, fitted) if f], classes)
    y_test = multi_hot([x for x, f in zip(labels, fitted) if not f], classes)
    paths = ds.inputs()
    train_paths = [x for x, f in zip(paths, fitted) if f]
    test_paths = [x for x, f in zip(paths, fitted) if not f]

    began = time.perf_counter()
    x_train, x_test = grey_pixels(train_paths), grey_pixels(test_paths)
    mean, scale = x_train.mean(0), np.maximum(x_train.std(0), 0.02)
    predicted = ovr((x_train - mean) / scale, y_train, (x_test - mean) / scale, c=0.1)
    rows["pixels-ovr"] = {**scores(y_test, predicted), "fit_s": round(time.perf_counter() - began, 1)}

    features = ImageMultiLabel.features(ds, size=model.image_size_)[0]  # every row, in row order
    began = time.perf_counter()
    predicted = ovr(features[np.array(fitted)], y_train, features[~np.array(fitted)], c=10.0)
    rows["features-ovr"] = {**scores(y_test, predicted), "fit_s": round(time.perf_counter() - began, 1)}

    best_peer = max(v["micro_f1"] for k, v in rows.items() if k != "aimass")
    passed = rows["aimass"]["micro_f1"] >= best_peer
    table = Table(
        title=f"Multi-label Fashion-MNIST mosaics: {len(y_train)} train (valid in), {len(y_test)} test"
    )
    for col in ("model", "micro-F1", "macro-F1", "exact match", "fit s (aimass: import + embedding + fit)"):
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, str(r["micro_f1"]), str(r["macro_f1"]), str(r["exact_match"]), str(r["fit_s"]))
    console.print(table)
    console.print(
        f"aimass chose {model.chosen_} (threshold {model.threshold_}); candidates {model.candidates_}"
    )
    console.print(
        f"bar: aimass micro-F1 {rows['aimass']['micro_f1']} >= best peer {best_peer}: "
        f"{'PASS' if passed else 'FAIL'}"
    )
    Path(args.output).write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "train_rows": len(y_train),
                "test_rows": len(y_test),
                "labels_per_row": round(float(y_test.sum(1).mean()), 3),
                "rows": rows,
                "candidates": model.candidates_,
                "bar": {
                    "aimass_micro_f1": rows["aimass"]["micro_f1"],
                    "best_peer": best_peer,
                    "pass": passed,
                },
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
