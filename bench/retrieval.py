"""Retrieval benchmark: the encoders behind ``/v1/rerank`` against TF-IDF and BM25 on BBC News.

Known-item search (``../shared/MODELS.md``: no BEIR/MTEB set ships in a package): each of N BBC
articles (the first N/5 of each topic, in file order) gives one query, its headline, and one
relevant document, its body cut to the first ``--words`` words (the encoders read at most 512
tokens; long documents go in as passages). Every method ranks all N bodies for every headline:

* ``tfidf``: scikit-learn's TF-IDF (sublinear tf, English stop words), cosine: the baseline a
  careful engineer tries first;
* ``bm25``: ``rank_bm25.BM25Okapi`` over lower-cased word tokens (the ``bench`` extra);
* ``minilm-l6``, ``multilingual-e5-small``: the cosine ``/v1/rerank`` answers, from the vectors
  of the code it runs (:func:`aimass.serve.openai_embeddings.vectors`, E5 with query/passage);
* ``bm25 + e5 (RRF)``: both rankings fused by reciprocal rank (k=60), the usual hybrid.

Metrics: recall@1, recall@10 and MRR@10 of the relevant body. Then the pipeline a RAG user
builds: BM25's top ``--depth`` bodies per headline, reordered by ``POST /v1/rerank`` of a live
``aimass serve`` over HTTP (``multilingual-e5-small``), on ``--queries`` headlines. Speed: that
request's p50 latency against the same encoder called in-process on the same texts (the ratio
is what HTTP, JSON, auth and metering add).

Bars: the best encoder >= BM25 and >= TF-IDF on MRR@10 (never below the simple baseline); the
reranked pipeline's recall@1 >= BM25's on the same headlines; rerank p50 <= 1.5x in-process.

Usage::

    python bench/retrieval.py [--articles 1000] [--words 200] [--queries 200] [--depth 20]

Prints one table, writes ``bench/results/retrieval.json`` and exits 0 whatever the bars say
(about 20 minutes on 2 CPU cores, most of it the live reranking).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "retrieval.json"
ENCODERS = ("minilm-l6", "multilingual-e5-small")
CHUNK = 48  # texts per in-process call (the API's token cap is per request)
console = Console(width=160)


def articles(n: int, words: int) -> tuple[list[str], list[str]]:
    """(headlines, bodies) of the first n/5 articles of each BBC topic, in file order."""
    from aimass.data.bundled import bbc_news_path, bbc_news_text

    heads, bodies = [], []
    for topic in sorted(bbc_news_path().iterdir()):
        for path in sorted(topic.glob("*.txt"), key=lambda p: int(p.stem))[: n // 5]:
            head, _, body = bbc_news_text(path).strip().partition("\n")
            heads.append(head.strip())
            bodies.append(" ".join(body.split()[:words]))
    return heads, bodies


def ranks(scores: np.ndarray) -> np.ndarray:
    """The rank (1 = top) of the relevant document (the diagonal) in each row."""
    relevant = scores[np.arange(len(scores)), np.arange(len(scores))][:, None]
    return 1 + (scores > relevant).sum(axis=1)


def metrics(rank: np.ndarray) -> dict:
    return {
        "recall@1": round(float((rank == 1).mean()), 4),
        "recall@10": round(float((rank <= 10).mean()), 4),
        "mrr@10": round(float(np.where(rank <= 10, 1.0 / rank, 0.0).mean()), 4),
    }


def tfidf(heads: list[str], bodies: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit(bodies)
    return (vec.transform(heads) @ vec.transform(bodies).T).toarray()


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def bm25(heads: list[str], bodies: list[str]) -> np.ndarray:
    from rank_bm25 import BM25Okapi

    index = BM25Okapi([words(b) for b in bodies])
    return np.stack([index.get_scores(words(h)) for h in heads])


def encoder(name: str, heads: list[str], bodies: list[str]) -> tuple[np.ndarray, float]:
    """(cosine matrix, seconds to embed the bodies) with the code ``/v1/rerank`` runs."""
    from aimass.serve.openai_embeddings import vectors

    def embed(texts: list[str], kind: str) -> np.ndarray:
        parts = [vectors(None, name, texts[i : i + CHUNK], kind)[1] for i in range(0, len(texts), CHUNK)]
        return np.concatenate([p.numpy() for p in parts])

    embed(bodies[:4], "passage")  # loaded once, outside the timing
    began = time.perf_counter()
    docs = embed(bodies, "passage")
    seconds = time.perf_counter() - began
    return embed(heads, "query") @ docs.T, seconds


def fused(*matrices: np.ndarray, k: int = 60) -> np.ndarray:
    """Reciprocal-rank fusion: the sum over methods of 1 / (k + rank of the document)."""
    total = np.zeros_like(matrices[0], dtype=float)
    for scores in matrices:
        order = np.argsort(-scores, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(1, scores.shape[1] + 1)[None, :], axis=1)
        total += 1.0 / (k + rank)
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(home: Path, scope: str = "predict") -> tuple[subprocess.Popen, str, str]:
    """A live ``aimass serve`` on an empty home, with a key of ``scope``: (process, base URL, key)."""
    env = {**os.environ, "AIMASS_HOME": str(home)}
    made = subprocess.run(
        [sys.executable, "-m", "aimass", "keys", "create", "--name", "bench", "--scope", scope, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(made.stdout)["key"]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aimass", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base, key
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("aimass serve never became ready")


def pipeline(heads, bodies, first: np.ndarray, queries: int, depth: int) -> dict:
    """BM25's top ``depth`` per headline reordered by the live ``/v1/rerank``; recall@1 of both,
    and the request's p50 against the same encoder in-process on the same texts."""
    from aimass.serve.rerank_routes import relevance

    picked = np.linspace(0, len(heads) - 1, queries).round().astype(int)
    home = Path(tempfile.mkdtemp(prefix="aimass-retrieval-"))
    proc, base, key = serve(home)
    http, local, before, after = [], [], [], []
    try:
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        for q in picked:
            top = [int(i) for i in np.argsort(-first[q], kind="stable")[:depth]]
            docs = [bodies[i] for i in top]
            body = {"model": "multilingual-e5-small", "query": heads[q], "documents": docs, "top_n": 1}
            began = time.perf_counter()
            answer = client.post("/v1/rerank", json=body)
            http.append(time.perf_counter() - began)
            answer.raise_for_status()
            began = time.perf_counter()
            relevance(None, "multilingual-e5-small", [heads[q]] * depth, docs)
            local.append(time.perf_counter() - began)
            before.append(top[0] == q)
            after.append(top[answer.json()["results"][0]["index"]] == q)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {
        "queries": int(len(picked)),
        "depth": depth,
        "bm25 recall@1": round(float(np.mean(before)), 4),
        "reranked recall@1": round(float(np.mean(after)), 4),
        "relevant within depth": round(
            float(np.mean([q in np.argsort(-first[q])[:depth] for q in picked])), 4
        ),
        "rerank p50 ms": round(1000 * float(np.median(http[1:])), 1),
        "in-process p50 ms": round(1000 * float(np.median(local[1:])), 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--depth", type=int, default=20)
    args = parser.parse_args(argv)

    heads, bodies = articles(args.articles, args.words)
    methods, seconds = {}, {}
    for name, fn in (("tfidf", tfidf), ("bm25", bm25)):
        began = time.perf_counter()
        methods[name] = fn(heads, bodies)
        seconds[name] = time.perf_counter() - began
    for name in ENCODERS:
        methods[name], seconds[name] = encoder(name, heads, bodies)
    methods["bm25 + e5 (RRF)"] = fused(methods["bm25"], methods["multilingual-e5-small"])
    quality = {name: metrics(ranks(scores)) for name, scores in methods.items()}
    live = pipeline(heads, bodies, methods["bm25"], args.queries, args.depth)

    best = max(ENCODERS, key=lambda n: quality[n]["mrr@10"])
    ratio = live["rerank p50 ms"] / live["in-process p50 ms"]
    bars = [
        {
            "bar": f"best encoder ({best}) MRR@10 >= BM25's",
            "pass": quality[best]["mrr@10"] >= quality["bm25"]["mrr@10"],
        },
        {
            "bar": f"best encoder ({best}) MRR@10 >= TF-IDF's",
            "pass": quality[best]["mrr@10"] >= quality["tfidf"]["mrr@10"],
        },
        {
            "bar": "BM25 top-k reranked: recall@1 >= BM25's",
            "pass": live["reranked recall@1"] >= live["bm25 recall@1"],
        },
        {"bar": f"rerank p50 <= 1.5x in-process (measured {ratio:.2f}x)", "pass": ratio <= 1.5},
    ]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "setup": {"articles": len(heads), "words per body": args.words},
        "quality": quality,
        "seconds to index the bodies": {k: round(v, 2) for k, v in seconds.items()},
        "pipeline": live,
        "bars": bars,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    table = Table(title=f"BBC News known-item search: {len(heads)} headlines against their bodies")
    for column in ("method", "recall@1", "recall@10", "MRR@10", "index s"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for name, m in quality.items():
        took = f"{seconds[name]:.1f}" if name in seconds else "-"
        table.add_row(name, f"{m['recall@1']:.3f}", f"{m['recall@10']:.3f}", f"{m['mrr@10']:.3f}", took)
    console.print(table)
    console.print(live)
    for bar in bars:
        console.print(("PASS " if bar["pass"] else "FAIL ") + bar["bar"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
