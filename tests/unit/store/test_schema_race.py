"""Processes that open a new home at the same moment all get its tables: the race between
``create_all``'s "does it exist?" and its CREATE (once a failed job: "table access_policies
already exists") is retried, not raised."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

OPEN = """
import sys, time
from aimass.access import tables
at = float(sys.argv[1])
while time.time() < at:
    pass
with tables.session() as s:  # the registry's tables, then the access tables
    print(len(tables.AccessBase.metadata.tables))
"""


def test_eight_processes_create_one_schema(tmp_path):
    env = {**os.environ, "AIMASS_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    at = str(time.time() + 4)  # after every interpreter has imported sqlalchemy
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN, at], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(8)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    failed = [err.decode()[-600:] for p, (_, err) in zip(procs, outs, strict=True) if p.returncode]
    assert not failed, failed
    counts = {int(out) for out, _ in outs}
    assert len(counts) == 1 and counts.pop() > 3
    with sqlite3.connect(tmp_path / "home" / "aimass.db") as conn:
        names = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert {"jobs", "access_policies", "access_users"} <= names
