"""The command line: each command is a thin shell over one function of :mod:`aimass.api`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperCommand

from aimass.cli.shell import JsonFlag, command, emit, err, out
from aimass.cli.shell import table as _table
from aimass.tasks import DEFAULT_TASK

app = typer.Typer(
    help="aimass: labelled data in, a fine-tuned model behind a REST endpoint out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Import and inspect datasets.", no_args_is_help=True)
models_app = typer.Typer(help="List and inspect registered model versions.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")


# ------------------------------------------------------------------- data
@data_app.command("import")
@command
def data_import(
    path: str,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the file name).")] = None,
    text_col: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    label_col: Annotated[str | None, typer.Option(help="Column holding the label.")] = None,
    split_col: Annotated[str | None, typer.Option(help="Column with train/valid/test.")] = None,
    label_sep: Annotated[
        str | None,
        typer.Option(help="Several labels per row, one cell cut here (e.g. ';'); JSON lists need none."),
    ] = None,
    valid_file: Annotated[
        str | None, typer.Option(help="A table of validation rows (then PATH holds the training rows).")
    ] = None,
    test_file: Annotated[
        str | None, typer.Option(help="A table of test rows (then PATH holds the training rows).")
    ] = None,
    seed: int = 0,
    as_json: JsonFlag = False,
):
    """Import a CSV/TSV/JSONL file or a folder of class sub-folders; report every rejected row."""
    from aimass import api

    ds = api.import_dataset(
        path,
        name=name,
        text_col=text_col,
        label_col=label_col,
        split_col=split_col,
        seed=seed,
        valid_path=valid_file,
        test_path=test_file,
        label_sep=label_sep,
    )
    emit({"id": ds.id, **ds.summary()}, as_json, lambda _: out.print(ds.describe()))


@data_app.command("show")
@command
def data_show(dataset_id: str, as_json: JsonFlag = False):
    """Counts per split and class, rejects, language and columns of a stored dataset."""
    from aimass import api

    ds = api.load_dataset(dataset_id)
    emit({"id": ds.id, **ds.summary()}, as_json, lambda _: out.print(ds.describe()))


@data_app.command("list")
@command
def data_list(as_json: JsonFlag = False):
    """Every stored dataset."""
    from aimass import api

    rows = [
        {"id": d.id, "name": ", ".join(d.names), **{k: d.summary().get(k) for k in ("rows", "language")}}
        for d in api.list_datasets()
    ]
    emit(rows, as_json, lambda r: out.print(_table(r, ["id", "name", "rows", "language"])))


@data_app.command("delete")
@command
def data_delete(
    dataset: Annotated[str, typer.Argument(help="The dataset's whole id, or its name (the newest import).")],
    force: Annotated[
        bool, typer.Option(help="Delete it even though registered versions were trained on it.")
    ] = False,
    as_json: JsonFlag = False,
):
    """Delete a stored dataset and the upload it came from (never a file of your own disk)."""
    from aimass import api

    gone = api.delete_dataset(dataset, force=force)

    def show(g):
        out.print(f"Deleted dataset {g['id']} ({', '.join(g['names'])}).")
        if g["uploads_removed"]:
            out.print(f"Removed the upload it came from ({g['uploads_removed']} folder).")
        if g["models"]:
            out.print(f"Trained on it, still registered: {', '.join(g['models'])}.")
        if g["cache_files_removed"]:
            out.print(
                f"Cleared the feature cache ({g['cache_files_removed']} files; the next fit embeds again)."
            )

    emit(gone, as_json, show)


@data_app.command("issues")
@command
def data_issues(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id or name.")],
    model: Annotated[
        str | None, typer.Option(help="NAME[:VERSION]: use this model's predictions, not cross-validation.")
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    threshold: Annotated[float, typer.Option(help="Cosine similarity of a near-duplicate.")] = 0.95,
    hard: Annotated[int, typer.Option(help="Hard examples to list.")] = 20,
    lexical: Annotated[bool, typer.Option(help="Text: add TF-IDF to the embeddings.")] = True,
    network: Annotated[
        bool, typer.Option(help="Entities: the encoder's unit vectors beside the lexical features.")
    ] = True,
    out: Annotated[
        str | None, typer.Option(help="Report folder (default: AIMASS_HOME/reports/issues/ID).")
    ] = None,
    seed: int = 0,
    top: Annotated[int, typer.Option(help="Rows shown per table.")] = 15,
    as_json: JsonFlag = False,
):
    """Likely label errors (confident learning), near-duplicates across splits and hard examples."""
    from aimass import api

    report = api.dataset_issues(
        dataset_id,
        model=model,
        folds=folds,
        threshold=threshold,
        hard=hard,
        lexical=lexical,
        network=network,
        out=out,
        seed=seed,
        progress=not as_json,
    )
    emit(report, as_json, lambda r: _show_issues(r, top))


def _show_issues(report: dict, top: int) -> None:
    c, ds = report["counts"], report["dataset"]
    multi = ds.get("kind") in (
        "multilabel",
        "multilabel-image",
    )  # rows with several labels: a label added or removed
    out.print(
        f"Dataset {ds['name']!r} (id {ds['id']}): {c['rows']:,} rows, {c['label_issues']} likely label "
        f"error(s), {c['near_duplicates']} near-duplicate(s) across splits; out-of-fold "
        f"{'exact match' if multi else 'tag accuracy' if 'micro_f1' in report else 'accuracy'} "
        f"{report['accuracy']:.4f}"
        + (f", entity micro-F1 {report['micro_f1']:.4f}" if "micro_f1" in report else "")
        + f" ({report['method']['probabilities']}, {report['seconds']} s)"
    )
    issue = ["add", "remove"] if multi else ["suggested"]
    tables = (
        ("label_issues", ["row", "split", "label", *issue, "self_confidence", "margin", "item"]),
        ("near_duplicates", ["row", "split", "label", "match_row", "match_label", "similarity", "item"]),
        (
            "hard_examples",
            ["row", "split", "label", "predicted", "unsure" if multi else "runner_up", "margin", "item"],
        ),
    )
    for key, columns in tables:
        rows = [{**r, "item": r["item"][:60]} for r in report[key][:top]]
        rows = [{k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
        if rows:
            more = len(report[key]) - len(rows)
            title = key.replace("_", " ") + (f" (first {len(rows)} of {len(report[key])})" if more else "")
            out.print(_table(rows, columns, title=title))
    out.print("Report: " + ", ".join(report["files"].values()))
    if c["label_issues"]:
        out.print(f"Act on it: aimass data fix {ds['id']} {report['files']['json']} --relabel (or --drop)")


@data_app.command("fix")
@command
def data_fix(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id or name the report was made for.")],
    issues: Annotated[str, typer.Argument(help="The issues.json written by `aimass data issues`.")],
    drop: Annotated[bool, typer.Option(help="Drop the rows flagged as label issues.")] = False,
    relabel: Annotated[bool, typer.Option(help="Give flagged rows their suggested label.")] = False,
    duplicates: Annotated[
        bool, typer.Option(help="Drop valid/test rows that near-duplicate a train row.")
    ] = False,
    row: Annotated[list[int] | None, typer.Option(help="Only this row of the report (repeatable).")] = None,
    name: Annotated[
        str | None, typer.Option(help="Name of the new version (default: the dataset's).")
    ] = None,
    as_json: JsonFlag = False,
):
    """A new dataset version with the reported rows dropped or relabelled; the parent is kept."""
    from aimass import api

    ds = api.fix_dataset(
        dataset_id, issues, drop=drop, relabel=relabel, duplicates=duplicates, rows=row, name=name
    )
    emit({"id": ds.id, **ds.summary()}, as_json, lambda _: out.print(ds.describe()))


# ------------------------------------------------------------------ train
def _task_names(incomplete: str) -> list[str]:
    """``--task`` completion from the registry (an unknown name is the registry's own error,
    naming every task; ``aimass tasks`` lists them with their options)."""
    from aimass.tasks import available_tasks

    return [t for t in available_tasks() if t.startswith(incomplete)]


class _TaskChoicesHelp(TyperCommand):
    """``--help`` lists the registered tasks under ``--task``: read from the registry only when
    help is shown, so a plain command does not import every task."""

    def format_help(self, ctx, formatter):
        from aimass.tasks import available_tasks

        for param in self.params:
            if param.name == "task":
                names = " | ".join(available_tasks())
                param.help = f"Task type: {names}. `aimass tasks` lists their options."
        super().format_help(ctx, formatter)


@app.command(cls=_TaskChoicesHelp)
@command
def train(
    data: Annotated[str, typer.Option(help="Dataset id or name, or a file/folder to import.")],
    task: Annotated[
        str | None,
        typer.Option(
            metavar="TASK",
            autocompletion=_task_names,
            help="Task type; `aimass tasks` lists every task and its options "
            f"(default: the one the data's kind calls for, {DEFAULT_TASK} for texts with one label each; "
            "with --from, the version's).",
        ),
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(help="auto, a backbone name, hf:ORG/NAME or a folder (default: the task's).")
    ] = None,
    time_budget: Annotated[
        str | None,
        typer.Option(
            help="Wall-time budget for training, e.g. 90s, 5m (default: the task's, 150s for text)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: the dataset name).")] = None,
    seed: int = 0,
    unfreeze: Annotated[
        int | None,
        typer.Option(help="Top encoder blocks/stages to fine-tune after the head (default: auto)."),
    ] = None,
    epochs_top: Annotated[
        int | None, typer.Option(help="Stage-2 epochs (default: planned from the time budget).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run with the same settings.")] = False,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="NAME:VERSION to continue on the new --data (new classes welcome) instead of training "
            "from scratch; the new version names it as its parent.",
        ),
    ] = None,
    replay: Annotated[
        int | None,
        typer.Option(
            help="With --from: old training rows per class replayed beside the new data (default 200)."
        ),
    ] = None,
    valid_data: Annotated[
        str | None,
        typer.Option(
            help="text-generation: conversations (dataset or file) to validate and test on; "
            "then every conversation of --data trains."
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any option of the task KEY=VALUE (repeatable), e.g. --set lr_head=0.001; "
            "`aimass tasks` lists them with their defaults.",
        ),
    ] = None,
    as_json: JsonFlag = False,
):
    """Fine-tune, evaluate on the held-out test split and register a new model version."""
    from aimass import api

    given = {"backbone": backbone, "time_budget": time_budget, "unfreeze": unfreeze, "epochs_top": epochs_top}
    params = {
        **{k: v for k, v in given.items() if v is not None},
        **task_options(task, option or []),  # no --task: checked once the data names the task
    }
    params["seed"] = params.pop("seed", seed)
    result = api.train_model(
        task,
        data,
        name=name,
        resume=resume,
        progress=not as_json,
        continue_from=from_,
        replay=replay,
        valid_data=valid_data,
        **params,
    )
    emit(result, as_json, _show_train)


def task_options(task: str | None, pairs: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs checked against the task's options (``Task.options()``); with no
    task, as given (``train_model`` checks them against the task the data calls for)."""
    from aimass.cli.compress import settings
    from aimass.workflow import check_options

    given = settings(pairs)
    if given and task is not None:
        check_options(task, given)
    return given


@app.command("tasks")
@command
def tasks_list(as_json: JsonFlag = False):
    """Every task type, with the options `aimass train --task TASK --set KEY=VALUE` takes."""
    from aimass.tasks import available_tasks, get_task

    rows = [{"task": name, "options": get_task(name).options()} for name in available_tasks()]

    def show(rows_):
        for row in rows_:
            out.print(f"[bold]{row['task']}[/]")
            for key, default in row["options"].items():
                out.print(f"  --set {key}=...   (default: {default!r})")

    emit(rows, as_json, show)


def _show_train(result: dict) -> None:
    m = result["metrics"]
    if "accuracy" not in m and "micro_f1" not in m:  # text-generation: loss, perplexity, ROUGE-L
        out.print(
            f"[bold green]Registered {result['model']}[/]  test "
            + "  ".join(f"{k} {v}" for k, v in m.items())
        )
        out.print(f"Artifacts: {result['path']}")
        return
    out.print(f"[bold green]Registered {result['model']}[/]  test {_headline(m)}")
    out.print("Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items()))
    _show_continued(result)
    for stage, info in result["stages"].items():
        note = (
            f"skipped ({info['skipped']})"
            if info["skipped"]
            else (f"best valid macro-F1 {info['best_score']:.4f} after {info['epochs']} epoch(s)")
        )
        out.print(f"  {stage}: {note}")
    _show_portfolio(result.get("portfolio"))
    out.print(f"Artifacts: {result['path']}")


def _show_continued(result: dict) -> None:
    """What a continued fit kept and learned: the old test split (parent vs child), the new one."""
    if "parent" not in result or "new_test" not in result:
        return
    replay = result.get("replay", {})
    score = result["new_test"].get("metric", "accuracy").replace("micro_f1", "micro-F1")
    out.print(
        f"Continued from {result['parent']}, replaying {replay.get('rows', 0)} old training row(s); {score}:"
    )
    old = result.get("old_test")
    if old:
        out.print(
            f"  old test (n={old['n']}): parent {old['parent']:.4f} -> {old['child']:.4f}  "
            f"forgetting {result['forgetting']:.2f} points"
        )
        out.print(f"  all test (n={result['all_test']['n']}): {result['all_test']['child']:.4f}")
    new = result["new_test"]
    out.print(f"  new test (n={new['n']}): {new['child']:.4f}")


def _headline(m: dict) -> str:
    """A classifier's test scores in one line (a multi-label one's micro-F1 first)."""
    if "accuracy" not in m:  # entities: each one right when its span and label are
        return (
            f"entity micro-F1 {m['micro_f1']:.4f}  precision {m['precision']:.4f}  "
            f"recall {m['recall']:.4f}  macro-F1 {m['macro_f1']:.4f}  (n={m['n']} texts)"
        )
    if "micro_f1" in m:
        return (
            f"micro-F1 {m['micro_f1']:.4f}  exact match {m['accuracy']:.4f}  "
            f"macro-F1 {m['macro_f1']:.4f}  (n={m['n']}, threshold {m['threshold']})"
        )
    return f"accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  (n={m['n']})"


def _show_portfolio(portfolio: dict | None) -> None:
    """The candidates the fit compared on the validation split, and the one it kept."""
    if not portfolio:
        return
    rows = [
        {
            "candidate": name,
            "valid accuracy": c.get("accuracy", ""),
            "valid macro-F1": c.get("macro_f1", ""),
            "valid micro-F1": c.get("micro_f1", ""),
            "chosen": "yes" if name == portfolio["chosen"] else "",
            "note": c.get("note", ""),
        }
        for name, c in portfolio["candidates"].items()
    ]
    columns = ["candidate", "valid accuracy", "valid macro-F1", "chosen", "note"]
    if any(row["valid micro-F1"] != "" for row in rows):  # multi-label: picked by micro-F1
        columns[1:1] = ["valid micro-F1"]
    out.print(_table(rows, columns, title="Candidates"))


# --------------------------------------------------------------- evaluate
@app.command()
@command
def evaluate(
    model: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    data: Annotated[str | None, typer.Option(help="Dataset id/name or a CSV/TSV/JSONL file.")] = None,
    as_json: JsonFlag = False,
):
    """Accuracy, macro-F1, per-class scores, confusion matrix and top losses (a language model:
    loss, perplexity, ROUGE-L against its base)."""
    from aimass import api

    report = api.evaluate(model, data)
    emit(report, as_json, _show_report)
    for warning in report.get("warnings") or []:  # a language model's conversations cut to its context
        err.print(f"[yellow]Warning:[/] {escape(str(warning))}")
    if report.get("overlap_with_train"):
        err.print(
            f"[yellow]Warning:[/] {report['overlap_with_train']} of the {report['n']} rows evaluated are "
            f"rows {model} was trained or validated on (overlap_with_train): these scores overstate "
            f"how it does on new data. Evaluate on data it never saw, e.g. `aimass evaluate {model}` "
            "(its held-out test split)."
        )


TOP_LOSSES = 10  # rows of the report's top losses shown (docs/evaluation.md)


def _show_report(report: dict) -> None:
    if "top_errors" in report:  # entities
        _show_entity_report(report)
        return
    if "accuracy" not in report:  # a language model's: loss, perplexity, ROUGE-L, base vs fine-tuned
        rows = [
            {"metric": "loss", "fine-tuned": report["loss"], "base model": report.get("loss_base")},
            {
                "metric": "perplexity",
                "fine-tuned": report["perplexity"],
                "base model": report.get("perplexity_base"),
            },
            {"metric": "rouge_l", "fine-tuned": report["rouge_l"], "base model": report["rouge_l_base"]},
            {"metric": "exact_match", "fine-tuned": report["exact_match"], "base model": None},
        ]
        scored = report.get("n_scored", report["n"])
        sampled = f" (a sample of {scored} scored)" if scored < report["n"] else ""
        title = (
            f"Held-out: {report['n']} examples{sampled}, {report['n_generated']} answered, "
            f"{report['seconds']}s"
        )
        out.print(_table(rows, ["metric", "fine-tuned", "base model"], title=title))
        side = report.get("side_by_side") or []
        if side:
            out.print(_table(side[:5], ["prompt", "reference", "base", "fine_tuned"], title="Side by side"))
        return
    out.print(_headline(report))
    rows = [{"class": c, **v} for c, v in report["per_class"].items()]
    out.print(_table(rows, ["class", "precision", "recall", "f1", "support"]))
    if "confusion_matrix" not in report:  # multi-label: a row's labels are right or wrong one by one
        item = "image" if any("image" in r for r in report["top_losses"]) else "text"
        losses = [
            {
                **r,
                "actual": ", ".join(r["actual"]),
                "predicted": ", ".join(r["predicted"]),
                item: r[item][:80],
            }
            for r in report["top_losses"][:TOP_LOSSES]
        ]
        if losses:
            out.print(_table(losses, ["actual", "predicted", "loss", item], title="Top losses"))
        _show_portfolio(report.get("portfolio"))
        return
    cm = report["confusion_matrix"]
    grid = [
        {"actual \\ predicted": label, **dict(zip(cm["labels"], row))}
        for label, row in zip(cm["labels"], cm["matrix"])
    ]
    out.print(_table(grid, ["actual \\ predicted", *cm["labels"]]))
    losses = report.get("top_losses", [])[:TOP_LOSSES]
    item = "image" if any("image" in r for r in losses) else "text"
    rows = [
        {
            **r,
            "p(actual)": r.get("p_true", round(math.exp(-r["loss"]), 4)),  # a report stored before p_true
            "predicted (p)": f"{r['predicted']} ({r['probability']:.2f})",
            item: r[item][:80],
        }
        for r in losses
    ]
    if rows:
        columns = ["actual", "p(actual)", "predicted (p)", "loss", item]
        out.print(_table(rows, columns, title="Top losses: highest loss first"))
    _show_portfolio(report.get("portfolio"))


def _show_entity_report(report: dict) -> None:
    """An entity tagger's scores per label and the texts with the most errors."""
    out.print(_headline(report))
    rows = [{"label": c, **v} for c, v in report["per_class"].items()]
    out.print(_table(rows, ["label", "precision", "recall", "f1", "support"]))
    errors = [
        {
            "missed": ", ".join(f"{e[3]} ({e[2]})" for e in r["missed"]),
            "wrong": ", ".join(f"{e[3]} ({e[2]})" for e in r["wrong"]),
            "text": r["text"][:80],
        }
        for r in report["top_errors"][:5]
    ]
    if errors:
        out.print(_table(errors, ["missed", "wrong", "text"], title="Texts with the most errors"))
    _show_portfolio(report.get("portfolio"))


# ---------------------------------------------------------------- predict
@app.command()
@command
def predict(
    model: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    inputs: Annotated[
        list[str] | None, typer.Argument(help="Texts or document files (image models: image files).")
    ] = None,
    as_json: JsonFlag = False,
    schema: Annotated[
        Path | None, typer.Option(help="Language models: a JSON Schema file the answer follows.")
    ] = None,
    regex: Annotated[str | None, typer.Option(help="Language models: a pattern the answer matches.")] = None,
    choice: Annotated[
        list[str] | None, typer.Option(help="Language models: an allowed answer (repeat the option).")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            help="Score every row of this CSV/TSV/JSONL (or image of this folder) into a CSV, as a job."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="With --file: the CSV written (default FILE.predictions.csv), in a folder that exists.",
        ),
    ] = None,
    text_col: Annotated[str | None, typer.Option(help="With --file: the column holding the text.")] = None,
):
    """Predict labels (with probabilities), or a language model's answers, for the given inputs;
    with --file, for every row of a table (a durable job: killed, it goes on where it stopped)."""
    from aimass import api
    from aimass.errors import ConfigError
    from aimass.tasks import get_task

    if (file is None) == (not inputs):
        raise ConfigError(
            "Give inputs to predict, or --file with a table of them, one of the two.",
            hint='e.g. aimass predict reviews "great product", or aimass predict reviews --file new.csv',
        )
    if file is not None:
        emit(_predict_file(model, file, output, text_col, as_json), as_json, _render_scored)
        return
    estimator = api.load(model)
    constrained = {
        "schema": _schema_file(schema) if schema else None,
        "regex": regex,
        "choices": choice or None,
    }
    if any(v is not None for v in constrained.values()):
        if not hasattr(estimator, "generate"):
            raise ConfigError(
                "--schema, --regex and --choice apply to language models.",
                hint=f"{model} is a {estimator.task} model.",
            )
        body = {
            "predictions": [{"text": estimator.generate(i, **constrained).choices[0].text} for i in inputs]
        }
    else:
        spec = get_task(estimator.task)
        handler = spec.handler(model=estimator)
        body = handler.encode_response(handler.predict(spec.cli_inputs(inputs)))
    emit(body, as_json, lambda b: out.print(_prediction_table(inputs, b["predictions"])))


def _predict_file(model: str, file: Path, output: Path | None, text_col: str | None, as_json: bool) -> dict:
    """Run a ``predict`` job on ``file`` here and copy its CSV to ``output``, checked before the job
    starts (a folder that does not exist, a folder, the input itself: a ConfigError naming it)."""
    import shutil

    from aimass import jobs
    from aimass.jobs.kinds import PREDICTIONS
    from aimass.jobs.logs import run_dir
    from aimass.scoring import check_output

    target = check_output(output or file.with_name(f"{file.stem}.predictions.csv"), file)
    params = {"model": model, "path": str(file.expanduser().resolve())}
    params.update({"text_col": text_col} if text_col else {})
    job = jobs.submit("predict", params)
    job = jobs.run_foreground(
        job["id"], echo=None if as_json else lambda t: (sys.stdout.write(t), sys.stdout.flush())
    )
    if job["status"] != "succeeded":
        from aimass.errors import JobError

        error = job.get("error") or {}
        raise JobError(
            f"Job {job['id']} {job['status']}: {error.get('message', '')}",
            code=error.get("cause") or "job_failed",
            hint=error.get("hint") or f"`aimass jobs show {job['id']}` has its events and log.",
        )
    shutil.copyfile(run_dir(job["id"]) / PREDICTIONS, target)
    return {**job["result"], "output": str(target), "job": job["id"]}


def _render_scored(result: dict, shown: int = 5) -> None:
    """The summary line, then the first ``shown`` unreadable lines with their reasons (all of them
    with --json): a line left out of the output is said where the user looks."""
    rejects = result["rejects"]
    rejected = f"; {len(rejects)} unreadable lines not scored:" if rejects else ""
    verb = "scored" if result.get("classes") else "answered"  # a language model has no classes
    out.print(f"{result['rows']} rows {verb} by {result['model']} -> {result['output']}{rejected}")
    for reject in rejects[:shown]:
        where = f"line {reject['line']}: " if reject["line"] is not None else ""
        out.print(f"  {where}{reject['reason']}", markup=False, highlight=False)
    if len(rejects) > shown:
        out.print(f"  ... and {len(rejects) - shown} more, all listed with --json")


def _schema_file(path: Path) -> dict:
    from aimass.errors import ConfigError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read the JSON Schema in {path}: {exc}", where=str(path)) from None


def _prediction_table(inputs: list[str], predictions: list[dict]):
    if predictions and "labels" in predictions[0]:  # multi-label: every label given, with its score
        rows = [
            {"input": i[:60], "labels": ", ".join(f"{c} {p['scores'][c]:.2f}" for c in p["labels"])}
            for i, p in zip(inputs, predictions)
        ]
        return _table(rows, ["input", "labels"])
    if predictions and "entities" in predictions[0]:  # each entity found, its label and score
        rows = [
            {
                "input": i[:60],
                "entities": ", ".join(f"{e['text']} ({e['label']} {e['score']:.2f})" for e in p["entities"]),
            }
            for i, p in zip(inputs, predictions)
        ]
        return _table(rows, ["input", "entities"])
    if predictions and "label" not in predictions[0]:  # a language model's answers
        return _table(
            [{"input": i[:60], "answer": p["text"]} for i, p in zip(inputs, predictions)], ["input", "answer"]
        )
    rows = [
        {"input": i[:60], "label": p["label"], "score": max(p["scores"].values())}
        for i, p in zip(inputs, predictions)
    ]
    return _table(rows, ["input", "label", "score"])


# ----------------------------------------------------------------- models
@models_app.command("list")
@command
def models_list(as_json: JsonFlag = False):
    """Every registered model version, with the aliases naming it and the compression gate's word."""
    from aimass import api
    from aimass.store import registry

    models = api.list_models()
    named: dict[tuple, list[str]] = {}
    for name in {r["name"] for r in models}:
        for alias, version in registry.aliases(name).items():
            named.setdefault((name, version), []).append(alias)
    rows = [
        {
            "ref": r["ref"],
            "task": r["task"],
            "backbone": r["backbone"],
            "accuracy": r["metrics"].get("accuracy"),
            "macro_f1": r["metrics"].get("macro_f1"),
            "aliases": sorted(named.get((r["name"], r["version"]), [])),
            "gate": (r["metrics"].get("gate") or {}).get("status"),
            "created": r["created"],
        }
        for r in models
    ]
    columns = ["ref", "task", "backbone", "accuracy", "macro_f1", "aliases", "gate", "created"]
    emit(
        rows,
        as_json,
        lambda r: out.print(_table([{**x, "aliases": ", ".join(x["aliases"])} for x in r], columns)),
    )


@models_app.command("show")
@command
def models_show(model: str, as_json: JsonFlag = False):
    """Lineage, parameters and the stored evaluation of one version."""
    from aimass import api

    info = api.show_model(model)

    def render(i):
        for key in (
            "ref",
            "task",
            "backbone",
            "path",
            "run_id",
            "dataset_digest",
            "parent",
            "aimass_version",
            "created",
        ):
            out.print(f"[bold]{key}[/]: {i.get(key)}")
        out.print(f"[bold]params[/]: {json.dumps(i['params'])}")
        if "pulled_from" in i["metrics"]:
            out.print(f"[bold]pulled from[/]: {i['metrics']['pulled_from']}")
        if "compression" in i["metrics"]:
            from aimass.cli.compress import render as show_compression

            show_compression({**i["metrics"]["compression"], "model": i["ref"], "gate": i["metrics"]["gate"]})
        if "evaluation" in i:
            _show_report(i["evaluation"])

    emit(info, as_json, render)


@models_app.command("alias")
@command
def models_alias(
    model: Annotated[str, typer.Argument(help="NAME:VERSION the alias should point at")],
    alias: Annotated[str, typer.Argument(help="e.g. production or staging")],
    force: Annotated[bool, typer.Option(help="Promote a version the compression gate rejected.")] = False,
    as_json: JsonFlag = False,
):
    """Point an alias (production, staging, ...) at a version; deploy it as NAME@ALIAS."""
    from aimass.store import registry

    record = registry.set_alias(model, alias, force=force)
    emit({"alias": f"{record.name}@{alias}", "ref": record.ref}, as_json)


@models_app.command("unalias")
@command
def models_unalias(
    model: Annotated[str, typer.Argument(help="NAME (or NAME:VERSION: the alias must name that version)")],
    alias: Annotated[str, typer.Argument(help="e.g. staging")],
    as_json: JsonFlag = False,
):
    """Remove an alias; services keep serving the version they were deployed with."""
    from aimass.store import registry

    emit(registry.remove_alias(model, alias), as_json)


@models_app.command("delete")
@command
def models_delete(
    model: Annotated[str, typer.Argument(help="NAME:VERSION to delete")],
    force: Annotated[bool, typer.Option(help="Delete the aliases pointing at it too.")] = False,
    as_json: JsonFlag = False,
):
    """Delete a version (record, aliases, files); refused while a service serves it (serving.json)
    or, without --force, while an alias points at it. Its children keep their lineage."""
    from aimass import api
    from aimass.serve.engine import persisted

    served: dict[str, list[str]] = {}
    for service, rows in (persisted() or {}).items():
        for row in rows:
            served.setdefault(str(row.get("ref")), []).append(service)
    done = api.delete_model(model, served=served, force=force)
    emit(done, as_json)


Store = Annotated[str, typer.Argument(help="s3://BUCKET[/PREFIX]; endpoint in AWS_ENDPOINT_URL_S3")]


@models_app.command("push")
@command
def models_push(
    model: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    store: Store,
    as_json: JsonFlag = False,
):
    """Upload a version to S3-compatible storage (MinIO, Ceph, AWS S3) under NAME/vVERSION."""
    from aimass import api

    emit(api.push_model(model, store), as_json)


@models_app.command("pull")
@command
def models_pull(
    url: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX/NAME/vN, or .../NAME for its newest")],
    name: Annotated[str | None, typer.Option(help="Register it under this name (default: its own).")] = None,
    as_json: JsonFlag = False,
):
    """Download a pushed version, check every file's sha256 and register it here."""
    from aimass import api

    emit(api.pull_model(url, name=name), as_json)


@models_app.command("remote")
@command
def models_remote(
    store: Store,
    name: Annotated[str | None, typer.Option(help="Only this model's versions.")] = None,
    as_json: JsonFlag = False,
):
    """The versions pushed to a store."""
    from aimass import api

    rows = [
        {**{k: v[k] for k in ("name", "version", "task", "url")}, "accuracy": v["metrics"].get("accuracy")}
        for v in api.remote_models(store, name)
    ]
    emit(rows, as_json, lambda r: out.print(_table(r, ["name", "version", "task", "accuracy", "url"])))


def main() -> None:  # pragma: no cover
    sys.exit(app())
