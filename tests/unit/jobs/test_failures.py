"""A failed job's last event names the cause and a hint: a script that fails, a timeout, a data
error, an exception (with its traceback's last lines); a cancelled running job stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import aimass
from aimass import api, jobs
from aimass.jobs import state


@pytest.fixture(scope="module")
def news(bbc_csv):
    return api.import_dataset(bbc_csv, name="news-failures")


def script(tmp_path, body: str) -> dict:
    (tmp_path / "job.py").write_text(body)
    return {"code": jobs.upload_code(tmp_path)["code"], "entry": "job.py"}


def run_all() -> None:
    jobs.Runner(parallel=2, poll_s=0.1).run(until_idle=True)


def last_event(job_id: str) -> dict:
    return jobs.show(job_id)["events"][-1]


def test_failures_explain_themselves(tmp_path, news):
    crash = tmp_path / "crash"
    crash.mkdir()
    sleepy = tmp_path / "sleepy"
    sleepy.mkdir()
    failing = jobs.submit("custom", {**script(crash, "raise SystemExit('bad flag --lr')\n"), "data": news.id})
    slow = jobs.submit(
        "custom", {**script(sleepy, "import time; time.sleep(60)\n"), "data": news.id}, timeout_s=2
    )
    hungry = tmp_path / "hungry"
    hungry.mkdir()
    oom = jobs.submit("custom", {**script(hungry, "x = bytearray(1 << 50)\n"), "data": news.id})
    missing = jobs.submit("import", {"path": str(tmp_path / "nowhere.csv")})
    broken = jobs.submit("evaluate", {"model": "no-such-model"})
    run_all()

    failed = jobs.show(failing["id"])
    assert failed["status"] == "failed" and failed["error"]["cause"] == "script_failed"
    assert "exited with code 1" in failed["error"]["message"]
    assert "bad flag --lr" in jobs.logs(failing["id"])  # the script's own error is in the log

    assert "bad flag --lr" in failed["error"]["traceback"]
    memory = jobs.show(oom["id"])
    assert memory["status"] == "failed" and memory["error"]["cause"] == "out_of_memory"
    assert "MemoryError" in memory["error"]["traceback"]

    timed_out = jobs.show(slow["id"])
    assert timed_out["status"] == "failed" and timed_out["error"]["cause"] == "timeout"
    assert last_event(slow["id"])["kind"] == "failed" and "timeout" in last_event(slow["id"])["hint"]

    data = jobs.show(missing["id"])
    assert data["status"] == "failed" and data["error"]["cause"] in ("data_error", "not_found")
    assert "nowhere.csv" in data["error"]["message"] and data["error"]["hint"]

    other = jobs.show(broken["id"])
    assert other["status"] == "failed" and other["error"]["cause"] == "not_found"
    assert "no-such-model" in other["error"]["message"]
    assert "Traceback" in other["error"]["traceback"] and "evaluate" in other["error"]["traceback"]
    assert 'File "aimass/' in other["error"]["traceback"]  # named from its import root:
    assert str(Path(aimass.__file__).parent) not in other["error"]["traceback"]  # no install path
    for job in (failing, oom, slow, missing, broken):
        event = last_event(job["id"])
        assert event["kind"] == "failed" and event["message"] and event["hint"]


def test_a_running_job_can_be_cancelled(tmp_path, news):
    job = jobs.submit("custom", {**script(tmp_path, "import time; time.sleep(60)\n"), "data": news.id})
    runner = threading.Thread(target=run_all)
    runner.start()
    deadline = time.monotonic() + 60
    while state.get(job["id"]).worker_pid is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    began = time.monotonic()
    jobs.cancel(job["id"])
    runner.join(timeout=60)
    done = jobs.show(job["id"])
    assert done["status"] == "cancelled" and time.monotonic() - began < 30
    assert done["events"][-1]["kind"] == "cancelled"
    again = jobs.retry(job["id"])
    assert again["status"] == "queued"
    jobs.cancel(again["id"])  # leave no queued work behind for other tests' runners
