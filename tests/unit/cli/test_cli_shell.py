"""The command wrapper: an unexpected exception is one line and exit 1, its traceback only on demand."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from aimass.cli.shell import JsonFlag, command


def broken_app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @command
    def crash(as_json: JsonFlag = False):
        raise ValueError("At least one label specified must be in y_true\nsecond line")

    return app


def test_an_unexpected_error_is_one_line_and_exit_1(monkeypatch, tmp_path):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIMASS_DEBUG", raising=False)
    result = CliRunner().invoke(broken_app(), [])
    assert result.exit_code == 1
    assert "Error (internal): ValueError: At least one label" in result.stderr
    assert "AIMASS_DEBUG=1" in result.stderr
    assert "Traceback" not in result.output and "second line" not in result.output
    assert not isinstance(result.exception, ValueError)

    as_json = CliRunner().invoke(broken_app(), ["--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["error"]["code"] == "internal"


def test_aimass_debug_shows_the_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIMASS_DEBUG", "1")
    result = CliRunner().invoke(broken_app(), [])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


def test_an_error_that_reads_as_markup_prints_literally(monkeypatch, tmp_path):
    """A label such as ``[/x]`` in the message, or a JSON shape such as ``[[start, end, label]]`` in
    the hint, is user text: printed as written with exit 2, not read as Rich markup (a MarkupError
    traceback, or the brackets silently eaten)."""
    from aimass.cli.main import app
    from aimass.cli.shell import err

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(err, "width", 400)  # one line per message, whatever the terminal
    labels = ["pos", "neg"] * 5 + ["[/x]"]
    rows = "".join(f"text number {i},{label}\n" for i, label in enumerate(labels))
    (tmp_path / "markup.csv").write_text("text,label\n" + rows)
    result = CliRunner().invoke(app, ["data", "import", str(tmp_path / "markup.csv")])
    assert result.exit_code == 2, result.output
    assert "'[/x]' has 1 example" in result.stderr

    (tmp_path / "few.jsonl").write_text(
        json.dumps({"text": "Ann met Bo", "entities": [[0, 3, "PER"]]}) + "\n"
    )
    entities = CliRunner().invoke(app, ["data", "import", str(tmp_path / "few.jsonl")])
    assert entities.exit_code == 2, entities.output
    assert '"entities": [[start, end, label], ...]' in entities.stderr


def test_a_failed_jobs_error_prints_literally(capsys):
    """``aimass jobs show`` prints a failed job's stored error (user text too) as written."""
    from aimass.cli.jobs import _show

    error = {"cause": "DataError", "message": "'[/x]' has 1 example", "hint": 'send {"rows": [[1, 2]]}'}
    _show({"id": "j1", "kind": "train", "status": "failed", "attempt": 1, "error": error})
    printed = capsys.readouterr().out
    assert "DataError: '[/x]' has 1 example" in printed
    assert 'send {"rows": [[1, 2]]}' in printed
