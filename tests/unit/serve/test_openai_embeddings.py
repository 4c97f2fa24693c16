"""``POST /v1/embeddings`` through the official ``openai`` client against a live server."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import httpx
import numpy as np
import openai
import pytest
import torch
from tests.conftest import live_server

from aimass.backbones.embeddings import EMBEDDERS
from aimass.backbones.text_net import embed
from aimass.serve import auth, metering
from aimass.serve.app import create_app

QUERY = "How do central banks fight inflation?"
RELEVANT = "The central bank raised interest rates again to bring rising prices under control."
IRRELEVANT = "The striker scored twice as the home side won the cup final."


def cosine(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def srv():
    record, key = auth.create_key("embed", ["predict"])
    app = create_app([])
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
        yield SimpleNamespace(base=base, key=key, key_id=record.id, client=client, app=app)


def test_minilm_vectors_are_the_encoders_normalised_mean_pool(srv):
    answer = srv.client.embeddings.create(
        model="minilm", input=[QUERY, RELEVANT, IRRELEVANT], encoding_format="float"
    )
    vectors = [d.embedding for d in answer.data]
    assert answer.model == "minilm-l6" and [d.index for d in answer.data] == [0, 1, 2]
    assert len(vectors[0]) == 384 and np.linalg.norm(vectors[0]) == pytest.approx(1, abs=1e-5)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    loaded = EMBEDDERS.backbone("minilm-l6")  # the server's copy (in this process): no second load
    tokenizer, encoder = loaded.tokenizer, loaded.encoder
    expected = embed(encoder, tokenizer, [QUERY, RELEVANT, IRRELEVANT], max_length=512)["pooled"]
    assert np.allclose(vectors, expected.numpy(), atol=1e-5)
    assert answer.usage.prompt_tokens == sum(
        len(tokenizer(t)["input_ids"]) for t in [QUERY, RELEVANT, IRRELEVANT]
    )
    assert answer.usage.total_tokens == answer.usage.prompt_tokens

    default = srv.client.embeddings.create(model="minilm-l6", input=QUERY)  # the client asks for base64
    assert np.allclose(default.data[0].embedding, vectors[0], atol=1e-6)
    raw = httpx.post(
        f"{srv.base}/v1/embeddings",
        json={"model": "minilm", "input": QUERY, "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {srv.key}"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    # one text alone against the same text in a padded batch of 3: float noise
    assert decoded.tolist() == pytest.approx(vectors[0], abs=1e-6)

    short = srv.client.embeddings.create(model="minilm", input=QUERY, dimensions=64, encoding_format="float")
    cut = np.asarray(vectors[0][:64])
    assert np.allclose(short.data[0].embedding, cut / np.linalg.norm(cut), atol=1e-5)

    srv.app.state.meter.flush()
    mine = [u for u in metering.usage(srv.key_id) if u["model"] == "minilm-l6"]
    assert mine and mine[0]["items"] >= answer.usage.prompt_tokens and mine[0]["requests"] >= 3


def test_e5_prefixes(srv):
    plain = srv.client.embeddings.create(
        model="e5-small", input=[QUERY, "query: " + QUERY], encoding_format="float"
    )
    assert plain.model == "multilingual-e5-small"
    assert np.allclose(plain.data[0].embedding, plain.data[1].embedding, atol=1e-6)  # default "query: "
    passages = srv.client.embeddings.create(
        model="e5-small",
        input=[RELEVANT, IRRELEVANT],
        extra_body={"input_type": "passage"},
        encoding_format="float",
    )
    query = plain.data[0].embedding
    assert cosine(query, passages.data[0].embedding) > cosine(query, passages.data[1].embedding)
    loaded = EMBEDDERS.backbone("multilingual-e5-small")
    tokenizer, encoder = loaded.tokenizer, loaded.encoder
    expected = embed(encoder, tokenizer, ["passage: " + RELEVANT], max_length=512)["pooled"][0]
    assert np.allclose(passages.data[0].embedding, expected.numpy(), atol=1e-5)


def test_embedding_errors(srv):
    with pytest.raises(openai.BadRequestError) as tokens:
        srv.client.embeddings.create(model="minilm", input=[[101, 2023]])
    assert "Token arrays" in tokens.value.body["message"] and tokens.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as wide:
        srv.client.embeddings.create(model="minilm", input="hi", dimensions=1000)
    assert wide.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as long:
        srv.client.embeddings.create(model="minilm", input="word " * 600)
    assert long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.APIStatusError) as many:
        srv.client.embeddings.create(model="minilm", input=["hi"] * 257)
    assert many.value.status_code == 413 and many.value.body["code"] == "too_many_inputs"
    with pytest.raises(openai.BadRequestError):
        srv.client.embeddings.create(model="minilm", input="")
    with pytest.raises(openai.NotFoundError):
        srv.client.embeddings.create(model="nope", input="hi")
    ids = [m.id for m in srv.client.models.list()]
    assert "minilm-l6" in ids and "multilingual-e5-small" in ids


@pytest.mark.slow
def test_a_served_classifier_embeds_with_its_own_encoder(small_model):
    import aimass

    version = aimass.register(small_model, "news-embed")
    _, key = auth.create_key("embed2", ["predict"])
    with live_server(create_app([version.ref])) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
        answer = client.embeddings.create(model=version.ref, input=[QUERY], encoding_format="float")
    with torch.inference_mode():
        enc = small_model.tokenizer_([QUERY], return_tensors="pt")
        hidden = small_model.net_.encoder(**enc).last_hidden_state
    expected = torch.nn.functional.normalize(hidden.mean(1), dim=-1)[0]
    assert answer.model == version.ref and np.allclose(answer.data[0].embedding, expected.numpy(), atol=1e-5)
