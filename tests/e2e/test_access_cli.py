"""``aimass users|groups|projects|policies|policy|audit`` as a user runs them (Typer's runner)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from aimass.cli import app

DENY = '{"Statement": [{"Sid": "NoProd", "Effect": "Deny", "Action": "model:deploy", "Resource": "*"}]}'


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_create_attach_simulate(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    run("projects", "create", "nlp")
    run("users", "create", "alice")
    run("groups", "create", "ops")
    run("groups", "add", "ops", "alice")
    run("policies", "create", "NoProd", DENY)
    run("policies", "attach", "Admin", "group", "ops")
    run("policies", "attach", "NoProd", "user", "alice")
    args = ["policy", "simulate", "--user", "alice", "--action", "model:Deploy"]
    answer = json.loads(run(*args, "--resource", "aimass:project/nlp/model/reviews:3", "--json"))
    assert answer["decision"] == "explicitDeny" and answer["matched"][0]["sid"] == "NoProd"
    assert [r["sid"] for r in answer["overridden"]] == ["Everything"]
    bad = CliRunner().invoke(
        app,
        ["policies", "create", "Bad", '{"Statement": {"Effect": "Allow", "Action": "x:y", "Resource": "*"}}'],
    )
    assert bad.exit_code == 2 and "Statement.Action" in bad.output
    assert json.loads(run("users", "show", "alice", "--json"))["groups"] == ["ops"]
    assert json.loads(run("audit", "--json")) == []
