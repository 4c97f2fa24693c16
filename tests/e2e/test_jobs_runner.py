"""Twenty jobs, a runner killed with SIGKILL half-way, a second runner: every job ends exactly
once, no script runs twice, and the database stays sound."""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import os, random, sys, time
ledger = os.environ["LEDGER"]
with open(ledger, "a") as f:
    f.write(os.environ["AIMASS_JOB_ID"] + "\\n")
time.sleep(float(sys.argv[1]))
out = os.environ["AIMASS_OUTPUT_DIR"]
open(os.path.join(out, "done.txt"), "w").write(sys.argv[1])
print("slept", sys.argv[1])
"""


def aimass(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIMASS_HOME": str(home), **(env or {})}
    done = subprocess.run([sys.executable, "-m", "aimass", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def rows(home: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(home / "aimass.db", timeout=30) as conn:
        return conn.execute(sql).fetchall()


def test_twenty_jobs_survive_a_killed_runner(tmp_path, bbc_csv):
    home, code, ledger = tmp_path / "home", tmp_path / "code", tmp_path / "ledger.txt"
    code.mkdir()
    (code / "train.py").write_text(SCRIPT)
    aimass(home, "data", "import", str(bbc_csv), "--name", "news")
    submit = ["jobs", "submit", "--code-dir", str(code), "--entry", "train.py", "--data", "news", "--json"]
    first_job = json.loads(aimass(home, *submit, "--", "0.3").stdout)
    # the other 19 through the Python API in one process (19 CLI start-ups took ~40 s)
    more = (
        "import sys; from aimass import jobs\n"
        "for i in range(1, 20):\n"
        "    jobs.submit('custom', {'code': sys.argv[1], 'entry': 'train.py', 'data': 'news',"
        " 'args': [str(0.3 + 0.1 * (i % 5))]})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", more, first_job["params"]["code"]],
        env={**os.environ, "AIMASS_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    env = {**os.environ, "AIMASS_HOME": str(home), "LEDGER": str(ledger)}
    first = subprocess.Popen(
        [sys.executable, "-m", "aimass", "jobs", "runner", "--parallel", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while rows(home, "select count(*) from jobs where status='succeeded'")[0][0] < 8:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    in_flight = rows(home, "select count(*) from jobs where status='running'")[0][0]

    aimass(home, "jobs", "runner", "--parallel", "2", "--until-idle", env={"LEDGER": str(ledger)})

    statuses = rows(home, "select status, count(*) from jobs group by status")
    why = rows(home, "select id, status, attempt, error from jobs where status != 'succeeded'")
    for job_id, *_ in why:
        why += rows(home, f"select kind, attempt, message from job_events where job_id = '{job_id}'")
    assert statuses == [("succeeded", 20)], (statuses, why)
    ends = rows(
        home,
        "select job_id, count(*) from job_events"
        " where kind in ('succeeded','failed','cancelled') group by job_id",
    )
    assert len(ends) == 20 and all(n == 1 for _, n in ends), ends
    runs = collections.Counter(ledger.read_text().split())
    assert len(runs) == 20 and set(runs.values()) == {1}, f"scripts run more than once: {runs}"
    for (job_id,) in rows(home, "select id from jobs"):
        assert (home / "jobs" / job_id / "output" / "done.txt").exists()
    assert rows(home, "PRAGMA integrity_check") == [("ok",)]
    listed = json.loads(aimass(home, "jobs", "list", "--json").stdout)
    assert len(listed) == 20
    print(f"{in_flight} job(s) were running when the first runner was killed")
