"""Multi-label label-issue benchmark: aimass's one-vs-rest confident learning against ``cleanlab``'s
multi-label ``find_label_issues`` on the same probabilities.

Data: the multi-label rows of ``bench/multilabel.py`` (BBC News openings alone or joined by two or
three of different topics; its training file, 884 rows, 1.8 labels a row), imported with
``aimass.import_dataset``. 5% of the rows (seed N) get one wrong label decision each, drawn evenly
from the three ways people mislabel such rows:

* ``add``: a topic the text is not about is added;
* ``drop``: one of its topics is left out (rows with two or more);
* ``swap``: one of its topics is replaced by another it is not about.

Out-of-fold probabilities are computed once per seed, the way ``aimass data issues`` computes them
for multi-label data (5 folds stratified by each row's rarest label; one logistic regression per
label on the frozen MiniLM embeddings beside the TF-IDF of the texts), and both detectors read
exactly those:

* ``aimass``: :func:`aimass.evaluation.label_issues.find_multilabel_issues` (no cleanlab involved),
  a row flagged when any of its label decisions is;
* ``cleanlab``: ``cleanlab.multilabel_classification.filter.find_label_issues(labels, pred_probs)``
  with its defaults (a bench-only dependency: the ``bench`` extra).

Precision and recall are of the flagged rows against the corrupted ones. Bar: aimass's precision and
recall both >= cleanlab's, pooled over the seeds (and seed by seed, printed). Also printed:

* ``top_found``: of the rows each ranks first (lowest label quality), as many as were corrupted, how
  many were (aimass ranks by the probability of the row's label set,
  :func:`~aimass.evaluation.label_issues.label_set_log_likelihood`; cleanlab by its multi-label
  ``get_label_quality_scores``): what a person reviewing the top of the list meets;
* ``restored``: of the corrupted rows aimass found, how many its suggestion (every flagged decision
  turned) gives back exactly their true labels.

Usage::

    python bench/label_issues_multilabel.py [--seeds 5]          # ~30 s on 2 cores

Writes ``bench/results/label_issues_multilabel.json``; exits 0 whatever the bar says.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from label_issues import scores  # noqa: E402
from multilabel import build_rows, write_jsonl  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "label_issues_multilabel.json"
NOISE, FOLDS = 0.05, 5
CLEANLAB = "cleanlab"
console = Console(width=160)


def corrupt(targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``NOISE`` of the rows with one wrong label decision: (noisy targets, corrupted mask, how)."""
    rng = random.Random(seed)
    noisy = targets.copy()
    picked = rng.sample(range(len(targets)), round(NOISE * len(targets)))
    ways = []
    for n, i in enumerate(picked):
        has = list(np.flatnonzero(targets[i]))
        lacks = list(np.flatnonzero(targets[i] == 0))
        way = ("add", "drop", "swap")[n % 3]
        if way == "drop" and len(has) < 2:
            way = "swap"
        if way in ("drop", "swap"):
            noisy[i, rng.choice(has)] = 0
        if way in ("add", "swap"):
            noisy[i, rng.choice(lacks)] = 1
        ways.append(way)
    mask = np.zeros(len(targets), dtype=bool)
    mask[picked] = True
    return noisy, mask, ways


def features(home: Path):
    """(features, clean multi-hot targets, strata, classes, seconds to embed) of the training rows."""
    import aimass
    from aimass.curation import stack_features
    from aimass.data.multilabel import split_labels, strata
    from aimass.evaluation.metrics import multi_hot
    from aimass.tasks import get_task

    os.environ["AIMASS_HOME"] = str(home)
    train, _ = build_rows()
    ds = aimass.import_dataset(write_jsonl(home / "train.jsonl", train), name="bbc-multilabel")
    began = time.perf_counter()
    embeddings, tfidf = get_task("text-multilabel").features(ds, lexical=True)
    seconds = time.perf_counter() - began
    targets = multi_hot([split_labels(label) for label in ds.labels()], ds.classes)
    return stack_features(embeddings, tfidf), targets, strata(ds.rows()), ds.classes, seconds


def run_seed(x, clean: np.ndarray, strata: list[str], seed: int) -> list[dict]:
    from cleanlab.multilabel_classification.filter import find_label_issues as cleanlab_find
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    from aimass.evaluation import label_issues as cl

    noisy, corrupted, ways = corrupt(clean, seed)
    began = time.perf_counter()
    proba = cl.out_of_fold_multilabel(x, noisy, strata=strata, folds=FOLDS, seed=seed)
    oof_s = time.perf_counter() - began
    given = [list(np.flatnonzero(row)) for row in noisy]
    cells = None
    rows = []
    quality = {  # how each ranks the rows, least likely labels first
        "aimass": cl.label_set_log_likelihood(noisy, proba),
        CLEANLAB: get_label_quality_scores(labels=given, pred_probs=proba),
    }
    for system, detect in (
        ("aimass", lambda: cl.find_multilabel_issues(noisy, proba)),
        (CLEANLAB, lambda: cleanlab_find(labels=given, pred_probs=proba)),
    ):
        began = time.perf_counter()
        found = np.asarray(detect(), dtype=bool)
        detect_s = time.perf_counter() - began
        if found.ndim == 2:
            cells, found = found, found.any(1)
        rows.append(
            {
                "seed": seed,
                "system": system,
                "rows": len(clean),
                "corrupted": int(corrupted.sum()),
                **scores(found, corrupted),
                # of the rows ranked first, as many as were corrupted: the share that were
                "top_found": int(
                    corrupted[np.argsort(quality[system], kind="stable")[: corrupted.sum()]].sum()
                ),
                "detect_s": round(detect_s, 4),
                "oof_s": round(oof_s, 2),
            }
        )
    fixed = np.where(cells, 1 - noisy, noisy)  # aimass's suggestion: every flagged decision turned
    hit = cells.any(1) & corrupted
    rows[0]["restored"] = int((fixed[hit] == clean[hit]).all(1).sum())
    rows[0]["ways"] = {w: ways.count(w) for w in ("add", "drop", "swap")}
    return rows


def pooled(rows: list[dict]) -> list[dict]:
    out = []
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system]
        flagged, found, corrupted, top = (
            sum(r[k] for r in mine) for k in ("flagged", "found", "corrupted", "top_found")
        )
        precision, recall = found / max(flagged, 1), found / max(corrupted, 1)
        entry = {
            "seed": "all",
            "system": system,
            "corrupted": corrupted,
            "flagged": flagged,
            "found": found,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-12), 4),
            "top_found": top,
            "top_precision": round(top / max(corrupted, 1), 4),
            "detect_s": round(sum(r["detect_s"] for r in mine), 4),
            "oof_s": round(sum(r["oof_s"] for r in mine), 2),
        }
        if "restored" in mine[0]:
            entry["restored"] = sum(r["restored"] for r in mine)
        out.append(entry)
    return out


def verdict(rows: list[dict], total: list[dict]) -> dict:
    by = {(r["seed"], r["system"]): r for r in rows + total}

    def holds(seed) -> bool:
        ours, theirs = by[(seed, "aimass")], by[(seed, CLEANLAB)]
        return ours["precision"] >= theirs["precision"] and ours["recall"] >= theirs["recall"]

    return {
        "bar": "aimass precision >= cleanlab's and recall >= cleanlab's (pooled over the seeds)",
        "held_by_seed": [holds(seed) for seed in sorted({r["seed"] for r in rows})],
        "pass_pooled": holds("all"),
    }


def show(rows: list[dict], result: dict) -> None:
    table = Table(title=f"Multi-label label issues: {result['rows']} BBC rows, {NOISE:.0%} corrupted")
    columns = ["seed", "system", "corrupted", "flagged", "found", "precision", "recall", "f1", "top_found"]
    for column in [*columns, "restored"]:
        table.add_column(column)
    for row in rows + result["pooled"]:
        table.add_row(*[str(row[c]) for c in columns], str(row.get("restored", "")))
    console.print(table)
    bar = result["verdict"]
    console.print(
        f"embed {result['embed_s']} s; out-of-fold {result['pooled'][0]['oof_s']} s over the seeds. "
        f"Bar ({bar['bar']}): {'PASS' if bar['pass_pooled'] else 'FAIL'}; by seed {bar['held_by_seed']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="corruptions with seeds 0..N-1")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    import cleanlab

    global CLEANLAB
    CLEANLAB = f"cleanlab {cleanlab.__version__}"
    home = Path(tempfile.mkdtemp(prefix="aimass-bench-mlissues-"))
    x, clean, strata, classes, embed_s = features(home)
    rows = [r for seed in range(args.seeds) for r in run_seed(x, clean, strata, seed)]
    total = pooled(rows)
    result = {
        "benchmark": "label_issues_multilabel",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": len(clean),
        "labels": classes,
        "labels_per_row": round(float(clean.sum(1).mean()), 3),
        "noise": NOISE,
        "folds": FOLDS,
        "embed_s": round(embed_s, 2),
        "runs": rows,
        "pooled": total,
        "verdict": verdict(rows, total),
    }
    show(rows, result)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
