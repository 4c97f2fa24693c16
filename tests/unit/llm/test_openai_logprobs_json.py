"""Logprobs and JSON mode through the official ``openai`` client against a live server."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Literal

import jsonschema
import openai
import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field
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


class City(BaseModel):
    model_config = ConfigDict(extra="forbid")  # "additionalProperties": false, as strict mode asks

    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    population: int = Field(ge=0, le=50_000_000)
    capital: bool
    kind: Literal["city", "town", "village"]


SCHEMAS = [
    City.model_json_schema(),
    {
        "type": "object",
        "properties": {
            "colours": {
                "type": "array",
                "items": {"enum": ["red", "green", "blue"]},
                "minItems": 1,
                "maxItems": 3,
            },
            "count": {"type": "integer", "minimum": 1, "maximum": 9},
        },
        "required": ["colours", "count"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 2, "maxItems": 2},
]


def test_structured_outputs_follow_their_json_schema_through_the_official_client(srv):
    """``response_format: json_schema`` (OpenAI's Structured Outputs): the official client's ``parse``
    gets a validated object; requests with different schemas (and one without) decoding together in
    the continuous batch each follow their own; sampled and streamed answers too."""
    parsed = srv.client.chat.completions.parse(
        model=BASE,
        messages=[{"role": "user", "content": "Describe Paris."}],
        response_format=City,
        max_tokens=80,
        temperature=0,
    )
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City) and parsed.choices[0].finish_reason == "stop", parsed

    def ask(i: int):
        fmt = (
            {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": SCHEMAS[i]}}
            if i < len(SCHEMAS)
            else None
        )
        return srv.client.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            max_tokens=60,
            temperature=1.0,
            seed=i,
            n=2,
            **({"response_format": fmt} if fmt else {}),
        )

    with ThreadPoolExecutor(len(SCHEMAS) + 1) as pool:
        answers = list(pool.map(ask, range(len(SCHEMAS) + 1)))
    for schema, answer in zip(SCHEMAS, answers):
        for choice in answer.choices:
            assert choice.finish_reason == "stop", choice
            jsonschema.validate(json.loads(choice.message.content), schema)
    streamed = srv.client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "Two short words, please."}],
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "pair", "schema": SCHEMAS[2]}},
        stream=True,
    )
    jsonschema.validate(
        json.loads("".join(c.choices[0].delta.content or "" for c in streamed if c.choices)), SCHEMAS[2]
    )


def test_a_schema_that_cannot_be_followed_is_a_400_before_any_work(srv):
    def asked(fmt) -> dict:
        with pytest.raises(openai.BadRequestError) as refused:
            srv.client.chat.completions.create(
                model=BASE, messages=[{"role": "user", "content": "hi"}], response_format=fmt
            )
        return refused.value.body

    assert asked({"type": "json_schema"})["param"] == "response_format.json_schema"
    bad = asked({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}})
    assert bad["param"] == "response_format.json_schema.schema" and "nonsense" in bad["message"], bad
    huge = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(4000)}}
    too_big = asked({"type": "json_schema", "json_schema": {"name": "x", "schema": huge}})
    assert too_big["param"] == "response_format.json_schema.schema" and "bytes" in too_big["message"]
    assert "name" in str(asked({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}))


def test_vllms_guided_choice_regex_and_json_hold_on_both_routes(srv):
    """vLLM's ``guided_choice``, ``guided_regex`` and ``guided_json`` (sent as ``extra_body``) on chat
    and legacy completions: the text is one of the choices, matches the expression whole, or follows
    the schema; two at once, or one with ``response_format``, is a 400 naming the field."""
    labels = ["positive", "negative", "mixed feelings"]
    for prompt in ("I love this phone, it is great.", "Terrible. It broke on day one."):
        said = srv.client.completions.create(
            model=BASE,
            prompt=f"Review: {prompt}\nSentiment:",
            max_tokens=8,
            temperature=0,
            extra_body={"guided_choice": labels},
        )
        assert said.choices[0].text in labels and said.choices[0].finish_reason == "stop", said
    phone = srv.client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "Make up a phone number."}],
        max_tokens=12,
        temperature=1.0,
        seed=3,
        n=2,
        extra_body={"guided_regex": r"\d{3}-\d{4}"},
    )
    assert all(re.fullmatch(r"\d{3}-\d{4}", c.message.content) for c in phone.choices), phone
    cut = srv.client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "Two words."}],
        max_tokens=40,
        temperature=0,
        extra_body={"guided_json": SCHEMAS[2]},
    )
    jsonschema.validate(json.loads(cut.choices[0].message.content), SCHEMAS[2])

    def refused(**extra) -> dict:
        with pytest.raises(openai.BadRequestError) as error:
            srv.client.chat.completions.create(
                model=BASE, messages=[{"role": "user", "content": "json"}], max_tokens=4, **extra
            )
        return error.value.body

    assert refused(extra_body={"guided_regex": "(open"})["param"] == "guided_regex"
    both = refused(extra_body={"guided_regex": "a", "guided_choice": ["b"]})
    assert both["param"] == "guided_choice", both
    mixed = refused(response_format={"type": "json_object"}, extra_body={"guided_choice": ["b"]})
    assert mixed["param"] == "guided_choice", mixed
