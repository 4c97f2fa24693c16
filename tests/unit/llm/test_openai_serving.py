"""The official ``openai`` client against a live ``aimass serve`` (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import jsonschema
import openai
import pytest
import torch
from playwright import sync_api
from tests.conftest import live_server
from tests.unit.serve.test_console_browser import WIDE, check, sign_in

import aimass
from aimass.llm import batcher, decode
from aimass.serve import auth
from aimass.serve.app import create_app

ARTICLE = (
    "Shares in the carmaker rose 5% after it reported record profits for the third quarter, "
    "beating forecasts as sales of its electric models doubled."
)


@pytest.fixture(scope="module")
def srv(headlines_model):
    _, key = auth.create_key("llm", ["predict"])
    app = create_app([headlines_model["model"]])
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
        yield SimpleNamespace(base=base, key=key, client=client, model=headlines_model["model"], app=app)


def story(srv, max_tokens: int, **extra) -> dict:
    """A request body that decodes all ``max_tokens``: near-uniform sampling (temperature 2, seeded)
    never reaches the end of text early, so a test that cuts it short cannot pass by the model
    stopping on its own."""
    return {
        "model": srv.model,
        "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
        "max_tokens": max_tokens,
        "temperature": 2.0,
        "seed": 0,
        **extra,
    }


def test_chat_answer_equals_model_generate_for_the_same_seed(srv):
    answer = srv.client.chat.completions.create(
        model=srv.model,
        messages=[{"role": "user", "content": ARTICLE}],
        max_tokens=10,
        temperature=0.8,
        seed=11,
    )
    expected = aimass.load(srv.model).generate(ARTICLE, max_tokens=10, temperature=0.8, seed=11)
    (choice,) = answer.choices
    assert choice.message.content == expected.choices[0].text
    assert choice.finish_reason == expected.choices[0].finish_reason
    assert answer.usage.prompt_tokens == expected.prompt_tokens
    assert answer.usage.completion_tokens == expected.completion_tokens
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer.model == srv.model


def test_rest_predict_joins_the_continuous_batch_with_the_same_answers(srv):
    """``POST /v1/models/{name}/predict`` on a language model: its prompts decode in the base's
    shared batch (beside the chats in flight) and answer what ``predict`` answers."""
    prompts = [ARTICLE, "Shares fell sharply on Monday.", "The team won the cup final after extra time."]
    shared = batcher.scheduler(aimass.load(srv.model).base_, None)
    steps, peak = shared.steps, shared.peak
    shared.peak = 0
    answer = httpx.post(
        f"{srv.base}/v1/models/{srv.model}/predict",
        json={"inputs": prompts},
        headers={"Authorization": f"Bearer {srv.key}"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    got = [p["text"] for p in answer.json()["predictions"]]
    assert got == aimass.load(srv.model).predict(prompts)
    assert shared.steps > steps and shared.peak >= 2  # decoded there, side by side
    shared.peak = max(shared.peak, peak)


def test_stream_is_real_sse_with_usage_and_done(srv):
    stream = srv.client.chat.completions.create(
        model=srv.model,
        messages=[{"role": "user", "content": "Count from one to ten in words."}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons in (["length"], ["stop"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8
    plain = srv.client.chat.completions.create(
        model=srv.model,
        messages=[{"role": "user", "content": "Count from one to ten in words."}],
        max_tokens=8,
        temperature=0,
    )
    assert text == plain.choices[0].message.content
    with httpx.stream(
        "POST",
        f"{srv.base}/v1/completions",
        headers={"Authorization": f"Bearer {srv.key}"},
        json={"model": srv.model, "prompt": "One, two,", "max_tokens": 3, "temperature": 0, "stream": True},
        timeout=60,
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_n_choices_and_stop_strings(srv):
    two = srv.client.chat.completions.create(
        model=srv.model,
        messages=[{"role": "user", "content": "Name a fruit."}],
        max_tokens=6,
        temperature=1.0,
        seed=3,
        n=2,
    )
    assert [c.index for c in two.choices] == [0, 1]
    # the prompt is prefilled once for all its choices, which answer as model.generate's n rows do
    scheduler = batcher.scheduler(aimass.load(srv.model).base_)
    before = scheduler.prefills
    three = srv.client.chat.completions.create(
        model=srv.model,
        messages=[{"role": "user", "content": ARTICLE}],
        max_tokens=8,
        temperature=1.0,
        seed=5,
        n=3,
    )
    assert scheduler.prefills == before + 1
    expected = aimass.load(srv.model).generate(ARTICLE, max_tokens=8, temperature=1.0, seed=5, n=3)
    assert [c.message.content for c in three.choices] == [c.text for c in expected.choices]
    assert len({c.message.content for c in three.choices}) > 1  # each its own sample
    counted = srv.client.completions.create(
        model=srv.model, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 7", "\n\n"]
    )
    (choice,) = counted.choices
    assert choice.finish_reason == "stop" and " 7" not in choice.text and choice.text.startswith(" 5")
    assert counted.usage.completion_tokens < 12


def test_models_lists_the_version_and_its_base(srv):
    ids = [m.id for m in srv.client.models.list()]
    assert srv.model in ids and "smollm2-135m" in ids
    base = srv.client.completions.create(
        model="smollm2-135m", prompt="The sky is", max_tokens=3, temperature=0
    )
    assert base.model == "smollm2-135m" and base.usage.completion_tokens <= 3


def test_openai_client_raises_its_own_errors(srv):
    bad_key = openai.OpenAI(base_url=f"{srv.base}/v1", api_key="am_nope_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model=srv.model, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError) as missing:
        srv.client.chat.completions.create(model="nope:9", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad:
        srv.client.chat.completions.create(
            model=srv.model, messages=[{"role": "user", "content": "hi"}], temperature=5
        )
    assert bad.value.body["param"] == "temperature" and bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        srv.client.chat.completions.create(model=srv.model, messages=[{"role": "robot", "content": "hi"}])
    huge = "word " * 6000  # over the context: refused before any forward pass
    with pytest.raises(openai.BadRequestError) as long:
        srv.client.completions.create(model=srv.model, prompt=huge, max_tokens=4)
    assert long.value.body["code"] == "context_length_exceeded" and long.value.body["param"] == "prompt"
    assert "prompt tokens" in long.value.body["message"]
    _, slow_key = auth.create_key("llm-slow", ["predict"], rate_limit=0.01)  # one request per 100 s
    slow = openai.OpenAI(base_url=f"{srv.base}/v1", api_key=slow_key, max_retries=0)
    slow.models.list()
    with pytest.raises(openai.RateLimitError) as limited:
        slow.chat.completions.create(model=srv.model, messages=[{"role": "user", "content": "hi"}])
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert limited.value.body["code"] == "too_many_requests"


def test_concurrent_requests_share_decode_steps_and_answer_as_alone(srv):
    from aimass.llm import batcher

    prompts = ["Name three rivers.", "Say hello to Ann.", "What colour is the sky?"]
    alone = [
        srv.client.chat.completions.create(
            model=srv.model, messages=[{"role": "user", "content": p}], max_tokens=8, temperature=0
        ).choices[0]
        for p in prompts
    ]
    scheduler = batcher.scheduler(aimass.load(srv.model).base_)
    scheduler.peak = 0
    with ThreadPoolExecutor(3) as pool:
        together = list(
            pool.map(
                lambda p: srv.client.chat.completions.create(
                    model=srv.model, messages=[{"role": "user", "content": p}], max_tokens=8, temperature=0
                ).choices[0],
                prompts,
            )
        )
    assert scheduler.peak >= 2  # at least two requests decoded in one step
    assert [c.message.content for c in together] == [c.message.content for c in alone]


def test_eight_requests_decode_in_one_batch(srv):
    """Streamed and plain requests together fill the batch's eight rows: generations have threads of
    their own (asyncio's default pool has six on two cores, and once held the batch at six)."""
    scheduler = batcher.scheduler(aimass.load(srv.model).base_)
    scheduler.peak = 0
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]

    def one(i: int) -> int:
        if i % 2:
            answer = srv.client.chat.completions.create(
                model=srv.model, messages=messages, max_tokens=24, temperature=0
            )
            return answer.usage.completion_tokens
        stream = srv.client.chat.completions.create(
            model=srv.model,
            messages=messages,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        return [c.usage.completion_tokens for c in stream if c.usage][0]

    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(one, range(8)))
    assert tokens == [24] * 8
    assert scheduler.peak == 8
    assert srv.app.state.generation.slots.in_flight == 0


def test_a_full_server_answers_429_with_retry_after(srv):
    """With one generation slot, a second request is refused while a first one decodes. The first is
    a plain request on a raw socket, closed by the test (a stream held here by httpx was, about one
    run in five under load, ended early, which let the second one in; not yet explained)."""
    slots = srv.app.state.generation.slots
    scheduler = batcher.scheduler(aimass.load(srv.model).base_)
    headers = {"Authorization": f"Bearer {srv.key}"}
    body = json.dumps(story(srv, 200)).encode()
    host, port = srv.base.removeprefix("http://").split(":")
    holder = socket.create_connection((host, int(port)))  # a raw client: the test hangs up at will
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: {headers['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    slots.limit = 1
    try:
        holder.sendall(request.encode() + body)
        began = time.monotonic()
        while not (slots.in_flight and scheduler.active) and time.monotonic() - began < 20:
            time.sleep(0.02)
        assert slots.in_flight == 1 and scheduler.active == 1  # decoding: the one slot is taken
        with pytest.raises(openai.RateLimitError) as refused:
            srv.client.completions.create(model=srv.model, prompt="Hi", max_tokens=2)
        assert refused.value.response.headers["Retry-After"] == "1"
        assert "AIMASS_LLM_MAX_REQUESTS" in refused.value.response.json()["error"]["hint"]
        assert slots.in_flight == 1  # the first still decodes its 200 tokens
    finally:
        slots.limit = 64
        holder.close()  # the client hangs up
    began = time.monotonic()
    while slots.in_flight and time.monotonic() - began < 20:  # cancelled within a poll (0.25 s)
        time.sleep(0.05)
    assert slots.in_flight == 0
    quick = srv.client.completions.create(model=srv.model, prompt="Hi", max_tokens=2, temperature=0)
    assert quick.usage.completion_tokens <= 2


def test_a_cancelled_plain_request_stops_decoding_at_its_next_token(srv):
    """A plain request whose await is cancelled (a shutdown past its grace) leaves the batch at once
    instead of decoding the 400 tokens it asked for."""
    import asyncio

    generation = srv.app.state.generation
    scheduler = batcher.scheduler(aimass.load(srv.model).base_)
    body = story(srv, 400)

    async def scenario() -> float:
        task = asyncio.ensure_future(generation.chat(SimpleNamespace(key_id="k"), json.dumps(body).encode()))
        began = time.monotonic()
        while not scheduler.active and time.monotonic() - began < 20:
            await asyncio.sleep(0.02)
        assert scheduler.active == 1
        await asyncio.sleep(0.5)  # a few tokens in
        task.cancel()
        cancelled = time.monotonic()
        while scheduler.active and time.monotonic() - cancelled < 20:
            await asyncio.sleep(0.02)
        return time.monotonic() - cancelled

    assert asyncio.run(scenario()) < 3  # 400 tokens take ~20 s here
    assert scheduler.active == 0 and generation.slots.in_flight == 0


def test_a_disconnected_stream_frees_its_slot(srv):
    from aimass.llm import batcher

    scheduler = batcher.scheduler(aimass.load(srv.model).base_)
    body = story(srv, 400, stream=True)
    headers = {"Authorization": f"Bearer {srv.key}"}
    with httpx.stream("POST", f"{srv.base}/v1/chat/completions", json=body, headers=headers, timeout=60) as r:
        for line in r.iter_lines():
            if '"content"' in line and '"content": ""' not in line:
                break  # the first token arrived: hang up
    began = time.monotonic()
    while scheduler.active and time.monotonic() - began < 20:
        time.sleep(0.1)
    assert scheduler.active == 0
    assert time.monotonic() - began < 20  # far less than 400 tokens' worth
    quick = srv.client.completions.create(model=srv.model, prompt="Hi", max_tokens=2, temperature=0)
    assert quick.usage.completion_tokens <= 2


def test_a_plain_request_whose_client_hangs_up_stops_decoding(srv):
    """uvicorn does not cancel a handler whose client left: a plain request went on decoding its
    400 tokens (8 rows of the batch with n=8) for nobody. It is cancelled within a poll now, and its
    key is charged the tokens decoded for it (it was charged nothing: a way to use the model free)."""
    from aimass.serve import metering

    scheduler = batcher.scheduler(aimass.load(srv.model).base_)
    record, key = auth.create_key("hangs-up", ["predict"])
    headers = {"Authorization": f"Bearer {key}"}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 1 s and closes the socket
        httpx.post(f"{srv.base}/v1/chat/completions", json=story(srv, 400, n=4), headers=headers, timeout=1)
    began = time.monotonic()
    while scheduler.active and time.monotonic() - began < 20:
        time.sleep(0.05)
    assert scheduler.active == 0 and time.monotonic() - began < 5  # 400 tokens x 4 take ~40 s here
    slots = srv.app.state.generation.slots
    while slots.in_flight and time.monotonic() - began < 10:  # the handler lets its slot go as it ends
        time.sleep(0.05)
    assert slots.in_flight == 0
    time.sleep(0.2)  # the worker thread records as it ends
    srv.app.state.meter.flush()
    used = [u for u in metering.usage(record.id) if u["model"] == srv.model]
    assert used and used[0]["requests"] == 1 and used[0]["items"] > 20, used  # the prompt and some tokens


def test_a_request_the_model_cannot_prefill_fails_alone(srv):
    """An empty prompt is a 400 before any work; and a request whose prefill fails anyway fails by
    itself: it used to stay in the waiting list, failing every pass of the shared loop, while every
    later request hung."""
    refused = httpx.post(
        f"{srv.base}/v1/completions",
        json={"model": srv.model, "prompt": "", "max_tokens": 5},
        headers={"Authorization": f"Bearer {srv.key}"},
        timeout=30,
    )
    assert refused.status_code == 400 and "prompt is empty" in refused.json()["error"]["message"]
    scheduler = batcher.scheduler(aimass.load(srv.model).base_)
    params = decode.SamplingParams(max_tokens=3, temperature=0.0)
    raised = []

    def attempt():  # zero tokens: the model's forward raises (before, submit never returned)
        try:
            scheduler.submit([], params, None)
        except RuntimeError as exc:
            raised.append(exc)

    waiting = threading.Thread(target=attempt, daemon=True)
    waiting.start()
    waiting.join(30)
    assert raised and not scheduler.waiting
    quick = srv.client.completions.create(model=srv.model, prompt="Hi", max_tokens=2, temperature=0)
    assert quick.usage.completion_tokens <= 2


def test_a_request_that_fails_mid_decode_fails_alone_and_a_tiny_temperature_is_greedy(srv):
    """A request's own failure at a later token (its sampling, its constraint) used to fail every
    request in the shared batch: a ``temperature`` of 1e-45 (valid: [0, 2]) divided the logits to
    inf, and the loop's handler ended everyone's generation. Now such a temperature samples greedily
    (as vLLM's below 1e-5), and a failure at a token fails that request alone."""
    tiny = srv.client.completions.create(
        model=srv.model, prompt="Once upon a time", max_tokens=6, temperature=1e-45
    )
    greedy = srv.client.completions.create(
        model=srv.model, prompt="Once upon a time", max_tokens=6, temperature=0
    )
    assert tiny.choices[0].text == greedy.choices[0].text

    base = aimass.load(srv.model).base_
    scheduler = batcher.scheduler(base)
    vocab = len(base.tokenizer)

    class Breaks:  # a constraint that fails at its third token, as a guided grammar's bug would
        def __init__(self):
            self.calls = 0

        def allowed(self, left):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("the constraint broke")
            return torch.ones(vocab, dtype=torch.bool)

        def advance(self, token):
            pass

    ids = base.tokenizer("Write a very long story about a dragon.")["input_ids"]
    healthy, broken = {}, {}

    def run(out, params):
        try:
            out["answer"] = scheduler.submit(ids, params, None)
        except RuntimeError as exc:
            out["error"] = exc

    first = threading.Thread(
        target=run, args=(healthy, decode.SamplingParams(max_tokens=40, temperature=2.0, seed=0))
    )
    first.start()
    began = time.monotonic()
    while not scheduler.active and time.monotonic() - began < 20:
        time.sleep(0.01)
    second = threading.Thread(
        target=run,
        args=(broken, decode.SamplingParams(max_tokens=40, temperature=2.0, seed=1, constraint=Breaks)),
    )
    second.start()
    first.join(60), second.join(60)
    assert "the constraint broke" in str(broken.get("error")), broken
    assert "answer" in healthy, healthy  # the other request in the batch went on to its 40 tokens
    assert healthy["answer"].choices[0].finish_reason == "length"
    assert len(healthy["answer"].choices[0].token_ids) == 40


def test_a_long_prompt_is_prefilled_in_chunks_while_the_batch_decodes(srv):
    """A prompt longer than the chunk is prefilled a chunk between two decode steps: a stream in
    the batch keeps getting tokens meanwhile (one pass over the whole prompt stalled every stream
    for as long as it took), and the long request answers what it answers prefilled at once."""
    base = aimass.load(srv.model).base_
    scheduler = batcher.scheduler(base)
    long_ids = base.tokenizer(" ".join(["The quick brown fox jumps over the lazy dog."] * 130))["input_ids"]
    assert len(long_ids) > 4 * scheduler.chunk > 0
    params = decode.SamplingParams(max_tokens=4, temperature=0.0)
    whole = decode.generate(base.model, base.tokenizer, long_ids, params)  # one pass, no batcher
    streamed, seen_at_first = [], []

    def on_delta(index, text, reason, entries):  # the running stream's tokens, as they come
        streamed.append(text)

    def long_first(index, text, reason, entries):  # the long prompt's first token: its prefill is done
        if not seen_at_first:
            seen_at_first.append(len(streamed))

    running, answers = {}, {}
    ids = base.tokenizer("Write a very long story about a dragon.")["input_ids"]
    story = decode.SamplingParams(max_tokens=60, temperature=2.0, seed=0)
    first = threading.Thread(
        target=lambda: running.update(a=scheduler.submit(ids, story, None, on_delta=on_delta))
    )
    first.start()
    began = time.monotonic()
    while len(streamed) < 2 and time.monotonic() - began < 30:
        time.sleep(0.01)
    before = len(streamed)
    answers["long"] = scheduler.submit(long_ids, params, None, on_delta=long_first)
    first.join(60)
    chunks = -(-len(long_ids) // scheduler.chunk)
    assert seen_at_first[0] - before >= chunks - 1, (before, seen_at_first, chunks)  # a token a chunk
    assert answers["long"].choices[0].token_ids == whole.choices[0].token_ids
    assert running["a"].choices[0].finish_reason == "length"


def test_a_lone_surrogate_is_a_400_naming_its_field(srv):
    """JSON's ``\\ud800`` escape carries half a character no tokenizer takes: it was a 500."""
    headers = {"Authorization": f"Bearer {srv.key}", "Content-Type": "application/json"}
    bodies = {
        "/v1/completions": ('{"model": "M", "prompt": "Hi \\ud800 there", "max_tokens": 2}', "prompt"),
        "/v1/chat/completions": (
            '{"model": "M", "messages": [{"role": "user", "content": "\\udfff"}], "max_tokens": 2}',
            "messages[0].content",
        ),
        "/tokenize": ('{"model": "M", "prompt": "a\\ud800"}', "prompt"),
    }
    for path, (body, where) in bodies.items():
        answer = httpx.post(
            f"{srv.base}{path}", content=body.replace("M", srv.model), headers=headers, timeout=30
        )
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["param"] == where, (path, answer.text)
        assert "lone surrogate" in error["message"]
    paired = '{"model": "M", "prompt": "smile \\ud83d\\ude00", "max_tokens": 1}'.replace("M", srv.model)
    smiled = httpx.post(f"{srv.base}/v1/completions", content=paired, headers=headers, timeout=60)
    assert smiled.status_code == 200, smiled.text  # a pair of escapes is one character (an emoji)


def test_a_stop_sequence_is_bounded(srv):
    with pytest.raises(openai.BadRequestError, match="at most 256 characters"):
        srv.client.completions.create(model=srv.model, prompt="Hi", max_tokens=2, stop=["x" * 257])


@pytest.mark.slow
def test_two_adapters_of_one_base_answer_differently_on_one_base_copy(headlines_model):
    from aimass.tasks.text_generation import TextGenerator, headline_pairs

    # a second fine-tune of the same base, pushed hard so that its answers differ
    other = TextGenerator(max_steps=2, batch_size=4, max_length=64, lr=5e-3, seed=1)
    other.fit(headline_pairs(8, chars=120, skip=200), progress=False)
    second = aimass.register(other, "headlines-b")
    _, key = auth.create_key("llm2", ["predict"])
    app = create_app([headlines_model["model"], second.ref])
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
        answers = [
            client.chat.completions.create(
                model=ref, messages=[{"role": "user", "content": ARTICLE}], max_tokens=8, temperature=0
            )
            .choices[0]
            .message.content
            for ref in (headlines_model["model"], second.ref)
        ]
        deployments = [s.deployments[0] for s in app.state.engine.services.values()]
        # at once, with the base too: one decode batch, each row with its own adapter, same answers
        sched = batcher.scheduler(deployments[0].handler.model.base_)
        mixed_before = sched.mixed_steps
        refs = (headlines_model["model"], second.ref, "smollm2-135m")
        with ThreadPoolExecutor(3) as pool:
            together = list(
                pool.map(
                    lambda ref: client.chat.completions.create(
                        model=ref,
                        messages=[{"role": "user", "content": ARTICLE}],
                        max_tokens=8,
                        temperature=0,
                    ),
                    refs,
                )
            )
        alone = client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": ARTICLE}], max_tokens=8, temperature=0
        )
    assert [a.choices[0].message.content for a in together] == [*answers, alone.choices[0].message.content]
    assert sched.mixed_steps > mixed_before  # the fine-tunes and the base shared decode steps
    assert answers[0] != answers[1]
    models = [d.handler.model for d in deployments]
    assert models[0].base_ is models[1].base_  # one base in memory, two adapters on it
    # both adapters on it (fine-tunes other tests served by name may be attached to it too)
    assert {m.adapter_ for m in models} <= set(models[0].base_.adapters)


# ------------------------------------------------- live figures and the console's playground
def _figures(srv) -> dict:
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    service = srv.model.partition(":")[0]
    answer = httpx.get(f"{srv.base}/v1/services/{service}/metrics?window_s=3600", headers=admin)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_openai_requests_count_in_the_service_live_figures(srv):
    """Chat, completions (plain and streamed) and embeddings to a served generation model count in
    its service's figures (requests, errors, latency, tokens/s); requests decoding count in its queue."""
    before = _figures(srv)
    service = srv.model.partition(":")[0]
    chat = [{"role": "user", "content": "Name a colour."}]
    srv.client.chat.completions.create(model=srv.model, messages=chat, max_tokens=4, temperature=0)
    srv.client.completions.create(model=service, prompt="One, two,", max_tokens=3, temperature=0)
    list(srv.client.chat.completions.create(model=srv.model, messages=chat, max_tokens=4, stream=True))
    with pytest.raises(openai.BadRequestError):
        srv.client.chat.completions.create(model=srv.model, messages=chat, temperature=5)
    with pytest.raises(openai.BadRequestError):  # a generation model does not embed
        srv.client.embeddings.create(model=srv.model, input="hello")
    after = _figures(srv)
    assert after["requests"] - before["requests"] == 5 and after["errors"] - before["errors"] == 2
    assert after["tokens_per_s"] > 0 and after["p50_ms"] > 0 and after["p95_ms"] >= after["p50_ms"]
    prompts = [ARTICLE, "Name three rivers.", "Say hello to Ann."]
    with ThreadPoolExecutor(3) as pool:
        running = [
            pool.submit(
                srv.client.chat.completions.create,
                model=srv.model,
                messages=[{"role": "user", "content": p}],
                max_tokens=16,
                temperature=0,
            )
            for p in prompts
        ]
        seen = []
        while not all(r.done() for r in running):
            seen.append(_figures(srv)["queue_depth"])  # requests decoding in the batch count as queued
        assert all(r.result().choices for r in running)
    assert max(seen) >= 1, seen
    assert _figures(srv)["queue_depth"] == 0


@contextlib.contextmanager
def _console(srv, key: str):
    with httpx.Client(base_url=srv.base, timeout=120, follow_redirects=True) as client:
        form = client.get("/console/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        assert client.post("/console/signin", data={"csrf": csrf, "key": key}).status_code == 200
        yield client


def test_the_playground_streams_what_the_chat_route_answers(srv):
    """The console's playground lists the served generation model and streams, through the form's
    CSRF check and the chat route's access rule, the answer POST /v1/chat/completions gives; its
    session cookie is no API key."""
    with _console(srv, srv.key) as client:  # a predict-only key may chat
        page = client.get("/console/playground", params={"model": srv.model})
        assert page.status_code == 200 and f'<option value="{srv.model}" selected>' in page.text
        assert "static/playground.js" in page.text and "/v1/chat/completions" in page.text
        assert "Playground" in client.get(f"/console/try/{srv.model.partition(':')[0]}").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        body = {
            "model": srv.model,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ARTICLE}],
            "max_tokens": 6,
            "temperature": 0.8,
            "seed": 5,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        forged = client.post("/console/playground/chat", data={"body": json.dumps(body)})
        assert forged.status_code == 403 and "CSRF" in forged.text
        streamed = client.post("/console/playground/chat", data={"csrf": csrf, "body": json.dumps(body)})
        assert streamed.headers["content-type"].startswith("text/event-stream")
        chunks = [json.loads(x[6:]) for x in streamed.text.split("\n\n") if x.startswith("data: {")]
        bad = client.post(
            "/console/playground/chat", data={"csrf": csrf, "body": json.dumps({**body, "temperature": 5})}
        )
        assert bad.status_code == 400 and "temperature" in bad.text
        cookie_only = client.post("/v1/chat/completions", json=body)
        assert cookie_only.status_code == 401  # the REST routes want a key, not the console's cookie
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    plain = srv.client.chat.completions.create(
        model=srv.model, messages=body["messages"], max_tokens=6, temperature=0.8, seed=5
    )
    assert text == plain.choices[0].message.content and chunks[-1]["usage"]["completion_tokens"] <= 6


CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
    "required": ["city", "sunny"],
    "additionalProperties": False,
}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium: apt-get install -y chromium")
def test_the_playground_in_a_browser_streams_and_shows_the_request(srv, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--disable-gpu"])
        page = browser.new_context(viewport=WIDE).new_page()
        page.set_default_timeout(60_000)
        sign_in(page, srv.base, auth.admin_token())
        page.goto(f"{srv.base}/console/models/{srv.model}")
        page.get_by_role("link", name=f"Chat with {srv.model} in the Playground").click()
        page.wait_for_url("**/console/playground?model=*")
        page.get_by_label("Temperature (0–2)").fill("0")
        page.get_by_label("Max tokens").fill("6")
        page.get_by_label("Your message").fill("Say hello.")
        page.get_by_role("button", name="Send").click()
        page.wait_for_selector("#status[data-done=true]")
        said = page.locator(".message.assistant p").text_content()
        curl, code = page.text_content("#curl"), page.text_content("#python")
        assert "tokens/s" in page.text_content("#status")
        check(page, tmp_path, "playground")
        page.get_by_role("button", name="Clear the chat").click()
        page.get_by_label("JSON Schema of the answer (optional)").fill("{not json")
        page.get_by_label("Your message").fill("Describe Paris.")
        page.get_by_role("button", name="Send").click()
        assert "not JSON" in page.text_content("#status") and page.locator(".message").count() == 0
        page.get_by_label("JSON Schema of the answer (optional)").fill(json.dumps(CITY))
        page.get_by_label("Max tokens").fill("40")
        page.get_by_role("button", name="Send").click()
        page.wait_for_selector("#status[data-done=true]")
        structured = page.locator(".message.assistant p").text_content()
        shaped = page.text_content("#python")
        browser.close()
    jsonschema.validate(json.loads(structured), CITY)
    assert "response_format={" in shaped and '"additionalProperties": False' in shaped, shaped
    plain = srv.client.chat.completions.create(
        model=srv.model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=6, temperature=0
    )
    assert said == plain.choices[0].message.content and said
    assert '"stream":true' in curl and '"max_tokens":6' in curl and "Say hello." in curl
    assert f'model="{srv.model}"' in code and "max_tokens=6" in code and "stream=True" in code


def batch_line(custom_id: str, body: dict, url: str = "/v1/chat/completions") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def test_a_batch_answers_each_line_as_the_route_does_and_resumes_where_it_stopped(srv, tmp_path):
    from aimass import jobs
    from aimass.jobs.logs import run_dir

    _, manage = auth.create_key("batches", ["manage"])
    client = openai.OpenAI(base_url=f"{srv.base}/v1", api_key=manage, max_retries=0, timeout=120)
    ask = {"messages": [{"role": "user", "content": ARTICLE}], "max_tokens": 6, "temperature": 0.8}
    bodies = {f"r{i}": {"model": srv.model, **ask, "seed": i} for i in range(3)}
    bodies["missing"] = {"model": "no-such-model", **ask}
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(batch_line(k, b) + "\n" for k, b in bodies.items()))

    for bad, why in (
        (
            batch_line("a", bodies["r0"]) + "\n" + batch_line("a", bodies["r1"]),
            "Line 2: custom_id 'a' repeats line 1",
        ),
        (batch_line("a", {**bodies["r0"], "stream": True}), "Line 1: a batch's answers are not streamed"),
        (batch_line("a", bodies["r0"], url="/v1/images"), "Line 1: url must be one of"),
        ("{not json", "Line 1 is not JSON"),
    ):
        (tmp_path / "bad.jsonl").write_text(bad + "\n")
        with pytest.raises(openai.BadRequestError) as err:
            client.files.create(file=(tmp_path / "bad.jsonl").open("rb"), purpose="batch")
        assert why in err.value.body["message"], err.value.body
    file = client.files.create(file=requests.open("rb"), purpose="batch")
    assert file.purpose == "batch" and file.status_details == "4 requests" and file.id.startswith("file-")
    assert client.files.content(file.id).content == requests.read_bytes()
    with pytest.raises(openai.BadRequestError) as err:  # the file's requests are chat completions
        client.batches.create(input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h")
    assert err.value.body["param"] == "endpoint"

    batch = client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "nightly"},
    )
    assert (
        batch.status == "validating"
        and batch.request_counts.total == 4
        and batch.metadata == {"run": "nightly"}
    )
    with pytest.raises(openai.ConflictError):  # its input is kept until it has ended
        client.files.delete(file.id)
    assert jobs.run_foreground(batch.id)["status"] == "succeeded"

    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.completed_at >= done.created_at
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 1)
    answers = {
        json.loads(x)["custom_id"]: json.loads(x)
        for x in client.files.content(done.output_file_id).text.splitlines()
    }
    assert sorted(answers) == ["r0", "r1", "r2"]
    for custom_id in answers:  # each answer is what the live route answers the same body
        live = srv.client.chat.completions.create(**bodies[custom_id])
        line = answers[custom_id]["response"]
        assert line["status_code"] == 200 and line["body"]["object"] == "chat.completion"
        assert line["body"]["choices"][0]["message"]["content"] == live.choices[0].message.content
    [missing] = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert missing["custom_id"] == "missing" and missing["response"]["status_code"] == 404
    assert "no-such-model" in missing["response"]["body"]["error"]["message"]
    assert batch.id in [b.id for b in client.batches.list(limit=5).data]
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"

    # a second batch whose worker died after answering r1 (and in the middle of writing r2's line)
    again = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    folder = run_dir(again.id)
    folder.mkdir(parents=True, exist_ok=True)
    kept = json.dumps(answers["r1"]) + "\n"
    (folder / "output.jsonl").write_text(kept + json.dumps(answers["r2"])[:40])
    assert jobs.run_foreground(again.id)["status"] == "succeeded"
    lines = (folder / "output.jsonl").read_text().splitlines(keepends=True)
    assert lines[0] == kept and sorted(json.loads(x)["custom_id"] for x in lines) == ["r0", "r1", "r2"]
    assert client.batches.retrieve(again.id).request_counts.completed == 3

    assert client.files.delete(file.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)
    with pytest.raises(openai.BadRequestError):
        client.files.delete(done.output_file_id)


def test_aimass_batch_answers_a_local_file_like_vllm_run_batch(srv, tmp_path):
    from typer.testing import CliRunner

    from aimass.cli import app

    requests = tmp_path / "local.jsonl"
    body = {
        "model": srv.model,
        "messages": [{"role": "user", "content": ARTICLE}],
        "max_tokens": 4,
        "seed": 5,
    }
    requests.write_text(batch_line("x1", body) + "\n" + batch_line("x2", {**body, "model": "nope"}) + "\n")
    done = CliRunner().invoke(app, ["batch", str(requests), "--meta", "source=cli", "--json"])
    assert done.exit_code == 0, done.output[-2000:]
    job = json.loads(done.output[done.output.index("{") :])
    assert job["status"] == "succeeded" and job["metadata"] == {"source": "cli"}
    lines = [json.loads(x) for x in (tmp_path / "local.out.jsonl").read_text().splitlines()]
    assert [(x["custom_id"], x["response"]["status_code"]) for x in lines] == [("x1", 200), ("x2", 404)]
    live = srv.client.chat.completions.create(**body)
    assert lines[0]["response"]["body"]["choices"][0]["message"]["content"] == live.choices[0].message.content
    (tmp_path / "bad.jsonl").write_text('{"custom_id": "a"}\n')
    refused = CliRunner().invoke(app, ["batch", str(tmp_path / "bad.jsonl")])
    assert refused.exit_code != 0 and "Line 1: method must be" in refused.output


def test_a_key_over_its_token_quota_gets_insufficient_quota_once_and_its_batches_too(srv, tmp_path):
    """Tokens (prompt + completion) count against a key's quota: the official client (with its
    default two retries) sends the refused request once, since the answer says not to retry, and
    raises RateLimitError with OpenAI's ``insufficient_quota``; a batch of that key answers every
    line with the same 429 in its error file."""
    from aimass import jobs

    record, key = auth.create_key("tokens", ["predict", "manage"], quota=30)
    sent = []
    hooks = {"request": [lambda request: sent.append(request.url.path)]}
    client = openai.OpenAI(
        base_url=f"{srv.base}/v1", api_key=key, http_client=httpx.Client(event_hooks=hooks)
    )
    body = {
        "model": srv.model,
        "messages": [{"role": "user", "content": ARTICLE}],
        "max_tokens": 4,
        "seed": 1,
    }
    first = client.chat.completions.create(**body)
    assert first.usage.total_tokens >= 30  # the request that crosses the quota is answered
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**body)
    assert err.value.code == "insufficient_quota" and err.value.type == "insufficient_quota"
    assert f"used {first.usage.total_tokens} of the 30 items its quota allows this month" in err.value.message
    assert sent == ["/v1/chat/completions"] * 2  # not retried
    requests = tmp_path / "capped.jsonl"
    requests.write_text(batch_line("c1", body) + "\n" + batch_line("c2", {**body, "seed": 2}) + "\n")
    file = client.files.create(file=requests.open("rb"), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert jobs.run_foreground(batch.id)["status"] == "succeeded"
    done = client.batches.retrieve(batch.id)
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 2)
    lines = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert {x["response"]["status_code"] for x in lines} == {429}
    assert {x["response"]["body"]["error"]["code"] for x in lines} == {"insufficient_quota"}
    assert record.id in lines[0]["response"]["body"]["error"]["message"]

    # six chats at once: each holds its prompt and max_tokens while it runs, so with room for a
    # little over two of them, three start (the third crosses) and three are refused
    size = first.usage.prompt_tokens + body["max_tokens"]
    _, burst_key = auth.create_key("burst", ["predict"], quota=2 * size + 1)
    burst = openai.OpenAI(base_url=f"{srv.base}/v1", api_key=burst_key, max_retries=0, timeout=120)

    def chat(seed: int) -> str:
        try:
            burst.chat.completions.create(**{**body, "seed": seed})
            return "answered"
        except openai.RateLimitError as exc:
            return exc.code

    with ThreadPoolExecutor(6) as pool:
        outcomes = sorted(pool.map(chat, range(6)))
    assert outcomes == ["answered"] * 3 + ["insufficient_quota"] * 3, outcomes


def test_tokenize_counts_what_the_chat_route_counts_and_detokenize_reads_it_back(srv):
    """vLLM's /tokenize and /detokenize: a chat's count equals the chat route's prompt_tokens, a
    prompt's ids read back to the prompt; bad inputs are 400s naming the field, no key a 401."""
    keyed = {"Authorization": f"Bearer {srv.key}"}

    def post(path: str, body: dict, headers=keyed) -> httpx.Response:
        return httpx.post(f"{srv.base}{path}", json=body, headers=headers, timeout=60)

    messages = [{"role": "user", "content": ARTICLE}]
    counted = post("/tokenize", {"model": srv.model, "messages": messages}).json()
    answer = srv.client.chat.completions.create(model=srv.model, messages=messages, max_tokens=1)
    assert counted["count"] == answer.usage.prompt_tokens == len(counted["tokens"])
    assert counted["max_model_len"] >= 2048
    assert ARTICLE in post("/detokenize", {"model": srv.model, "tokens": counted["tokens"]}).json()["prompt"]
    ids = post("/tokenize", {"model": srv.model, "prompt": "Shares rose 5%."}).json()["tokens"]
    assert post("/detokenize", {"model": srv.model, "tokens": ids}).json()["prompt"] == "Shares rose 5%."
    both = post("/tokenize", {"model": srv.model, "prompt": "x", "messages": messages})
    assert both.status_code == 400 and "either prompt or messages" in both.text
    wrong = post("/detokenize", {"model": srv.model, "tokens": [1, -5]})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "tokens[1]"
    assert post("/tokenize", {"model": "no-such-model", "prompt": "x"}).status_code == 404
    assert post("/tokenize", {"model": srv.model, "prompt": "x"}, headers={}).status_code == 401
