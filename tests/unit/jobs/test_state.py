"""Job state transitions: each is a conditional UPDATE, so a job starts once per attempt and
ends once."""

from __future__ import annotations

import pytest

from aimass import jobs
from aimass.errors import JobError
from aimass.jobs import state


def test_claim_and_finish_happen_once():
    job = state.create("import", {"path": "x.csv"})
    first = state.claim(job.id, runner_pid=1)
    assert first is not None and first.attempt == 1 and first.status == "running"
    assert state.claim(job.id, runner_pid=2) is None
    assert state.finish(job.id, 1, "succeeded", result={"dataset": "d"})
    assert not state.finish(job.id, 1, "failed", error={"message": "late"})
    ended = state.get(job.id)
    assert ended.status == "succeeded" and ended.result == {"dataset": "d"} and ended.progress == 1.0
    kinds = [e.kind for e in state.events(job.id)]
    assert kinds == ["queued", "started", "succeeded"]


def test_an_interrupted_attempt_is_requeued_and_resumes_as_the_next_attempt():
    job = state.create("train", {"data": "d"})
    state.claim(job.id, runner_pid=1)
    assert state.requeue(job.id, 1, "worker died")
    assert not state.requeue(job.id, 1, "twice")  # the same attempt cannot be requeued again
    again = state.claim(job.id, runner_pid=1)
    assert again.attempt == 2
    assert not state.finish(job.id, 1, "succeeded")  # the old attempt no longer owns the job
    assert not state.beat(job.id, 1, progress=0.5)
    assert state.beat(job.id, 2, progress=0.5, message="epoch 1")
    assert [e.kind for e in state.events(job.id)] == ["queued", "started", "interrupted", "resumed"]


def test_cancel_and_retry_rules():
    queued = jobs.submit("import", {"path": "x.csv"})
    assert jobs.cancel(queued["id"])["status"] == "cancelled"
    with pytest.raises(JobError) as err:
        jobs.cancel(queued["id"])
    assert err.value.code == "job_already_ended"
    again = jobs.retry(queued["id"])
    assert (
        again["status"] == "queued"
        and again["retry_of"] == queued["id"]
        and again["params"] == queued["params"]
    )
    with pytest.raises(JobError) as err:
        jobs.retry(again["id"])
    assert err.value.code == "job_not_retryable"

    running = state.create("import", {"path": "x.csv"})
    state.claim(running.id, runner_pid=1)
    assert jobs.cancel(running.id)["status"] == "running"  # the runner stops it
    assert state.get(running.id).cancel_requested


def test_submit_checks_before_queueing():
    before = len(jobs.list_jobs(limit=10_000))
    with pytest.raises(Exception) as err:
        jobs.submit("teleport", {})
    assert "available: " in str(err.value) and "train" in str(err.value)
    with pytest.raises(Exception, match="'path'"):
        jobs.submit("import", {})
    with pytest.raises(JobError) as bad:
        jobs.submit("import", {"path": "x.csv"}, timeout_s=0)
    assert bad.value.code == "timeout_invalid"
    assert len(jobs.list_jobs(limit=10_000)) == before
    with pytest.raises(Exception, match="Unknown job status"):
        jobs.list_jobs("sleeping")


def test_pause_and_resume_rules():
    queued = jobs.submit("import", {"path": "x.csv"})
    assert jobs.pause(queued["id"])["status"] == "paused"  # held: no runner claims it
    assert state.claim(queued["id"], runner_pid=1) is None
    with pytest.raises(JobError) as err:
        jobs.pause(queued["id"])
    assert err.value.code == "job_not_pausable"
    assert jobs.resume(queued["id"])["status"] == "queued"
    with pytest.raises(JobError) as err:
        jobs.resume(queued["id"])
    assert err.value.code == "job_not_paused" and "Only paused jobs" in err.value.hint

    running = state.create("train", {"data": "d"})
    state.claim(running.id, runner_pid=1)
    asked = jobs.pause(running.id)
    assert asked["status"] == "running" and asked["pause_requested"]  # stops at its next checkpoint
    with pytest.raises(JobError) as err:
        jobs.resume(running.id)
    assert "still pausing" in err.value.hint
    assert state.pause(running.id, 1, "paused at step 3")
    assert not state.finish(running.id, 1, "succeeded")  # the paused attempt owns nothing
    paused = state.get(running.id)
    assert paused.status == "paused" and paused.max_attempts == 6 and not paused.pause_requested
    assert jobs.resume(running.id)["status"] == "queued"
    again = state.claim(running.id, runner_pid=1)
    assert again.attempt == 2 and again.max_attempts == 6  # pausing did not use up an attempt
    kinds = [e.kind for e in state.events(running.id)]
    assert kinds == ["queued", "started", "pause_requested", "paused", "resume_requested", "resumed"]

    held = jobs.submit("import", {"path": "x.csv"})
    jobs.pause(held["id"])
    cancelled = jobs.cancel(held["id"])
    assert cancelled["status"] == "cancelled" and cancelled["finished"]
    assert [e.kind for e in state.events(held["id"])][-1] == "cancelled"


def test_a_database_made_before_a_column_existed_gains_it(tmp_path, monkeypatch):
    """An older home (its jobs table without ``pause_requested``) opens as it is."""
    import sqlite3

    old = tmp_path / "old-home"
    old.mkdir()
    with sqlite3.connect(old / "aimass.db") as conn:
        conn.execute(
            "CREATE TABLE jobs (id VARCHAR(16) PRIMARY KEY, kind VARCHAR(32), params JSON, "
            "status VARCHAR(16), attempt INTEGER, max_attempts INTEGER, timeout_s FLOAT, "
            "runner_pid INTEGER, worker_pid INTEGER, heartbeat FLOAT, progress FLOAT, eta_s FLOAT, "
            "message VARCHAR(1000), result JSON, error JSON, cancel_requested BOOLEAN, "
            "retry_of VARCHAR(16), created VARCHAR(32), started VARCHAR(32), finished VARCHAR(32))"
        )
        conn.execute(
            "INSERT INTO jobs VALUES ('oldjob', 'import', '{}', 'queued', 0, 5, NULL, NULL, NULL, "
            "NULL, 0.0, NULL, '', '{}', NULL, 0, NULL, '2026-01-01T00:00:00+00:00', NULL, NULL)"
        )
    monkeypatch.setenv("AIMASS_HOME", str(old))
    job = state.get("oldjob")
    assert job.pause_requested is False and job.status == "queued"
    assert jobs.pause("oldjob")["status"] == "paused"
    with sqlite3.connect(old / "aimass.db") as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
    assert "pause_requested" in columns


def test_a_relative_path_is_read_where_the_job_was_submitted(tmp_path, monkeypatch):
    """A job's worker reads a relative path from the submitter's working folder, not the runner's:
    over REST the server checked the path where it runs, and a runner started in another folder
    must not read another file of that name (nor fail to find the submitter's)."""
    here, there = tmp_path / "submitter", tmp_path / "runner"
    here.mkdir()
    there.mkdir()
    rows = "text,label\n" + "".join(f"row {i} is good,pos\nrow {i} is bad,neg\n" for i in range(10))
    (here / "mine.csv").write_text(rows)
    (there / "other.csv").write_text(rows.replace("row", "secret"))
    monkeypatch.chdir(here)
    mine = jobs.submit("import", {"path": "mine.csv", "name": "mine"})["id"]
    other = jobs.submit("import", {"path": "other.csv", "name": "other"})["id"]
    monkeypatch.chdir(there)
    assert jobs.run_foreground(mine)["status"] == "succeeded"
    assert jobs.run_foreground(other)["status"] == "failed"
    retried = jobs.retry(other)["id"]  # the operator's retry reads where the first attempt did
    assert state.get(retried).cwd == str(here)


def test_metadata_is_kept_filtered_on_checked_and_retried():
    tagged = jobs.submit("import", {"path": "x.csv"}, metadata={"team": "nlp-meta", "ticket": "AI-12"})
    jobs.submit("import", {"path": "y.csv"}, metadata={"team": "vision-meta"})
    assert tagged["metadata"] == {"team": "nlp-meta", "ticket": "AI-12"}
    assert [j["id"] for j in jobs.list_jobs(metadata={"team": "nlp-meta"})] == [tagged["id"]]
    assert [j["id"] for j in jobs.list_jobs(metadata={"team": "nlp-meta", "ticket": "AI-13"})] == []
    before = len(jobs.list_jobs(limit=10_000))
    for bad, why in (
        ({str(i): "x" for i in range(17)}, "17 pairs"),
        ({"team": 3}, "must be a string"),
        ({"k" * 65: "x"}, "too long"),
        ({"team": "v" * 513}, "too long"),
        (["team", "nlp"], "must be an object"),
    ):
        with pytest.raises(JobError) as err:
            jobs.submit("import", {"path": "x.csv"}, metadata=bad)
        assert err.value.code == "metadata_invalid" and why in str(err.value), err.value
    assert len(jobs.list_jobs(limit=10_000)) == before  # nothing queued
    jobs.cancel(tagged["id"])
    assert jobs.retry(tagged["id"])["metadata"] == tagged["metadata"]


def test_a_job_worker_the_api_and_the_server_start_without_the_heavy_libraries():
    """Every job is a fresh ``python -m aimass.jobs.worker``: what its import pulls in is paid
    by every job (transformers and scikit-learn took ~6 s a job). A kind imports them when it
    runs. The same for the API behind every CLI command (``aimass data list`` took 4.5 s)."""
    import subprocess
    import sys

    code = (
        "import sys, aimass.jobs.worker, aimass.jobs.runner, aimass.api; "
        "print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]"], done.stdout
    # the server: torch, transformers and scikit-learn load with the first model, embedding, language
    # model or report that needs them (a server of ONNX models never loads them: 545 -> 115 MB)
    heavy = "('torch', 'transformers', 'sklearn', 'scipy')"
    code = f"import sys, aimass.serve.app; print([m for m in {heavy} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]"], done.stdout
