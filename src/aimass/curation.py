"""Data curation: likely label errors, near-duplicates across splits and hard examples of a stored
dataset (:func:`dataset_issues`), and a new dataset version with them fixed (:func:`fix_dataset`).

The probabilities are out of fold: a 5-fold logistic regression on the frozen backbone's cached
features (for text, with the TF-IDF beside them), so every row is judged by a model that never saw
it; ``model=`` uses a registered model's predictions instead. The detector is confident learning
(:mod:`aimass.evaluation.label_issues`).

>>> report = dataset_issues("bbc-news")                                   # doctest: +SKIP
>>> [(i["row"], i["label"], i["suggested"]) for i in report["label_issues"][:2]]  # doctest: +SKIP
[(1432, 'sport', 'business'), (87, 'tech', 'business')]
>>> fixed = fix_dataset("bbc-news", report, relabel=True)                 # doctest: +SKIP
>>> fixed.manifest["parent"]["id"], fixed.manifest["changes"]["relabelled"]  # doctest: +SKIP
('5d41402abc4b', 31)
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from aimass.data import Dataset, load_dataset, removal
from aimass.data.dataset import KINDS
from aimass.data.multilabel import KINDS as MULTI_KINDS
from aimass.data.multilabel import split_labels, strata
from aimass.data.revise import revise_dataset
from aimass.data.storage import atomic_write
from aimass.errors import ConfigError, DataError, NotFoundError
from aimass.evaluation import label_issues as cl
from aimass.evaluation.metrics import decide, multi_hot
from aimass.store import registry
from aimass.tasks import available_tasks, get_task

DUPLICATE_THRESHOLD = 0.95
HARD_EXAMPLES = 20
SNIPPET = 200
FORMAT = 1


def dataset_issues(
    data: Dataset | str,
    *,
    model: str | None = None,
    folds: int = 5,
    seed: int = 0,
    lexical: bool = True,
    network: bool = True,
    threshold: float = DUPLICATE_THRESHOLD,
    hard: int = HARD_EXAMPLES,
    out: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """Find likely label errors, near-duplicates across splits and hard examples; write the report.

    Args:
        data: A stored dataset (or its id or name).
        model: ``NAME[:VERSION]`` of a registered model whose predictions to use instead of
            cross-validation (rows it trained on are then judged in sample).
        folds: Cross-validation folds.
        seed: Seed of the folds.
        lexical: Text: add the TF-IDF of the texts to the embeddings.
        network: Entities: the CRF sees the encoder's unit vectors beside the lexical features
            (False: the lexical CRF alone, about 2.5x faster, finds fewer).
        threshold: Cosine similarity from which a valid/test row is a near-duplicate of a train row.
        hard: How many hard examples (lowest margin between the top two classes) to list.
        out: Folder for ``issues.json``, ``issues.csv`` (and ``issues.png`` for images); default
            ``AIMASS_HOME/reports/issues/<dataset id>``.
        progress: Show a progress bar while embedding.

    Returns:
        The report: ``label_issues`` (worst first), ``near_duplicates``, ``hard_examples``, the class
        ``thresholds``, the ``confident_joint``, counts, the method and the ``files`` written.

    Raises:
        ConfigError: Invalid folds, threshold or count.
        DataError: The dataset holds no classification data, or a class is too small to cross-validate.
        NotFoundError: No such dataset or model.
    """
    _check_options(folds, threshold, hard)
    began = time.perf_counter()
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    options = {"model": model, "folds": folds, "seed": seed, "hard": hard, "threshold": threshold}
    found = _task_issues(ds, out, began, network=network, progress=progress, **options)
    if found is not None:
        return found
    spec, (embeddings, extra) = _features(ds, lexical, progress)
    index = {c: i for i, c in enumerate(ds.classes)}
    multi = ds.kind in MULTI_KINDS
    labels = _targets(ds) if multi else np.array([index[label] for label in ds.labels()])
    if model is None:
        features = stack_features(embeddings, extra)
        proba = (
            cl.out_of_fold_multilabel(features, labels, strata=strata(ds.rows()), folds=folds, seed=seed)
            if multi
            else cl.out_of_fold_proba(features, labels, len(index), folds=folds, seed=seed)
        )
        method = {
            "probabilities": "cross-validation",
            "folds": folds,
            "seed": seed,
            "lexical": extra is not None,
        }
    else:
        proba, method = _model_proba(model, ds, index)
    report = (_multi_report if multi else _report)(ds, labels, proba, embeddings, threshold, hard)
    report["method"] = {
        **method,
        "detector": "confident learning (prune by noise rate"
        + (", one-vs-rest per label)" if multi else ")"),
        "threshold": threshold,
    }
    report["seconds"] = round(time.perf_counter() - began, 2)
    report["files"] = _write(report, spec, ds, Path(out) if out else report_folder(ds.id))
    return report


def _task_issues(ds: Dataset, out, began: float, **options) -> dict | None:
    """The report of the first task of this kind of data that finds its rows' issues itself
    (:meth:`aimass.tasks.base.Task.issues`: a text's entities), headed and written; else None."""
    for name in available_tasks():
        spec = get_task(name)
        found = spec.issues(ds, snippet=SNIPPET, **options) if spec.data_kind == ds.kind else None
        if found is not None:
            rows = len(ds.rows())
            head = _head(ds, rows, found["label_issues"], found["near_duplicates"], found["hard_examples"])
            report = {**head, **found, "seconds": round(time.perf_counter() - began, 2)}
            report["files"] = _write(report, spec, ds, Path(out) if out else report_folder(ds.id))
            return report
    return None


class IssueOptions(BaseModel):
    """What an ``issues`` job may set (:func:`dataset_issues`'s options): checked when it is submitted."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None
    folds: int = 5
    seed: int = 0
    lexical: bool = True
    network: bool = True
    threshold: float | int = DUPLICATE_THRESHOLD
    hard: int = HARD_EXAMPLES


def check_options(options: dict) -> dict:
    """``options`` as :class:`IssueOptions` takes them, each value in range; ConfigError naming the
    first bad one otherwise (an unknown name, a string for a number, folds outside [2, 50]...)."""
    try:
        checked = IssueOptions.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"the issues option {field!r} is invalid: {first['msg']}",
            hint=f"The options are {', '.join(IssueOptions.model_fields)} (see `aimass data issues --help`).",
        ) from None
    _check_options(checked.folds, checked.threshold, checked.hard)
    return options


def report_folder(dataset_id: str) -> Path:
    """Where a dataset's issues report is written by default: ``AIMASS_HOME/reports/issues/<id>``
    (the data layer's :func:`aimass.data.removal.report_folder`, which a delete removes)."""
    return removal.report_folder(dataset_id)


def stored_issues(data: Dataset | str) -> dict:
    """The issues report last written to the default folder for this dataset version.

    Raises:
        NotFoundError: No such dataset, or no report made for it yet.
    """
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    path = report_folder(ds.id) / "issues.json"
    if not path.is_file():
        raise NotFoundError(
            f"no issues report for dataset {ds.id} ({ds.name}) yet",
            hint=f"Run `aimass data issues {ds.id}`, or submit a job of kind 'issues' with data={ds.id!r}.",
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _check_options(folds: int, threshold: float, hard: int) -> None:
    if not 2 <= folds <= 50:
        raise ConfigError(f"folds must be an int in [2, 50]. Got {folds} instead.", hint="Use 5 or 10.")
    if not 0 < threshold <= 1:
        raise ConfigError(
            f"threshold must be a float in (0, 1]. Got {threshold} instead.",
            hint="Cosine similarity: 0.95 finds near-copies, 1.0 only exact ones.",
        )
    if hard < 0:
        raise ConfigError(f"hard must be an int >= 0. Got {hard} instead.", hint="Use 20, or 0 for none.")


def _features(ds: Dataset, lexical: bool, progress: bool):
    """(the task spec that embedded it, its features): the first task of this kind of data that has them."""
    for name in available_tasks():
        spec = get_task(name)
        if spec.data_kind == ds.kind:
            found = spec.features(ds, lexical=lexical, progress=progress)
            if found is not None:
                return spec, found
    raise DataError(
        f"dataset {ds.name!r} holds {ds.kind} data; label issues are found in classification datasets",
        hint="Import a text or image classification dataset (a label per row).",
    )


def stack_features(embeddings: np.ndarray, extra):
    """The embeddings beside the sparse extra features (if any), as one matrix to fit on."""
    if extra is None:
        return embeddings
    from scipy import sparse  # heavy: scipy

    return sparse.hstack([sparse.csr_matrix(embeddings), extra], format="csr")


def _model_proba(ref: str, ds: Dataset, index: dict) -> tuple[np.ndarray, dict]:
    """A registered model's probabilities over the dataset's classes, and the method entry."""
    record = registry.get_version(ref)
    spec = get_task(record.task)
    if spec.data_kind != ds.kind:
        raise DataError(
            f"model {record.ref} reads {spec.data_kind} data; dataset {ds.name!r} holds {ds.kind}",
            hint="Pick a model trained on this kind of data, or leave out --model.",
        )
    model = spec.estimator.load(registry.open_folder(record))
    missing = sorted(set(index) - set(model.classes_))
    if missing:
        raise DataError(
            f"model {record.ref} does not know the class(es) {missing} of dataset {ds.name!r}",
            hint="Use a model trained on these classes, or leave out --model to cross-validate.",
        )
    given = np.asarray(model.predict_proba(ds.inputs()), dtype=float)
    proba = np.zeros((len(given), len(index)))
    for column, name in enumerate(model.classes_):
        if name in index:
            proba[:, index[name]] = given[:, column]
    in_sample = record.dataset_digest in _lineage(ds)
    return proba, {"probabilities": f"model {record.ref}", "in_sample_train": in_sample}


def _lineage(ds: Dataset) -> set[str]:
    """The digests of ``ds`` and of every version it was revised from (``data fix``: the manifest's
    ``parent``, its parent's, ...): a model trained on any of them saw these texts, so its
    probabilities on them are in sample. A deleted ancestor ends the walk (its digest still counts)."""
    digests, manifest = {ds.digest}, ds.manifest
    while isinstance(manifest.get("parent"), dict) and manifest["parent"].get("digest") not in digests:
        parent = manifest["parent"]
        digests.add(parent["digest"])
        try:
            manifest = load_dataset(str(parent.get("id"))).manifest
        except NotFoundError:
            break
    return digests


def _report(ds: Dataset, labels, proba, embeddings, threshold: float, hard: int) -> dict:
    classes, rows = ds.classes, ds.rows()
    kind = KINDS[ds.kind]
    mask = cl.find_label_issues(labels, proba)
    issues = [_issue(i, rows[i], kind, classes, labels, proba) for i in cl.rank_issues(labels, proba, mask)]
    dups = _duplicates(rows, kind, embeddings, threshold)
    hardest = [_hard(i, rows[i], kind, classes, proba) for i in cl.hard_examples(proba, hard, exclude=mask)]
    joint = cl.confident_joint(labels, proba)
    return {
        **_head(ds, len(rows), issues, dups, hardest),
        "accuracy": round(float((proba.argmax(1) == labels).mean()), 4),
        "thresholds": {c: round(float(t), 4) for c, t in zip(classes, cl.class_thresholds(labels, proba))},
        "confident_joint": {"labels": classes, "matrix": joint.tolist()},
        "label_issues": issues,
        "near_duplicates": dups,
        "hard_examples": hardest,
    }


def _head(ds: Dataset, n: int, issues: list, dups: list, hardest: list) -> dict:
    """What every report starts with: its format, the dataset it was made for, the counts."""
    counts = {"label_issues": len(issues), "near_duplicates": len(dups), "hard_examples": len(hardest)}
    return {
        "format": FORMAT,
        "dataset": {"id": ds.id, "digest": ds.digest, "name": ds.name, "kind": ds.kind},
        "counts": {"rows": n, **counts},
    }


def _targets(ds: Dataset) -> np.ndarray:
    """A multi-label dataset's labels as ``[rows, classes]`` 0/1."""
    return multi_hot([split_labels(label) for label in ds.labels()], ds.classes)


def _multi_report(ds: Dataset, targets, proba, embeddings, threshold: float, hard: int) -> dict:
    """The report of a multi-label dataset: a row is a likely label error when any of its label
    decisions is (a label given that does not apply, or one missing that does); issues are ranked
    by the probability of the row's label set, the hard examples by their least sure decision."""
    classes, rows = ds.classes, ds.rows()
    cells = cl.find_multilabel_issues(targets, proba)
    quality = cl.label_set_log_likelihood(targets, proba)
    margin = cl.multilabel_margins(targets, proba)
    issues = [
        _multi_issue(i, rows[i], KINDS[ds.kind], classes, cells[i], quality[i], margin[i], proba[i])
        for i in cl.rank_rows(quality, cells.any(1))
    ]
    unsure = np.abs(2 * proba - 1)
    hardest = [
        _multi_hard(i, rows[i], KINDS[ds.kind], classes, proba[i], unsure[i])
        for i in cl.lowest(unsure.min(1), hard, exclude=cells.any(1))
    ]
    dups = _duplicates(rows, KINDS[ds.kind], embeddings, threshold)
    decided = decide(proba, 0.5)
    return {
        **_head(ds, len(rows), issues, dups, hardest),
        "accuracy": round(float((decided == targets).all(1).mean()), 4),  # exact match, labels from 0.5
        "flagged_by_label": {
            c: {
                "missing": int((cells[:, k] & (targets[:, k] == 0)).sum()),
                "wrong": int((cells[:, k] & (targets[:, k] == 1)).sum()),
            }
            for k, c in enumerate(classes)
        },
        "label_issues": issues,
        "near_duplicates": dups,
        "hard_examples": hardest,
    }


def _multi_issue(i: int, row: dict, kind, classes: list[str], cells, quality: float, margin, proba) -> dict:
    given = set(split_labels(row["label"]))
    flagged = {classes[k] for k in np.flatnonzero(cells)}
    # every flagged decision turned; when that leaves none, the model's best label (a row has one)
    suggested = given ^ flagged or {classes[int(np.argmax(proba))]}
    return {
        "row": int(i),
        "split": row["split"],
        "label": row["label"],
        "suggested": "|".join(sorted(suggested)),
        "add": sorted(suggested - given),
        "remove": sorted(given - suggested),
        "self_confidence": round(float(np.exp(quality)), 4),  # of the label set as given
        "margin": round(float(margin[cells].min()), 4),
        "item": _item(row, kind),
    }


def _multi_hard(i: int, row: dict, kind, classes: list[str], proba, unsure) -> dict:
    k = int(unsure.argmin())
    return {
        "row": int(i),
        "split": row["split"],
        "label": row["label"],
        "predicted": "|".join(classes[j] for j in np.flatnonzero(decide(proba[None], 0.5)[0])),
        "unsure": classes[k],  # the label the model is least sure of
        "margin": round(float(unsure[k]), 4),
        "item": _item(row, kind),
    }


def _item(row: dict, kind) -> str:
    """What a person recognises a row by: its text, or the file a stored image came from."""
    value = str(row["source"] if kind.stored_file else row[kind.column])
    return value if len(value) <= SNIPPET else value[:SNIPPET] + "…"


def _issue(i: int, row: dict, kind, classes, labels, proba) -> dict:
    p = proba[i]
    return {
        "row": int(i),
        "split": row["split"],
        "label": row["label"],
        "suggested": classes[int(p.argmax())],
        "self_confidence": round(float(p[labels[i]]), 4),
        "margin": round(float(cl.margins(labels[i : i + 1], proba[i : i + 1])[0]), 4),
        "item": _item(row, kind),
    }


def _hard(i: int, row: dict, kind, classes, proba) -> dict:
    top = np.argsort(-proba[i])[:2]
    return {
        "row": int(i),
        "split": row["split"],
        "label": row["label"],
        "predicted": classes[int(top[0])],
        "runner_up": classes[int(top[1])],
        "margin": round(float(proba[i, top[0]] - proba[i, top[1]]), 4),
        "item": _item(row, kind),
    }


def _duplicates(rows: list[dict], kind, embeddings, threshold: float) -> list[dict]:
    """Valid/test rows whose nearest train row reaches ``threshold``."""
    splits = np.array([row["split"] for row in rows])
    train, other = np.flatnonzero(splits == "train"), np.flatnonzero(splits != "train")
    found = cl.near_duplicates(embeddings[train], embeddings[other], threshold=threshold)
    return [
        {
            "row": int(other[q]),
            "split": rows[other[q]]["split"],
            "label": rows[other[q]]["label"],
            "match_row": int(train[r]),
            "match_label": rows[train[r]]["label"],
            "similarity": round(sim, 4),
            "item": _item(rows[other[q]], kind),
            "match_item": _item(rows[train[r]], kind),
        }
        for q, r, sim in found
    ]


def _write(report: dict, spec, ds: Dataset, folder: Path) -> dict:
    """``issues.json``, ``issues.csv`` and the task's pictures of the label issues."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"json": str(folder / "issues.json"), "csv": str(folder / "issues.csv")}
    pictures = spec.issue_plots(_with_paths(report["label_issues"], ds), folder)
    files.update({f"png{'' if n == 0 else n}": str(p) for n, p in enumerate(pictures)})
    atomic_write(folder / "issues.csv", _csv(report).encode())
    body = json.dumps({**report, "files": files}, indent=2, ensure_ascii=False) + "\n"
    atomic_write(folder / "issues.json", body.encode())
    return files


def _with_paths(issues: list[dict], ds: Dataset) -> list[dict]:
    """The label issues with each row's input as a model reads it (an image's absolute path)."""
    inputs = ds.inputs()
    return [{**issue, "input": inputs[issue["row"]]} for issue in issues]


def _csv(report: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["issue", "row", "split", "label", "suggested", "score", "item"])
    for r in report["label_issues"]:
        writer.writerow(["label", r["row"], r["split"], r["label"], r["suggested"], r["margin"], r["item"]])
    for r in report["near_duplicates"]:
        note = f"train row {r['match_row']} ({r['match_label']})"
        writer.writerow(
            ["near_duplicate", r["row"], r["split"], r["label"], note, r["similarity"], r["item"]]
        )
    for r in report["hard_examples"]:
        writer.writerow(["hard", r["row"], r["split"], r["label"], r["predicted"], r["margin"], r["item"]])
    return buffer.getvalue()


def fix_dataset(
    data: Dataset | str,
    issues: dict | str | Path,
    *,
    drop: bool = False,
    relabel: bool = False,
    duplicates: bool = False,
    rows: list[int] | None = None,
    name: str | None = None,
) -> Dataset:
    """A new dataset version with the reported issues acted on; the parent stays as it is.

    Args:
        data: The dataset the report was made for (or its id or name).
        issues: The report of :func:`dataset_issues`, or the path of its ``issues.json``.
        drop: Drop the rows flagged as label issues.
        relabel: Give the rows flagged as label issues their suggested label.
        duplicates: Drop the valid/test rows that near-duplicate a train row.
        rows: Act only on these row numbers of the report (default: every flagged row).
        name: The new version's name (default: the dataset's).

    Returns:
        The new dataset; its manifest names the parent and ``changes.jsonl`` lists every change.

    Raises:
        ConfigError: Nothing asked, both drop and relabel, or a report made for another version.
    """
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    report, where = _read_report(issues)
    _check_fix(ds, report, where, drop=drop, relabel=relabel, duplicates=duplicates)
    wanted = (
        None
        if rows is None
        else _wanted_rows(report, rows, where, label_issues=drop or relabel, duplicates=duplicates)
    )
    chosen = [r for r in report["label_issues"] if wanted is None or r["row"] in wanted]
    reason = "label issue: given {label}, suggested {suggested} (margin {margin})"
    dropping = {r["row"]: reason.format(**r) for r in chosen} if drop else {}
    relabelling = _relabelling(ds, chosen, where) if relabel else {}
    for r in report["near_duplicates"] if duplicates else []:
        if wanted is None or r["row"] in wanted:
            relabelling.pop(r["row"], None)
            dropping[r["row"]] = (
                f"near-duplicate of train row {r['match_row']} (similarity {r['similarity']})"
            )
    if not dropping and not relabelling:
        raise ConfigError(
            f"the issues report {where} flags no row to change",
            hint="Nothing to fix; pick other rows (`rows`; the CLI's --row) or another kind of issue "
            "(`duplicates`; --duplicates).",
        )
    note = f"fixed from the issues report {where}"
    child = revise_dataset(ds, drop=dropping, relabel=relabelling, name=name, note=note)
    registry.record_dataset(child)
    return child


def _relabelling(ds: Dataset, chosen: list[dict], where: str) -> dict[int, tuple]:
    """Row -> (new label, reason) for the flagged rows ``chosen``; a row whose suggestion is the
    label it has is left as it is. A text with entities gets ``relabel_entities`` (its given
    entities with only the doubted units retagged, :func:`aimass.tasks.entity_issues.merged_entities`),
    never the model's whole output, and a row the report could not merge is refused with its reason."""
    entities = ds.kind == "entities"
    new = "relabel_entities" if entities else "suggested"
    if any(r.get(new) is None and not r.get("relabel_refused") for r in chosen):
        raise ConfigError(
            f"the issues report {where} gives no {new} to relabel with",
            hint=f"Make a new issues report for dataset {ds.id} (`aimass data issues {ds.id}`, or a job "
            "of kind 'issues') and fix with it.",
        )
    refused = {r["row"]: r["relabel_refused"] for r in chosen if r.get("relabel_refused")}
    if refused:
        first = next(iter(refused.items()))
        others = [r["row"] for r in chosen if r["row"] not in refused]
        raise ConfigError(
            f"row(s) {sorted(refused)[:10]} of the issues report {where} cannot be relabelled "
            f"(row {first[0]}: {first[1]})",
            hint="Correct them by hand, or drop them (`drop` with their `rows`; --drop --row N)"
            + (f"; relabel the others: `rows` {others[:20]} (--row N for each)." if others else "."),
        )
    if not entities:
        reason = "label issue: given {label}, suggested {suggested} (margin {margin})"
        return {r["row"]: (r[new], reason.format(**r)) for r in chosen if r["suggested"] != r["label"]}
    return {
        r["row"]: (r[new], f"label issue: retagged {'; '.join(r['relabel_changes'])} (margin {r['margin']})")
        for r in chosen
        if r[new] != r.get("entities")
    }


def _wanted_rows(report: dict, rows: list[int], where: str, *, label_issues: bool, duplicates: bool) -> set:
    """The row numbers asked for, each of which the report must flag for the chosen action."""
    flagged = {r["row"] for r in report["label_issues"]} if label_issues else set()
    flagged |= {r["row"] for r in report["near_duplicates"]} if duplicates else set()
    try:
        wanted = {int(r) for r in rows}
    except (TypeError, ValueError):
        raise ConfigError(
            f"rows must be row numbers; got {list(rows)[:5]}",
            hint="Give the report's row numbers: `rows` [12, 40] (the CLI's --row 12 --row 40).",
        ) from None
    stray = sorted(wanted - flagged)
    if stray:
        raise ConfigError(
            f"row(s) {stray[:5]} are not flagged in the issues report {where} for this action",
            hint="Pick `rows` (the CLI's --row) from the report's `label_issues` for `drop`/`relabel`, or "
            "from its `near_duplicates` for `duplicates`.",
        )
    return wanted


class _Issue(BaseModel):  # what a fix reads of a flagged row (the report holds more)
    model_config = ConfigDict(extra="allow")
    row: int
    label: str
    suggested: str
    margin: float
    suggested_entities: list[list] | None = None  # texts with entities: the spans found
    entities: list[list] | None = None  # texts with entities: the spans given
    relabel_entities: list[list] | None = None  # the given spans, only the doubted units retagged
    relabel_changes: list[str] = []  # what those retags change: "unit: old -> new"
    relabel_refused: str | None = None  # why no merge was made (a person's call)


class _Duplicate(BaseModel):
    model_config = ConfigDict(extra="allow")
    row: int
    match_row: int
    similarity: float


class _Made(BaseModel):
    model_config = ConfigDict(extra="allow")
    digest: str


class _Report(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset: _Made
    label_issues: list[_Issue]
    near_duplicates: list[_Duplicate] = []


def _read_report(issues: dict | str | Path) -> tuple[dict, str]:
    """The report and how to name it; a ConfigError naming the first field that is not as
    :func:`dataset_issues` writes it (a report edited by hand, or another file)."""
    if isinstance(issues, dict):  # REST and the console pass the stored report: name its file
        files = issues.get("files")
        where = str(files["json"]) if isinstance(files, dict) and files.get("json") else "passed in"
        return _checked(issues, where), where
    path = Path(issues)
    try:
        return _checked(json.loads(path.read_text(encoding="utf-8")), str(path)), str(path)
    except FileNotFoundError:
        raise ConfigError(
            f"no issues report at {path}", hint="Run `aimass data issues NAME` first; it prints the path."
        ) from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"cannot read the issues report {path}: {exc}", hint="Pass the issues.json it wrote."
        ) from None


def _checked(report, where: str) -> dict:
    try:
        _Report.model_validate(report)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        what = f"{field}: {first['msg']}" if field else "it is not a JSON object"
        raise ConfigError(
            f"the issues report {where} is not one `aimass data issues` wrote: {what}",
            hint="Pass the issues.json it wrote, as it wrote it; pick `rows` (--row) instead of editing it.",
        ) from None
    return report


def _check_fix(ds: Dataset, report: dict, where: str, *, drop: bool, relabel: bool, duplicates: bool) -> None:
    if not (drop or relabel or duplicates):
        raise ConfigError(
            "nothing to fix",
            hint="Set `drop` or `relabel` (label issues) and/or `duplicates` "
            "(the CLI's --drop, --relabel, --duplicates).",
        )
    if drop and relabel:
        raise ConfigError(
            "label issues are either dropped or relabelled",
            hint="Set one of `drop` and `relabel` (--drop, --relabel).",
        )
    made_for = report.get("dataset", {}).get("digest")
    if made_for != ds.digest:
        raise ConfigError(
            f"the issues report {where} was made for dataset {str(made_for)[:12]}, not {ds.id} ({ds.name})",
            hint=f"Make an issues report for dataset {ds.id} (`aimass data issues {ds.id}`, or a job of "
            "kind 'issues') and fix with that report.",
        )
