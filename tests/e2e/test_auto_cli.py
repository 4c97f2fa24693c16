"""``aimass auto`` as a process: what stops it (SIGTERM from ``timeout``, systemd, ``docker stop``)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from tests.conftest import bbc_sample, shared_backbones, write_csv


def run_rows(database) -> list[tuple]:
    """(status, error) of every training run the process recorded so far (none before its database)."""
    try:
        with sqlite3.connect(database, timeout=1) as db:
            return db.execute("select status, error from runs").fetchall()
    except sqlite3.Error:
        return []


def test_sigterm_during_the_final_fit_marks_its_run_failed(tmp_path):
    """Without a handler SIGTERM killed the process at once and its run stayed 'running' forever."""
    home = shared_backbones(tmp_path / "home")
    texts, labels = bbc_sample(per_class=10, chars=200)
    data = write_csv(tmp_path / "news.csv", zip(texts, labels, strict=True))
    env = {**os.environ, "AIMASS_HOME": str(home)}
    env.pop("AIMASS_SERVER", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aimass", "auto", data, "--time-budget", "60s", "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not run_rows(home / "aimass.db") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert run_rows(home / "aimass.db") == [("running", None)], "the final fit never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert run_rows(home / "aimass.db") == [("failed", "Terminated: stopped by SIGTERM")]
