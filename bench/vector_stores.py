"""Vector store benchmark: whole BBC News articles in a live ``/v1/vector_stores``, found by headline.

Known-item search as in ``bench/retrieval.py``, but the way a RAG user runs it: each of N BBC
articles (the first N/5 of each topic) is uploaded whole, as its own ``.txt``, through the official
``openai`` client (``files.create`` with ``purpose="assistants"``, then ``file_batches``) into one
store of a live ``aimass serve``, which chunks it (400 tokens, 200 shared) and embeds every chunk
with multilingual-e5-small. Each of ``--queries`` headlines is then searched over HTTP
(``max_num_results`` 50), and the rank of its article is the rank of the first chunk from it.

Three rankings of the store: ``hybrid`` (the default: E5 cosine and BM25 fused by reciprocal rank),
``embedding`` only and ``text`` only (``ranking_options.hybrid_search`` weights). The peers, measured
in the same run on the same whole articles: scikit-learn TF-IDF (sublinear tf, English stop words)
and ``rank_bm25`` BM25 over the whole article (the baselines a careful engineer tries first).

Bars: hybrid MRR@10 >= TF-IDF's and >= BM25's (never below the simple baseline); hybrid >= each
single ranking of the store; search p50 over HTTP (10 results, the default) <= 1.5x the same
search called in-process on the same store (what HTTP, JSON, auth and metering add).

Usage::

    python bench/vector_stores.py [--articles 1000] [--queries 300]

Prints one table, writes ``bench/results/vector_stores.json`` and exits 0 whatever the bars say
(about 10 minutes on 2 CPU cores, most of it embedding the chunks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from retrieval import bm25, metrics, ranks, serve, tfidf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from aimass.backbones.precision import bf16_enabled  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "vector_stores.json"
MODES = {
    "hybrid": None,
    "embedding": {"hybrid_search": {"embedding_weight": 1, "text_weight": 0}},
    "text": {"hybrid_search": {"embedding_weight": 0, "text_weight": 1}},
}
console = Console(width=160)


def whole_articles(n: int) -> tuple[list[str], list[str]]:
    """(headlines, whole bodies) of the first n/5 articles of each BBC topic, in file order."""
    from aimass.data.bundled import bbc_news_path, bbc_news_text

    heads, bodies = [], []
    for topic in sorted(bbc_news_path().iterdir()):
        for path in sorted(topic.glob("*.txt"), key=lambda p: int(p.stem))[: n // 5]:
            head, _, body = bbc_news_text(path).strip().partition("\n")
            heads.append(head.strip())
            bodies.append(body.strip())
    return heads, bodies


def index(client, bodies: list[str]) -> tuple[str, list[str], float]:
    """(store id, file id of each body, seconds from the first file batch to a completed store)."""
    ids = [
        client.files.create(file=(f"article-{i}.txt", body.encode()), purpose="assistants").id
        for i, body in enumerate(bodies)
    ]
    store = client.vector_stores.create(name="bbc")
    began = time.perf_counter()
    for start in range(0, len(ids), 500):
        client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids[start : start + 500])
    while client.vector_stores.retrieve(store.id).status != "completed":
        time.sleep(1)
    return store.id, ids, time.perf_counter() - began


def rank_of(hits, file_id: str) -> int:
    """The rank of the article among the distinct files of the results (51: not in them)."""
    seen = list(dict.fromkeys(h.file_id for h in hits))
    return seen.index(file_id) + 1 if file_id in seen else 51


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)

    import openai

    heads, bodies = whole_articles(args.articles)
    picked = np.linspace(0, len(heads) - 1, args.queries).round().astype(int)
    peers = {"tfidf": tfidf(heads, bodies), "bm25": bm25(heads, bodies)}
    quality = {name: metrics(ranks(scores)[picked]) for name, scores in peers.items()}

    home = Path(tempfile.mkdtemp(prefix="aimass-vector-stores-"))
    proc, base, key = serve(home, "manage")
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=600)
        store_id, ids, seconds = index(client, bodies)
        store = client.vector_stores.retrieve(store_id)
        found, http = {}, []
        for mode, options in MODES.items():
            rank = []
            for q in picked:
                page = client.vector_stores.search(
                    store_id, query=heads[q], max_num_results=50, extra_body={"ranking_options": options}
                )
                rank.append(rank_of(page.data, ids[q]))
            found[mode] = metrics(np.asarray(rank))
        for q in picked:  # the speed of a RAG call: the default 10 results
            began = time.perf_counter()
            client.vector_stores.search(store_id, query=heads[q])
            http.append(time.perf_counter() - began)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    quality.update({f"store {m}": v for m, v in found.items()})

    os.environ["AIMASS_HOME"] = str(home)  # the same store, searched in this process
    from aimass.retrieval import search, tables

    with tables.session() as s:
        chunks = s.query(tables.ChunkRecord).count()
    search.search(store_id, heads[0])  # the encoder and the index, loaded once
    local = []
    for q in picked:
        began = time.perf_counter()
        search.search(store_id, heads[q])
        local.append(time.perf_counter() - began)
    http_ms, local_ms = 1000 * float(np.median(http[1:])), 1000 * float(np.median(local))
    ratio = http_ms / local_ms
    hybrid = quality["store hybrid"]["mrr@10"]
    bars = [
        {"bar": "store hybrid MRR@10 >= TF-IDF's", "pass": hybrid >= quality["tfidf"]["mrr@10"]},
        {"bar": "store hybrid MRR@10 >= BM25's", "pass": hybrid >= quality["bm25"]["mrr@10"]},
        {
            "bar": "store hybrid MRR@10 >= embedding only and >= text only",
            "pass": hybrid >= max(found["embedding"]["mrr@10"], found["text"]["mrr@10"]),
        },
        {"bar": f"search p50 over HTTP <= 1.5x in-process (measured {ratio:.2f}x)", "pass": ratio <= 1.5},
    ]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "setup": {
            "articles": len(heads),
            "queries": len(picked),
            "characters per article (mean)": round(float(np.mean([len(b) for b in bodies]))),
            "chunking": store.chunking_strategy if hasattr(store, "chunking_strategy") else None,
        },
        "quality": quality,
        "indexing": {
            "chunks": chunks,
            "seconds": round(seconds, 1),
            "chunks per second": round(chunks / seconds, 1),
            "precision": "bf16" if bf16_enabled() else "fp32",  # the server's (same machine, env)
            "usage bytes": store.usage_bytes,
        },
        "search p50 ms": {"http": round(http_ms, 1), "in-process": round(local_ms, 1)},
        "bars": bars,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")

    table = Table(title=f"BBC News: {len(picked)} headlines against {len(heads)} whole articles")
    for column in ("method", "recall@1", "recall@10", "MRR@10"):
        table.add_column(column)
    for name, scores in quality.items():
        table.add_row(name, *(f"{scores[k]:.3f}" for k in ("recall@1", "recall@10", "mrr@10")))
    console.print(table)
    console.print(
        f"indexed {chunks} chunks in {seconds:.1f} s ({chunks / seconds:.1f}/s); search p50 "
        f"{http_ms:.0f} ms over HTTP, {local_ms:.0f} ms in-process"
    )
    for bar in bars:
        console.print(("PASS " if bar["pass"] else "FAIL ") + bar["bar"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
