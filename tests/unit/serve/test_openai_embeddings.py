"""``POST /v1/embeddings`` through the official ``openai`` client against a live server, and the
rerank and score APIs over the same encoders (vLLM's, Jina's and Cohere's shapes, over HTTP)."""

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
from aimass.backbones.precision import bf16_enabled
from aimass.backbones.text_net import embed
from aimass.serve import auth, metering
from aimass.serve.app import create_app

QUERY = "How do central banks fight inflation?"
RELEVANT = "The central bank raised interest rates again to bring rising prices under control."
IRRELEVANT = "The striker scored twice as the home side won the cup final."
# in bfloat16 (AMX CPUs, aimass.backbones.precision) a text's vector moves by ~1e-3 with its batch
NOISE = 3e-3 if bf16_enabled() else 1e-5


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
    assert np.allclose(vectors, expected.numpy(), atol=NOISE)
    assert answer.usage.prompt_tokens == sum(
        len(tokenizer(t)["input_ids"]) for t in [QUERY, RELEVANT, IRRELEVANT]
    )
    assert answer.usage.total_tokens == answer.usage.prompt_tokens

    default = srv.client.embeddings.create(model="minilm-l6", input=QUERY)  # the client asks for base64
    assert np.allclose(default.data[0].embedding, vectors[0], atol=NOISE)
    raw = httpx.post(
        f"{srv.base}/v1/embeddings",
        json={"model": "minilm", "input": QUERY, "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {srv.key}"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    # one text alone against the same text in a padded batch of 3: float noise
    assert decoded.tolist() == pytest.approx(vectors[0], abs=NOISE)

    short = srv.client.embeddings.create(model="minilm", input=QUERY, dimensions=64, encoding_format="float")
    cut = np.asarray(vectors[0][:64])
    assert np.allclose(short.data[0].embedding, cut / np.linalg.norm(cut), atol=NOISE)

    srv.app.state.meter.flush()
    mine = [u for u in metering.usage(srv.key_id) if u["model"] == "minilm-l6"]
    assert mine and mine[0]["items"] >= answer.usage.prompt_tokens and mine[0]["requests"] >= 3


def test_e5_prefixes(srv):
    plain = srv.client.embeddings.create(
        model="e5-small", input=[QUERY, "query: " + QUERY], encoding_format="float"
    )
    assert plain.model == "multilingual-e5-small"
    assert np.allclose(plain.data[0].embedding, plain.data[1].embedding, atol=NOISE)  # default "query: "
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
    assert np.allclose(passages.data[0].embedding, expected.numpy(), atol=NOISE)


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


DOCUMENTS = [IRRELEVANT, RELEVANT, "央行再次加息，以抑制不断上涨的物价。", "Shares in the bank fell."]


def post(srv, path: str, body: dict, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or srv.key}"}
    return httpx.post(f"{srv.base}{path}", json=body, headers=headers, timeout=120)


def test_rerank_orders_documents_by_the_embeddings_cosine(srv):
    docs = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, DOCUMENTS[2], DOCUMENTS[3]]  # Cohere's objects too
    answer = post(srv, "/v1/rerank", {"model": "e5-small", "query": QUERY, "documents": docs})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "multilingual-e5-small" and body["id"].startswith("rerank-")
    results = body["results"]
    # the same numbers as the embeddings API: the query as "query: ", each document as "passage: "
    query = srv.client.embeddings.create(
        model="e5-small", input=QUERY, extra_body={"input_type": "query"}, encoding_format="float"
    )
    passages = srv.client.embeddings.create(
        model="e5-small", input=DOCUMENTS, extra_body={"input_type": "passage"}, encoding_format="float"
    )
    expected = [cosine(query.data[0].embedding, p.embedding) for p in passages.data]
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    assert [r["index"] for r in results] == sorted(range(4), key=lambda i: -expected[i])
    for r in results:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=NOISE)
        assert r["document"]["text"] == DOCUMENTS[r["index"]]
    assert results[0]["index"] in (1, 2)  # the English or the Chinese article on rates, not football
    assert results[-1]["index"] == 0
    assert body["usage"]["total_tokens"] == query.usage.prompt_tokens + passages.usage.prompt_tokens

    # the other paths answer the same; top_n and return_documents
    for path in ("/rerank", "/v2/rerank"):
        again = post(srv, path, {"model": "multilingual-e5-small", "query": QUERY, "documents": DOCUMENTS})
        assert [r["index"] for r in again.json()["results"]] == [r["index"] for r in results]
    short = post(
        srv,
        "/v1/rerank",
        {"model": "e5-small", "query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": False},
    ).json()["results"]
    assert [r["index"] for r in short] == [r["index"] for r in results[:2]]
    assert all("document" not in r for r in short)

    srv.app.state.meter.flush()
    mine = {u["model"]: u for u in metering.usage(srv.key_id)}
    assert mine["multilingual-e5-small"]["items"] >= 3 * body["usage"]["total_tokens"]


def test_score_pairs_texts_as_vllm_does(srv):
    one = post(
        srv, "/v1/score", {"model": "minilm", "text_1": QUERY, "text_2": [RELEVANT, IRRELEVANT]}
    ).json()
    assert one["object"] == "list" and one["id"].startswith("score-") and one["model"] == "minilm-l6"
    scores = [d["score"] for d in one["data"]]
    assert [d["index"] for d in one["data"]] == [0, 1] and {d["object"] for d in one["data"]} == {"score"}
    vectors = srv.client.embeddings.create(
        model="minilm", input=[QUERY, RELEVANT, IRRELEVANT], encoding_format="float"
    )
    v = [d.embedding for d in vectors.data]
    assert scores == pytest.approx([cosine(v[0], v[1]), cosine(v[0], v[2])], abs=NOISE)
    assert one["usage"]["prompt_tokens"] == vectors.usage.prompt_tokens == one["usage"]["total_tokens"]
    # two lists go pair by pair; a repeated text is read once but scored in each pair
    pairs = post(
        srv,
        "/score",
        {"model": "minilm", "text_1": [QUERY, QUERY, RELEVANT], "text_2": [RELEVANT, IRRELEVANT, RELEVANT]},
    ).json()
    got = [d["score"] for d in pairs["data"]]
    assert got[:2] == pytest.approx(scores, abs=NOISE) and got[2] == pytest.approx(1.0, abs=1e-5)


def test_rerank_and_score_errors(srv):
    def error(path, body, key=None):
        answer = post(srv, path, body, key)
        return answer.status_code, answer.json()["error"]

    status, err = error("/v1/score", {"model": "minilm", "text_1": ["a", "b"], "text_2": ["a", "b", "c"]})
    assert status == 400 and err["param"] == "text_2" and "same length" in err["message"]
    status, err = error("/v1/rerank", {"model": "minilm", "query": "q", "documents": ["fine", "  "]})
    assert status == 400 and err["param"] == "documents[1]"
    status, err = error("/v1/rerank", {"model": "minilm", "query": "q", "documents": ["word " * 600]})
    assert status == 400 and err["code"] == "context_length_exceeded"  # never cut silently
    status, err = error("/v1/rerank", {"model": "minilm", "query": "q", "documents": []})
    assert status == 400 and err["param"] == "documents"
    status, err = error("/v1/rerank", {"model": "nope", "query": "q", "documents": ["d"]})
    assert status == 404 and err["code"] == "model_not_found"
    status, err = error("/v1/score", {"model": "minilm", "text_1": "", "text_2": "x"})
    assert status == 400 and err["param"] == "text_1"
    for path in ("/rerank", "/v2/rerank", "/score", "/v1/rerank"):  # keyed before the body is read
        assert httpx.post(f"{srv.base}{path}", content=b"{").status_code == 401
    _, coder = auth.create_key("code-only", ["jobs:code"])  # may not predict: refused as embeddings are
    refused, _ = error("/v1/rerank", {"model": "minilm", "query": "q", "documents": ["d"]}, coder)
    assert refused == post(srv, "/v1/embeddings", {"model": "minilm", "input": "d"}, coder).status_code == 404


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
    assert answer.model == version.ref and np.allclose(answer.data[0].embedding, expected.numpy(), atol=NOISE)


def test_embedding_requests_sent_together_cannot_all_slip_under_a_quota(srv):
    """A key held to 100 tokens a day sends six 400-token requests at once: one is answered (the
    one that crosses the quota is), the others are 429 while it holds what it may cost. A hold of
    one item a text let all twelve of an audit's requests in (4,824 tokens metered)."""
    from concurrent.futures import ThreadPoolExecutor

    record, key = auth.create_key("embed-capped", ["predict"], quota=100, quota_period="day")
    long_text = "The quick brown fox jumps over the lazy dog. " * 40
    body = {"model": "minilm", "input": [long_text]}

    def one(_):
        answer = httpx.post(
            f"{srv.base}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )
        return answer.status_code

    with ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(one, range(6)))
    assert codes.count(200) < 6 and set(codes) <= {200, 429}, codes
    assert codes.count(200) <= 2, codes  # one, or two that crossed before the first was held
