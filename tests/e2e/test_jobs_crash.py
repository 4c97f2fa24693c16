"""Jobs survive pauses and crashes: a training job paused (it stops right after a checkpoint),
resumed, then killed with SIGKILL twice at random points ends with the weights and metrics of an
uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tests.conftest import bbc_sample

TRAIN = {"backbone": "minilm-l6", "max_length": 64, "unfreeze": 2, "epochs_top": 4, "time_budget": None}


def aimass(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIMASS_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "aimass", *args], env=env, capture_output=True, text=True)
    assert not check or done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def runner(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "AIMASS_HOME": str(home)}
    cmd = [sys.executable, "-m", "aimass", "jobs", "runner", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def db(home: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(home / "aimass.db", timeout=30) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(predicate, timeout: float = 300, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out waiting")


@pytest.fixture(scope="module")
def news_csv(tmp_path_factory) -> Path:
    texts, labels = bbc_sample(per_class=40, chars=300)
    path = tmp_path_factory.mktemp("jobs") / "news.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts, labels)])
    return path


def submit_train(home: Path, data: Path) -> str:
    sets = [a for k, v in TRAIN.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    done = aimass(
        home, "jobs", "submit", "--kind", "train", "--data", str(data), "--name", "news", *sets, "--json"
    )
    return json.loads(done.stdout)["id"]


def worker(home: Path, job: str, attempt: int) -> int | None:
    rows = db(home, "select worker_pid from jobs where id=? and attempt=? and status='running'", job, attempt)
    return rows[0][0] if rows else None


def ended(home: Path, job: str) -> str | None:
    [(status,)] = db(home, "select status from jobs where id=?", job)
    return status if status in ("succeeded", "failed", "cancelled") else None


def checkpoint_epoch(home: Path) -> int:
    found = list(home.glob("runs/*/checkpoint/checkpoint.json"))
    return json.loads(found[0].read_text())["epoch"] if found else -1


@pytest.fixture(scope="module")
def reference(news_csv, tmp_path_factory) -> tuple[Path, dict]:
    """The training job run once, uninterrupted: (its home, the job)."""
    clean = tmp_path_factory.mktemp("clean")
    job = submit_train(clean, news_csv)
    aimass(clean, "jobs", "runner", "--until-idle")
    shown = json.loads(aimass(clean, "jobs", "show", job, "--json").stdout)
    assert shown["status"] == "succeeded", shown
    assert shown["attempt"] == 1
    return clean, shown


def same_model(home_a: Path, home_b: Path) -> float:
    """The largest difference between the weights of the one version in each home."""
    [(path_a,)], [(path_b,)] = (
        db(home_a, "select path from model_versions"),
        db(home_b, "select path from model_versions"),
    )
    weights_a = load_file(str(home_a / path_a / "model.safetensors"))  # stored relative to home
    weights_b = load_file(str(home_b / path_b / "model.safetensors"))
    assert weights_a.keys() == weights_b.keys()
    return max(float((weights_a[k].float() - weights_b[k].float()).abs().max()) for k in weights_a)


def test_a_training_job_paused_then_killed_twice_resumes_to_the_same_model(news_csv, reference, tmp_path):
    """Paused as soon as it runs (it stops right after its first checkpoint), resumed, then killed
    with SIGKILL twice at random moments: the fourth attempt ends with the uninterrupted weights."""
    (clean, reference), home = reference, tmp_path / "paused-killed"
    job = submit_train(home, news_csv)
    first = runner(home, "--until-idle")
    wait_for(lambda: worker(home, job, attempt=1))
    asked = json.loads(aimass(home, "jobs", "pause", job, "--json").stdout)
    assert asked["status"] == "running" and asked["pause_requested"]
    assert first.wait(timeout=600) == 0, "the runner is idle once its only job is paused"
    paused = json.loads(aimass(home, "jobs", "show", job, "--json").stdout)
    assert paused["status"] == "paused" and paused["attempt"] == 1 and paused["max_attempts"] == 6
    note = paused["events"][-1]
    assert note["kind"] == "paused" and "right after its checkpoint was written" in note["message"], note
    paused_at = checkpoint_epoch(home)
    assert 0 <= paused_at < TRAIN["epochs_top"] - 1, "paused before the last epoch"
    assert db(home, "select status from runs") == [("running",)]  # the run is not failed: it goes on
    assert json.loads(aimass(home, "jobs", "resume", job, "--json").stdout)["status"] == "queued"

    process = runner(home)
    rng = random.Random(7)
    try:
        for kill in (1, 2):  # attempts 2 and 3, each past one more epoch, at a random moment
            wait_for(lambda k=kill: checkpoint_epoch(home) >= k and worker(home, job, attempt=k + 1))
            time.sleep(rng.uniform(0.0, 1.0))
            [(pid, status)] = db(home, "select worker_pid, status from jobs where id=?", job)
            assert status == "running", f"the job ended before kill {kill}"
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda k=kill: db(home, "select attempt from jobs where id=?", job)[0][0] >= k + 2)
        result = wait_for(lambda: ended(home, job), timeout=600)
    finally:
        process.kill()
        process.wait()
    final = json.loads(aimass(home, "jobs", "show", job, "--json").stdout)
    assert result == "succeeded", final
    assert final["attempt"] == 4
    kinds = [e["kind"] for e in final["events"]]
    assert kinds[:6] == ["queued", "started", "pause_requested", "paused", "resume_requested", "resumed"]
    assert kinds.count("interrupted") == 2 and kinds.count("resumed") == 3
    assert kinds.count("succeeded") == 1 and kinds[-1] == "succeeded"
    for key in ("accuracy", "macro_f1"):
        assert final["result"]["metrics"][key] == reference["result"]["metrics"][key]
    assert db(home, "select count(*) from model_versions") == [(1,)]  # registered once
    worst = same_model(clean, home)
    assert worst <= 1e-6, f"resumed weights differ from the uninterrupted run's by {worst}"
    assert db(home, "PRAGMA integrity_check") == [("ok",)]
