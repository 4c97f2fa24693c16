"""A predict job as its submitter sees it: its rows metered as they are scored, and its log followed
without the runner's banner.

Its rows are metered as they are scored. They were metered once, at the end: an
attempt killed at 99% (a timeout, a crash, a cancel) had scored its rows for nothing, and a job
that always dies before its end was free."""

from __future__ import annotations

from aimass.jobs.kinds import _RowMeter
from aimass.serve import auth, metering


def totals(key_id: str) -> tuple[int, int]:
    rows = metering.usage(key_id)
    return sum(u["items"] for u in rows), sum(u["requests"] for u in rows)


def test_rows_are_metered_as_they_are_scored_and_the_request_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(_RowMeter, "EVERY_ROWS", 16)
    record, _ = auth.create_key("bulk", ["manage"])
    meter = _RowMeter(record.id, "news:1")
    for done in (16, 32, 48):  # chunks of 16 rows: the first is counted once the attempt ends
        meter.reached(done)
    assert totals(record.id) == (
        32,
        0,
    )  # killed here, the job has paid for what it scored after its first chunk
    meter.finish(48)
    assert totals(record.id) == (48, 1)  # every row once, and one request


def test_a_resumed_attempt_meters_only_what_it_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    record, _ = auth.create_key("bulk", ["manage"])
    meter = _RowMeter(record.id, "news:1")
    for done in (48, 64):  # it resumed at 32: the chunks up to there were written before
        meter.reached(done)
    meter.finish(64 - 32)
    assert totals(record.id) == (32, 1)
    _RowMeter(None, "news:1").finish(10)  # a job submitted on the server's machine: no key to bill


def test_a_followed_job_shows_no_banner_for_its_first_attempt(tmp_path, monkeypatch):
    """``aimass predict --file`` printed ``===== attempt 1 (pid of runner N) =====`` before every
    job's output; the log keeps it, and a later attempt's banner (a resumed job) still shows."""
    from aimass.jobs import _echo, log_path

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    log = log_path("0123456789ab")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("\n===== attempt 1 (pid of runner 42) =====\nscoring\n")
    seen = []
    offset = _echo("0123456789ab", 0, seen.append)
    assert seen == ["scoring\n"] and "attempt 1" in log.read_text()
    with log.open("a") as handle:
        handle.write("\n===== attempt 2 (pid of runner 43) =====\nresumed\n")
    _echo("0123456789ab", offset, seen.append)
    assert "attempt 2" in seen[-1]
