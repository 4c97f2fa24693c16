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
