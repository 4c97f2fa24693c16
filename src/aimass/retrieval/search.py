"""Search a vector store: the encoder's cosine and BM25, fused by weighted reciprocal rank.

Every chunk the filters keep is ranked twice, by the cosine of the query's vector (``query: `` for
E5) and by BM25 (:mod:`aimass.retrieval.lexical`); a chunk's fused score is
``sum(weight / (60 + rank))`` (OpenAI's ``hybrid_search`` weights, 0 to :data:`MAX_WEIGHT`, 1 and 1
by default, only their ratio counting; a chunk with no word of the query has no keyword rank).
``score`` is that sum over its best possible (first in both) times :func:`relevance`, how likely the
store answers the query at all, so it lies in (0, 1) and ``score_threshold`` drops passages of a
query the store does not answer. A store's chunks are kept in memory as matrices (the
:data:`KEEP_INDEXES` last searched), rebuilt when its chunks change; the chunks of a file whose
upload is gone (deleted while it was being added) are left out, so one such file never fails the
store's every search.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from aimass.backbones.embeddings import EMBEDDERS
from aimass.data.language import detect_language
from aimass.errors import ConfigError, NotFoundError
from aimass.retrieval import files, lexical
from aimass.retrieval.filters import check_filter, is_number, matches
from aimass.retrieval.stores import attributes_of, status_of, store_of
from aimass.retrieval.tables import ChunkRecord, session

MAX_RESULTS, RRF_K = 50, 60
MAX_QUERY_TOKENS = 512
MAX_WEIGHT = 100  # hybrid_search weights are 0 to this (only their ratio counts)
ACTIVE_STEP = 60  # seconds: last_active_at moves on by at least this much
COVERAGE = (0.85, 0.05)  # (midpoint, scale) of the query words' share in one passage: see relevance()


@dataclass
class _Index:
    revision: int
    ids: list[int]
    file_ids: list[str]
    texts: list[str]
    vectors: np.ndarray
    lexical: lexical.Index
    names: dict[str, str]  # file id -> its filename


_INDEXES: OrderedDict[str, _Index] = OrderedDict()
_INDEX_LOCK = threading.Lock()
KEEP_INDEXES = 8


def search(
    store_id: str,
    query: str | list[str],
    filters: dict | None = None,
    max_num_results: int = 10,
    ranking_options: dict | None = None,
) -> dict:
    """The store's best chunks for ``query``: OpenAI's ``vector_store.search_results.page``, plus
    ``usage`` (the query's tokens) and ``model`` (the store's encoder)."""
    queries = [query] if isinstance(query, str) else list(query or [])
    if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
        raise ConfigError("Send 'query' as a non-empty string or list of strings.", where="query")
    if not isinstance(max_num_results, int) or not 1 <= max_num_results <= MAX_RESULTS:
        raise ConfigError(f"max_num_results must be 1 to {MAX_RESULTS}.", where="max_num_results")
    weights, threshold = _ranking(ranking_options)
    check_filter(filters)
    with session() as s:
        store = store_of(s, store_id)
        if store.expires_days and status_of(s, store) == "expired":
            raise ConfigError(
                f"Vector store {store_id} has expired.",
                where="vector_store_id",
                hint="Set a new expires_after (POST /v1/vector_stores/{id}) or create a new store.",
            )
        if (now := int(time.time())) - store.last_active >= ACTIVE_STEP:  # not a write per search
            store.last_active = now
            s.commit()
        model, attributes = store.embedding_model, attributes_of(s, store_id)
    embedder = EMBEDDERS.backbone(model)
    text = "\n".join(queries)
    prepared = embedder.prepare([text], "query")
    tokens = embedder.token_counts(prepared)[0]
    if tokens > MAX_QUERY_TOKENS:
        raise ConfigError(
            f"The query has {tokens} tokens; search with at most {MAX_QUERY_TOKENS}.", where="query"
        )
    index = _index(store_id)
    chosen = {f: matches(filters, attributes.get(f, {})) for f in index.names}  # once per file
    keep = np.fromiter((chosen[f] for f in index.file_ids), bool, len(index.file_ids))
    scores, cosine, coverage = np.zeros(len(index.ids)), None, None
    if keep.any():
        if weights[0]:
            cosine = index.vectors @ embedder.embed(prepared).numpy()[0]
            scores += weights[0] * _reciprocal_ranks(cosine, keep)
            cosine = float(cosine[keep].max())
        if weights[1]:
            scores += weights[1] * _reciprocal_ranks(index.lexical.scores(text), keep, positive=True)
            coverage = float(index.lexical.coverage(text)[keep].max())
    scores *= relevance(model, cosine, coverage, detect_language([text])) / (sum(weights) / (RRF_K + 1))
    order = [i for i in np.argsort(-scores, kind="stable") if keep[i] and scores[i] > 0]
    order = [i for i in order if scores[i] >= threshold][:max_num_results]
    data = [
        {
            "file_id": index.file_ids[i],
            "filename": index.names[index.file_ids[i]],
            "score": round(float(scores[i]), 6),
            "attributes": attributes.get(index.file_ids[i], {}),
            "content": [{"type": "text", "text": index.texts[i]}],
        }
        for i in order
    ]
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": data,
        "has_more": False,
        "next_page": None,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "model": model,
    }


def relevance(model: str, cosine: float | None, coverage: float | None, language: str = "en") -> float:
    """How likely the store holds a passage relevant to the query, from its best passage's cosine
    (logistic around the encoder's midpoint measured for the query's ``language``, else its
    English one) or, when higher, from the largest share of the query's words one passage holds
    (IDF-weighted: a code or a name found whole is a match however far its meaning). 1 (the rank
    alone) without a cosine (a search by words only: a share of words alone tells an answer from a
    near miss too poorly) or when ``model``'s cosines were never measured.

    >>> round(relevance("multilingual-e5-small", 0.86, None), 2), relevance("x", None, 1.0)
    (0.95, 1.0)
    >>> relevance("multilingual-e5-small", 0.80, 0.4) < 0.1  # its best passage is far: off-topic
    True
    """
    from aimass.backbones import get_backbone

    measured = get_backbone(model).relevance if model in EMBEDDERS.names() else {}
    calibrated = measured.get(language) or measured.get("en")
    if cosine is None or not calibrated:
        return 1.0
    found = _logistic((cosine - calibrated[0]) / calibrated[1])
    if coverage is not None:
        found = max(found, _logistic((coverage - COVERAGE[0]) / COVERAGE[1]))
    return found


def _logistic(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def _reciprocal_ranks(values: np.ndarray, keep: np.ndarray, positive: bool = False) -> np.ndarray:
    """``1 / (RRF_K + rank)`` of each kept value, the best ranked 1; 0 for the rest (and, with
    ``positive``, for values of 0: no word in common is no keyword match)."""
    out = np.zeros(len(values))
    wanted = keep & (values > 0) if positive else keep
    order = np.argsort(-values, kind="stable")
    ranked = order[wanted[order]]
    out[ranked] = 1.0 / (RRF_K + np.arange(1, len(ranked) + 1))
    return out


def _index(store_id: str) -> _Index:
    """The store's chunks as matrices, rebuilt when its revision moves."""
    with session() as s:
        revision = store_of(s, store_id).revision
        with _INDEX_LOCK:
            cached = _INDEXES.get(store_id)
            if cached is not None and cached.revision == revision:
                _INDEXES.move_to_end(store_id)
                return cached
        rows = s.execute(
            select(ChunkRecord.id, ChunkRecord.file_id, ChunkRecord.text, ChunkRecord.vector)
            .where(ChunkRecord.store_id == store_id)
            .order_by(ChunkRecord.id)
        ).all()
    names = {}  # file id -> its filename (a name never changes); a file deleted meanwhile has none
    for file_id in dict.fromkeys(r[1] for r in rows):
        try:
            names[file_id] = files.info(file_id)["filename"]
        except NotFoundError:
            continue
    rows = [r for r in rows if r[1] in names]
    dims = len(rows[0][3]) // 4 if rows else 1
    vectors = np.frombuffer(b"".join(r[3] for r in rows), "<f4").reshape(len(rows), dims)
    file_ids = [r[1] for r in rows]
    built = _Index(
        revision,
        [r[0] for r in rows],
        file_ids,
        [r[2] for r in rows],
        vectors,
        lexical.Index([r[2] for r in rows]),
        names,
    )
    with _INDEX_LOCK:
        _INDEXES[store_id] = built
        while len(_INDEXES) > KEEP_INDEXES:
            _INDEXES.popitem(last=False)
    return built


def _ranking(options: dict | None) -> tuple[tuple[float, float], float]:
    options = options or {}
    if not isinstance(options, dict):
        raise ConfigError("ranking_options must be an object.", where="ranking_options")
    ranker = options.get("ranker", "auto")
    if ranker not in ("auto", "default-2024-11-15", "none"):
        raise ConfigError(
            f"Unknown ranker {ranker!r}.", where="ranking_options.ranker", hint="Use 'auto' or 'none'."
        )
    threshold = options.get("score_threshold", 0.0)
    if not is_number(threshold) or not 0 <= threshold <= 1:
        raise ConfigError(
            "score_threshold must be a number from 0 to 1.", where="ranking_options.score_threshold"
        )
    hybrid = options.get("hybrid_search")
    hybrid = {} if hybrid is None else hybrid
    if not isinstance(hybrid, dict):
        raise ConfigError(
            'hybrid_search is an object, {"embedding_weight": W, "text_weight": W}.',
            where="ranking_options.hybrid_search",
        )
    weights = (hybrid.get("embedding_weight", 1.0), hybrid.get("text_weight", 1.0))
    if not all(is_number(w) and 0 <= w <= MAX_WEIGHT for w in weights) or not any(weights):
        raise ConfigError(
            f"hybrid_search weights must be numbers from 0 to {MAX_WEIGHT}, not both 0.",
            where="ranking_options.hybrid_search",
        )
    top = max(float(w) for w in weights)  # only the ratio counts: (1e-300, 0) ranks as (1, 0)
    return (float(weights[0]) / top, float(weights[1]) / top), float(threshold)
