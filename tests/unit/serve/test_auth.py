"""API keys: hashed at rest, scoped, revocable, rate-limited; the admin token is private."""

from __future__ import annotations

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
