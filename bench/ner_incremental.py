"""Continuing an entity tagger on new texts with a new label, against retraining on everything.

Data: 2,400 sentences of the People's Daily of January 1998 (``aimass.data.bundled.peoples_daily``,
the first 6,000 shuffled with ``random.Random(0)``). The first 1,200 are the old data with their
ORG spans removed (ORG did not exist yet); the other 1,200 are the new data, ORG included. Each is
imported with ``aimass.import_dataset`` (its own random split); the retrain's dataset is both
files' rows with the splits they were given, so all three models are tested on the same texts.

Per ``dims`` (0: the lexical CRF only; 64: the portfolio with the e5 network):

* parent: ``aimass.train_model`` on the old data;
* child: ``aimass.continue_model(parent, new, replay=200)`` (what ``aimass train --from`` runs);
* retrain: ``aimass.train_model`` on old + new.

Reported: entity micro-F1 on the old test split (parent, child, retrain; forgetting = parent -
child in points), on the new one and on both together; seconds of each fit. Bars, as issue 26 set
them for classification: forgetting <= 1 point, the child >= 99% of the retrain's micro-F1 on both
test splits together, in less time.

Usage::

    python bench/ner_incremental.py            # ~6 minutes on 2 cores

Writes ``bench/results/ner_incremental.json``; exits 0 whatever the bars say.
"""

from __future__ import annotations

import json
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ner_incremental.json"


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AIMASS_HOME"] = str(Path(tmp) / "home")
        import aimass
        from aimass.data.bundled import peoples_daily

        data = peoples_daily(6000)
        random.Random(0).shuffle(data)
        old_rows = [{"text": t, "entities": [s for s in e if s[2] != "ORG"]} for t, e in data[:1200]]
        new_rows = [{"text": t, "entities": e} for t, e in data[1200:2400]]
        old = aimass.import_dataset(write(Path(tmp) / "old.jsonl", old_rows), name="pd-old")
        new = aimass.import_dataset(write(Path(tmp) / "new.jsonl", new_rows), name="pd-new")
        both = [
            {"text": r["text"], "entities": r["label"], "split": r["split"]}
            for d in (old, new)
            for r in d.rows()
        ]
        everything = aimass.import_dataset(write(Path(tmp) / "all.jsonl", both), name="pd-all")
        tests = {
            "old": (old.inputs("test"), old.labels("test")),
            "new": (new.inputs("test"), new.labels("test")),
            "all": (old.inputs("test") + new.inputs("test"), old.labels("test") + new.labels("test")),
        }
        runs = []
        for dims in (0, 64):
            timed = {}
            began = time.perf_counter()
            parent = aimass.train_model(None, old.id, name=f"pd{dims}", dims=dims)
            timed["parent"] = time.perf_counter() - began
            began = time.perf_counter()
            child = aimass.continue_model(parent["model"], new.id, replay=200)
            timed["child"] = time.perf_counter() - began
            began = time.perf_counter()
            retrain = aimass.train_model(None, everything.id, name=f"all{dims}", dims=dims)
            timed["retrain"] = time.perf_counter() - began
            models = {
                k: aimass.load(v["model"])
                for k, v in (("parent", parent), ("child", child), ("retrain", retrain))
            }
            scores = {
                name: {
                    split: round(m.evaluate(pair, "test", top_k=0)["micro_f1"], 4)
                    for split, pair in tests.items()
                }
                for name, m in models.items()
            }
            forgetting = round((scores["parent"]["old"] - scores["child"]["old"]) * 100, 2)
            ratio = scores["child"]["all"] / max(scores["retrain"]["all"], 1e-9)
            row = {
                "dims": dims,
                "micro_f1": scores,
                "forgetting_points": forgetting,
                "child_vs_retrain_all": round(ratio, 4),
                "seconds": {k: round(v, 1) for k, v in timed.items()},
                "replay": child["replay"],
                "chosen": {k: v.chosen_ for k, v in models.items()},
                "bars": {
                    "forgetting_le_1": forgetting <= 1,
                    "child_ge_99pct_of_retrain": ratio >= 0.99,
                    "child_faster": timed["child"] < timed["retrain"],
                },
            }
            runs.append(row)
            print(json.dumps(row, ensure_ascii=False))
    result = {
        "bench": "ner_incremental",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
