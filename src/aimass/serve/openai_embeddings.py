"""``POST /v1/embeddings``, OpenAI's embeddings API over aimass's text encoders
(:mod:`aimass.backbones.embeddings`): the bundled backbones by name and served text classifiers.

``input`` is a string or a list of at most :data:`MAX_INPUTS` strings (413 past it), each at most
the encoder's 512 tokens (400 ``context_length_exceeded``: nothing is cut silently) and
:data:`MAX_TOTAL_TOKENS` in all (413). Token arrays are refused (400): send text.
``encoding_format`` ``float`` or ``base64`` (little-endian float32, as OpenAI; the ``openai`` client
asks for base64 by default). ``dimensions`` keeps the first N values and renormalises them
(the bundled encoders were not trained for it: expect lower quality than a full vector).
``input_type`` (``query``/``passage``, an extra field) picks E5's prefix.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

import aimass
from aimass.backbones.embeddings import EMBEDDERS, Embedder, canonical
from aimass.errors import AimassError, NotFoundError
from aimass.serve.openai_errors import OpenAIError, bad_param, json_body, parse_body

if TYPE_CHECKING:
    import torch

MAX_INPUTS = 256
MAX_TOTAL_TOKENS = 32_768


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    input_type: Literal["query", "passage"] | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        items = [self.input] if isinstance(self.input, str) else self.input
        if not isinstance(items, list) or not items:
            raise bad_param("input", "Send 'input' as a string or a non-empty list of strings.")
        if any(not isinstance(t, str) for t in items):
            raise bad_param(
                "input",
                "Token arrays are not supported here: send the text (a string or a list of strings).",
                "unsupported_value",
            )
        if len(items) > MAX_INPUTS:
            raise OpenAIError(
                413,
                f"Send at most {MAX_INPUTS} inputs per request; got {len(items)}. Split them over requests.",
                type="invalid_request_error",
                param="input",
                code="too_many_inputs",
            )
        for i, text in enumerate(items):
            if not text.strip():
                raise bad_param("input", f"input[{i}] is empty; send non-empty text.")
        return items


def embedding_models(engine) -> list[dict]:
    """The backbones that embed by name, for ``GET /v1/models`` (loaded on first use)."""
    return [
        {"id": name, "object": "model", "created": 0, "owned_by": "aimass", "task": "embeddings"}
        for name in EMBEDDERS.names()
    ]


def _resolve(engine, name: str) -> Embedder:
    """A backbone by name (loaded once, which may take seconds) or a served text classifier."""
    if canonical(name) in EMBEDDERS.names():
        return EMBEDDERS.backbone(name)
    try:
        deployment = engine.route(name)
    except NotFoundError:
        known = ", ".join(EMBEDDERS.names())
        raise OpenAIError(
            404,
            f"The model '{name}' does not exist or is not served here. Embedding models: {known} "
            "and served text-classification versions.",
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        ) from None
    embedder = _classifier(deployment)
    if embedder is None:
        raise bad_param(
            "model",
            f"'{name}' is a {deployment.record.task} model without a text encoder here; embed with "
            f"{' or '.join(EMBEDDERS.names())}.",
        )
    return embedder


_CLASSIFIERS: dict[str, Embedder] = {}
_LOCK = threading.Lock()


def _classifier(deployment) -> Embedder | None:
    """The encoder of a served text classifier: the deployment's own torch model, or (served on ONNX
    Runtime or in a worker process) the version loaded once more, in torch, on first use."""
    ref = deployment.ref
    if getattr(deployment.spec, "name", "") != "text-classification":
        return None
    with _LOCK:
        if ref not in _CLASSIFIERS:
            model = deployment.handler.model
            if getattr(model, "net_", None) is None or getattr(model, "runtime_", None) is not None:
                model = aimass.load(ref)
            embedder = EMBEDDERS.of_classifier(ref, model)
            if embedder is None:
                return None
            _CLASSIFIERS[ref] = embedder
        return _CLASSIFIERS[ref]


def _check_lengths(embedder: Embedder, texts: list[str]) -> list[int]:
    counts = embedder.token_counts(texts)
    for i, n in enumerate(counts):
        if n > embedder.max_length:
            raise bad_param(
                "input",
                f"input[{i}] has {n} tokens; {embedder.name} reads at most {embedder.max_length}. "
                "Shorten or split it.",
                "context_length_exceeded",
            )
    if sum(counts) > MAX_TOTAL_TOKENS:
        raise OpenAIError(
            413,
            f"The inputs hold {sum(counts)} tokens; send at most {MAX_TOTAL_TOKENS} per request.",
            type="invalid_request_error",
            param="input",
            code="too_many_tokens",
        )
    return counts


def _shorten(vectors: torch.Tensor, dimensions: int | None) -> torch.Tensor:
    """The first ``dimensions`` values of each vector, renormalised."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    import torch  # loaded with the encoders, on first use

    return torch.nn.functional.normalize(vectors[:, :dimensions], dim=-1)


def _encode(vector: torch.Tensor, fmt: str):
    if fmt == "base64":
        return base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def embed(engine, req: EmbeddingRequest) -> tuple[str, torch.Tensor, int]:
    """(model id, vectors, prompt tokens) of a request; blocking (run it in a thread)."""
    return vectors(engine, req.model, req.texts(), req.input_type, req.dimensions)


def vectors(
    engine, model: str, texts: list[str], input_type: str | None, dimensions: int | None = None
) -> tuple[str, torch.Tensor, int]:
    """(model id, normalised vectors of ``texts``, tokens read); blocking. 404 for an unknown
    model, 400 for a text over the encoder's length, 413 past :data:`MAX_TOTAL_TOKENS`."""
    embedder = _resolve(engine, model)
    if dimensions is not None and dimensions > embedder.dimensions:
        raise bad_param(
            "dimensions", f"{embedder.name} gives {embedder.dimensions} values; ask for at most that."
        )
    prepared = embedder.prepare(texts, input_type)
    counts = _check_lengths(embedder, prepared)
    return embedder.name, _shorten(embedder.embed(prepared), dimensions), sum(counts)


def add_embedding_routes(app: FastAPI, engine, allow, meter) -> None:
    @app.post("/v1/embeddings", tags=["openai"])
    async def embeddings(request: Request, caller=allow("predict")):
        """OpenAI's embeddings: normalised mean-pooled vectors of each input."""
        return await answer(engine, meter, caller, await json_body(request))


async def answer(engine, meter, caller, body: bytes) -> dict:
    """What ``POST /v1/embeddings`` answers ``body`` (a batch's requests are answered here too)."""
    req = parse_body(EmbeddingRequest, body)
    work = partial(embed, engine, req)
    name, found, tokens = await metered(engine, meter, caller, req.model, work, req.texts())
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
        for i, v in enumerate(found)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": name, "usage": usage}


def expected_tokens(texts: list[str]) -> int:
    """What ``texts`` may cost at most, held against a key's quota while its request runs: a token
    a character, at most an encoder's 512 and its two markers a text. (One item a text let twelve
    402-token requests in at once under a quota of 100.)

    >>> expected_tokens(["hello", "x" * 10_000])
    521
    """
    return sum(min(len(text), 512) + 2 for text in texts)


async def metered(engine, meter, caller, model: str, work, texts: list[str]) -> tuple[str, Any, int]:
    """Run blocking ``work() -> (model id, result, tokens)`` in a thread once the caller's quota
    admits it (a key held to one holds :func:`expected_tokens` of ``texts`` meanwhile); the
    tokens are metered against the caller's key and the time is counted in the model's live
    figures (a served classifier's, as its predictions), failures too."""
    hold = await meter.admit(caller.key_id, expected_tokens(texts))
    began = time.perf_counter()
    try:
        try:
            name, result, tokens = await asyncio.to_thread(work)
        except AimassError:
            engine.observe(model, time.perf_counter() - began, error=True)
            raise
        meter.add(caller.key_id, name, tokens, (time.perf_counter() - began) * 1000)
    finally:
        hold.release()  # once metered: never a moment when neither counts
    engine.observe(model, time.perf_counter() - began)
    return name, result, tokens
