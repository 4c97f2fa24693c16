"""``read_table``: a file or class folder to good rows, rejects and an info dict."""

from __future__ import annotations

from pathlib import Path

from aimass.data import multilabel
from aimass.data.columns import Columns, check_header, choose_columns
from aimass.data.language import detect_language
from aimass.data.read import RawTable, Record, read_source
from aimass.data.validate import reject_counts, sort_rejects, validate_records
from aimass.errors import ConfigError, DataError


def read_table(
    path: str | Path,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    split_col: str | None = None,
    label_sep: str | None = None,
) -> tuple[list[dict], list[dict], dict]:
    """Read and check a dataset file without storing it.

    Args:
        path: A .csv, .tsv, .jsonl/.ndjson file, or a folder with one sub-folder per class.
        text_col: Name of the text column (detected when None).
        label_col: Name of the label column (detected when None).
        split_col: Name of a column holding train/valid/test (a column named ``split``
            is used when None).
        label_sep: Several labels per row, one cell cut at this separator (``";"``); a JSON
            list of labels needs none (:mod:`aimass.data.multilabel`).

    Returns:
        ``(good, rejects, info)``: good rows ``{"text", "label", "split", "source"}``
        (``split`` is None without a split column), rejects ``{"file", "line", "reason",
        "raw", "kind"}``, and info (file, format, encoding, sha256, columns, text_col,
        label_col, split_col, records, rejects_by_reason, language, multi_label).

    Raises:
        DataError: The file cannot be read or its columns cannot be determined.
    """
    path = Path(path)
    table = read_source(path)
    cols = _columns(table, path, text_col, label_col, split_col)
    records, unread, multi = _labels(table.records, cols.label, label_sep)
    good, rejects = validate_records(records, cols)
    rejects = sort_rejects(table.malformed + unread + rejects)
    info = dict(
        table.info,
        columns=table.columns,
        text_col=cols.text,
        label_col=cols.label,
        split_col=cols.split,
        records=len(good) + len(rejects),
        rejects_by_reason=reject_counts(rejects),
        language=detect_language([row["text"] for row in good]),
        multi_label=multi,
        **({"label_guessed": cols.guessed} if cols.guessed else {}),
    )
    return good, rejects, info


def _labels(records: list[Record], label_col: str, sep: str | None) -> tuple[list[Record], list[dict], bool]:
    """(records, rejects, multi): several labels a row joined as they are stored, when the rows
    carry them (:func:`aimass.data.multilabel.is_multi`); else the records as they are."""
    if sep is not None and not sep.strip():
        raise ConfigError(
            f"label_sep {sep!r} is blank",
            hint="Name the character between a row's labels, e.g. --label-sep ';'.",
        )
    if not multilabel.is_multi(records, label_col, sep):
        return records, [], False
    records, rejects = multilabel.join_records(records, label_col, sep)
    return records, rejects, True


def _columns(table: RawTable, path: Path, text_col, label_col, split_col) -> Columns:
    where = str(path)
    if table.info["format"] == "folder":
        if text_col or label_col or split_col:
            raise DataError(
                "column options do not apply to a folder of class sub-folders",
                where=where,
                hint="Leave out text_col, label_col and split_col.",
            )
        return Columns("text", "label")
    if not table.records:
        first = table.malformed[0]["reason"] if table.malformed else "the file has no data rows"
        jsonl = table.info["format"] in ("jsonl", "ndjson")
        raise DataError(
            f"no readable data rows ({first})",
            where=where,
            hint=(
                'A .jsonl file holds one JSON object a line, e.g. {"text": "...", "label": "..."}: '
                "not one JSON array or an object spread over several lines."
                if jsonl
                else "Check the file format; the first line must be a header."
            ),
        )
    if table.info["format"] in ("csv", "tsv") and not (text_col or label_col):
        check_header(table.columns, table.records, where)
    return choose_columns(
        table.columns, table.records, text_col=text_col, label_col=label_col, split_col=split_col, where=where
    )


SPLIT_FIELD = "\0split"  # the split a record's file gives it (a field no file can have)


def read_split_files(
    files: dict[str, str | Path],
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    label_sep: str | None = None,
) -> tuple[list[dict], list[dict], dict]:
    """Read one table per split (``{"train": path, "valid": path, "test": path}``, train required)
    and check their rows together, as :func:`read_table` checks one file: every row takes its
    file's split; the same text again in a later file is a duplicate (a valid or test row that
    repeats a training row is rejected, naming the training row), the same text with another label
    in another file a conflict. ``info`` is the training file's, with ``split_files`` (split ->
    ``{"file", "sha256"}`` of the others).

    Raises:
        DataError: A file cannot be read, is a folder, or its columns cannot be determined.
        ConfigError: A file has a split column too.
    """
    records, malformed, tables = [], [], {}
    for split, path in files.items():
        path = Path(path)
        table = read_source(path)
        if table.info["format"] == "folder":
            raise DataError(
                "split files are tables (CSV, TSV, JSONL), not folders",
                where=str(path),
                hint="Give one table per split, or import the folder alone.",
            )
        cols = _columns(table, path, text_col, label_col, None)
        if cols.split:
            raise ConfigError(
                f"{path.name} has a split column ({cols.split!r}) and is given as the {split} file",
                where=str(path),
                hint="Give split files or a split column, not both.",
            )
        for rec in table.records:
            fields = {
                "text": rec.fields.get(cols.text),
                "label": rec.fields.get(cols.label),
                SPLIT_FIELD: split,
            }
            records.append(Record(rec.file, rec.line, rec.raw, fields, rec.source))
        malformed += table.malformed
        tables[split] = (table, cols)
    records, unread, multi = _labels(records, "label", label_sep)  # a list in any file: all are lists
    good, rejects = validate_records(records, Columns("text", "label", SPLIT_FIELD))
    rejects = sort_rejects(malformed + unread + rejects)
    train, cols = tables["train"]
    info = dict(
        train.info,
        columns=train.columns,
        text_col=cols.text,
        label_col=cols.label,
        split_col=None,
        records=len(good) + len(rejects),
        rejects_by_reason=reject_counts(rejects),
        language=detect_language([row["text"] for row in good]),
        multi_label=multi,
        split_files={
            split: {"file": str(Path(t.info["file"]).resolve()), "sha256": t.info["sha256"]}
            for split, (t, _) in tables.items()
            if split != "train"
        },
    )
    return good, rejects, info
