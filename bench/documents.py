"""Documents as data: BBC News written as PDF, Word, HTML and text, imported back.

Every BBC News article (2,225, five topics) is written into class folders in four formats in
turn (``aimass.data.bbc_news_documents``), then:

* fidelity: the share of documents whose extracted words are the article's words in order
  (PDF text is written in Helvetica/cp1252, so a character outside it comes back as ``?``:
  those articles are counted apart);
* speed: ``import_dataset`` of the document folder and of its ``.zip`` against the plain ``.txt``
  folder (the peer: the same articles, the importer's fastest path), each a fresh AIMASS_HOME,
  wall time, and the ratio;
* with ``--train``: a text classifier trained on each (the same budget and seed) and its test
  accuracy (the models should agree: the text is the same).

    python bench/documents.py            # ~1 min
    python bench/documents.py --train    # + two 60 s fits

Writes ``bench/results/documents.json``.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"


def fidelity(folder: Path) -> dict:
    """Per format: documents, exact (same words in order), cp1252 losses, seconds to extract."""
    from aimass.data import bbc_news_path, bbc_news_text, documents

    source = {(p.parent.name, p.stem): bbc_news_text(p) for p in bbc_news_path().glob("*/*.txt")}
    out: dict[str, Counter] = {}
    for path in sorted(folder.glob("*/*")):
        data = path.read_bytes()
        kind = documents.document_kind(path.name, data)
        began = time.perf_counter()
        text = data.decode() if kind == "text" else documents.extract_text(kind, data, str(path), 10**7)
        spent = time.perf_counter() - began
        want = source[(path.parent.name, path.stem)]
        want = html.unescape(want) if kind == "html" else want  # a few articles hold entities (&#233;)
        stats = out.setdefault(kind, Counter())
        stats["documents"] += 1
        stats["seconds"] += spent
        if text.split() == want.split():
            stats["exact"] += 1
        elif kind == "pdf" and text.split() == want.encode("cp1252", "replace").decode("cp1252").split():
            stats["exact_but_cp1252"] += 1
        else:
            stats["differ"] += 1
    return {
        kind: {
            **stats,
            "seconds": round(stats["seconds"], 2),
            "per_s": round(stats["documents"] / stats["seconds"]),
        }
        for kind, stats in out.items()
    }


def _rate(stats: Counter) -> int:
    return round(stats["documents"] / max(stats["seconds"], 1e-9))


def timed_import(path: Path, home: Path) -> tuple[object, float]:
    import aimass

    os.environ["AIMASS_HOME"] = str(home)
    began = time.perf_counter()
    ds = aimass.import_dataset(path, name=path.stem)
    return ds, time.perf_counter() - began


def train(ds, home: Path) -> dict:
    import aimass

    os.environ["AIMASS_HOME"] = str(home)
    result = aimass.train_model("text-classification", ds.id, name="news", time_budget="60s", progress=False)
    return {"accuracy": result["metrics"]["accuracy"], "macro_f1": result["metrics"]["macro_f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--train", action="store_true", help="also train a classifier on each (two 60 s fits)"
    )
    args = parser.parse_args()
    from aimass.data import bbc_news_documents, bbc_news_path

    work = Path(tempfile.mkdtemp(prefix="aimass-documents-"))
    began = time.perf_counter()
    folder = bbc_news_documents(work / "news", per_class=None)
    written = time.perf_counter() - began
    archive = Path(shutil.make_archive(str(work / "news-docs"), "zip", work, "news"))
    plain = work / "plain"
    shutil.copytree(bbc_news_path(), plain)

    result = {"documents": sum(1 for _ in folder.glob("*/*")), "write_s": round(written, 1)}
    result["fidelity"] = fidelity(folder)
    runs = {}
    homes = {"txt folder (peer)": "home-txt", "document folder": "home-docs", "document .zip": "home-zip"}
    for key, path in (("txt folder (peer)", plain), ("document folder", folder), ("document .zip", archive)):
        ds, seconds = timed_import(path, work / homes[key])
        summary = ds.summary()
        runs[key] = {
            "seconds": round(seconds, 2),
            "rows": summary["rows"],
            "rejects": summary["rejects"],
            "documents": summary.get("documents"),
            "dataset": ds,
        }
    peer = runs["txt folder (peer)"]["seconds"]
    for run in runs.values():
        run["vs_txt"] = round(run["seconds"] / peer, 2)
    if args.train:
        for key in ("txt folder (peer)", "document folder"):
            runs[key]["model"] = train(runs[key]["dataset"], work / homes[key])
    for run in runs.values():
        run.pop("dataset")
    result["imports"] = runs
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine()}
    out = RESULTS / "documents.json"
    out.write_text(json.dumps({**meta, "cpus": os.cpu_count(), **result}, indent=2))
    print(json.dumps(result, indent=2))
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
