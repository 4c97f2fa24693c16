"""Multi-label text benchmark: aimass's ``text-multilabel`` against the baselines a careful engineer
tries first, trained in the same run on the same split.

Data: no multi-label text set ships in a package, so this one is built from BBC News (2,225 real
articles, 5 topics). Each article goes to train or test first (70/30, stratified by topic, seed 0),
then rows are made inside each side: an article's opening alone (its topic), or the openings of
two articles of different topics joined (both topics), or of three (three topics). No article
appears on both sides. The rows are written as JSONL (``{"text", "labels": [...]}``), the train
file imported with ``aimass.import_dataset`` (which holds its validation split out of it) and
trained with ``aimass.train_model`` (the path ``aimass train`` takes, the task picked from the
data); the test file is imported as its test split (``test_path``) and scored with ``model.evaluate``.

Peers, fitted on the same training rows (the whole train file, validation rows included):

* ``tfidf-ovr``: scikit-learn ``TfidfVectorizer`` (word 1-2 grams, sublinear tf, min_df 2) + one
  ``LogisticRegression`` per label (C=10), labels from 0.5 (its best label when none is).
* ``embedding-ovr``: the same regression on aimass's frozen backbone embeddings (mean-pooled,
  from aimass's cache: the embedding time is not counted for it).

Bar: aimass's test micro-F1 >= the best peer's. Also printed: macro-F1, exact match (the share of
rows given exactly their labels), fit seconds.

Usage::

    python bench/multilabel.py                                        # ~1 min on 2 cores
    python bench/multilabel.py --backbone multilingual-e5-small --output bench/results/multilabel_e5.json

Writes ``bench/results/multilabel.json`` (``--output``); exits 0 whatever the bar says.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "multilabel.json"
CHARS = 300  # of each article's opening
console = Console(width=160)


def build_rows(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows): BBC openings alone or joined by 2 or 3 of different topics."""
    from aimass.data import bbc_news_path, bbc_news_text

    rng = random.Random(seed)
    sides = {"train": {}, "test": {}}
    for folder in sorted(bbc_news_path().iterdir()):
        texts = [" ".join(bbc_news_text(p)[:CHARS].split()) for p in sorted(folder.glob("*.txt"))]
        rng.shuffle(texts)
        cut = round(0.7 * len(texts))
        sides["train"][folder.name], sides["test"][folder.name] = texts[:cut], texts[cut:]
    out = []
    for side in ("train", "test"):
        pools = {topic: list(texts) for topic, texts in sides[side].items()}
        rows = []
        while sum(len(p) for p in pools.values()) >= 3:
            left = [t for t, p in pools.items() if p]
            k = min(len(left), rng.choice([1, 1, 2, 2, 3]))
            topics = rng.sample(left, k)
            rows.append({"text": " ".join(pools[t].pop() for t in topics), "labels": sorted(topics)})
        out.append(rows)
    return out[0], out[1]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    from sklearn.metrics import f1_score

    return {
        "micro_f1": round(float(f1_score(truth, predicted, average="micro", zero_division=0)), 4),
        "macro_f1": round(float(f1_score(truth, predicted, average="macro", zero_division=0)), 4),
        "exact_match": round(float((truth == predicted).all(1).mean()), 4),
    }


def ovr(x_train, y_train, x_test, c: float = 10.0) -> np.ndarray:
    """One logistic regression per label; labels from 0.5, the best one when none is."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from aimass.evaluation.metrics import decide

    clf = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000)).fit(x_train, y_train)
    return decide(clf.predict_proba(x_test), 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="auto", help="aimass's backbone (default: by language)")
    parser.add_argument("--output", default=str(RESULTS), help="the JSON written")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aimass-bench-ml-"))
    os.environ["AIMASS_HOME"] = str(home)
    import aimass
    from aimass.data.multilabel import split_labels
    from aimass.evaluation.metrics import multi_hot

    train_rows, test_rows = build_rows(args.seed)
    folder = home / "data"
    folder.mkdir()
    began = time.perf_counter()
    ds = aimass.import_dataset(
        write_jsonl(folder / "topics.jsonl", train_rows),
        test_path=write_jsonl(folder / "test.jsonl", test_rows),
    )
    result = aimass.train_model(None, ds.id, backbone=args.backbone)
    fit_s = time.perf_counter() - began
    model = aimass.load(result["model"])
    report = model.evaluate(ds, "test")
    # the rows as stored (BBC repeats a few articles: the import rejects the copies), for the peers too
    train_rows = [
        {"text": r["text"], "labels": split_labels(r["label"])} for r in ds.rows() if r["split"] != "test"
    ]
    test_rows = [{"text": r["text"], "labels": split_labels(r["label"])} for r in ds.rows("test")]
    classes = sorted({label for r in train_rows for label in r["labels"]})
    y_train = multi_hot([r["labels"] for r in train_rows], classes)
    y_test = multi_hot([r["labels"] for r in test_rows], classes)
    rows = {
        "aimass": {
            "micro_f1": round(report["micro_f1"], 4),
            "macro_f1": round(report["macro_f1"], 4),
            "exact_match": round(report["accuracy"], 4),
            "fit_s": round(fit_s, 1),
            "chosen": model.chosen_,
            "threshold": model.threshold_,
            "backbone": model.backbone_,
        }
    }

    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [r["text"] for r in train_rows], [r["text"] for r in test_rows]
    began = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    predicted = ovr(vec.fit_transform(texts[0]), y_train, vec.transform(texts[1]))
    rows["tfidf-ovr"] = {**scores(y_test, predicted), "fit_s": round(time.perf_counter() - began, 1)}

    from aimass.backbones import get_backbone
    from aimass.train.cache import cached_embeddings

    tokenizer, encoder = get_backbone(model.backbone_).load()
    embed = [
        cached_embeddings(
            encoder,
            tokenizer,
            [model.prefix_ + t for t in part],
            f"bench-ml|{i}",
            max_length=128,
            keep_layer=None,
            progress=False,
        )["pooled"].numpy()
        for i, part in enumerate(texts)
    ]
    began = time.perf_counter()
    predicted = ovr(embed[0], y_train, embed[1])
    rows["embedding-ovr"] = {**scores(y_test, predicted), "fit_s": round(time.perf_counter() - began, 1)}

    best_peer = max(v["micro_f1"] for k, v in rows.items() if k != "aimass")
    passed = rows["aimass"]["micro_f1"] >= best_peer
    table = Table(title=f"Multi-label BBC topics: {len(train_rows)} train rows, {len(test_rows)} test rows")
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
                "rejected_at_import": ds.manifest["rejects"],
                "train_rows": len(train_rows),
                "test_rows": len(test_rows),
                "labels_per_row": round(float(y_test.sum(1).mean()), 3),
                "rows": rows,
                "candidates": model.candidates_,
                "bar": {
                    "aimass_micro_f1": rows["aimass"]["micro_f1"],
                    "best_peer": best_peer,
                    "pass": passed,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
