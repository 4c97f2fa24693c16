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
