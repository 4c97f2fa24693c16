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
column, else as for text), 16 rows a chunk. An added column whose name the input already has is
called ``predicted_NAME`` instead (a labelled file keeps its gold ``label`` beside ``predicted_label``,
as BigQuery ML names its predictions), so no header names a column twice. A row whose text is
empty, or an image that cannot be decoded, is kept with an empty ``label`` and the reason in
``error``; a table is read as an import reads it (a ``;``-separated CSV at its semicolons) and
refused as one is (a lone column named ``id;comment``); a line that cannot be read at all (bad
JSON, wrong field count, undecodable bytes) is listed in ``rejects`` with its line and reason. With
``resume`` the chunks already in the output are kept and the rest appended (a job resumed after its
worker died does this), so no row is scored twice.

A cell that is not text (a JSONL number, object, list or boolean) is written as JSON; a text cell a
spreadsheet would run as a formula (starting with ``=``, ``+``, ``@``, a tab or a carriage return, or
with ``-`` and not a number) gets a ``'`` in front, OWASP's remedy for CSV injection: the file is
downloaded and opened in Excel by others than the one who uploaded it (join on ``line``, not on text).

Memory is bounded by :data:`PIECE` and the chunk, not the file: a table is read twice, a piece at a
time, with the import's own parsers (:func:`_pieces`): once to count its rows and find its columns
and unreadable lines, once to score. A table that reads right only whole (not all UTF-8, a lone CR
line end, a .tsv holding quotes, a CSV field over the csv module's limit) is read whole, as an import
reads it. The output path is checked before any work (:func:`check_output`).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain, islice
from pathlib import Path

from aimass import workflow
from aimass.data.columns import SAMPLE, check_header
from aimass.data.images import IMAGE_EXTENSIONS
from aimass.data.read import (
    TABLE_FORMATS,
    RawTable,
    csv_delimiter,
    read_delimited,
    read_jsonl,
    read_source,
    wide_encoding,
)
from aimass.errors import ConfigError, DataError
from aimass.store import registry

CHUNK = 256  # rows scored, written and flushed at a time
ANSWER_CHUNK = 16  # a language model's rows: each takes about a second
MAX_REJECTS = 1000  # unreadable lines listed in the result; the rest are counted in one entry
PIECE = 2048  # table records parsed at a time: with the chunk, what a run holds, whatever the file
PREDICTED = "predicted_"  # before an added column's name that the input already has
FORMULA_STARTS = ("=", "+", "@", "\t", "\r")  # a spreadsheet runs such a cell (CSV injection)
_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # a negative number: not a formula
NUMBERED = ("malformed line", "repeated header")  # reject kinds whose reasons name line numbers
_PIECE_LINE = re.compile(r"\b(from|at) line (\d+)(?: to (\d+))?")  # the line numbers in a CSV reject
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
    a language model), rejects, seconds.

    Raises:
        ConfigError: ``out`` cannot be written (checked before any work: :func:`check_output`), or
            the model is not one this scores.
        DataError: ``path`` cannot be read as a table (a folder of images for an image model)."""
    record = registry.get_version(ref)
    if record.task not in TASKS:
        raise ConfigError(
            f"{record.ref} is a {record.task} model; bulk prediction takes classifiers and language models.",
            hint="Answer OpenAI requests in bulk with `aimass batch` (OpenAI's Batch API).",
        )
    out = check_output(out, path)
    source = _read(record.task, Path(path), text_col)
    began = time.perf_counter()
    model = workflow.load(record.ref)
    tail, size, added, classes = _tail(record.task, model)
    header = [_safe(name) for name in (*source.columns, *_added(added, source.columns))]
    done = _written(out, header, size) if resume else 0
    with open(out, "a" if done else "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if not done:
            writer.writerow(header)
        for scored, chunk in _chunks(source.rows(), size, done):
            writer.writerows(_scored(chunk, tail))
            handle.flush()
            if progress is not None:
                progress(scored, source.total)
    return {
        "model": record.ref,
        "input": str(path),
        "output": str(out),
        "rows": source.total,
        "resumed_at": done,
        "classes": classes,
        "rejects": source.rejects,
        "seconds": round(time.perf_counter() - began, 2),
    }


def check_output(out: str | Path, source: str | Path | None = None) -> Path:
    """``out`` as a file the predictions CSV can be written to, checked before any row is read or
    scored: a run that scored a whole file and then could not write it lost the work. A missing
    folder is not made (a mistyped path would make one; pandas' ``to_csv`` refuses too), and the
    input ``source`` itself is refused (it is read while the output is written).

    Raises:
        ConfigError: ``out`` is a folder, lies in no folder that exists, is ``source``, or cannot
            be written; the message names the path, the hint says what to do.
    """
    out = Path(out).expanduser()
    if out.is_dir():
        raise ConfigError(
            f"the output {out} is a folder; the predictions are one CSV file",
            hint=f"Name a file in it, e.g. {out / 'scored.csv'}.",
        )
    if not out.parent.is_dir():
        raise ConfigError(
            f"there is no folder {out.parent} to write {out.name} in",
            hint=f"Create it first (mkdir -p {out.parent}), or name a file in a folder that exists.",
        )
    if source is not None and out.exists() and Path(source).exists() and out.samefile(source):
        raise ConfigError(
            f"the output {out} is the input file: writing it would overwrite the rows being read",
            hint=f"Write the predictions to another file, e.g. {out.stem}.predictions.csv beside it.",
        )
    made = not out.exists()
    try:
        with open(out, "ab"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write {out}: {exc.strerror or exc}", hint="Name a file in a folder you may write to."
        ) from None
    if made:
        out.unlink()
    return out


def _tail(task: str, model) -> tuple[Callable, int, list[str], list[str]]:
    """What makes each row's added cells from a chunk of ``task``'s inputs, the chunk's size, the
    columns it adds and the model's classes (none for a language model or a tagger)."""
    if task == "text-generation":
        return _answerer(model), ANSWER_CHUNK, list(ANSWERED), []
    if task == "token-classification":  # each row's entities, as a JSON list
        return _tagger(model), CHUNK, list(TAGGED), []
    classes = [str(c) for c in model.classes_]
    return _scorer(model, classes), CHUNK, [*FIXED, *(f"p_{c}" for c in classes)], classes


def _added(names: list[str], columns: list[str]) -> list[str]:
    """``names`` as the output adds them after the input's ``columns``: one the input already has (a
    labelled file's ``label``) gets :data:`PREDICTED` in front, again until no column has it.

    >>> _added(["line", "label", "score", "error"], ["text", "label", "predicted_label"])
    ['line', 'predicted_predicted_label', 'score', 'error']
    """
    taken, found = set(columns), []
    for name in names:
        while name in taken:
            name = PREDICTED + name
        taken.add(name)
        found.append(name)
    return found


def _chunks(rows: Iterator, size: int, skip: int) -> Iterator[tuple[int, list]]:
    """``(rows done with it, its rows)`` for each chunk of ``size`` rows after the first ``skip`` (an
    earlier run's, in the output already)."""
    rows, done = islice(rows, skip, None), skip
    while chunk := list(islice(rows, size)):
        done += len(chunk)
        yield done, chunk


def _scored(chunk: list[tuple], tail) -> list[list]:
    """The output rows of a chunk of ``(line, cells, input)``: the cells, the line and what ``tail``
    makes of the input (``tail.empty`` for an empty one), text cells made safe (:func:`_safe`)."""
    given = [i for i, (_, _, item) in enumerate(chunk) if item]
    found = dict(zip(given, tail([chunk[i][2] for i in given]) if given else [], strict=True))
    return [
        [*map(_safe, cells), line, *map(_safe, found.get(i) or tail.empty)]
        for i, (line, cells, _) in enumerate(chunk)
    ]


def _safe(value):
    """``value``, with ``'`` in front when it is text a spreadsheet would run as a formula: one that
    starts with ``=``, ``+``, ``@``, a tab or a carriage return, or with ``-`` and is not a number
    (OWASP's remedy for CSV injection; a negative number stays a number).

    >>> [_safe(v) for v in ("=1+1", "-2+3+cmd|' /C calc'!A0", "-1.5", "@SUM(A1)", "a=b", 0.25)]
    ["'=1+1", "'-2+3+cmd|' /C calc'!A0", '-1.5', "'@SUM(A1)", 'a=b', 0.25]
    """
    if isinstance(value, str) and (
        value.startswith(FORMULA_STARTS) or (value.startswith("-") and not _NUMBER.fullmatch(value))
    ):
        return "'" + value
    return value


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


@dataclass
class _Source:
    """What is scored: the input's ``columns``, its ``total`` rows, the lines that could not be read
    (``rejects``) and ``rows()``, which reads the rows (again) as ``(line, cells, model input)``: the
    line number stays outside the cells, so a column named ``_line`` keeps its own values."""

    columns: list[str]
    total: int
    rejects: list[dict]
    rows: Callable[[], Iterator[tuple[int, list[str], object]]]


class _ReadWhole(Exception):
    """The table reads right only whole (see :func:`_pieces`)."""


def _read(task: str, path: Path, text_col: str | None) -> _Source:
    if task in IMAGE_TASKS:
        return _images(path)
    return _table(path, text_col, "prompt" if task == "text-generation" else None)


def _images(path: Path) -> _Source:
    """A folder of images: one row a file (``file``, its path in the folder), numbered from 1."""
    if not path.is_dir():
        raise DataError("an image model scores a folder of images", where=str(path), hint="Pass a folder.")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(
            "the folder holds no images", where=str(path), hint=f"Use {', '.join(IMAGE_EXTENSIONS)}."
        )
    return _Source(["file"], len(files), [], partial(_image_rows, path, files))


def _image_rows(path: Path, files: list[Path]) -> Iterator[tuple[int, list[str], str]]:
    return ((n, [str(f.relative_to(path))], str(f)) for n, f in enumerate(files, start=1))


def _table(path: Path, text_col: str | None, guess: str | None) -> _Source:
    """A CSV, TSV or JSONL file, read in pieces (:func:`_pieces`), else whole as an import reads it;
    checked as an import checks it. ``guess``: the text column to take when it exists."""
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    try:
        if fmt is None or not path.is_file():
            raise _ReadWhole
        pieces = partial(_pieces, path, fmt)
        columns, total, rejects, sample = _survey(pieces())
    except _ReadWhole:
        whole = read_source(path)  # a missing, empty or unsupported file is refused here as at import
        fmt, pieces = whole.info["format"], partial(iter, [whole])
        columns, total, rejects, sample = _survey(pieces())
    if fmt not in ("csv", "tsv", "jsonl"):
        raise DataError(
            "bulk prediction reads a table", where=str(path), hint="Use a .csv, .tsv or .jsonl file."
        )
    if fmt != "jsonl" and not text_col and columns:
        check_header(columns, sample, str(path), need=1)  # as an import checks it
    column = _text_column(columns, sample, text_col or guess, path)
    rows = partial(_table_rows, pieces, columns, columns.index(column) if columns else 0)
    return _Source(columns, total, rejects, rows)


def _survey(pieces: Iterator[RawTable]) -> tuple[list[str], int, list[dict], list]:
    """The first pass: the columns (a JSONL file's, every key in the order met), the rows, the
    rejects (the first :data:`MAX_REJECTS`, then one entry counting the rest: a file of bad lines
    must not fill memory and the job's result) and the first records (what the header check and
    the text column's guess read)."""
    columns, total, rejects, sample, more = {}, 0, [], [], 0
    for piece in pieces:
        columns.update(dict.fromkeys(piece.columns))
        total += len(piece.records)
        kept = piece.malformed[: max(0, MAX_REJECTS - len(rejects))]
        rejects += [{"line": m["line"], "reason": m["reason"]} for m in kept]
        more += len(piece.malformed) - len(kept)
        sample += piece.records[: SAMPLE - len(sample)]
    if more:
        rejects.append({"line": None, "reason": f"{more} more unreadable lines not listed"})
    return list(columns), total, rejects, sample


def _table_rows(pieces, columns: list[str], text: int) -> Iterator[tuple[int, list[str], str]]:
    """The second pass: each record's ``(line, cells, its text stripped)``."""
    try:
        for piece in pieces():
            for record in piece.records:
                cells = [_cell(record.fields.get(c)) for c in columns]
                yield record.line, cells, cells[text].strip() if cells else ""
    except _ReadWhole:
        raise DataError(
            "the file changed while it was scored", hint="Score a copy that nothing writes to."
        ) from None


def _pieces(path: Path, fmt: str) -> Iterator[RawTable]:
    """The table's records and unreadable lines, about :data:`PIECE` records at a time, numbered as
    in the file and read as :func:`~aimass.data.read.read_source` reads the whole file: each piece
    is parsed by the same :func:`~aimass.data.read.read_delimited` (after the header's lines) or
    :func:`~aimass.data.read.read_jsonl`, cut where the csv module ends a record.

    Raises:
        _ReadWhole: for what reads right only whole: a file not all UTF-8 (each line's encoding is
            decided over the file), UTF-16 or -32, a lone CR line end, a .tsv holding a quote
            (quoted or not is decided over the file), a CSV field past the csv module's limit
            (read.py splits that record itself), or no data at all (read_source says so).
    """
    lines = _utf8_lines(path)
    if fmt == "jsonl":
        yield from _jsonl_pieces(lines, str(path))
    else:
        yield from _delimited_pieces(lines, str(path), fmt)


def _utf8_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file as :func:`~aimass.data.read.decode_lines` reads them (line ends kept,
    a byte order mark dropped), one at a time."""
    with open(path, "rb") as handle:
        if wide_encoding(handle.read(4096)) is not None:
            raise _ReadWhole
        handle.seek(0)
        for number, raw in enumerate(handle):
            if number == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if raw.count(b"\r") != raw.count(b"\r\n"):  # decode_lines ends a line there too
                raise _ReadWhole
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _ReadWhole from None
            yield line


def _jsonl_pieces(lines: Iterator[str], file: str) -> Iterator[RawTable]:
    piece, start, found = [], 1, False
    for line in lines:
        piece.append(line)
        found = found or bool(line.strip())
        if len(piece) == PIECE:
            yield _piece([], piece, start, file, "jsonl")
            start, piece = start + len(piece), []
    if not found:
        raise _ReadWhole
    if piece:
        yield _piece([], piece, start, file, "jsonl")


def _delimited_pieces(lines: Iterator[str], file: str, fmt: str) -> Iterator[RawTable]:
    """A CSV's or TSV's pieces: first the header alone (its columns, checked by read_delimited), then
    the lines of about :data:`PIECE` records each, cut where the csv module ends a record."""
    taken: list[str] = []  # the lines read since the last cut

    def feed() -> Iterator[str]:
        for line in lines:
            if fmt == "tsv" and '"' in line:
                raise _ReadWhole
            taken.append(line)
            yield line

    source = feed()
    first = next((line for line in source if line.strip()), None)
    if first is None:
        raise _ReadWhole
    sep = csv_delimiter([first]) if fmt == "csv" else "\t"  # as read_delimited decides it
    quoting = {} if fmt == "csv" else {"quoting": csv.QUOTE_NONE}  # a .tsv here holds no quote
    records = csv.reader(chain([first], source), delimiter=sep, **quoting)
    try:
        row = next(records, None)
        while row is not None and _blank(row):
            row = next(records, None)
        if row is None:
            raise _ReadWhole
        head, start = taken[:], len(taken) + 1
        taken.clear()
        yield _piece(head, [], start, file, fmt)
        for n, _ in enumerate(records, start=1):
            if n % PIECE == 0:
                yield _piece(head, taken, start, file, fmt)
                start += len(taken)
                taken.clear()
    except csv.Error:
        raise _ReadWhole from None
    if taken:
        yield _piece(head, taken, start, file, fmt)


def _blank(row: list[str]) -> bool:
    """A row read_delimited skips (an empty line): the first one that is not is the header."""
    return len(row) <= 1 and not "".join(row).strip()


def _piece(head: list[str], lines: list[str], start: int, file: str, fmt: str) -> RawTable:
    """``lines`` (the file's from line ``start``) parsed as an import parses a table, after the header
    lines ``head``: records, rejects and the line numbers in their reasons as in the file."""
    table = read_jsonl(lines, file) if fmt == "jsonl" else read_delimited([*head, *lines], file, fmt)
    shift = start - 1 - len(head)
    if shift:
        for record in table.records:
            record.line += shift
        for reject in table.malformed:
            reject["line"] += shift
            if reject.get("kind") in NUMBERED:  # other reasons may quote the user's text: left alone
                reject["reason"] = _PIECE_LINE.sub(partial(_renumbered, shift), reject["reason"])
    return table


def _renumbered(shift: int, found: re.Match) -> str:
    """``from line 3 to 9`` or ``at line 3`` of a piece's reject, numbered as in the file."""
    to = f" to {int(found[3]) + shift}" if found[3] else ""
    return f"{found[1]} line {int(found[2]) + shift}{to}"


def _cell(value) -> str:
    """A value as the CSV holds it: text as it is, nothing as empty, anything else (a JSONL number,
    object, list or boolean) as JSON.

    >>> [_cell(v) for v in ("a", None, 3, True, {"a": [1, "é"]})]
    ['a', '', '3', 'true', '{"a": [1, "é"]}']
    """
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _text_column(columns: list[str], sample: list, wanted: str | None, path: Path) -> str:
    """``wanted``, else the only column, else ``text``, else the column with the longest values."""
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
    if len(columns) <= 1 or "text" in columns:  # none: a JSONL file of rejects only
        return ("text" if "text" in columns else columns[0]) if columns else ""
    sample = sample[:200]
    return max(columns, key=lambda c: sum(len(_cell(r.fields.get(c))) for r in sample))


def _written(out: Path, header: list[str], size: int = CHUNK) -> int:
    """How many rows of an earlier run are in ``out`` (its whole chunks of ``size``; a chunk cut
    short is dropped and scored again); 0 when it holds none or was written for other columns.

    Read a line at a time and cut where its last whole chunk ends, so a resumed run holds no more
    of it than a line: the csv module wrote it, quoting every cell that holds a quote or a line end,
    so a row ends at a line end after an even number of quotes."""
    if not out.exists():
        return 0
    rows, quotes, spent, whole, cut, first = -1, 0, 0, 0, 0, []  # row -1: the header
    with open(out, "r+b") as handle:
        for raw in handle:
            spent, quotes = spent + len(raw), quotes + raw.count(b'"')
            if rows < 0:
                first.append(raw.decode("utf-8", "replace"))
            if quotes % 2 or not raw.endswith(b"\n"):  # inside a quoted cell, or a row cut short
                continue
            rows += 1
            if rows == 0 and next(csv.reader(first), None) != header:
                return 0
            if rows and rows % size == 0:
                whole, cut = rows, spent
            elif rows == 0:
                cut = spent
        handle.truncate(cut)
    return whole
