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
