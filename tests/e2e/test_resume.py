"""A training run killed with SIGKILL mid-way resumes from its checkpoint and ends where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import bbc_sample


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    import csv

    texts, labels = bbc_sample(per_class=32, chars=400)
    path = tmp_path_factory.mktemp("resume") / "news.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts, labels)])
    return path


def train_cmd(data: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aimass",
        "train",
        "--data",
        str(data),
        "--unfreeze",
        "2",
        "--epochs-top",
        "4",
        "--time-budget",
        "20m",
        "--name",
        "news",
        "--json",
        *extra,
    ]


def run(cmd, home: Path) -> dict:
    env = {**os.environ, "AIMASS_HOME": str(home)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_sigkill_then_resume_matches_uninterrupted(data_csv, tmp_path):
    home = tmp_path / "killed"
    env = {**os.environ, "AIMASS_HOME": str(home)}
    proc = subprocess.Popen(
        train_cmd(data_csv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list(home.glob("runs/*/checkpoint/checkpoint.json")):
        assert proc.poll() is None, "training finished before the first checkpoint could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    [checkpoint] = home.glob("runs/*/checkpoint/checkpoint.json")
    killed_at = json.loads(checkpoint.read_text())["epoch"]
    assert killed_at < 3
    with sqlite3.connect(home / "aimass.db") as db:
        assert db.execute("select status from runs").fetchall() == [("running",)]

    resumed = run(train_cmd(data_csv, "--resume"), home)
    assert resumed["run"] == checkpoint.parts[-3], "the interrupted run was continued, not restarted"
    assert json.loads(checkpoint.read_text())["epoch"] >= killed_at
    with sqlite3.connect(home / "aimass.db") as db:
        assert db.execute("select status from runs").fetchall() == [("succeeded",)]
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)

    straight = run(train_cmd(data_csv), tmp_path / "straight")
    assert resumed["metrics"]["accuracy"] == pytest.approx(straight["metrics"]["accuracy"], abs=1e-9)
    assert resumed["metrics"]["macro_f1"] == pytest.approx(straight["metrics"]["macro_f1"], abs=1e-9)
    assert resumed["stages"]["top"]["best_score"] == pytest.approx(straight["stages"]["top"]["best_score"])
