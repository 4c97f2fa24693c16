"""Auto-learning benchmark: ``aimass auto`` against the default ``aimass train``, measured in the same run.

Rows (each with its bar, PASS/FAIL), every command a subprocess on a fresh, empty AIMASS_HOME
(cold feature cache), timed end to end:

1. ``bbc``: BBC News (bundled folder, 2,225 articles). ``aimass data import`` + ``aimass train`` with
   the default settings (150 s budget) vs ``aimass auto FOLDER --time-budget 5m``.
   Bars: auto's test accuracy >= the default's, and auto's wall time <= 330 s.
2. ``fashion``: Fashion-MNIST, 5,000 training and 2,000 test images (Debian ``dataset-fashion-mnist``,
   as in ``bench/image_quality.py``), written as PNG folders. ``aimass train --task
   image-classification`` with the default settings (300 s budget) vs ``aimass auto FOLDER
   --time-budget 8m``. Bars: auto's test accuracy >= the default's, wall <= 8 min + 10%.
3. ``headlines``: 160 BBC article -> headline pairs as chat JSONL (the first 300 characters of each
   article, a system prompt asking for the headline). ``aimass train --task text-generation`` with the
   default settings (one pass, 600 s budget) vs ``aimass auto FILE --time-budget 5m``, which times a
   LoRA step and plans its steps (at most three passes) to fit the budget. Bars: auto's test
   perplexity <= the default's, wall <= 5 min + 10%. ROUGE-L (on the 8 prompts each evaluation
   answers) is shown beside it, against the base model's.

Both systems import the same data with the same seed, so they share the test split. Each row
records the CPU other processes used while it ran (``other_cores``); on a shared machine a busy row
is slower, and a time-budgeted run then trains fewer epochs, so its accuracy is not comparable.
``accuracy`` is the test accuracy of the model each trained; auto's note also gives its served version (the
``onnx-int8`` child when it passed the gate).

Usage::

    python bench/auto.py                   # ~22 min on 2 cores
    python bench/auto.py --only bbc        # ~8 min
    python bench/auto.py --only headlines  # ~9 min

Prints one table, writes ``bench/results/auto.json`` and exits 0 whatever the bars say.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "auto.json"
PARTS = {
    # part: (label, task, auto budget, wall bar in seconds)
    "bbc": ("BBC News (bundled folder)", "text-classification", "5m", 330.0),
    "fashion": ("Fashion-MNIST 5k/2k (PNG folders)", "image-classification", "8m", 528.0),
    "headlines": ("BBC headlines, 160 chat pairs (JSONL)", "text-generation", "5m", 330.0),
}
console = Console(width=220)


BUSY: dict[str, float] = {}  # core-seconds other processes used while each command ran


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def aimass(home: Path, *args: str) -> tuple[dict, float]:
    """``python -m aimass ARGS --json`` on ``home``; its JSON answer and wall seconds. What the rest
    of the machine used meanwhile (busy CPU minus the command's own) goes to ``BUSY``: on a
    shared machine that explains slow or odd rows."""
    env = {**os.environ, "AIMASS_HOME": str(home), "COLUMNS": "200"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        machine, started = busy_seconds(), time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "aimass", *args, "--json"], env=env, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        BUSY[args[0]] = max(0.0, busy_seconds() - machine - usage.ru_utime - usage.ru_stime)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"aimass {' '.join(args)} failed ({proc.returncode}): {err.read()[-2000:]}")
        return json.loads(out.read()), wall


def busy_note(commands: list[str], wall: float) -> tuple[float, str]:
    """Other processes' CPU while ``commands`` ran, in cores on average, and a note when it matters."""
    cores = sum(BUSY.get(c, 0.0) for c in commands) / max(1.0, wall)
    return round(cores, 2), (
        f"; MACHINE BUSY: other work used {cores:.2f} cores on average" if cores > 0.2 else ""
    )


def data_folder(part: str, work: Path) -> Path:
    if part == "bbc":
        from aimass.data import bbc_news_path

        return bbc_news_path()
    if part == "headlines":
        return headlines_file(work / "headlines.jsonl")
    from aimass.data.bundled import fashion_mnist_folder

    return fashion_mnist_folder(work / "fashion-mnist", train=5000, test=2000, seed=0)


def headlines_file(path: Path, n: int = 160) -> Path:
    from aimass.tasks.text_generation import SYSTEM_HEADLINE, headline_pairs

    with path.open("w", encoding="utf-8") as fh:
        for prompt, headline in zip(*headline_pairs(n, chars=300), strict=True):
            turns = [("system", SYSTEM_HEADLINE), ("user", prompt), ("assistant", headline)]
            fh.write(json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]}) + "\n")
    return path


def scores(metrics: dict) -> dict:
    """What a row compares: a classifier's accuracy and macro-F1, a language model's perplexity and
    ROUGE-L (and its base model's)."""
    keys = ("accuracy", "macro_f1", "perplexity", "rouge_l", "rouge_l_base")
    return {k: metrics[k] for k in keys if k in metrics}


def better_or_equal(mine: dict, reference: dict) -> bool:
    if "accuracy" in reference:
        return mine["accuracy"] >= reference["accuracy"]
    return mine["perplexity"] <= reference["perplexity"]


def default_row(part: str, folder: Path, work: Path) -> dict:
    label, task, _, _ = PARTS[part]
    home = Path(tempfile.mkdtemp(prefix="home-default-", dir=work))
    imported, import_s = aimass(home, "data", "import", str(folder))
    result, train_s = aimass(home, "train", "--data", imported["id"], "--task", task)
    stages = ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items())
    cores, busy = busy_note(["data", "train"], import_s + train_s)
    return {
        "part": part,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": label,
        "system": "aimass train (defaults)",
        **scores(result["metrics"]),
        "wall_s": import_s + train_s,
        "bar": "reference",
        "status": "-",
        "note": f"import {import_s:.1f}s + train {train_s:.1f}s; stages (s): {stages}{busy}",
        "other_cores": cores,
        "dataset_id": imported["id"],
        "stages": result.get("stages"),
    }


def auto_row(part: str, folder: Path, work: Path, reference: dict) -> dict:
    label, _, budget, max_wall = PARTS[part]
    home = Path(tempfile.mkdtemp(prefix="home-auto-", dir=work))
    report, wall = aimass(home, "auto", str(folder), "--time-budget", budget)
    ok = better_or_equal(report["metrics"], reference) and wall <= max_wall
    search, compression = report["search"], report["compression"]
    served = compression["comparison"] if compression.get("kept") else None
    note = [
        f"search: {search['trials']} trials, {search['pruned']} pruned, params {search['best_params']}"
        if not search.get("skipped")
        else f"search skipped: {search['skipped']}",
        f"int8 child {'kept' if compression['kept'] else 'not kept'}: {compression['reason']}"
        if compression["method"]
        else f"compression {compression['reason']}",
        "; ".join(f"{c['what']}: {json.dumps(c['value'], default=str)}" for c in report["choices"][2:]),
        "phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items()),
    ]
    if served is not None:
        note.insert(2, f"served {report['chosen']}: accuracy drop {served['accuracy_drop_points']:.2f} pts")
    cores, busy = busy_note(["auto"], wall)
    return {
        "part": part,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": label,
        "system": f"aimass auto --time-budget {budget}",
        **scores(report["metrics"]),
        "wall_s": wall,
        "bar": (
            f"acc >= default ({reference['accuracy']:.4f})"
            if "accuracy" in reference
            else f"perplexity <= default ({reference['perplexity']:.2f})"
        )
        + f" and wall <= {max_wall:.0f}s",
        "status": "PASS" if ok else "FAIL",
        "note": "; ".join(note) + busy,
        "other_cores": cores,
        "dataset_id": report["dataset"]["id"],
        "report": report,
    }


def bench(part: str, work: Path) -> list[dict]:
    label = PARTS[part][0]
    try:
        folder = data_folder(part, work)
        reference = default_row(part, folder, work)
    except Exception as exc:
        return [error_row(part, label, "aimass train (defaults)", exc)]
    try:
        return [reference, auto_row(part, folder, work, reference)]
    except Exception as exc:
        return [reference, error_row(part, label, f"aimass auto --time-budget {PARTS[part][2]}", exc)]


def error_row(part: str, label: str, system: str, exc: BaseException) -> dict:
    return {
        "part": part,
        "dataset": label,
        "system": system,
        "bar": "",
        "status": "ERROR",
        "note": f"{type(exc).__name__}: {exc}"[:600],
        "error": traceback.format_exc()[-4000:],
    }


def kept_rows(parts: list[str]) -> list[dict]:
    """With ``--only``, the other parts' rows of the previous results file (each row keeps its date)."""
    if not RESULTS.exists():
        return []
    previous = json.loads(RESULTS.read_text())
    return [
        {**r, "generated": r.get("generated", previous["generated"])}
        for r in previous["rows"]
        if r["part"] not in parts
    ]


def render(rows: list[dict]) -> None:
    table = Table(title="aimass auto vs the default train (fresh AIMASS_HOME each)")
    for column in ("dataset", "system", "accuracy", "macro-F1", "perplexity", "ROUGE-L (base)", "wall s"):
        table.add_column(column, overflow="fold")
    for column in ("bar", "status", "note"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r["dataset"],
            r["system"],
            f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "",
            f"{r['macro_f1']:.4f}" if r.get("macro_f1") is not None else "",
            f"{r['perplexity']:.2f}" if r.get("perplexity") is not None else "",
            f"{r['rouge_l']:.4f} ({r['rouge_l_base']:.4f})" if r.get("rouge_l") is not None else "",
            f"{r['wall_s']:.1f}" if r.get("wall_s") is not None else "",
            r["bar"],
            r["status"],
            r.get("note", ""),
        )
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=tuple(PARTS))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aimass-bench-auto-"))
    atexit.register(shutil.rmtree, work, True)  # models, data, backbone copies
    started = time.perf_counter()
    rows: list[dict] = []
    parts = args.only or list(PARTS)
    for part in parts:
        rows += bench(part, work)
    rows = kept_rows(parts) + rows
    render(rows)
    import torch

    RESULTS.parent.mkdir(exist_ok=True)
    out = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "total_wall_s": time.perf_counter() - started,
        "versions": {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(out, indent=2, default=str))
    failed = [f"{r['dataset']}: {r['system']}" for r in rows if r["status"] in ("FAIL", "ERROR")]
    print("failed bars:", "; ".join(failed) if failed else "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
