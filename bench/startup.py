"""Start-up bench: how long a job worker, a CLI command and the server take to import, and what
memory the server holds before it loads a model, against a floor measured in the same run.

Every job is a fresh ``python -m aimass.jobs.worker`` and every CLI command a fresh interpreter, so
what their imports pull in is paid each time; the server's import is paid once but its memory is
held for as long as it runs. The floor is a bare interpreter importing what any of them needs at
least (FastAPI, SQLAlchemy, NumPy, Pydantic): the ratio is aimass's cost over that.

* ``job worker``: ``import aimass.jobs.worker`` (what each job pays before it runs);
* ``aimass data list``: the whole command, on an empty home;
* ``server import``: ``import aimass.serve.app`` (before any model), time and peak RSS.

Usage::

    python bench/startup.py [--runs 5]
    PYTHONPATH=../other/src python bench/startup.py --output before.json   # another checkout's aimass

Prints one table and writes ``bench/results/startup.json``. Bars: a job worker within 3x the floor,
``aimass data list`` within 4x, the server's memory within 4x the floor's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
FLOOR = "import fastapi, sqlalchemy, numpy, pydantic"
CASES = {
    "floor (FastAPI, SQLAlchemy, NumPy, Pydantic)": [sys.executable, "-c", FLOOR],
    "job worker": [sys.executable, "-c", "import aimass.jobs.worker"],
    "aimass data list": [sys.executable, "-m", "aimass", "data", "list"],
    "server import": [sys.executable, "-c", "import aimass.serve.app"],
}
BARS = {"job worker": 3.0, "aimass data list": 4.0}
MEMORY_BAR = 4.0


def measure(command: list[str], runs: int, env: dict) -> dict:
    """Median wall seconds of ``runs`` runs (after one warm-up) and the peak RSS of one, in MB."""
    subprocess.run(command, env=env, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    probe = [
        sys.executable,
        "-c",
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
        *command,
    ]
    rss_kb = int(
        subprocess.run(probe, env=env, check=True, capture_output=True, text=True).stdout.split()[-1]
    )
    return {"seconds": round(statistics.median(times), 3), "rss_mb": round(rss_kb / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AIMASS_HOME": home}
        rows = {name: measure(command, args.runs, env) for name, command in CASES.items()}
    floor = next(iter(rows.values()))
    bars = []
    print(f"{'':48} {'median s':>9} {'x floor':>8} {'peak MB':>8} {'x floor':>8}")
    for name, row in rows.items():
        row["time_ratio"] = round(row["seconds"] / floor["seconds"], 2)
        row["rss_ratio"] = round(row["rss_mb"] / floor["rss_mb"], 2)
        print(
            f"{name:48} {row['seconds']:9.3f} {row['time_ratio']:8.2f}"
            f" {row['rss_mb']:8.1f} {row['rss_ratio']:8.2f}"
        )
        if name in BARS:
            bars.append(
                {
                    "bar": f"{name} within {BARS[name]}x the floor's time",
                    "value": row["time_ratio"],
                    "pass": row["time_ratio"] <= BARS[name],
                }
            )
    server = rows["server import"]["rss_ratio"]
    bars.append(
        {
            "bar": f"server memory before a model within {MEMORY_BAR}x the floor's",
            "value": server,
            "pass": server <= MEMORY_BAR,
        }
    )
    for bar in bars:
        print(f"{'PASS' if bar['pass'] else 'FAIL'}  {bar['bar']}: {bar['value']}")
    result = {
        "bench": "startup",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": args.runs,
        "rows": rows,
        "bars": bars,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
