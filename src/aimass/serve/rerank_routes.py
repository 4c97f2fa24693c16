"""Rerank and score with aimass's text encoders: the APIs retrieval pipelines call.

- ``POST /v1/rerank`` (also ``/rerank`` and ``/v2/rerank``; vLLM's, Jina's and Cohere's shape):
  ``{"model", "query", "documents": [text or {"text"}], "top_n", "return_documents"}`` answers the
  documents most relevant first, ``{"index", "relevance_score", "document": {"text"}}`` each.
- ``POST /v1/score`` (also ``/score``; vLLM's): ``{"model", "text_1", "text_2"}``: one text against
  each of a list, or two lists pair by pair, ``{"index", "object": "score", "score"}`` each.

The models are those of ``/v1/embeddings`` (the bundled encoders by name, or a served text
classifier's encoder). These are bi-encoders: a score is the cosine of the query's and the
document's normalised mean-pooled vectors, in [-1, 1], as vLLM scores with an embedding model
(a cross-encoder, which reads both texts at once, ships in no package here). E5 reads the query as
``"query: "`` and each document as ``"passage: "``. Nothing is cut: a text over the encoder's
512 tokens is a 400 ``context_length_exceeded``; split long documents into passages.
``bench/retrieval.py`` measures the ranking against TF-IDF and BM25 on BBC News.
"""

from __future__ import annotations

import time
import uuid
from functools import partial

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aimass.serve.openai_embeddings import metered, vectors
from aimass.serve.openai_errors import bad_param, json_body, parse_body

MAX_DOCUMENTS = 1000
RERANK_PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")
SCORE_PATHS = ("/v1/score", "/score")


class Document(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=200)
    query: str = Field(min_length=1)
    documents: list[str | Document] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(None, ge=0, description="the most relevant N (0 or none: all)")
    return_documents: bool = True

    def texts(self) -> list[str]:
        texts = [d if isinstance(d, str) else d.text for d in self.documents]
        for i, text in enumerate(texts):
            if not text.strip():
                raise bad_param(f"documents[{i}]", f"documents[{i}] is empty; send non-empty text.")
        return texts


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=200)
    text_1: str | list[str]
    text_2: str | list[str]

    @field_validator("text_1", "text_2")
    @classmethod
    def _some(cls, value):
        items = [value] if isinstance(value, str) else value
        if not items or len(items) > MAX_DOCUMENTS:
            raise ValueError(f"give 1 to {MAX_DOCUMENTS} texts")
        if any(not t.strip() for t in items):
            raise ValueError("every text must be non-empty")
        return value

    def pairs(self) -> tuple[list[str], list[str]]:
        """(queries, documents), one of each per pair: a single ``text_1`` goes with every
        ``text_2``; two lists go pair by pair and must be as long as each other."""
        first = [self.text_1] if isinstance(self.text_1, str) else self.text_1
        second = [self.text_2] if isinstance(self.text_2, str) else self.text_2
        if len(first) == 1:
            return first * len(second), second
        if len(first) != len(second):
            raise bad_param(
                "text_2",
                f"text_1 holds {len(first)} texts and text_2 {len(second)}: give one text_1, or lists "
                "of the same length (scored pair by pair).",
            )
        return first, second


def relevance(engine, model: str, queries: list[str], documents: list[str]) -> tuple[str, list[float], int]:
    """(model id, the cosine of each (query, document) pair, tokens read); blocking.
    Each distinct text is embedded once."""
    unique_queries, unique_docs = list(dict.fromkeys(queries)), list(dict.fromkeys(documents))
    name, q, q_tokens = vectors(engine, model, unique_queries, "query")
    _, d, d_tokens = vectors(engine, model, unique_docs, "passage")
    qi = {t: i for i, t in enumerate(unique_queries)}
    di = {t: i for i, t in enumerate(unique_docs)}
    import torch  # loaded with the encoders, on first use

    rows = torch.tensor([qi[t] for t in queries]), torch.tensor([di[t] for t in documents])
    scores = (q[rows[0]] * d[rows[1]]).sum(dim=1).clamp(-1.0, 1.0)
    return name, [round(float(s), 6) for s in scores], q_tokens + d_tokens


def rerank(engine, req: RerankRequest) -> tuple[str, dict, int]:
    texts = req.texts()
    name, scores, tokens = relevance(engine, req.model, [req.query] * len(texts), texts)
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
    results = []
    for i in order[: req.top_n or None]:
        item = {"index": i, "relevance_score": scores[i]}
        if req.return_documents:
            item["document"] = {"text": texts[i]}
        results.append(item)
    return name, {"results": results}, tokens


def score(engine, req: ScoreRequest) -> tuple[str, dict, int]:
    queries, documents = req.pairs()
    name, scores, tokens = relevance(engine, req.model, queries, documents)
    data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
    return name, {"object": "list", "created": int(time.time()), "data": data}, tokens


def add_rerank_routes(app: FastAPI, engine, allow, meter) -> None:
    async def rerank_route(request: Request, caller=allow("predict")):
        """The documents, most relevant to the query first (vLLM's, Jina's and Cohere's rerank)."""
        req = parse_body(RerankRequest, await json_body(request))
        work = partial(rerank, engine, req)
        name, body, tokens = await metered(engine, meter, caller, req.model, work, [req.query, *req.texts()])
        return {"id": f"rerank-{uuid.uuid4().hex}", "model": name, **body, "usage": {"total_tokens": tokens}}

    async def score_route(request: Request, caller=allow("predict")):
        """vLLM's score: the relevance of each (text_1, text_2) pair."""
        req = parse_body(ScoreRequest, await json_body(request))
        work = partial(score, engine, req)
        name, body, tokens = await metered(
            engine, meter, caller, req.model, work, [t for p in req.pairs() for t in p]
        )
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
        return {"id": f"score-{uuid.uuid4().hex}", "model": name, **body, "usage": usage}

    for path in RERANK_PATHS:
        app.add_api_route(path, rerank_route, methods=["POST"], tags=["openai"], name=f"rerank {path}")
    for path in SCORE_PATHS:
        app.add_api_route(path, score_route, methods=["POST"], tags=["openai"], name=f"score {path}")
