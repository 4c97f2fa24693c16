"""Jobs and requests while another process holds the database: an operator's audit found that a
write held past SQLite's busy timeout (10 s) killed the server's job runner for good (jobs stayed
``running`` or ``queued`` until a restart), that read routes answered a bare 500, and that a job's
timeout restarted with each attempt (a job whose worker kept dying ran five times its timeout)."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from aimass import jobs, paths
from aimass.jobs import state
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.store.db import JobEventRecord, session


def test_a_locked_database_is_a_503_and_the_runner_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    table = tmp_path / "rows.csv"
    table.write_text("text,label\n" + "".join(f"story {i} about {w},{w}\n" for i in range(10) for w in "ab"))
    job = jobs.submit("import", {"path": str(table)})["id"]
    client = TestClient(create_app([], job_runner=0))
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    holder = sqlite3.connect(paths.home() / "aimass.db", timeout=0, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than the busy timeout
    stop = threading.Event()
    runner = threading.Thread(target=jobs.Runner(parallel=1, poll_s=0.2).run, kwargs={"stop": stop})
    runner.start()
    try:
        answer = client.get("/v1/jobs", headers=admin)  # its audit row waits 10 s, then gives up
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "unavailable" and answer.headers["Retry-After"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    began = time.monotonic()
    while jobs.show(job)["status"] not in state.ENDED and time.monotonic() - began < 90:
        time.sleep(0.3)
    try:
        assert runner.is_alive()  # its pass failed while the database was held; the next one ran
        assert jobs.show(job)["status"] == "succeeded", jobs.show(job)
        assert client.get("/v1/jobs", headers=admin).status_code == 200
    finally:
        stop.set()
        runner.join(timeout=30)


def test_a_jobs_time_is_counted_over_all_its_attempts(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def at(seconds: float) -> str:
        return (start + timedelta(seconds=seconds)).isoformat(timespec="seconds")

    with session() as s, s.begin():
        for kind, second in (
            ("started", 0),
            ("interrupted", 20),  # its worker died after 20 s
            ("resumed", 25),
            ("adopted", 40),  # a new runner took the worker over: the attempt goes on
            ("paused", 60),  # 35 s more
            ("resumed", 600),  # paused time does not count
        ):
            s.add(JobEventRecord(job_id="j1", attempt=1, kind=kind, message="", time=at(second)))
    assert state.ran_seconds("j1", at=(start + timedelta(seconds=610)).timestamp()) == 20 + 35 + 10
