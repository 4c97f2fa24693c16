"""Read CSV, TSV, JSONL files and one-folder-per-class trees into raw records.

Nothing here decides which column is which or whether a row is usable: the
result is every data record with its file and 1-based starting line, plus the
records that could not even be parsed (wrong field count, invalid JSON).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aimass.errors import DataError

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
RAW_LIMIT = 2000
FORMATS_HINT = (
    "Use a .csv or .tsv file with a header line (e.g. `text,label`), a .jsonl file with one "
    'JSON object a line (e.g. {"text": "...", "label": "..."}), or a folder with one '
    "sub-folder per class holding .txt files."
)


@dataclass(slots=True)
class Record:
    """One data record as read from the source.

    Attributes:
        file: The file it comes from, as given (or the .txt file in a folder).
        line: 1-based physical line where the record starts.
        raw: The record's original text, cut at ``RAW_LIMIT`` characters.
        fields: Values by column name.
        source: Short location for messages and stored rows (``name.csv:12``).
    """

    file: str
    line: int
    raw: str
    fields: dict
    source: str


@dataclass
class RawTable:
    """Everything read from a source before column detection and row checks."""

    records: list[Record]
    malformed: list[dict]
    columns: list[str]
    info: dict = field(default_factory=dict)


def make_reject(file: str, line: int, reason: str, raw: str, kind: str) -> dict:
    """Build one reject entry (``kind`` is the reason's category, for counting)."""
    return {"file": file, "line": line, "reason": reason, "raw": raw, "kind": kind}


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode file content: UTF-8 (BOM or not), then GB18030, then latin-1.

    Args:
        data: The raw bytes.

    Returns:
        The text and the encoding used (``utf-8``, ``utf-8-sig``, ``gb18030`` or ``latin-1``).
    """
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == "utf-8-sig" and not data.startswith(codecs.BOM_UTF8):
            encoding = "utf-8"
        return text, encoding
    return data.decode("latin-1"), "latin-1"


def read_source(path: Path) -> RawTable:
    """Read a table file or a class folder into records.

    Args:
        path: A .csv/.tsv/.jsonl/.ndjson file or a folder of class sub-folders.

    Returns:
        The records, the malformed-record rejects, the column names and an ``info``
        dict (file, format, encoding, sha256).

    Raises:
        DataError: The path is missing, empty, or not a supported format.
    """
    if not path.exists():
        raise DataError(f"{path} does not exist", where=str(path), hint="Check the path.")
    if path.is_dir():
        return read_folder(path)
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise _unsupported(path)
    data = path.read_bytes()
    text, encoding = decode_bytes(data)
    if not text.strip():
        raise DataError("the file is empty", where=str(path), hint=FORMATS_HINT)
    lines = io.StringIO(text, newline="").readlines()
    reader = read_jsonl if fmt == "jsonl" else read_delimited
    table = reader(lines, str(path), fmt)
    sha = hashlib.sha256(data).hexdigest()
    table.info.update(file=str(path), format=fmt, encoding=encoding, sha256=sha)
    return table


def _unsupported(path: Path) -> DataError:
    if path.suffix.lower() == ".txt":
        return DataError(
            "a .txt file is not a table: there is no way to tell text from label",
            where=str(path),
            hint="Save it as CSV with a header line `text,label`, or put .txt files in a "
            "folder with one sub-folder per class (the sub-folder name is the label).",
        )
    return DataError(f"unsupported file type {path.suffix or '(none)'!r}", where=str(path), hint=FORMATS_HINT)


def read_delimited(lines: list[str], file: str, fmt: str) -> RawTable:
    """Parse CSV (RFC 4180 quoting) or TSV (no quoting) lines; the first row is the header."""
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    reader = csv.reader(lines, **options)
    rows = [item for item in _rows_with_lines(reader, file) if not _blank(item[2])]
    header = _header([c.strip() for c in rows[0][2]], file)
    name = Path(file).name
    records, malformed = [], []
    for start, end, row in rows[1:]:
        raw = "".join(lines[start - 1 : end]).rstrip("\r\n")[:RAW_LIMIT]
        if len(row) == len(header):
            fields = dict(zip(header, row, strict=True))
            records.append(Record(file, start, raw, fields, f"{name}:{start}"))
        else:
            reason = _field_count_reason(len(header), len(row), start, end)
            malformed.append(make_reject(file, start, reason, raw, "malformed line"))
    return RawTable(records, malformed, header, {})


def _rows_with_lines(reader, file: str):
    """Yield ``(first_line, last_line, row)`` for each CSV record."""
    previous = 0
    try:
        for row in reader:
            start, previous = previous + 1, reader.line_num
            yield start, previous, row
    except csv.Error as exc:
        raise DataError(
            f"cannot parse the file: {exc}",
            where=f"{file}:{previous + 1}",
            hint="Check the quoting near that line.",
        ) from exc


def _blank(row: list[str]) -> bool:
    return len(row) <= 1 and not "".join(row).strip()


def _header(names: list[str], file: str) -> list[str]:
    names = [name or f"column{i + 1}" for i, name in enumerate(names)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(
            f"the header repeats column name(s) {repeated}",
            where=f"{file}:1",
            hint="Give every column a distinct name.",
        )
    return names


def _field_count_reason(expected: int, found: int, start: int, end: int) -> str:
    reason = f"malformed line: expected {expected} fields, found {found}"
    if end - start >= 5:
        reason += f" (the record runs from line {start} to {end}: is a quote left open?)"
    return reason


def read_jsonl(lines: list[str], file: str, fmt: str = "jsonl") -> RawTable:
    """Parse JSON Lines: one JSON object a line; blank lines are skipped."""
    records, malformed, columns = [], [], {}
    name = Path(file).name
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        raw = line.rstrip("\r\n")[:RAW_LIMIT]
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            reason = f"malformed line: invalid JSON ({exc.msg} at column {exc.colno})"
            malformed.append(make_reject(file, number, reason, raw, "malformed line"))
            continue
        if not isinstance(obj, dict):
            reason = f"malformed line: not a JSON object (found {type(obj).__name__})"
            malformed.append(make_reject(file, number, reason, raw, "malformed line"))
            continue
        columns.update(dict.fromkeys(obj))
        records.append(Record(file, number, raw, obj, f"{name}:{number}"))
    return RawTable(records, malformed, list(columns), {})


def read_folder(path: Path) -> RawTable:
    """Read ``<path>/<label>/*.txt``: one record per file, the label is the sub-folder name."""
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    records, ignored, encodings = [], [], Counter()
    digest = hashlib.sha256()
    for folder in class_dirs:
        for file in sorted(folder.iterdir()):
            if not (file.is_file() and file.suffix.lower() == ".txt"):
                ignored.append(str(file.relative_to(path)))
                continue
            data = file.read_bytes()
            digest.update(f"{folder.name}/{file.name}\0".encode() + data + b"\0")
            records.append(_file_record(file, data, encodings))
    if not records:
        raise DataError(
            "no .txt files in class sub-folders",
            where=str(path),
            hint="Lay the folder out as <folder>/<label>/<name>.txt.",
        )
    info = {
        "file": str(path),
        "format": "folder",
        "encoding": _encoding_label(encodings),
        "encodings": dict(encodings),
        "ignored_files": ignored,
        "sha256": digest.hexdigest(),
    }
    return RawTable(records, [], ["text", "label"], info)


def _file_record(file: Path, data: bytes, encodings: Counter) -> Record:
    text, encoding = decode_bytes(data)
    encodings[encoding] += 1
    fields = {"text": text, "label": file.parent.name}
    return Record(str(file), 1, text[:RAW_LIMIT], fields, f"{file.parent.name}/{file.name}")


def _encoding_label(encodings: Counter) -> str:
    if len(encodings) == 1:
        return next(iter(encodings))
    parts = [f"{enc} ({n} file{'s' if n > 1 else ''})" for enc, n in encodings.most_common()]
    return "mixed: " + ", ".join(parts)
