"""Bulk prediction: every row of a table (or every image of a folder) through a registered
classifier, into a CSV, in chunks that survive a crash — what a cloud's batch service does
(ModelArts batch services, SageMaker Batch Transform, Vertex batch predictions).

>>> from aimass import scoring
>>> scoring.predict_file("reviews:3", "unlabelled.csv", "scored.csv")    # doctest: +SKIP
{'model': 'reviews:3', 'rows': 50000, 'output': 'scored.csv', ...}

The output keeps each input row's columns and adds ``line`` (where the row starts in the file, to
join back), ``label`` (the most probable class), ``score`` (its probability) and ``p_CLASS`` for
every class. A row whose text is empty is kept with an empty ``label`` and ``error``; a line that
cannot be read at all (bad JSON, wrong field count, undecodable bytes) is listed in ``rejects``
with its line and reason. With ``resume`` the chunks already in the output are kept and the rest
appended (a job resumed after its worker died does this), so no row is scored twice.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from aimass import workflow
from aimass.data.images import IMAGE_EXTENSIONS
from aimass.data.read import read_source
from aimass.errors import ConfigError, DataError
from aimass.store import registry

CHUNK = 256  # rows scored, written and flushed at a time
FIXED = ("line", "label", "score", "error")


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
    the registered classifier ``ref`` into the CSV ``out``; ``progress(done, total)`` hears each
    chunk. Returns what was written: rows, classes, rejects, seconds."""
    record = registry.get_version(ref)
    if record.task not in ("text-classification", "image-classification"):
        raise ConfigError(
            f"{record.ref} is a {record.task} model; bulk prediction scores classifiers.",
            hint="Answer a language model's prompts in bulk with `aimass batch` (OpenAI's Batch API).",
        )
    rows, inputs, columns, rejects = _read(record.task, Path(path), text_col)
    out = Path(out)
    began = time.perf_counter()
    model = workflow.load(record.ref)
    classes = [str(c) for c in model.classes_]
    header = [*columns, *FIXED, *(f"p_{c}" for c in classes)]
    done = _written(out, header) if resume else 0
    with open(out, "a" if done else "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if not done:
            writer.writerow(header)
        for start in range(done, len(rows), CHUNK):
            chunk = range(start, min(start + CHUNK, len(rows)))
            scorable = [i for i in chunk if inputs[i]]
            proba = model.predict_proba([inputs[i] for i in scorable]) if scorable else []
            scores = dict(zip(scorable, proba, strict=True))
            for i in chunk:
                writer.writerow(
                    [*(rows[i].get(c, "") for c in columns), *_scored(rows[i], scores.get(i), classes)]
                )
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


def _scored(row: dict, proba, classes: list[str]) -> list:
    if proba is None:
        return [row["_line"], "", "", "empty input", *([""] * len(classes))]
    best = int(proba.argmax())
    return [
        row["_line"],
        classes[best],
        round(float(proba[best]), 6),
        "",
        *(round(float(p), 6) for p in proba),
    ]


def _read(task: str, path: Path, text_col: str | None) -> tuple[list[dict], list, list[str], list[dict]]:
    """(rows with their ``_line``, the model's input of each, the columns kept, rejects)."""
    if task == "image-classification":
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
    column = _text_column(table, text_col, path)
    rows = [{**{k: _cell(v) for k, v in r.fields.items()}, "_line": r.line} for r in table.records]
    inputs = [row.get(column, "").strip() for row in rows]
    rejects = [{"line": m["line"], "reason": m["reason"]} for m in table.malformed]
    return rows, inputs, list(table.columns), rejects


def _cell(value) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _text_column(table, wanted: str | None, path: Path) -> str:
    """``wanted``, else the only column, else ``text``, else the column with the longest values."""
    columns = list(table.columns)
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


def _written(out: Path, header: list[str]) -> int:
    """How many rows of an earlier run are in ``out`` (its whole chunks; a chunk cut short is
    dropped and scored again); 0 when it holds none or was written for other columns."""
    if not out.exists():
        return 0
    with open(out, newline="", encoding="utf-8") as handle:
        found = list(csv.reader(handle))
    if not found or found[0] != header:
        return 0
    whole = (len(found) - 1) // CHUNK * CHUNK
    with open(out, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(found[: whole + 1])
    return whole
