"""Importing generation data: chat JSONL, prompt/completion JSONL, source/target CSV/TSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tests.unit.llm.conftest import bbc_pairs, chat_line

import aimass
from aimass.errors import DataError


def _rejects(ds) -> list[dict]:
    return [json.loads(line) for line in ds.rejects_path.read_text().splitlines()]


def test_chat_jsonl_reports_each_bad_line(tmp_path):
    good = [chat_line(a, h) for a, h in bbc_pairs(12)]
    bad = [
        json.dumps({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}),
        json.dumps(
            {"messages": [{"role": "user", "content": "word " * 3000}, {"role": "assistant", "content": "a"}]}
        ),
        "{not json",
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(good[:6] + bad + good[6:]) + "\n")
    ds = aimass.import_dataset(path, name="chat")
    assert ds.kind == "chat"
    assert ds.manifest["counts"]["total"] == 12
    rejects = _rejects(ds)
    assert [r["line"] for r in rejects] == [7, 8, 9, 10, 11]
    reasons = [r["reason"] for r in rejects]
    assert reasons[0].startswith("unknown role 'robot'") and rejects[0]["file"].endswith("chat.jsonl")
    assert "no assistant turn" in reasons[1]
    assert "empty content in messages[1] (assistant)" in reasons[2]
    assert "over the context length: 30" in reasons[3] and "the limit is 2048" in reasons[3]
    assert "invalid JSON" in reasons[4]
    stats = ds.summary()["tokens"]["by_split"]
    assert set(stats) == {"train", "valid", "test"}
    assert stats["train"]["completion"]["max"] >= stats["train"]["completion"]["p50"] > 2
    assert ds.rows("train")[0]["messages"][-1]["role"] == "assistant"


@pytest.mark.parametrize("first", ["{}", "{not json", "[1, 2]"])
def test_a_chat_file_whose_first_line_is_broken_is_still_chat_data(tmp_path, first):
    """The file's kind was read from its first line alone: a broken first line made the whole file a
    table of labelled texts ("cannot tell which column holds the text"); now it is that line's reject."""
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join([first] + [chat_line(a, h) for a, h in bbc_pairs(12)]) + "\n")
    ds = aimass.import_dataset(path, name="chat")
    assert ds.kind == "chat" and ds.manifest["counts"]["total"] == 12
    this = [json.loads(line) for line in Path(ds.summary()["rejects_file"]).read_text().splitlines()]
    assert [r["line"] for r in this] == [1]  # this import's (the same examples may be stored already)


def test_prompt_completion_jsonl_and_csv_tsv(tmp_path):
    pairs = bbc_pairs(12)
    jl = tmp_path / "pc.jsonl"
    jl.write_text("".join(json.dumps({"prompt": a, "completion": h}) + "\n" for a, h in pairs))
    ds = aimass.import_dataset(jl)
    assert ds.manifest["counts"]["total"] == 12
    assert ds.rows()[0]["messages"] == [
        {"role": "user", "content": pairs[0][0]},
        {"role": "assistant", "content": pairs[0][1]},
    ]
    for skip, sep, suffix in ((12, ",", "csv"), (24, "\t", "tsv")):
        pairs = bbc_pairs(12, skip=skip)  # other pairs: the same content would be stored once
        path = tmp_path / f"pairs.{suffix}"
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh, delimiter=sep)
            writer.writerow(["source", "target"])
            writer.writerows([*pairs, ("an article with no headline", "")])
        ds = aimass.import_dataset(path)
        assert ds.manifest["counts"]["total"] == 12
        assert ds.rows()[0]["messages"][-1]["content"] == pairs[0][1]
        (reject,) = _rejects(ds)
        assert reject["line"] == 14 and "empty content in 'target'" in reject["reason"]


def test_a_conversation_is_rejected_whole_or_kept_whole_and_ignored_fields_are_said(tmp_path):
    """A turn after the last answer is not dropped in silence, an answer with no question before it
    is rejected (it used to crash the token count), and message fields training does not read are
    named in the warnings."""
    good = [chat_line(a, h) for a, h in bbc_pairs(12)]
    weighted = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]
    }
    bad = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "and then?"},
                ]
            }
        ),
        json.dumps({"messages": [{"role": "assistant", "content": "an answer to nothing"}]}),
        json.dumps(
            {"messages": [{"role": "system", "content": "be brief"}, {"role": "assistant", "content": "ok"}]}
        ),
        "[" * 100_000 + "]" * 100_000,
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(good + bad + [json.dumps(weighted)]) + "\n")
    ds = aimass.import_dataset(path, name="chat")
    assert ds.manifest["counts"]["total"] == 13
    reasons = {r["line"]: r["reason"] for r in _rejects(ds)}
    assert reasons[13].startswith("the conversation ends with a user turn (messages[2])")
    assert reasons[14] == reasons[15] == "no user turn before the last assistant answer (nothing it answers)"
    assert reasons[16] == "malformed line: nested too deeply"
    assert any(
        "message fields not read by training: weight (1 message list(s))" in w
        for w in ds.manifest["warnings"]
    )


def test_too_few_examples_says_why(tmp_path):
    path = tmp_path / "few.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(DataError, match=r"few.jsonl:1: no assistant turn"):
        aimass.import_dataset(path)


def test_chinese_conversations_warn_that_the_bundled_model_answers_in_english(tmp_path):
    """SmolLM2 answers in English only: Chinese pairs import (nothing is dropped) with the language
    detected and a warning naming a multilingual backbone; ``auto`` repeats it with its choice."""
    from aimass.autolearn.generation import GenerationTuner

    pairs = [(f"第{i}个问题：今天北京的天气怎么样？", f"今天北京晴，最高气温{20 + i}度。") for i in range(12)]
    path = tmp_path / "zh.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n" for p, c in pairs)
    )
    ds = aimass.import_dataset(path)
    assert ds.manifest["counts"]["total"] == 12 and ds.manifest["language"] == "zh"
    (warning,) = ds.manifest["warnings"]
    assert "Chinese" in warning and "English only" in warning and "--backbone hf:" in warning
    assert warning in ds.describe()
    name, why = GenerationTuner().describe_backbone(ds)
    assert name == "smollm2-135m" and "English only" in why
    english = aimass.import_dataset(_write_pairs(tmp_path / "en.jsonl", bbc_pairs(12, skip=40)))
    assert english.manifest["language"] == "en" and english.manifest["warnings"] == []


def _write_pairs(path, pairs):
    path.write_text("".join(json.dumps({"prompt": a, "completion": h}) + "\n" for a, h in pairs))
    return path


def test_a_repeated_conversation_is_a_duplicate_naming_the_first(tmp_path):
    """Copies used to be kept, so a test row could be a training row: the scores measured memory."""
    lines = [chat_line(a, h) for a, h in bbc_pairs(12, skip=40)]
    spaced = chat_line(*(" ".join(f"  {x}  ".split(" ")) for x in bbc_pairs(1, skip=40)[0]))
    path = tmp_path / "dups.jsonl"
    path.write_text("\n".join([*lines, lines[3], spaced]) + "\n")
    ds = aimass.import_dataset(path, name="dups")
    assert ds.manifest["counts"]["total"] == 12
    assert [(r["line"], r["kind"], r["reason"]) for r in _rejects(ds)] == [
        (13, "duplicate", "duplicate of line 4"),
        (14, "duplicate", "duplicate of line 1"),  # the same text but for its white space
    ]


def test_a_source_target_csv_with_a_byte_order_mark_is_generation_data(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark: the file was read as labelled texts
    ("every class needs at least 2 examples") though the same bytes without it import as pairs."""
    path = tmp_path / "excel.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "target"])
        writer.writerows(bbc_pairs(12, skip=60))
    ds = aimass.import_dataset(path)
    assert ds.kind == "chat" and ds.manifest["counts"]["total"] == 12


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _call(city: str, id_: str = "call_1") -> dict:
    arguments = json.dumps({"city": city})
    return {"id": id_, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def _tool_rows(n: int) -> list[dict]:
    """OpenAI fine-tuning rows for function calling, every shape the chat route takes: a developer
    message in text parts, a call with null or empty content, its result, then the answer or not."""
    rows = []
    for i, (article, headline) in enumerate(bbc_pairs(n, skip=80)):
        city = f"{headline[:30]} {i}"
        ask = {
            "role": "user",
            "content": [{"type": "text", "text": f"{article[:80]} "}, {"type": "text", "text": city}],
        }
        call = {"role": "assistant", "content": None if i % 2 else "", "tool_calls": [_call(city)]}
        messages = [{"role": "developer", "content": "Answer from the tools."}, ask, call]
        if i % 3:  # the rest end with the call: the model learns to call
            messages += [
                {"role": "tool", "tool_call_id": "call_1", "content": f"{i + 10} C and sunny"},
                {"role": "assistant", "content": f"It is {i + 10} C and sunny in {city}."},
            ]
        rows.append({"messages": messages, "tools": [WEATHER]})
    return rows


def test_function_calling_rows_import_as_the_turns_the_chat_route_builds(tmp_path):
    """Rows the server answers were rejected at import ("has no text content", "empty content",
    "unknown role 'developer'") and the row's tools were ignored: now each row is stored as the
    very turns the chat route builds from the same request, so training sees what serving sees."""
    from aimass.serve import openai_tools
    from aimass.serve.openai_requests import ChatRequest, tools_of

    rows = _tool_rows(12)
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = aimass.import_dataset(path, name="tools")
    assert ds.kind == "chat" and ds.manifest["counts"]["total"] == 12 and _rejects(ds) == []
    assert not any("tool_calls" in w for w in ds.manifest["warnings"])
    stored = {json.dumps(r["messages"][1]["content"]): r["messages"] for r in ds.rows()}
    for row in rows:
        req = ChatRequest.model_validate({"model": "m", **row})
        served = openai_tools.render([m.turn() for m in req.messages], tools_of(req))
        assert stored[json.dumps(served[1]["content"])] == served
    ends = [r["messages"][-1]["content"] for r in ds.rows()]
    assert sum(e.startswith("<tool_call>\n{") for e in ends) == 4  # a call is a valid last turn
    assert all('"name": "get_weather"' in r["messages"][0]["content"] for r in ds.rows())


def test_malformed_function_calling_rows_name_the_message_and_field(tmp_path):
    good = [json.dumps(r) for r in _tool_rows(12)]
    ask = {"role": "user", "content": "Weather in Paris?"}

    def row(*messages, tools=(WEATHER,)):
        return json.dumps({"messages": [ask, *messages], "tools": list(tools)})

    def calling(**function):
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": function}],
        }

    bad = [
        row(calling(arguments="{}")),
        row(calling(name="get_weather", arguments={"city": "Paris"})),
        row(calling(name="get_weather", arguments="city=Paris")),
        row({"role": "tool", "content": "18 C"}, {"role": "assistant", "content": "18 C."}),
        row(calling(name="get_time", arguments="{}")),
        row({"role": "robot", "content": "x"}),
        row({"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}),
        row({"role": "assistant", "content": None}),
        row({"role": "assistant", "tool_calls": [_call("Paris")]}, {"role": "tool", "content": "18 C"}),
        row(
            {"role": "assistant", "content": "ok"}, tools=[{"type": "function", "function": {"name": "a b"}}]
        ),
    ]
    path = tmp_path / "bad_tools.jsonl"
    path.write_text("\n".join(good + bad) + "\n")
    ds = aimass.import_dataset(path, name="bad-tools")  # the good rows may be stored already
    assert ds.manifest["counts"]["total"] == 12
    this = [json.loads(line) for line in Path(ds.summary()["rejects_file"]).read_text().splitlines()]
    assert [r["reason"] for r in this] == [
        "messages[1].tool_calls[0].function has no name (1 to 64 characters)",
        "messages[1].tool_calls[0].function.arguments is dict, not a string of JSON",
        "messages[1].tool_calls[0].function.arguments is not a JSON object: 'city=Paris'",
        "messages[1] (tool) has no call before it: a tool result follows an assistant message with "
        "tool_calls (or another result)",
        "messages[1].tool_calls[0].function.name 'get_time' is not one of the row's tools (get_weather)",
        "unknown role 'robot' in messages[1] (use system, developer, user, assistant or tool)",
        "messages[1].content[0] is not a text part ({'type': 'text', 'text': ...})",
        "messages[1] (assistant) has no text content and no tool_calls",
        "the conversation ends with a tool turn (messages[2]) after the last assistant answer: nothing "
        "would learn from it; remove the turn or add its answer",
        "tools[0].function.name must be 1 to 64 letters, digits, _ or -",
    ]


@pytest.mark.parametrize(("src", "tgt", "skip"), [("source", "target", 100), ("input", "output", 112)])
def test_source_target_and_input_output_jsonl_are_generation_data(tmp_path, src, tgt, skip):
    """The column pairs a CSV takes were not recognised in JSONL: the file was read as labelled texts."""
    pairs = bbc_pairs(12, skip=skip)
    path = tmp_path / f"{src}.jsonl"
    path.write_text("".join(json.dumps({src: a, tgt: h}) + "\n" for a, h in pairs))
    ds = aimass.import_dataset(path)
    assert ds.kind == "chat" and ds.manifest["counts"]["total"] == 12
    assert {json.dumps(r["messages"]) for r in ds.rows()} == {
        json.dumps([{"role": "user", "content": a}, {"role": "assistant", "content": h}]) for a, h in pairs
    }
