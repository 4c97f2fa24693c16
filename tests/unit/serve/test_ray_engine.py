"""``aimass serve --engine ray``: a local Ray instance serves a registered model with its handler."""

from __future__ import annotations

import socket

import httpx
import pytest

from aimass import api
from aimass.serve import ray_engine
from aimass.serve.batching import BatchSettings

TEXTS = ["The striker scored twice as United won the cup final.", "Parliament voted on the budget bill."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
