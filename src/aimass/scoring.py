"""Bulk prediction: every row of a table (or every image of a folder) through a registered
classifier, into a CSV, in chunks that survive a crash — what a cloud's batch service does
(ModelArts batch services, SageMaker Batch Transform, Vertex batch predictions).

>>> from aimass import scoring
>>> scoring.predict_file("reviews:3", "unlabelled.csv", "scored.csv")    # doctest: +SKIP
{'model': 'reviews:3', 'rows': 50000, 'output': 'scored.csv', ...}

The output keeps each input row's columns and adds ``line`` (where the row starts in the file, to
join back), ``label`` (the most probable class; a multi-label model's: every label it gives, joined
by ``;``), ``score`` (the best class's probability) and ``p_CLASS`` for every class; for a language
model (a LoRA fine-tune) ``answer`` instead, its greedy answer to the row's prompt (the ``prompt``
column, else as for text), 16 rows a chunk. A row whose text is empty, or an image that cannot be
decoded, is kept with an empty ``label`` and the reason in ``error``; a table is read as an import
reads it (a ``;``-separated CSV at its semicolons) and refused as one is (a lone column named
``id;comment``); a line that cannot be read at all (bad JSON, wrong field count,
undecodable bytes) is listed in ``rejects`` with its line and reason. With ``resume`` the chunks
already in the output are kept and the rest appended (a job resumed after its worker died does
this), so no row is scored twice.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from aimass import workflow
from aimass.data.columns import check_header
from aimass.data.images import IMAGE_EXTENSIONS
from aimass.data.read import read_source
from aimass.errors import ConfigError, DataError
from aimass.store import registry

CHUNK = 256  # rows scored, written and flushed at a time
ANSWER_CHUNK = 16  # a language model's rows: each takes about a second
FIXED = ("line", "label", "score", "error")
ANSWERED = ("line", "answer", "error")
TAGGED = ("line", "entities", "error")  # an entity tagger's
IMAGE_TASKS = ("image-classification", "image-multilabel")  # score a folder of images
TASKS = ("text-classification", "text-multilabel", *IMAGE_TASKS, "text-generation", "token-classification")


def predict_file(
    ref: str,
    path: str | Path,
    out: str | Path,
    *,
    text_col: str | None = None,
    resume: bool = False,
    progress=None,
) -> dict:
    """Score every row of ``path`` (CSV, TSV, JSONL; a folder of images for an image model) with
    the registered classifier or language model ``ref`` into the CSV ``out``;
    ``progress(done, total)`` hears each chunk. Returns what was written: rows, classes (none for
    a language model), rejects, seconds."""
    record = registry.get_version(ref)
    if record.task not in TASKS:
        raise ConfigError(
            f"{record.ref} is a {record.task} model; bulk prediction takes classifiers and language models.",
            hint="Answer OpenAI requests in bulk with `aimass batch` (OpenAI's Batch API).",
        )
    rows, inputs, columns, rejects = _read(record.task, Path(path), text_col)
    out = Path(out)
    began = time.perf_counter()
    model = workflow.load(record.ref)
    if record.task == "text-generation":
        classes, size, tail = [], ANSWER_CHUNK, _answerer(model)
        header = [*columns, *ANSWERED]
    elif record.task == "token-classification":  # each row's entities, as a JSON list
        classes, size, tail = [], CHUNK, _tagger(model)
        header = [*columns, *TAGGED]
    else:
        classes, size = [str(c) for c in model.classes_], CHUNK
        header, tail = [*columns, *FIXED, *(f"p_{c}" for c in classes)], _scorer(model, classes)
    done = _written(out, header, size) if resume else 0
    with open(out, "a" if done else "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if not done:
            writer.writerow(header)
        for start in range(done, len(rows), size):
            chunk = range(start, min(start + size, len(rows)))
            scorable = [i for i in chunk if inputs[i]]
            tails = dict(zip(scorable, tail([inputs[i] for i in scorable]) if scorable else [], strict=True))
            for i in chunk:
                found = tails.get(i) or tail.empty
                writer.writerow([*(rows[i].get(c, "") for c in columns), rows[i]["_line"], *found])
            handle.flush()
            if progress is not None:
                progress(chunk.stop, len(rows))
    return {
        "model": record.ref,
        "input": str(path),
        "output": str(out),
        "rows": len(rows),
        "resumed_at": done,
        "classes": classes,
        "rejects": rejects,
        "seconds": round(time.perf_counter() - began, 2),
    }


def _scorer(model, classes: list[str]):
    """Inputs -> each row's ``label, score, error, p_CLASS...`` (``.empty``: an empty input's).

    An input the model cannot read (a corrupt or truncated image) fails its own row, not the job:
    when a chunk fails on one, its inputs are scored one by one and that one's row gets the reason in
    ``error``, as an empty text's does."""

    threshold = getattr(model, "threshold_", None)  # a multi-label model gives every label from it

    def tail(inputs: list) -> list[list]:
        try:
            return scored(model.predict_proba(inputs))
        except DataError:
            return [alone(item) for item in inputs]

    def alone(item) -> list:
        try:
            return scored(model.predict_proba([item]))[0]
        except DataError as exc:
            return ["", "", exc.message, *([""] * len(classes))]

    def scored(probas) -> list[list]:
        from aimass.evaluation.metrics import decide  # heavy (scikit-learn): a scoring job only

        given = None if threshold is None else decide(probas, threshold)  # as served
        out = []
        for i, proba in enumerate(probas):
            best = int(proba.argmax())
            label = classes[best] if given is None else ";".join(c for c, on in zip(classes, given[i]) if on)
            out.append([label, round(float(proba[best]), 6), "", *(round(float(p), 6) for p in proba)])
        return out

    tail.empty = ["", "", "empty input", *([""] * len(classes))]
    return tail


def _tagger(model):
    """Texts -> each row's ``entities, error``: a JSON list of ``{"text", "label", "start", "end",
    "score"}`` as served."""

    def tail(texts: list[str]) -> list[list]:
        return [[json.dumps(found, ensure_ascii=False), ""] for found in model.predict_entities(texts)]

    tail.empty = ["", "empty input"]
    return tail


def _answerer(model):
    """Prompts -> each row's ``answer, error`` (the model's greedy answer)."""

    def tail(prompts: list[str]) -> list[list]:
        return [[answer, ""] for answer in model.predict(prompts)]

    tail.empty = ["", "empty input"]
    return tail


def _read(task: str, path: Path, text_col: str | None) -> tuple[list[dict], list, list[str], list[dict]]:
    """(rows with their ``_line``, the model's input of each, the columns kept, rejects)."""
    if task in IMAGE_TASKS:
        if not path.is_dir():
            raise DataError(
                "an image model scores a folder of images", where=str(path), hint="Pass a folder."
            )
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise DataError(
                "the folder holds no images", where=str(path), hint=f"Use {', '.join(IMAGE_EXTENSIONS)}."
            )
        rows = [{"file": str(f.relative_to(path)), "_line": n} for n, f in enumerate(files, start=1)]
        return rows, [str(f) for f in files], ["file"], []
    table = read_source(path)
    if table.info["format"] not in ("csv", "tsv", "jsonl"):
        raise DataError(
            "bulk prediction reads a table", where=str(path), hint="Use a .csv, .tsv or .jsonl file."
        )
    if table.info["format"] != "jsonl" and not text_col and table.columns:
        check_header(table.columns, table.records, str(path), need=1)  # as an import checks it
    column = _text_column(table, text_col or ("prompt" if task == "text-generation" else None), path)
    rows = [{**{k: _cell(v) for k, v in r.fields.items()}, "_line": r.line} for r in table.records]
    inputs = [row.get(column, "").strip() for row in rows]
    rejects = [{"line": m["line"], "reason": m["reason"]} for m in table.malformed]
    return rows, inputs, list(table.columns), rejects


def _cell(value) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _text_column(table, wanted: str | None, path: Path) -> str:
    """``wanted``, else the only column, else ``text``, else the column with the longest values."""
    columns = list(table.columns)
    if wanted == "prompt" and "prompt" not in columns:  # a language model's guess: as for text
        wanted = None
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"no column {wanted!r}; the columns are {', '.join(columns)}",
                where=str(path),
                hint="Pass --text-col with one of them.",
            )
        return wanted
    if len(columns) == 1 or "text" in columns:
        return columns[0] if len(columns) == 1 else "text"
    sample = table.records[:200]
    return max(columns, key=lambda c: sum(len(_cell(r.fields.get(c))) for r in sample))


def _written(out: Path, header: list[str], size: int = CHUNK) -> int:
    """How many rows of an earlier run are in ``out`` (its whole chunks of ``size``; a chunk cut
    short is dropped and scored again); 0 when it holds none or was written for other columns."""
    if not out.exists():
        return 0
    with open(out, newline="", encoding="utf-8") as handle:
        found = list(csv.reader(handle))
    if not found or found[0] != header:
        return 0
    whole = (len(found) - 1) // size * size
    with open(out, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(found[: whole + 1])
    return whole
