"""API keys: hashed at rest, scoped, revocable, rate-limited; the admin token is private."""

from __future__ import annotations

import json
import os
import stat

import pytest

from aimass import paths
from aimass.errors import ConfigError, PermissionDenied, TooManyRequests, Unauthenticated
from aimass.serve import auth, metering
from aimass.store.db import ApiKeyRecord, session


def test_keys_are_stored_hashed_and_shown_once():
    record, key = auth.create_key("team-a", ["predict"])
    assert key.startswith(f"am_{record.id}_") and len(key) > 40
    with session() as s:
        stored = s.get(ApiKeyRecord, record.id)
    assert key not in (stored.hash, stored.name) and len(stored.hash) == 64
    assert all("key" not in row and "hash" not in row for row in auth.list_keys())


def test_scopes_and_revocation():
    guard = auth.Guard(cache_s=0)
    _, reader = auth.create_key("reader", ["predict"])
    _, admin = auth.create_key("ops", ["manage", "predict"])
    assert guard.check(f"Bearer {reader}", "predict").scopes == ("predict",)
    with pytest.raises(PermissionDenied, match="needs 'manage'"):
        guard.check(f"Bearer {reader}", "manage")
    assert guard.check(f"Bearer {admin}", "manage").key_id == admin.split("_")[1]
    with pytest.raises(Unauthenticated, match="needs an API key"):
        guard.check(None, "predict")
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        guard.check(f"Bearer {reader}x", "predict")
    auth.revoke_key(reader.split("_")[1])
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        guard.check(f"Bearer {reader}", "predict")


def test_open_predict_lets_anonymous_predict_but_never_manage():
    guard = auth.Guard(open_predict=True)
    assert guard.check(None, "predict").key_id == "anonymous"
    with pytest.raises(Unauthenticated):
        guard.check(None, "manage")


def test_rate_limit_answers_429_with_retry_after():
    guard = auth.Guard()
    _, key = auth.create_key("slow", ["predict"], rate_limit=2)
    guard.check(f"Bearer {key}", "predict")
    guard.check(f"Bearer {key}", "predict")
    with pytest.raises(TooManyRequests) as refused:
        guard.check(f"Bearer {key}", "predict")
    assert refused.value.retry_after >= 1 and "2 requests/s" in refused.value.message


def test_a_refused_request_spends_the_rate_limit_too(client):
    """A key's refusals were free: 300 forbidden requests in 4 s, each writing an audit row."""
    from aimass.access import audit

    _, key = auth.create_key("refused", ["predict"], rate_limit=1)
    headers = {"Authorization": f"Bearer {key}"}
    answers = [client.get("/metrics", headers=headers).status_code for _ in range(5)]
    assert answers[0] == 403 and set(answers[1:]) == {429}, answers
    assert len([r for r in audit.query(action="usage:Read") if r["decision"] != "allowed"]) <= 1


def test_bad_scopes_and_limits_are_refused():
    with pytest.raises(ConfigError, match="Unknown scopes"):
        auth.create_key("x", ["admin"])
    with pytest.raises(ConfigError, match="Rate limit"):
        auth.create_key("x", ["predict"], rate_limit=0)


def test_admin_token_file_is_private_and_stable():
    token = auth.admin_token()
    path = paths.home() / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.admin_token() == token
    assert auth.Guard(admin=token).check(f"Bearer {token}", "manage").key_id == "admin"


def test_meter_folds_requests_into_minutes_per_key_and_model():
    meter = metering.Meter()
    meter.add("k1", "news", 3, 12.5)
    meter.add("k1", "news", 2, 7.5)
    meter.add("k2", "news", 1, 1.0)
    assert meter.flush() == 2
    meter.add("k1", "news", 1, 1.0)
    meter.flush()
    rows = {r["key"]: r for r in metering.usage() if r["model"] == "news"}
    assert (rows["k1"]["requests"], rows["k1"]["items"], rows["k1"]["compute_ms"]) == (3, 6, 21.0)
    assert [r["key"] for r in metering.usage(key="k2")] == ["k2"]
    assert metering.usage(since="2999-01-01") == []
    with pytest.raises(ConfigError, match="ISO"):
        metering.usage(since="yesterday")


def test_meter_keeps_the_tally_when_the_database_write_fails():
    import sqlite3

    db = sqlite3.connect(paths.home() / "aimass.db")
    metering.usage()  # creates the tables
    meter = metering.Meter()
    meter.add("k9", "flaky", 2, 5.0)
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON usage BEGIN SELECT RAISE(ABORT, 'refused'); END")
    db.commit()
    with pytest.raises(Exception, match="refused"):
        meter.flush()
    meter.add("k9", "flaky", 1, 1.0)  # a request served while the database refused
    db.execute("DROP TRIGGER refuse")
    db.commit()
    assert meter.flush() == 1
    (row,) = metering.usage(key="k9")
    assert (row["requests"], row["items"], row["compute_ms"]) == (2, 3, 6.0)


# ------------------------------------------------- issue 21: harden the server
@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient

    from aimass.serve.app import create_app

    with TestClient(create_app(refs=[])) as c:
        yield c


@pytest.fixture(scope="module")
def admin():
    return {"Authorization": f"Bearer {auth.admin_token()}"}


def test_running_code_is_a_scope_of_its_own():
    guard = auth.Guard()
    ops, manage = auth.create_key("ops", ["manage", "predict"])
    with pytest.raises(PermissionDenied, match="needs 'jobs:code'") as refused:
        guard.check(f"Bearer {manage}", "jobs:code")
    assert "'manage' does not include 'jobs:code'" in refused.value.hint
    _, coder = auth.create_key("ml", ["jobs:code"])
    assert guard.check(f"Bearer {coder}", "jobs:code").scopes == ("jobs:code",)
    assert guard.check(f"Bearer {coder}", ("manage", "jobs:code")).scopes == ("jobs:code",)
    token = auth.admin_token()
    assert "jobs:code" in auth.Guard(admin=token).check(f"Bearer {token}", "jobs:code").scopes
    caller = guard.check(f"Bearer {manage}", "manage")
    with pytest.raises(PermissionDenied, match=r"cannot grant \['jobs:code'\]"):
        auth.create_key("escalate", ["jobs:code"], granted_by=caller)
    record, _ = auth.create_key("helper", ["predict"], granted_by=caller)
    assert record.scopes == ["predict"]


@pytest.mark.parametrize(
    "rate",
    [float("inf"), float("-inf"), float("nan"), float("1e400"), 5e-324, 0.0005, 2e6, -1, 0, 10**400, True],
)
def test_rate_limits_must_be_finite_and_in_range(rate):
    with pytest.raises(ConfigError, match=r"from 0\.001 to 1,000,000 requests/s|must be a number"):
        auth.create_key("x", ["predict"], rate_limit=rate)


def test_rate_limits_at_the_bounds_are_kept():
    assert auth.create_key("slowest", ["predict"], rate_limit=0.001)[0].rate_limit == 0.001
    assert auth.create_key("fastest", ["predict"], rate_limit=10**6)[0].rate_limit == 1e6


@pytest.mark.parametrize("raw", ["1e400", '"inf"', "Infinity", "-Infinity", "NaN", "5e-324", "2e6"])
def test_rest_refuses_odd_rate_limits_with_422(client, admin, raw):
    body = '{"name": "odd", "rate_limit": RATE}'.replace("RATE", raw)
    answer = client.post("/v1/keys", content=body, headers={**admin, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert client.get("/v1/keys", headers=admin).status_code == 200


def test_cli_refuses_odd_rate_limits():
    from typer.testing import CliRunner

    from aimass.cli import app

    for raw in ("inf", "nan", "1e400", "5e-324"):
        done = CliRunner().invoke(app, ["keys", "create", "--rate-limit", raw, "--json"])
        assert done.exit_code == 2, done.output
        assert "0.001 to 1,000,000" in json.loads(done.output)["error"]["message"]


def test_stored_odd_rate_limits_cannot_break_listing_or_checks(client, admin):
    import sqlite3

    from typer.testing import CliRunner

    from aimass.cli import app

    ids = {}
    for label, stored in (("inf", "9e999"), ("-inf", "-9e999"), ("tiny", "5e-324"), ("negative", "-3")):
        record, key = auth.create_key(f"old-{label}", ["predict"], rate_limit=1)
        ids[label] = (record.id, key)
        with sqlite3.connect(paths.home() / "aimass.db") as db:  # as an older version could store it
            db.execute(f"UPDATE api_keys SET rate_limit = {stored} WHERE id = ?", (record.id,))
    json.dumps(auth.list_keys(), allow_nan=False)
    assert client.get("/v1/keys", headers=admin).status_code == 200
    listed = CliRunner().invoke(app, ["keys", "list", "--json"])
    rows = json.loads(listed.output, parse_constant=lambda c: pytest.fail(f"invalid JSON {c}"))
    limits = {r["name"]: r["rate_limit"] for r in rows}
    assert [limits[f"old-{k}"] for k in ("inf", "-inf", "tiny", "negative")] == [None, None, 0.001, None]
    guard = auth.Guard()
    tiny = f"Bearer {ids['tiny'][1]}"
    guard.check(tiny, "predict")
    with pytest.raises(TooManyRequests) as refused:
        guard.check(tiny, "predict")
    assert refused.value.retry_after <= 1000
    for _ in range(3):
        guard.check(f"Bearer {ids['inf'][1]}", "predict")


def test_revocation_applies_on_the_next_request_in_this_process_and_others():
    import subprocess
    import sys

    guard = auth.Guard()  # default cache
    _, here = auth.create_key("here", ["predict"])
    _, there = auth.create_key("there", ["predict"])
    _, kept = auth.create_key("kept", ["predict"])
    for key in (here, there, kept):
        guard.check(f"Bearer {key}", "predict")  # now cached
    auth.revoke_key(here.split("_")[1])
    with pytest.raises(Unauthenticated, match="revoked"):
        guard.check(f"Bearer {here}", "predict")
    cli = [sys.executable, "-m", "aimass", "keys", "revoke", there.split("_")[1], "--json"]
    done = subprocess.run(cli, capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr
    with pytest.raises(Unauthenticated, match="revoked"):
        guard.check(f"Bearer {there}", "predict")
    assert guard.check(f"Bearer {kept}", "predict").key_id == kept.split("_")[1]


def test_revocation_over_rest_applies_on_the_next_request(client, admin):
    _, key = auth.create_key("soon-gone", ["manage"])
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/keys", headers=headers).status_code == 200
    assert client.delete(f"/v1/keys/{key.split('_')[1]}", headers=admin).status_code == 200
    assert client.get("/v1/keys", headers=headers).status_code == 401


def test_the_cache_is_bounded_and_skips_malformed_keys():
    import secrets

    guard = auth.Guard()
    _, good = auth.create_key("good", ["predict"])
    guard.check(f"Bearer {good}", "predict")
    for _ in range(20_000):
        assert guard.identify(f"Bearer am_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}") is None
    assert guard.cache_len == auth.CACHE_SIZE
    for i in range(20_000):
        assert guard.identify(f"Bearer junk-{i}") is None
        assert guard.identify(f"Bearer am_zz_{i}") is None
    assert guard.cache_len == auth.CACHE_SIZE
    assert guard.check(f"Bearer {good}", "predict").key_id == good.split("_")[1]


def test_quotas_from_the_cli_bad_values_and_periods():
    """``aimass keys create --quota``, ``keys update`` (a number, or none), ``keys list``; odd
    quotas and periods are refused naming the field; a month's window ends on the next month's
    first day, December's in January."""
    from datetime import UTC, datetime

    from typer.testing import CliRunner

    from aimass.cli import app
    from aimass.serve import quotas

    def run(*args: str, code: int = 0) -> dict:
        done = CliRunner().invoke(app, ["keys", *args, "--json"])
        assert done.exit_code == code, done.output
        return json.loads(done.output)

    made = run("create", "--name", "cli-capped", "--quota", "500", "--quota-period", "day")
    assert (made["quota"], made["quota_period"]) == (500, "day")
    listed = {k["id"]: k for k in run("list")}
    assert listed[made["id"]]["quota_used"] == 0 and listed[made["id"]]["quota"] == 500
    assert run("update", made["id"], "--quota", "800")["quota_period"] == "day"  # the period stays
    monthly = run("update", made["id"], "--quota-period", "month")
    assert (monthly["quota"], monthly["quota_period"]) == (800, "month")
    assert run("update", made["id"], "--quota", "none")["quota"] is None
    assert (
        "--quota must be a number" in run("update", made["id"], "--quota", "lots", code=2)["error"]["message"]
    )
    assert "Nothing to change" in run("update", made["id"], code=2)["error"]["message"]
    assert "No active API key" in run("update", "nokey123", "--quota", "5", code=2)["error"]["message"]
    for args, why in (
        (["--quota", "0"], "from 1 to"),
        (["--quota", "5", "--quota-period", "week"], "'day' or 'month'"),
        (["--quota-period", "day"], "without --quota"),
    ):
        assert why in run("create", *args, code=2)["error"]["message"]
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert quotas.window("month", december) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert quotas.window("day", december)[1] == datetime(2027, 1, 1, tzinfo=UTC)


def test_the_anonymous_caller_of_an_open_server_is_rate_limited_per_address(monkeypatch):
    """``--open-predict`` had no per-client bound: one address could take every generation slot."""
    from fastapi.testclient import TestClient

    from aimass.serve.app import create_app

    monkeypatch.setenv("AIMASS_OPEN_PREDICT_RATE", "nonsense")
    with pytest.raises(ConfigError, match="AIMASS_OPEN_PREDICT_RATE"):
        auth.Guard(open_predict=True)
    monkeypatch.setenv("AIMASS_OPEN_PREDICT_RATE", "0.01")
    _, key = auth.create_key("open-rate", ["predict"])
    with TestClient(create_app([], open_predict=True)) as client:
        ask = lambda **kw: client.post("/v1/models/nothing/predict", json={"inputs": ["hi"]}, **kw)  # noqa: E731
        assert ask().status_code == 404  # let through (no such model)
        refused = ask()
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "this address" in refused.json()["error"]["message"]
        assert ask(headers={"Authorization": f"Bearer {key}"}).status_code == 404  # a key has its own
