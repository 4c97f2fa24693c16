"""Logprobs and JSON mode through the official ``openai`` client against a live server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import openai
import pytest
import torch
from tests.conftest import live_server

from aimass.llm import decode
from aimass.llm.hub import HUB
from aimass.llm.json_mode import Machine, json_object
from aimass.llm.vocab import token_bytes
from aimass.serve import auth
from aimass.serve.app import create_app

BASE = "smollm2-135m"


@pytest.fixture(scope="module")
def srv(headlines_model):
    _, key = auth.create_key("llm-extras", ["predict"])
    with live_server(create_app([headlines_model["model"]])) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
        yield SimpleNamespace(base=base, key=key, client=client, model=headlines_model["model"])


def _ids(tokenizer, entries) -> list[int]:
    index = {raw: i for i, raw in enumerate(token_bytes(tokenizer)) if raw}
    return [index[bytes(e.bytes)] for e in entries]


def test_chat_logprobs_are_the_sampled_distribution_of_a_forward_pass(srv):
    messages = [{"role": "user", "content": "Name three colours."}]
    answer = srv.client.chat.completions.create(
        model=BASE, messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens or answer.choices[0].finish_reason == "stop"
    assert "".join(e.token for e in content) == answer.choices[0].message.content
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert e.logprob == pytest.approx(max(t.logprob for t in e.top_logprobs))  # greedy: the top token
        assert e.top_logprobs[0].token == e.token
    base = HUB.base(BASE)
    ids = decode.chat_ids(base.tokenizer, messages)
    picked = _ids(base.tokenizer, content)
    with base.using(None) as model, torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids + picked])).logits[0, len(ids) - 1 : -1]
    expected = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(picked)[:, None])[:, 0]
    assert [e.logprob for e in content] == pytest.approx(expected.tolist(), abs=2e-3)

    hot = srv.client.chat.completions.create(
        model=BASE, messages=messages, max_tokens=4, temperature=0.7, seed=5, logprobs=True
    )
    first = hot.choices[0].logprobs.content[0]
    scaled = torch.log_softmax(logits[0].float() / 0.7, -1)  # after temperature: what was sampled from
    (token,) = _ids(base.tokenizer, [first])
    assert first.logprob == pytest.approx(float(scaled[token]), abs=2e-3)
    assert first.top_logprobs == []


def test_logprobs_stream_and_legacy_completions(srv):
    stream = srv.client.chat.completions.create(
        model=srv.model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        stream=True,
    )
    streamed = [
        e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    plain = srv.client.chat.completions.create(
        model=srv.model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [
        (e.token, round(e.logprob, 4)) for e in plain.choices[0].logprobs.content
    ]
    prompt = "1, 2, 3,"
    legacy = srv.client.completions.create(
        model=srv.model, prompt=prompt, max_tokens=3, temperature=0, logprobs=2
    )
    lp = legacy.choices[0].logprobs
    assert "".join(lp.tokens) == legacy.choices[0].text and lp.text_offset[0] == len(prompt)
    assert all(v <= 0 for v in lp.token_logprobs) and all(len(t) <= 2 for t in lp.top_logprobs)
    assert lp.token_logprobs[0] == pytest.approx(max(lp.top_logprobs[0].values()))
    with pytest.raises(openai.BadRequestError) as bad:
        srv.client.chat.completions.create(
            model=srv.model, messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=21
        )
    assert bad.value.body["param"] == "top_logprobs"


def test_json_machine_closes_every_prefix_and_forces_the_end():
    machine = Machine()
    text = '{"a": [1, -2.5e3, true, null, {"b": "x\\u00e9\\n"}], "c": {}}'
    for i in range(len(text)):
        state = machine.feed(machine.start, text[:i].encode())
        assert state not in (None, machine.done)
        json.loads(text[:i] + machine.closing(state).decode())
    half = machine.feed(machine.start, '{"a": "é'.encode()[:-1])  # half of a 2-byte character
    assert machine.feed(half, b'"') is None  # a string cannot end inside a character
    assert json.loads(b'{"a": "\xc3' + machine.closing(half))  # closing completes it with valid bytes
    for bad in ("[1]", "{a: 1}", '{"a": 01}', '{"a": 1,}', '{"a" 1}', "{}}", '{"a": 1.}', '{"a": "\x01"}'):
        assert machine.feed(machine.start, bad.encode()) != machine.done
    tokenizer = HUB.base(BASE).tokenizer
    constraint = json_object(tokenizer, {tokenizer.eos_token_id})()
    for token in tokenizer.encode('{"name": "Ann', add_special_tokens=False):
        assert bool(constraint.allowed(100)[token])
        constraint.advance(token)
    assert not bool(constraint.allowed(100)[tokenizer.eos_token_id])
    last = constraint.allowed(0).nonzero().flatten().tolist()  # the last token must close the object
    assert last and all(
        machine.feed(constraint.state, token_bytes(tokenizer)[t]) == machine.done for t in last
    )
    assert tokenizer.encode('"}', add_special_tokens=False)[0] in last


PROMPTS = [
    "Give me a JSON object describing a cat with its name and age.",
    "Return JSON with the keys city and country for Paris.",
    "List three fruits as a JSON object.",
    "Describe a book (title, author, year) in JSON.",
    "Answer in JSON: what is 2 + 2?",
]


def test_json_object_answers_always_parse(srv):
    def ask(i: int):  # five at once: they share decode steps in the continuous batch
        return srv.client.chat.completions.create(
            model=srv.model if i % 2 else BASE,
            messages=[{"role": "user", "content": PROMPTS[i]}],
            max_tokens=16 + 4 * i,
            temperature=0.8 if i == 4 else 0,
            seed=i,
            response_format={"type": "json_object"},
        )

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = list(pool.map(ask, range(len(PROMPTS))))
    for i, answer in enumerate(answers):
        assert isinstance(json.loads(answer.choices[0].message.content), dict)
        assert answer.usage.completion_tokens <= 16 + 4 * i
    streamed = srv.client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=12,
        temperature=0,
        response_format={"type": "json_object"},
        stream=True,
    )
    assert isinstance(
        json.loads("".join(c.choices[0].delta.content or "" for c in streamed if c.choices)), dict
    )
    with pytest.raises(openai.BadRequestError) as no_word:
        srv.client.chat.completions.create(
            model=BASE, messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}
        )
    assert no_word.value.body["param"] == "messages" and "json" in no_word.value.body["message"]
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as unsupported:
        srv.client.chat.completions.create(
            model=BASE, messages=[{"role": "user", "content": "JSON please"}], response_format=schema
        )
    assert unsupported.value.body["code"] == "unsupported_parameter"
