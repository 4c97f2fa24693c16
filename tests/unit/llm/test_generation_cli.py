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


def test_evaluate_shows_a_language_models_report(headlines_model, headlines_jsonl):
    answer = CliRunner().invoke(app, ["evaluate", headlines_model["model"], "--data", str(headlines_jsonl)])
    assert answer.exit_code == 0, (answer.output, answer.exception)
    assert "perplexity" in answer.output and "rouge_l" in answer.output


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
