"""``aimass serve --engine ray``: a local Ray instance serves a registered model with its handler."""

from __future__ import annotations

import random
import socket

import httpx
import pytest

from aimass import api
from aimass.serve import ray_engine
from aimass.serve.batching import BatchSettings

TEXTS = ["The striker scored twice as United won the cup final.", "Parliament voted on the budget bill."]


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999): a port the kernel hands out for
    port 0 may be taken by another test's client connection before Ray binds it (it was, in CI)."""
    for port in random.Random().sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


@pytest.mark.slow
def test_ray_serve_answers_like_the_builtin_engine(small_model):
    import ray
    from ray import serve

    record = api.register(small_model, "ray-news")
    try:
        routes = ray_engine.run([record.ref], "127.0.0.1", free_port(), BatchSettings(), block=False)
        assert routes["ray-news"].endswith("/v1/models/ray-news/predict")
        answer = httpx.post(routes["ray-news"], json={"inputs": TEXTS}, timeout=120)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == record.ref
        assert [p["label"] for p in body["predictions"]] == small_model.predict(TEXTS)
        bad = httpx.post(routes["ray-news"], json={"inputs": []}, timeout=60)
        assert bad.status_code == 422 and "inputs" in bad.json()["error"]["hint"]
    finally:
        serve.shutdown()
        ray.shutdown()


def _request(chunks: list[bytes], length: int | None = None):
    """A Starlette request as Ray Serve hands one over, its body sent in ``chunks``; counts reads."""
    from starlette.requests import Request

    sent = []
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))

    async def receive():
        chunk = chunks[len(sent)] if len(sent) < len(chunks) else b""
        sent.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": len(sent) < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive), sent


def test_a_ray_request_body_is_capped_like_the_builtin_engine():
    """``--engine ray`` read the whole body whatever its size: a Content-Length over the model's
    ``max_body_bytes`` is refused before a byte is read, a chunked stream at the first byte over;
    the 413 carries the one error shape."""
    import asyncio

    from aimass.errors import TooLargeError
    from aimass.serve.middleware import error_response
    from aimass.tasks.base import MAX_BODY_BYTES as limit  # text classification's max_body_bytes

    fine, _ = _request([b'{"inputs": ', b'["a"]}'])
    assert asyncio.run(ray_engine.read_body(fine, limit)) == b'{"inputs": ["a"]}'
    declared, read = _request([b"x" * 1024] * 4, length=300 * 1024 * 1024)
    with pytest.raises(TooLargeError, match=f"over {limit} bytes"):
        asyncio.run(ray_engine.read_body(declared, limit))
    assert read == []  # refused on its Content-Length
    streamed, read = _request([b"x" * (1 << 20)] * 300)  # chunked, no Content-Length: 300 MiB
    with pytest.raises(TooLargeError) as refused:
        asyncio.run(ray_engine.read_body(streamed, limit))
    assert len(read) == limit // (1 << 20) + 1  # stopped at the first chunk over the limit
    answer = error_response(refused.value, "r1")
    assert answer.status_code == 413 and b'"code":"too_large"' in answer.body
