"""OpenAI compatibility through the official ``openai`` client against a live server: explicit
nulls, forced calls cut by ``max_tokens``, ``--open-predict`` on the OpenAI routes, model
retrieval, ``logit_bias`` and the penalties, and the Responses API's item status and metadata."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import openai
import pytest
from tests.conftest import live_server

import aimass
from aimass.serve import auth
from aimass.serve.app import create_app

BASE = "smollm2-135m"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
STORY = [{"role": "user", "content": "Write a very long story about a dragon."}]
PREDICT_ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/score",
    "/tokenize",
    "/detokenize",
]


def _client(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def srv(headlines_model):
    _, key = auth.create_key("llm-compat", ["predict"])
    model = headlines_model["model"]
    with live_server(create_app([model])) as base:
        yield SimpleNamespace(base=base, key=key, client=_client(base, key), model=model)


@pytest.fixture(scope="module")
def open_srv(headlines_model):
    model = headlines_model["model"]
    with live_server(create_app([model], open_predict=True)) as base:
        yield SimpleNamespace(base=base, model=model)


def _post(base: str, path: str, body: dict, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(base + path, json=body, headers=headers, timeout=120)


# ------------------------------------------------------------------ 1. null means "not given"
def test_null_for_a_nullable_parameter_is_its_default(srv):
    answer = srv.client.chat.completions.create(
        model=srv.model, messages=ASK, max_tokens=2, temperature=None, top_p=None, n=None, stream=None
    )
    assert len(answer.choices) == 1 and answer.usage.completion_tokens <= 2
    text = srv.client.completions.create(model=srv.model, prompt="Hello", max_tokens=2, echo=None)
    assert len(text.choices) == 1
    nulls = {"temperature": None, "top_p": None, "stream": None}
    said = _post(
        srv.base,
        "/v1/responses",
        {"model": srv.model, "input": "Hi", "max_output_tokens": 2, **nulls},
        srv.key,
    )
    assert said.status_code == 200, said.text
    assert said.json()["temperature"] == 1.0


# ------------------------------------------------------------------ 2. a forced call cut short
def _both(srv, max_tokens: int):
    args = {"model": BASE, "messages": ASK, "tools": [WEATHER], "tool_choice": "required", "temperature": 0}
    plain = srv.client.chat.completions.create(max_tokens=max_tokens, **args)
    chunks = list(srv.client.chat.completions.create(max_tokens=max_tokens, stream=True, **args))
    return plain.choices[0], chunks


def test_a_forced_call_cut_inside_its_arguments_is_the_partial_call_streamed_or_not(srv):
    choice, chunks = _both(srv, 16)
    assert choice.finish_reason == "length" and choice.message.content is None
    (call,) = choice.message.tool_calls
    calls = [c for ch in chunks for c in ch.choices[0].delta.tool_calls or []]
    assert call.function.name == calls[0].function.name == "get_weather"
    assert call.function.arguments == "".join(c.function.arguments or "" for c in calls[1:])
    assert call.function.arguments.startswith("{")
    assert not any(ch.choices[0].delta.content for ch in chunks)
    assert chunks[0].choices[0].delta.content is None  # the role chunk of a forced call: no content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason] == ["length"]


def test_a_forced_call_cut_before_its_name_is_complete_is_no_call_and_no_content(srv):
    choice, chunks = _both(srv, 2)
    assert choice.finish_reason == "length"
    assert choice.message.content is None and not choice.message.tool_calls
    assert not any(ch.choices[0].delta.content or ch.choices[0].delta.tool_calls for ch in chunks)


def test_a_forced_call_cut_on_the_responses_api_is_a_function_call_item(srv):
    said = srv.client.responses.create(
        model=BASE, input=ASK, tools=[{"type": "function", **WEATHER["function"]}], tool_choice="required",
        max_output_tokens=16, temperature=0,
    )  # fmt: skip
    assert said.status == "incomplete"
    assert [item.type for item in said.output] == ["function_call"]
    assert said.output[0].name == "get_weather" and said.output[0].arguments.startswith("{")


# ------------------------------------------------------------------ 3. --open-predict
def test_open_predict_opens_the_openai_routes_to_no_key_and_to_an_unknown_one(open_srv):
    client = _client(open_srv.base, "EMPTY")  # what a vLLM-style caller sends
    answer = client.chat.completions.create(model=open_srv.model, messages=ASK, max_tokens=1)
    assert answer.usage.completion_tokens == 1
    for path in PREDICT_ROUTES:  # past the gate: the route answers (a 4xx for the body, never 401)
        assert _post(open_srv.base, path, {"model": open_srv.model}).status_code not in (401, 403), path
    said = _post(open_srv.base, "/tokenize", {"model": open_srv.model, "prompt": "x"})
    assert said.status_code == 200, said.text
    predicted = _post(open_srv.base, f"/v1/models/{open_srv.model}/predict", {"inputs": ["Hi"]})
    assert predicted.status_code == 200, predicted.text
    assert httpx.get(f"{open_srv.base}/v1/usage").status_code == 401  # management still needs a key
    assert _post(open_srv.base, "/v1/keys", {"name": "x", "scopes": ["manage"]}).status_code == 401


def test_without_open_predict_the_openai_routes_still_want_a_key(srv):
    for path in PREDICT_ROUTES:
        assert _post(srv.base, path, {"model": srv.model}).status_code == 401, path
        assert _post(srv.base, path, {"model": srv.model}, key="EMPTY").status_code == 401, path
    with pytest.raises(openai.AuthenticationError):
        _client(srv.base, "EMPTY").chat.completions.create(model=srv.model, messages=ASK, max_tokens=1)


# ------------------------------------------------------------------ 4. GET /v1/models/{id}
def test_a_model_is_retrieved_by_id_and_an_unknown_one_is_model_not_found(srv):
    listed = {m.id: m for m in srv.client.models.list()}
    for ident in (srv.model, BASE):
        got = srv.client.models.retrieve(ident)
        assert got.id == ident and got.object == "model" and got == listed[ident]
    with pytest.raises(openai.NotFoundError) as refused:
        srv.client.models.retrieve("no-such-model")
    assert refused.value.body["code"] == "model_not_found"
    assert httpx.get(f"{srv.base}/v1/models/{srv.model}").status_code == 401  # no key


# ------------------------------------------------------------------ 5. sampling parameters
def test_logit_bias_moves_the_named_token(srv):
    tokenizer = aimass.load(srv.model).base_.tokenizer
    (banana,) = tokenizer(" banana", add_special_tokens=False)["input_ids"]
    answer = srv.client.chat.completions.create(
        model=srv.model, messages=ASK, max_tokens=3, temperature=0, logit_bias={str(banana): 100}
    )
    assert answer.choices[0].message.content == " banana" * 3


def test_penalties_change_a_repetitive_greedy_answer(srv):
    ask = [{"role": "user", "content": "Repeat the word hello ten times."}]
    args = {"model": srv.model, "messages": ask, "max_tokens": 8, "temperature": 0}
    plain = srv.client.chat.completions.create(**args).choices[0].message.content
    penalised = srv.client.chat.completions.create(**args, frequency_penalty=2, presence_penalty=2)
    assert penalised.choices[0].message.content != plain


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/v1/chat/completions", {"logit_bias": {"abc": 1}}, "logit_bias"),
        ("/v1/chat/completions", {"logit_bias": {"1": 101}}, "logit_bias"),
        ("/v1/chat/completions", {"logit_bias": {"99999999": 1}}, "logit_bias"),
        ("/v1/chat/completions", {"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
        ("/v1/chat/completions", {"frequency_penalty": 2.5}, "frequency_penalty"),
        ("/v1/completions", {"best_of": 2}, "best_of"),
        ("/v1/responses", {"top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_unsupported_or_out_of_range_sampling_parameters_are_400s_naming_them(srv, path, extra, param):
    body = {"model": srv.model, "max_tokens": 1, **extra}
    body.update(
        {
            "/v1/chat/completions": {"messages": ASK},
            "/v1/completions": {"prompt": "Hi"},
            "/v1/responses": {"input": "Hi"},
        }[path]
    )
    if path == "/v1/responses":
        body["max_output_tokens"] = body.pop("max_tokens")
    said = _post(srv.base, path, body, srv.key)
    assert said.status_code == 400, said.text
    assert param in json.dumps(said.json()["error"]), said.text


# ------------------------------------------------------------------ 8. Responses status and metadata
def test_a_cut_response_marks_its_message_incomplete_and_echoes_metadata(srv):
    said = srv.client.responses.create(
        model=srv.model, input=STORY, max_output_tokens=3, temperature=0, metadata={"team": "news"}
    )
    assert said.status == "incomplete" and said.output[0].status == "incomplete"
    assert said.metadata == {"team": "news"}


# ------------------------------------------ 9. legacy completions: several prompts, token ids
PROMPTS = ["The capital of France is", "Once upon a time"]


def test_several_prompts_answer_n_choices_each_numbered_as_openai(srv):
    args = {"model": srv.model, "max_tokens": 4, "temperature": 0}
    alone = [srv.client.completions.create(prompt=p, **args) for p in PROMPTS]
    both = srv.client.completions.create(prompt=PROMPTS, n=2, **args)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    texts = [c.text for c in both.choices]
    assert texts[0] == texts[1] == alone[0].choices[0].text  # prompt i's choice j is i * n + j
    assert texts[2] == texts[3] == alone[1].choices[0].text
    assert both.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    assert both.usage.completion_tokens == 2 * sum(a.usage.completion_tokens for a in alone)


def test_several_prompts_stream_every_choice_and_the_summed_usage(srv):
    args = {"model": srv.model, "max_tokens": 4, "temperature": 0, "prompt": PROMPTS}
    plain = srv.client.completions.create(**args)
    chunks = list(srv.client.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    texts, reasons = {}, {}
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            reasons[c.index] = c.finish_reason or reasons.get(c.index)
    assert texts == {c.index: c.text for c in plain.choices}
    assert reasons == {0: "length", 1: "length"}
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_a_prompt_of_token_ids_is_that_text(srv):
    ids = _post(srv.base, "/tokenize", {"model": srv.model, "prompt": PROMPTS[0]}, srv.key).json()["tokens"]
    args = {"model": srv.model, "max_tokens": 4, "temperature": 0, "logprobs": 1}
    text = srv.client.completions.create(prompt=PROMPTS[0], **args).choices[0]
    for prompt in (ids, [ids]):
        said = srv.client.completions.create(prompt=prompt, **args).choices[0]
        assert said.text == text.text
        assert said.logprobs.text_offset == text.logprobs.text_offset  # counted from the prompt's text


@pytest.mark.parametrize(
    ("prompt", "says"),
    [([], "empty"), (["Hi"] * 17, "at most 16"), ([[1, 2], [99999999]], "99999999"), ([-1], "-1")],
)
def test_a_wrong_prompt_list_is_a_400_naming_prompt(srv, prompt, says):
    said = _post(
        srv.base, "/v1/completions", {"model": srv.model, "prompt": prompt, "max_tokens": 1}, srv.key
    )
    assert said.status_code == 400, said.text
    assert said.json()["error"]["param"] == "prompt" and says in said.json()["error"]["message"]


def test_without_max_tokens_the_answer_fills_what_the_context_leaves(srv, monkeypatch):
    """The default (16 for a completion, 128 for a chat) was a 400 for a prompt near the context:
    "asks for 128 more", tokens the client never asked for. As vLLM, the room left bounds it now."""
    monkeypatch.setenv("AIMASS_LLM_MAX_CONTEXT", "64")  # read at each request
    ids = _post(srv.base, "/tokenize", {"model": srv.model, "prompt": "word " * 80}, srv.key).json()["tokens"]
    said = srv.client.completions.create(model=srv.model, prompt=ids[:60], temperature=0)
    assert said.usage.completion_tokens <= 4 and said.choices[0].finish_reason in ("length", "stop")
    for extra in ({"max_tokens": 16}, {}):  # asked for, or no room for even one token
        prompt = ids[:60] if extra else ids[:64]
        body = {"model": srv.model, "prompt": prompt, **extra}
        refused = _post(srv.base, "/v1/completions", body, srv.key)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
