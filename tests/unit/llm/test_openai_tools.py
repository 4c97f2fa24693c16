"""Tool calling (``tools``, ``tool_choice``, ``tool_calls``) through the official ``openai`` client
against a live server, and the Hermes-format parsing it rests on."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from tests.conftest import live_server

from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.serve.openai_requests import Message
from aimass.serve.openai_tools import ToolStream, parse_calls

BASE = "smollm2-135m"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 30}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class GetWeather(BaseModel):
    """The weather now in a city."""

    model_config = ConfigDict(extra="forbid")

    city: str = Field(max_length=30)
    unit: Literal["celsius", "fahrenheit"]


@pytest.fixture(scope="module")
def srv(headlines_model):
    _, key = auth.create_key("llm-tools", ["predict"])
    with live_server(create_app([headlines_model["model"]])) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
        yield SimpleNamespace(client=client)


def _check(call, tools) -> dict:
    spec = next(t["function"] for t in tools if t["function"]["name"] == call.function.name)
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, spec["parameters"])
    assert call.type == "function" and call.id.startswith("call_")
    return arguments


def test_a_forced_tool_call_follows_the_tools_parameters(srv):
    """A named ``tool_choice`` and ``"required"``: the answer is a call (``finish_reason``
    ``tool_calls``, no content) whose arguments follow the tool's schema, plain and streamed."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    answer = srv.client.chat.completions.create(
        model=BASE, messages=ASK, tools=[WEATHER, TIME], tool_choice=named, max_tokens=40, temperature=0
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
    assert _check(choice.message.tool_calls[0], [WEATHER])["unit"] in ("celsius", "fahrenheit")

    sampled = srv.client.chat.completions.create(
        model=BASE, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", max_tokens=40, n=3, seed=1
    )
    for choice in sampled.choices:
        assert choice.finish_reason == "tool_calls", choice
        _check(choice.message.tool_calls[0], [WEATHER, TIME])

    stream = srv.client.chat.completions.create(
        model=BASE, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=40, stream=True
    )
    name, arguments, reasons, pieces = "", "", [], 0
    for chunk in stream:
        for part in chunk.choices:
            reasons.append(part.finish_reason)
            for call in part.delta.tool_calls or []:
                name += call.function.name or ""
                arguments += call.function.arguments or ""
                pieces += bool(call.function.arguments)
    assert name == "get_weather" and reasons[-1] == "tool_calls", (name, reasons)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    assert pieces > 2, pieces  # the arguments stream as they are generated, not whole at the end


def test_the_official_clients_parse_reads_a_pydantic_tool_and_a_conversation_round_trips(srv):
    tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
    parsed = srv.client.chat.completions.parse(
        model=BASE, messages=ASK, tools=[tool], tool_choice="required", max_tokens=40, temperature=0
    )
    call = parsed.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, GetWeather), call
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call.model_dump(exclude={"function": {"parsed_arguments"}})],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'},
    ]
    final = srv.client.chat.completions.create(
        model=BASE, messages=history, tools=[WEATHER], max_tokens=24, temperature=0
    )
    assert final.choices[0].finish_reason in ("stop", "length", "tool_calls"), final
    plain = srv.client.chat.completions.create(
        model=BASE, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=12, temperature=0
    )
    assert isinstance(plain.choices[0].message.content, str) and not plain.choices[0].message.tool_calls


def test_tool_requests_that_cannot_be_answered_are_400s_naming_the_field(srv):
    def refused(**extra) -> dict:
        with pytest.raises(openai.BadRequestError) as error:
            srv.client.chat.completions.create(model=BASE, messages=ASK, max_tokens=4, **extra)
        return error.value.body

    unknown = {"type": "function", "function": {"name": "get_stock"}}
    assert refused(tools=[WEATHER], tool_choice=unknown)["param"] == "tool_choice"
    assert refused(tool_choice="required")["param"] == "tool_choice"
    both = refused(tools=[WEATHER], response_format={"type": "json_object"})
    assert both["param"] == "tools", both
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}
    assert refused(tools=[broken], tool_choice="required")["param"] == "tools"


def test_calls_are_read_out_of_hermes_blocks_and_written_back_the_same_way():
    names = {"get_weather", "get_time"}
    text = (
        'Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>'
    )
    content, calls = parse_calls(text, names)
    assert content == "Sure." and [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[1]["function"]["arguments"]) == {"zone": "CET"}
    assert parse_calls('{"name": "get_time", "arguments": {"zone": "UTC"}}', names)[0] is None  # bare JSON
    for kept in (
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
    ):
        assert parse_calls(kept, names) == (kept, [])  # unknown tools and broken JSON stay text
    said = Message(
        role="assistant", content=None, tool_calls=[{"id": "c1", "function": calls[0]["function"]}]
    )
    assert (
        said.turn()["content"]
        == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    assert Message(role="tool", tool_call_id="c1", content="18C").turn() == {
        "role": "user",
        "content": "<tool_response>\n18C\n</tool_response>",
    }


PIECES = [
    "Sure, ",
    "let me look.",
    " ",
    "\n",
    "<tool_call>",
    "</tool_call>",
    '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
    '{"name": "get_time", "arguments": {"zone": "CET"}}',
    '{"name": "rm_rf", "arguments": {}}',
    "{not json",
    "<tool",
    "<",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=10), st.data())
def test_a_streamed_answer_adds_up_to_the_whole_answers_calls_and_content(parts, data):
    """However the answer is cut into tokens, what the stream sends (content as it comes, each call
    when its block closes) is what the whole answer reads as: the same calls in order, the same
    content (the text before the first block when there are calls, all of it when there are none)."""
    names = {"get_weather", "get_time"}
    text = "".join(parts)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=12)))
    tokens = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    reader = ToolStream(names)
    deltas = [d for token in tokens for d in reader.feed(token)]
    more, reason = reader.finish("stop")
    deltas += more
    content = "".join(d.get("content", "") for d in deltas)
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    expected_content, expected_calls = parse_calls(text, names)
    assert [c["function"] for c in calls] == [c["function"] for c in expected_calls], tokens
    assert [c["index"] for c in calls] == list(range(len(calls)))
    assert reason == ("tool_calls" if expected_calls else "stop")
    if expected_calls:
        assert content.strip() == (expected_content or ""), tokens
    else:
        assert content == text, tokens  # nothing lost, nothing added


ARGUMENTS = st.recursive(
    st.none() | st.booleans() | st.integers(-99, 99) | st.text('ab}{"\\ ', max_size=6),
    lambda inner: st.dictionaries(st.text("xyz}", max_size=3), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text("cityzone", max_size=5), ARGUMENTS, max_size=3), st.booleans(), st.data())
def test_a_forced_call_streams_its_arguments_as_they_come_and_they_add_up(arguments, spaced, data):
    """A forced call (the answer constrained to one call object): however it is cut into tokens, the
    first delta names the tool, the arguments that follow add up to the generated arguments, and
    nothing of the object's own closing brace is in them."""
    names = {"get_weather", "get_time"}
    text = json.dumps({"name": "get_time", "arguments": arguments}, indent=1 if spaced else None)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=12)))
    tokens = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    reader = ToolStream(names, forced=True)
    deltas = [d for token in tokens for d in reader.feed(token)]
    more, reason = reader.finish("stop")
    calls = [c for d in deltas + more for c in d["tool_calls"]]
    head = calls[0]
    assert head["function"] == {"name": "get_time", "arguments": ""} and head["id"].startswith("call_")
    assert {c["index"] for c in calls} == {0} and all("id" not in c for c in calls[1:])
    streamed = "".join(c["function"]["arguments"] for c in calls[1:])
    assert json.loads(streamed) == arguments and reason == "tool_calls", tokens


def test_a_forced_call_cut_by_max_tokens_ends_with_length_and_what_was_generated():
    reader = ToolStream({"get_time"}, forced=True)
    deltas = reader.feed('{"name": "get_time", "arguments": {"zone": {"a": 1}')
    more, reason = reader.finish("length")
    streamed = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:] + more)
    assert streamed == '{"zone": {"a": 1}' and reason == "length"  # the inner brace is not dropped


def test_content_streams_token_by_token_when_the_model_may_call_tools(srv):
    """With tools offered and the model answering in words, the words stream as they are generated
    (several content chunks), and they add up to the plain answer's content (greedy)."""
    plain = srv.client.chat.completions.create(
        model=BASE, messages=ASK, tools=[WEATHER], max_tokens=16, temperature=0
    )
    assert not plain.choices[0].message.tool_calls  # this small model answers in words here
    stream = srv.client.chat.completions.create(
        model=BASE, messages=ASK, tools=[WEATHER], max_tokens=16, temperature=0, stream=True
    )
    pieces, reasons = [], []
    for chunk in stream:
        for part in chunk.choices:
            reasons.append(part.finish_reason)
            if part.delta.content:
                pieces.append(part.delta.content)
    assert len(pieces) > 3, pieces
    assert (
        "".join(pieces) == plain.choices[0].message.content and reasons[-1] == plain.choices[0].finish_reason
    )


class City(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    capital: bool


def test_the_responses_api_answers_parses_calls_tools_and_streams(srv):
    """``client.responses``: text out (``output_text``), a Pydantic ``text_format`` parsed, a forced
    function call fed back as ``function_call_output``, and a stream whose events rebuild the answer."""
    plain = srv.client.responses.create(
        model=BASE, instructions="Answer briefly.", input="Name a colour.", max_output_tokens=8, temperature=0
    )
    assert plain.object == "response" and plain.output_text and plain.usage.output_tokens <= 8, plain
    assert plain.status in ("completed", "incomplete") and plain.output[0].type == "message"

    parsed = srv.client.responses.parse(
        model=BASE, input="Describe Paris.", text_format=City, max_output_tokens=60, temperature=0
    )
    assert isinstance(parsed.output_parsed, City), parsed

    tool = {k: v for k, v in WEATHER["function"].items()} | {"type": "function"}
    called = srv.client.responses.create(
        model=BASE, input=ASK, tools=[tool], tool_choice="required", max_output_tokens=40, temperature=0
    )
    call = next(item for item in called.output if item.type == "function_call")
    jsonschema.validate(json.loads(call.arguments), WEATHER["function"]["parameters"])
    result = {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'}
    after = srv.client.responses.create(
        model=BASE,
        input=[*ASK, call.model_dump(exclude_none=True), result],
        tools=[tool],
        tool_choice="none",
        max_output_tokens=12,
        temperature=0,
    )
    assert after.output_text, after

    with srv.client.responses.stream(
        model=BASE, input="Name a fruit.", max_output_tokens=10, temperature=0
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] in (
        "response.completed",
        "response.incomplete",
    )
    assert "response.output_text.delta" in kinds and final.output_text, (kinds, final)
    same = srv.client.responses.create(model=BASE, input="Name a fruit.", max_output_tokens=10, temperature=0)
    assert final.output_text == same.output_text  # greedy: the stream and the plain answer agree

    with srv.client.responses.stream(
        model=BASE, input=ASK, tools=[tool], tool_choice="required", max_output_tokens=40, temperature=0
    ) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds, kinds
    [streamed_call] = [item for item in streamed.output if item.type == "function_call"]
    assert (streamed_call.name, streamed_call.arguments) == (call.name, call.arguments)  # greedy: the same

    with pytest.raises(openai.BadRequestError) as stored:
        srv.client.responses.create(model=BASE, input="hi", previous_response_id="resp_123")
    assert stored.value.body["param"] == "previous_response_id"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("chat/completions", {"messages": [{"role": "assistant", "tool_calls": [{"function": "x"}]}]}),
        (
            "chat/completions",
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]},
        ),
        ("chat/completions", {"messages": [{"role": "tool", "content": [1, 2]}]}),
        ("chat/completions", {"messages": ASK, "tools": [{"type": "function", "function": {"name": "a b"}}]}),
        ("chat/completions", {"messages": ASK, "tools": [WEATHER], "tool_choice": {"function": "x"}}),
        ("chat/completions", {"messages": ASK, "tools": [WEATHER], "tool_choice": "sometimes"}),
        ("responses", {"input": [{"type": "message", "role": "user", "content": [1, 2]}]}),
        ("responses", {"input": [{"type": "message", "role": "user", "content": [{"type": "input_image"}]}]}),
        ("responses", {"input": [{"type": "message", "role": "robot", "content": "hi"}]}),
        ("responses", {"input": "hi", "text": {"format": "json"}}),
        ("responses", {"input": "hi", "text": {"format": {"type": "json_schema"}}}),
        ("responses", {"input": [{"type": "function_call", "name": 5, "call_id": "c"}]}),
        ("responses", {"input": ["hi"]}),
        ("responses", {"input": "hi", "tools": [{"type": "web_search"}]}),
        ("responses", {"input": []}),
    ],
)
def test_malformed_tool_and_responses_bodies_are_400s(srv, path, body):
    """What a client can get wrong in the new fields is a 400 in OpenAI's error shape, never a 500."""
    answer = httpx.post(
        f"{srv.client.base_url}{path}",
        json={"model": BASE, "max_tokens": 4, **body},
        headers={"Authorization": f"Bearer {srv.client.api_key}"},
        timeout=60,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error", answer.text
