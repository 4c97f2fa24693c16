"""``aimass predict`` and ``aimass evaluate`` on a language model: its answers (constrained by a JSON
Schema, a pattern or choices when asked) and its report, as tables and as JSON."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from aimass.cli import app

ARTICLE = "The central bank raised interest rates again on Thursday, the third rise this year."


def test_predict_shows_a_language_models_answers_and_constrains_them(headlines_model, tmp_path):
    ref, runner = headlines_model["model"], CliRunner()
    table = runner.invoke(app, ["predict", ref, ARTICLE])
    assert table.exit_code == 0 and "answer" in table.output, (table.output, table.exception)

    schema = tmp_path / "topic.json"
    topics = ["business", "politics", "sport"]
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"topic": {"enum": topics}},
                "required": ["topic"],
                "additionalProperties": False,
            }
        )
    )
    shaped = runner.invoke(app, ["predict", ref, ARTICLE, "--schema", str(schema), "--json"])
    assert shaped.exit_code == 0, (shaped.output, shaped.exception)
    assert json.loads(json.loads(shaped.output)["predictions"][0]["text"])["topic"] in topics
    picked = runner.invoke(app, ["predict", ref, ARTICLE, "--choice", "up", "--choice", "down", "--json"])
    assert json.loads(picked.output)["predictions"][0]["text"] in ("up", "down"), picked.output

    schema.write_text("{not json")
    broken = runner.invoke(app, ["predict", ref, ARTICLE, "--schema", str(schema)])
    assert broken.exit_code != 0 and "JSON Schema" in broken.output, broken.output


def test_evaluate_shows_a_language_models_report(headlines_model, headlines_jsonl, monkeypatch):
    monkeypatch.setenv("AIMASS_MAX_EVAL_CONVERSATIONS", "4")  # a file of 32: a sample is scored, and said
    answer = CliRunner().invoke(app, ["evaluate", headlines_model["model"], "--data", str(headlines_jsonl)])
    assert answer.exit_code == 0, (answer.output, answer.exception)
    assert "perplexity" in answer.output and "rouge_l" in answer.output
    assert "(a sample of 4 scored)" in " ".join(answer.output.split()), answer.output


def test_compress_refuses_a_language_model_and_says_what_to_do_instead(headlines_model):
    for method in ("int8-dynamic", "onnx", "distill"):
        answer = CliRunner().invoke(app, ["compress", headlines_model["model"], "--method", method])
        assert answer.exit_code == 2, (method, answer.output, answer.exception)
        assert "does not support text-generation" in answer.output and "--llm-quant" in answer.output


def test_auto_tells_conversations_apart_and_sizes_its_budget_for_them(headlines_jsonl):
    """A chat JSONL is a language model's data, not a table with no text column: ``auto`` names the
    task, and a budget too small for a LoRA fine-tune is refused before any work, in conversations."""
    from aimass.autolearn.run import detect_task

    assert detect_task(headlines_jsonl)[0] == "text-generation"
    answer = CliRunner().invoke(app, ["auto", str(headlines_jsonl), "--time-budget", "20s"])
    assert answer.exit_code == 2, (answer.output, answer.exception)
    said = " ".join(answer.output.split())
    assert "too small for 32 conversations" in said and "--time-budget" in said, answer.output


def test_train_validates_on_a_file_of_its_own_and_trains_on_all_of_data(headlines_jsonl, tmp_path):
    """``--valid-data``: every conversation of ``--data`` trains; the validation file is scored at
    the end of the fit and is the test split; the pair is a dataset naming both sources."""
    from tests.unit.llm.conftest import bbc_pairs, chat_line

    import aimass
    from aimass.tasks.text_generation import TextGenerator

    valid = tmp_path / "valid.jsonl"
    valid.write_text("".join(chat_line(a, h) + "\n" for a, h in bbc_pairs(10, chars=120, skip=500)))
    # a file of its own: the shared one may have been imported first under another name (auto-...)
    train = tmp_path / "headlines.jsonl"
    train.write_text(headlines_jsonl.read_text() + chat_line(*bbc_pairs(1, chars=200, skip=700)[0]) + "\n")
    settings = ["max_steps=2", "batch_size=4", "max_length=96", "max_new_tokens=8", "eval_examples=1"]
    args = ["train", "--task", "text-generation", "--data", str(train), "--valid-data", str(valid)]
    args += [x for s in settings for x in ("--set", s)] + ["--name", "headlines-validated", "--json"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, (run.output, run.exception)
    result = json.loads(run.stdout)
    assert result["metrics"]["n"] == 10 and 0 < result["metrics"]["mean_token_accuracy"] < 1
    pair = aimass.load_dataset(result["dataset"])
    assert pair.manifest["counts"]["by_split"] == {"train": 33, "valid": 10, "test": 10}
    parents = pair.manifest["parents"]
    assert parents["training_file"]["name"] == "headlines" and parents["validation_file"]["name"] == "valid"
    model = TextGenerator.load(result["path"])
    assert [v["step"] for v in model.valid_history_] == [2]  # max_steps ends the fit before a pass does

    refused = CliRunner().invoke(
        app, ["train", "--data", str(headlines_jsonl), "--from", "x:1", "--valid-data", "v"]
    )
    assert refused.exit_code != 0 and "validation" in refused.output
