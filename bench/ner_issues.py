"""Annotation-error benchmark for texts with entities: ``aimass data issues`` against ``cleanlab``'s
token-classification detector on the same probabilities.

Data: 2,000 sentences of the People's Daily of January 1998 that hold an entity
(``aimass.data.bundled.peoples_daily``: PER, LOC, ORG), drawn at random (``random.Random(seed)``).
In 5% of them one entity is corrupted, as annotators err: its type changed (``type``), the entity
left out (``missed``) or its end moved by one character (``boundary``), a third each. The noisy
sentences are written as JSONL and imported with ``aimass.import_dataset``; then:

* ``aimass``: ``aimass.dataset_issues(ds)`` as ``aimass data issues`` runs it (5-fold CRF
  marginals per unit over the lexical features and the encoder's unit vectors, confident learning
  over the units' BIO tags); a sentence is flagged when the report lists it;
* ``aimass lexical``: the same with ``network=False`` (``--no-network``: the lexical CRF alone,
  what it did before 2026-12-07);
* ``cleanlab``: ``cleanlab.token_classification.filter.find_label_issues(labels, pred_probs)`` with
  its defaults, on exactly the out-of-fold probabilities the report used
  (``aimass.tasks.entity_issues.out_of_fold`` with the same folds, seed and unit vectors); a
  sentence is flagged when it holds a flagged token (cleanlab is a bench-only dependency: the
  ``bench`` extra);
* ``disagreement``: every sentence whose out-of-fold predicted entities differ from the given
  ones (what a careful engineer tries first).

Precision and recall are of the flagged sentences against the corrupted ones. The corpus has
errors of its own (its nested names are read as one type), so precision counts those as false
alarms. Bar: aimass's precision and recall both >= cleanlab's. ``--seeds N`` repeats the draw and
the corruption with seeds 0..N-1.

Usage::

    python bench/ner_issues.py [--seeds 3]

Prints one table, writes ``bench/results/ner_issues.json`` and exits 0 whatever the bar says.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results" / "ner_issues.json"
LABELS = ("PER", "LOC", "ORG")
NAMES = ("aimass", "aimass lexical", "cleanlab", "disagreement")
console = Console(width=150)


def corrupt(rows: list[dict], share: float, rng: random.Random) -> dict[str, str]:
    """Corrupt one entity in ``share`` of the rows (in place); text -> how."""
    picked = rng.sample(range(len(rows)), int(share * len(rows)))
    how_of = {}
    for n, i in enumerate(picked):
        text, spans = rows[i]["text"], rows[i]["entities"]
        j = rng.randrange(len(spans))
        start, end, label = spans[j]
        how = ("type", "missed", "boundary")[n % 3]
        starts = {s[0] for s in spans}
        if how == "boundary" and end < len(text) and end not in starts:  # one more character
            spans[j] = [start, end + 1, label]
        elif how == "boundary" and end - start > 1:
            spans[j] = [start, end - 1, label]
        elif how == "missed":
            spans.pop(j)
        else:
            how = "type"
            spans[j] = [start, end, rng.choice([x for x in LABELS if x != label])]
        how_of[text] = how
    return how_of


def scores(flagged: set[int], noisy: set[int]) -> dict:
    hit = len(flagged & noisy)
    precision, recall = hit / max(len(flagged), 1), hit / max(len(noisy), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {
        "flagged": len(flagged),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def run(seed: int, n: int, share: float) -> dict:
    import aimass
    from aimass.data.bundled import peoples_daily
    from aimass.tasks import entity_issues
    from aimass.tasks.token_classification import EntityTagger

    rng = random.Random(seed)
    pool = [(t, [list(s) for s in e]) for t, e in peoples_daily() if e]
    rows = [{"text": t, "entities": e} for t, e in rng.sample(pool, n)]
    how_of = corrupt(rows, share, rng)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AIMASS_HOME"] = str(Path(tmp) / "home")
        path = Path(tmp) / "noisy.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        ds = aimass.import_dataset(path, name="noisy")
        stored = ds.rows()
        noisy = {i for i, r in enumerate(stored) if r["text"] in how_of}
        began = time.perf_counter()
        report = aimass.dataset_issues(ds, hard=0, seed=seed)
        seconds = time.perf_counter() - began
        ours = {i["row"] for i in report["label_issues"]}
        began = time.perf_counter()
        lexical = aimass.dataset_issues(ds, hard=0, seed=seed, network=False)
        seconds_lexical = time.perf_counter() - began
        ours_lexical = {i["row"] for i in lexical["label_issues"]}

        texts = [r["text"] for r in stored]
        spans = [r["label"] for r in stored]
        dense = EntityTagger().unit_features(texts)
        tags, proba, found = entity_issues.out_of_fold(texts, spans, folds=5, seed=seed, dense=dense)
    from cleanlab.token_classification.filter import find_label_issues

    column = {t: i for i, t in enumerate(tags)}
    given = entity_issues.given_tags(texts, spans)
    keep = [i for i, g in enumerate(given) if g]
    labels = [np.array([column[t] for t in given[i]]) for i in keep]
    theirs = {keep[s] for s, _ in find_label_issues(labels, [proba[i] for i in keep])}
    differ = {i for i in range(len(texts)) if sorted(map(tuple, found[i])) != sorted(map(tuple, spans[i]))}
    kinds = sorted(set(how_of.values()))
    recall_by_kind = {
        name: {
            k: round(
                sum(1 for i in noisy if how_of[texts[i]] == k and i in flagged)
                / max(sum(1 for i in noisy if how_of[texts[i]] == k), 1),
                4,
            )
            for k in kinds
        }
        for name, flagged in (
            ("aimass", ours),
            ("aimass lexical", ours_lexical),
            ("cleanlab", theirs),
            ("disagreement", differ),
        )
    }
    return {
        "seed": seed,
        "sentences": len(stored),
        "corrupted": len(noisy),
        "by_kind": {k: sum(1 for i in noisy if how_of[texts[i]] == k) for k in kinds},
        "aimass": {**scores(ours, noisy), "seconds": round(seconds, 1)},
        "aimass lexical": {**scores(ours_lexical, noisy), "seconds": round(seconds_lexical, 1)},
        "cleanlab": scores(theirs, noisy),
        "disagreement": scores(differ, noisy),
        "recall_by_kind": recall_by_kind,
        "out_of_fold_tag_accuracy": report["accuracy"],
        "out_of_fold_micro_f1": report["micro_f1"],
        "out_of_fold_micro_f1_lexical": lexical["micro_f1"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="draw and corruption seeds 0..N-1 (default 1)")
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--share", type=float, default=0.05, help="share of sentences corrupted")
    args = parser.parse_args()
    runs = [run(seed, args.sentences, args.share) for seed in range(args.seeds)]
    table = Table(
        title=f"Corrupted entities in {args.share:.0%} of {args.sentences:,} People's Daily sentences"
    )
    for column in ("seed", "detector", "flagged", "precision", "recall", "F1", "recall type/missed/boundary"):
        table.add_column(column)
    for r in runs:
        for name in NAMES:
            s, kinds = r[name], r["recall_by_kind"][name]
            table.add_row(
                str(r["seed"]),
                name,
                str(s["flagged"]),
                f"{s['precision']:.3f}",
                f"{s['recall']:.3f}",
                f"{s['f1']:.3f}",
                " / ".join(f"{kinds.get(k, 0):.2f}" for k in ("type", "missed", "boundary")),
            )
    console.print(table)
    mean = {
        name: {m: round(float(np.mean([r[name][m] for r in runs])), 4) for m in ("precision", "recall", "f1")}
        for name in NAMES
    }
    passed = all(mean["aimass"][m] >= mean["cleanlab"][m] for m in ("precision", "recall"))
    console.print(f"mean over {len(runs)} seed(s): {mean}")
    console.print(f"Bar (aimass precision and recall >= cleanlab's): {'PASS' if passed else 'FAIL'}")
    result = {
        "bench": "ner_issues",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": vars(args),
        "runs": runs,
        "mean": mean,
        "bar": "aimass precision and recall >= cleanlab's on the same probabilities",
        "passed": passed,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
