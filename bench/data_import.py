"""Import speed: 20,000 CSV rows into a stored, validated, digested dataset, against the floor of
any importer measured in the same run (the csv module reading the file and json writing each row
to a JSONL file: no checks, no digest, no manifest).

    python bench/data_import.py            # ~10 s; writes bench/results/data_import.json

Bar: the import takes <= 2.0 s on the 2-core CI machine and <= 8x the floor (it validates every
row, detects the format and encoding, splits, digests and writes the manifest and rejects).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "data_import.json"
ROWS = 20_000


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="aimass-import-"))
    os.environ["AIMASS_HOME"] = str(work / "home")
    from aimass.data import import_dataset

    table = work / "big.csv"
    rows = "".join(f"this is review {i} with words {i * 7},{('pos', 'neg')[i % 2]}\n" for i in range(ROWS))
    table.write_text("text,label\n" + rows, encoding="utf-8")

    def floor() -> None:
        with open(table, newline="", encoding="utf-8") as src, open(work / "floor.jsonl", "w") as dst:
            for row in csv.DictReader(src):
                dst.write(json.dumps(row, ensure_ascii=False) + "\n")

    homes = iter(range(100))

    def ours() -> None:  # a fresh home each time: nothing is found stored already
        os.environ["AIMASS_HOME"] = str(work / f"home{next(homes)}")
        assert import_dataset(table).manifest["counts"]["total"] == ROWS

    seconds, base = best_of(3, ours), best_of(3, floor)
    bars = [
        {"bar": "20,000 rows import <= 2.0 s", "value": round(seconds, 3), "pass": seconds <= 2.0},
        {
            "bar": "import <= 8x the csv+json floor",
            "value": round(seconds / base, 2),
            "pass": seconds / base <= 8,
        },
    ]
    result = {"generated": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": ROWS, "import_s": round(seconds, 3)}
    result.update(floor_s=round(base, 3), bars=bars)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"import {seconds:.3f} s, csv+json floor {base:.3f} s ({seconds / base:.2f}x)")
    for bar in bars:
        print(f"  [{'PASS' if bar['pass'] else 'FAIL'}] {bar['bar']}: {bar['value']}")
    return 0 if all(b["pass"] for b in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
