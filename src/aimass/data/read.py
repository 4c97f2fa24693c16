"""Read CSV, TSV, JSONL files and one-folder-per-class trees of documents into raw records.

Nothing here decides which column is which or whether a row is usable: the
result is every data record with its file and 1-based starting line, plus the
records that could not even be parsed (wrong field count, invalid JSON, a line in
neither UTF-8 nor GB18030, a field over ``AIMASS_MAX_FIELD_CHARS``).

Files are decoded line by line, so a file whose rows were saved by different tools
(some UTF-8, some GB18030) reads right: every line that is valid UTF-8 is UTF-8, any
other line is GB18030 when it decodes as such, and a line that is neither is
rejected by its line number. A file with no UTF-8 line whose non-ASCII bytes stand
alone (accented letters in Western text) is read whole as latin-1, with a warning.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from aimass.data import documents
from aimass.data.archive import archive_kind, extract_archive, hidden_files, is_ignored
from aimass.data.documents import wide_encoding
from aimass.data.limits import MIB, limit, mebibytes
from aimass.errors import DataError, TooLargeError

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
RAW_LIMIT = 2000
MAX_FIELD_CHARS = MIB
FIELD_ENV = "AIMASS_MAX_FIELD_CHARS"
MAX_TABLE_BYTES = 1024 * MIB
TABLE_ENV = "AIMASS_MAX_TABLE_BYTES"
# a row costs ~1 KB while it is parsed, whatever its length: short rows, not bytes, bound memory
MAX_TABLE_ROWS = 2_000_000
ROWS_ENV = "AIMASS_MAX_TABLE_ROWS"
SAVE_AS_UTF8 = "save the file as UTF-8 (in most editors: Save As, encoding UTF-8) and import it again"
_HIGH_RUN = re.compile(rb"[\x80-\xff]+")
_GB_FOUR = re.compile(rb"[\x81-\xfe][\x30-\x39][\x81-\xfe][\x30-\x39]")
_SURROGATE = re.compile("[\ud800-\udfff]")
UNNAMED = "column{}"  # the name of the n-th column when its header cell is empty
SEPARATORS = (";", "\t", "|")  # besides the comma, what a .csv may be separated by
_QUOTED_CELL = re.compile(r'"(?:[^"]|"")*("|$)')  # a whole quoted cell, or one left open to the next line
FORMATS_HINT = (
    "Use a .csv or .tsv file with a header line (e.g. `text,label`), a .jsonl file with one "
    'JSON object a line (e.g. {"text": "...", "label": "..."}), or a folder (or .zip/.tar.gz) with '
    f"one sub-folder per class holding documents ({documents.LISTED})."
)


@dataclass(slots=True)
class Record:
    """One data record as read from the source.

    Attributes:
        file: The file it comes from, as given (or the document in a folder).
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


LINK_OUT = "a link that leads outside the folder being imported, into another class folder, or round a loop"


def leads_outside(path: Path, root: Path, fenced: tuple[Path, ...] = ()) -> bool:
    """True when ``path`` is a symbolic link whose target is not under ``root``, or lies in one of the
    ``fenced`` folders (the other class folders: a link there would read their files again under
    this label), or cannot be followed (a loop, a name too long): such a link is never read (a
    reject, :data:`LINK_OUT`), so a link dropped into an imported folder cannot pull the server's
    other files into a dataset. Other links that stay under ``root`` are followed."""
    try:
        if not path.is_symlink():
            return False
        target = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11's resolve)
        return True
    return not target.is_relative_to(root.resolve()) or any(target.is_relative_to(f) for f in fenced)


def link_reject(path: Path, root: Path, shown: str) -> dict:
    """The reject of a link that leads outside ``root``, named ``shown``."""
    return make_reject(shown, 1, LINK_OUT, path.relative_to(root).as_posix(), "link outside")


@dataclass
class Decoded:
    """A file decoded line by line.

    Attributes:
        lines: The physical lines, line endings kept (``\\n``, ``\\r\\n`` or ``\\r``).
        encodings: Lines holding non-ASCII characters, by the encoding that decoded them.
        bad: 1-based line number -> why it could not be decoded (its text holds
            ``\\xNN`` escapes in place of the bytes that failed).
        bom: The file starts with a UTF-8 byte order mark (removed from the text).
    """

    lines: list[str]
    encodings: Counter
    bad: dict[int, str]
    bom: bool = False

    @property
    def label(self) -> str:
        """``utf-8``, ``utf-8-sig``, ``gb18030``, ``latin-1`` or ``mixed: utf-8 (4 lines), gb18030 (2 lines)``
        (lines holding non-ASCII characters only)."""
        if len(self.encodings) > 1:
            return encoding_label(self.encodings, "line")
        found = next(iter(self.encodings), "utf-8")
        return "utf-8-sig" if self.bom and found == "utf-8" else found


def decode_lines(data: bytes) -> Decoded:
    """Decode each line by its own encoding: UTF-8 (BOM or not), else GB18030, else rejected; a
    UTF-16 or UTF-32 file (:func:`~aimass.data.documents.wide_encoding`) is decoded whole.

    A file that is not UTF-8 and whose non-ASCII bytes mostly stand alone between ASCII
    bytes (single-byte Western text such as ``café``) is read whole as latin-1. In a file
    with UTF-8 lines, a line of such single-byte text is rejected rather than read as
    GB18030 (which would turn ``çà`` into one Chinese character).

    Args:
        data: The raw bytes.

    Returns:
        The lines, the encodings found and the lines that could not be decoded.
    """
    wide = wide_encoding(data)
    if wide is not None:  # Excel's "Unicode text" and Windows tools write UTF-16
        try:
            text = data.decode(wide).lstrip("\ufeff")
        except UnicodeDecodeError as exc:
            lines = [data.decode(wide, "backslashreplace")]
            why = f"undecodable line 1: {wide.upper()} broken at byte {exc.start}; {SAVE_AS_UTF8}"
            return Decoded(lines, Counter(), {1: why}, False)
        lines = io.StringIO(text, newline="").readlines()
        return Decoded(lines, Counter({wide.removesuffix("-le").removesuffix("-be"): len(lines)}), {}, False)
    bom = data.startswith(codecs.BOM_UTF8)
    body = data[len(codecs.BOM_UTF8) :] if bom else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        lines = io.StringIO(text, newline="").readlines()
        return Decoded(lines, _count(lines, "utf-8"), {}, bom)
    chunks = body.splitlines(keepends=True)
    decoded = [_decode_line(chunk) for chunk in chunks]
    has_utf8 = any(encoding == "utf-8" for encoding, _ in decoded)
    if not has_utf8 and _single_byte(body):
        lines = [chunk.decode("latin-1") for chunk in chunks]
        return Decoded(lines, _count(lines, "latin-1"), {}, bom)
    lines, encodings, bad = [], Counter(), {}
    for number, (chunk, (encoding, line)) in enumerate(zip(chunks, decoded, strict=True), 1):
        why = _utf8_error(chunk) if encoding is None else None
        if encoding == "gb18030" and has_utf8 and _single_byte(chunk):
            why = "not UTF-8, and its bytes look like latin-1 text rather than GB18030"
        if why:
            bad[number] = f"undecodable line {number}: {why}; {SAVE_AS_UTF8}"
            line = chunk.decode("utf-8", "backslashreplace")
        elif encoding != "ascii":
            encodings[encoding] += 1
        lines.append(line)
    return Decoded(lines, encodings, bad, bom)


def _decode_line(chunk: bytes) -> tuple[str | None, str]:
    """``(encoding, text)``: ``ascii``, ``utf-8`` or ``gb18030``; ``(None, "")`` when neither decodes."""
    if chunk.isascii():
        return "ascii", chunk.decode("ascii")
    for encoding in ("utf-8", "gb18030"):
        try:
            return encoding, chunk.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None, ""


def _single_byte(data: bytes) -> bool:
    """Half or more of the runs of non-ASCII bytes are one byte long: single-byte text, not GB18030.

    GB18030 writes a Chinese character as two bytes, mostly both non-ASCII, so its
    non-ASCII bytes come in runs (its four-byte characters, ``[81-FE][30-39][81-FE][30-39]``,
    count as one run of two); latin-1 writes ``é`` as one byte between letters.
    """
    runs = [len(run) for run in _HIGH_RUN.findall(_GB_FOUR.sub(b"\x80\x80", data))]
    return bool(runs) and sum(n == 1 for n in runs) * 2 >= len(runs)


def _utf8_error(chunk: bytes) -> str:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"neither UTF-8 nor GB18030 (byte 0x{chunk[exc.start]:02X} at column {exc.start + 1})"
    return "neither UTF-8 nor GB18030"


def _count(lines: list[str], encoding: str) -> Counter:
    found = sum(not line.isascii() for line in lines)
    return Counter({encoding: found} if found else {})


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode file content line by line (see :func:`decode_lines`).

    Lines that cannot be decoded keep ``\\xNN`` escapes for the failing bytes.

    Returns:
        The text and the encoding label (``utf-8``, ``utf-8-sig``, ``gb18030``, ``latin-1``
        or ``mixed: ...``).
    """
    decoded = decode_lines(data)
    return "".join(decoded.lines), decoded.label


def field_limit() -> int:
    """Characters allowed in one field: ``AIMASS_MAX_FIELD_CHARS``, else ``MAX_FIELD_CHARS``."""
    return limit(FIELD_ENV, MAX_FIELD_CHARS, None)


def _too_large_reason(field_name: str, size: int, most: int) -> str:
    return (
        f"field too large: {field_name} holds {size:,} characters; the limit is {most:,} "
        f"({FIELD_ENV}). Shorten the text or split it into several rows, or raise {FIELD_ENV}"
    )


def read_source(path: Path) -> RawTable:
    """Read a table file or a class folder into records.

    Args:
        path: A .csv/.tsv/.jsonl/.ndjson file, or a folder of class sub-folders holding
            documents, or a .zip/.tar/.tar.gz archive of such a folder.

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
    if archive_kind(path) is not None:
        return read_archive(path)
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise _unsupported(path)
    _check_table_size(path.stat().st_size, str(path))
    data = path.read_bytes()
    _check_table_rows(line_count(data), str(path))
    decoded = decode_lines(data)
    if not "".join(decoded.lines).strip():
        raise DataError("the file is empty", where=str(path), hint=FORMATS_HINT)
    reader = read_jsonl if fmt == "jsonl" else read_delimited
    table = reader(decoded.lines, str(path), fmt, decoded.bad)
    sha = hashlib.sha256(data).hexdigest()
    table.info.update(
        file=str(path), format=fmt, encoding=decoded.label, encodings=dict(decoded.encodings), sha256=sha
    )
    return table


def line_count(data: bytes) -> int:
    """The lines as :func:`decode_lines` splits them: ``\\r\\n``, a lone ``\\r`` and ``\\n`` each end one
    (a file saved with old Mac line ends holds no ``\\n`` at all), UTF-16's ``\\r\\0\\n`` too.

    >>> line_count(b"a\\r\\nb\\rc\\nd"), line_count(b"a\\rb\\r")
    (4, 2)
    >>> line_count("a\\r\\nb\\r\\n".encode("utf-16-le"))
    2
    """
    utf16 = (wide_encoding(data) or "").startswith("utf-16")
    ends = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\x00\n" if utf16 else b"\r\n")
    return ends + (not data.rstrip(b"\x00").endswith((b"\n", b"\r")))


def _check_table_rows(lines: int, where: str) -> None:
    most = limit(ROWS_ENV, MAX_TABLE_ROWS, None)
    if lines > most + 1:  # the header line
        raise TooLargeError(
            f"the data has {lines:,} lines; the limit is {most:,} rows",
            where=where,
            hint=f"Split the file, or raise {ROWS_ENV} on a machine with the memory (~1 KB a row).",
        )


def _check_table_size(size: int, where: str) -> None:
    most = limit(TABLE_ENV, MAX_TABLE_BYTES, None)
    if size > most:
        raise TooLargeError(
            f"the data is {mebibytes(size)}; the limit is {mebibytes(most)}",
            where=where,
            hint=f"Split it into several files, or raise {TABLE_ENV}.",
        )


def _unsupported(path: Path) -> DataError:
    if path.suffix.lower() == ".txt":
        return DataError(
            "a .txt file is not a table: there is no way to tell text from label",
            where=str(path),
            hint="Save it as CSV with a header line `text,label`, or put .txt files in a "
            "folder with one sub-folder per class (the sub-folder name is the label).",
        )
    return DataError(f"unsupported file type {path.suffix or '(none)'!r}", where=str(path), hint=FORMATS_HINT)


def read_delimited(lines: list[str], file: str, fmt: str, bad: dict[int, str] | None = None) -> RawTable:
    """Parse CSV (RFC 4180 quoting; the separator from :func:`csv_delimiter`) or TSV (quoted as
    :func:`tsv_rows` finds) lines; the first row is the header.

    Args:
        lines: The physical lines.
        file: The file, for records and messages.
        fmt: ``csv`` or ``tsv``.
        bad: Lines that could not be decoded (1-based number -> reason): a record
            touching one is rejected.

    Returns:
        The table; its ``info`` names a CSV's ``delimiter`` when it is not a comma.
    """
    bad = bad or {}
    sep = csv_delimiter(lines) if fmt == "csv" else "\t"
    found = _rows_with_lines(lines, sep, True) if fmt == "csv" else tsv_rows(lines)
    rows = [item for item in found if not _blank(item[2])]
    if not rows:
        return RawTable([], [], [], {})
    given = [c.strip() for c in rows[0][2]]
    header = _header(given, file, _bad_in(bad, rows[0][0], rows[0][1]))
    name, most = Path(file).name, field_limit()
    records, malformed = [], []
    for start, end, row in rows[1:]:
        raw = "".join(lines[start - 1 : end]).rstrip("\r\n")[:RAW_LIMIT]
        problem = (
            _bad_in(bad, start, end)
            or _repeated_header(given, row, start)
            or _row_problem(header, row, start, end, most)
        )
        if problem:
            malformed.append(make_reject(file, start, problem[0], raw, problem[1]))
        else:
            records.append(Record(file, start, raw, dict(zip(header, row, strict=True)), f"{name}:{start}"))
    return RawTable(records, malformed, header, {"delimiter": sep} if fmt == "csv" and sep != "," else {})


def csv_delimiter(lines: list[str]) -> str:
    """A .csv's separator: a comma, unless its header line holds none and exactly one of ``;``, tab or
    ``|`` (outside quotes). Excel writes ``;`` where the decimal mark is a comma (most of Europe);
    read with commas, such a file is one column. A header with a comma is read as before.

    >>> csv_delimiter(["id;comment\\r\\n", "1;Broke, sadly\\r\\n"]), csv_delimiter(['"a;b",c\\n'])
    (';', ',')
    >>> csv_delimiter(["text\\n"]), csv_delimiter(["a;b|c\\n"])
    (',', ',')
    """
    header = next((line for line in lines if line.strip()), "")
    bare = re.sub(r'"[^"]*"', "", header)
    found = [sep for sep in SEPARATORS if sep in bare]
    return found[0] if len(found) == 1 and "," not in bare else ","


def tsv_rows(lines: list[str]):
    """A TSV's records, read with quotes as a CSV reads them when the file quotes its cells.

    A TSV written by Python's csv module or pandas quotes a cell holding a tab, a newline or a quote
    (``"two\\nlines"``); read without quoting, such a cell breaks into malformed lines and stray
    quotes. A hand-made TSV may hold a quote at the start of a cell (``"Quoted" start``) that quotes
    nothing, or open a quote it never closes. So a file is read quoted only when one of its cells is a
    quoted cell (``"..."`` whole, or opened and left open to the next line) and reading it so leaves
    fewer records of the wrong field count, or as many and the same number of records (a stray quote
    would join lines).
    """
    plain = list(_rows_with_lines(lines, "\t", False))
    cells = (cell for line in lines if '"' in line for cell in line.rstrip("\r\n").split("\t"))
    if not any(_QUOTED_CELL.fullmatch(cell) for cell in cells):
        return plain
    quoted = list(_rows_with_lines(lines, "\t", True))
    fewer = _uneven(quoted) < _uneven(plain)  # multi-line cells now whole
    same = _uneven(quoted) == _uneven(plain) and len(quoted) == len(plain)  # only quotes taken off
    return quoted if fewer or same else plain


def _uneven(rows: list[tuple]) -> int:
    """How many records have another field count than the first (the header)."""
    widths = [len(row) for _, _, row in rows if not _blank(row)]
    return sum(width != widths[0] for width in widths)


def _bad_in(bad: dict[int, str], start: int, end: int) -> tuple[str, str] | None:
    """The (reason, kind) of the first undecodable line of a record, if any."""
    if not bad:
        return None
    reason = next((bad[n] for n in range(start, end + 1) if n in bad), None)
    return (reason, "undecodable line") if reason else None


def _repeated_header(header: list[str], row: list[str], start: int) -> tuple[str, str] | None:
    """A row that is the header line again (two files joined into one) is not data: read as a row, its
    column names would become a text and a one-example class."""
    if [c.strip() for c in row] != header:
        return None
    reason = (
        f"the header repeated at line {start} (were two files joined?): not a data row; "
        "delete that line if it is left over from joining files"
    )
    return reason, "repeated header"


def _row_problem(header: list[str], row: list[str], start: int, end: int, most: int) -> tuple | None:
    for i, value in enumerate(row):
        if len(value) > most:
            column = repr(header[i]) if i < len(header) else f"column {i + 1}"
            return _too_large_reason(column, len(value), most), "field too large"
    if len(row) != len(header):
        return _field_count_reason(len(header), len(row), start, end), "malformed line"
    return None


def _rows_with_lines(lines: list[str], sep: str, quoted: bool):
    """Yield ``(first_line, last_line, row)`` for each record split at ``sep``, with RFC 4180 quotes
    when ``quoted``.

    The csv module refuses a field over its process-wide ``field_size_limit`` (131,072
    characters by default), which aimass leaves as it is: such a record is split by
    :func:`_split_record` instead and the caller applies aimass's own limit.
    """
    options = {"delimiter": sep} if quoted else {"delimiter": sep, "quoting": csv.QUOTE_NONE}
    source, done = iter(lines), 0
    while True:
        reader = csv.reader(source, **options)
        previous = done
        try:
            for row in reader:
                start, previous = previous + 1, done + reader.line_num
                yield start, previous, row
            return
        except csv.Error:
            consumed = done + reader.line_num
            done = max(consumed, _record_end(lines, previous, quoted))
            for _ in islice(source, done - consumed):
                pass
            yield previous + 1, done, _split_record("".join(lines[previous:done]), sep, quoted)


def _record_end(lines: list[str], first: int, quoted: bool) -> int:
    """The line count after the record starting at index ``first``: its quotes balance there."""
    if not quoted:
        return first + 1
    quotes = 0
    for index in range(first, len(lines)):
        quotes += lines[index].count('"')
        if quotes % 2 == 0:
            return index + 1
    return len(lines)


def _split_record(text: str, sep: str, quoted: bool) -> list[str]:
    """Split one record without the csv module (RFC 4180: ``""`` inside quotes is a quote)."""
    text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith(("\n", "\r")) else text
    if not quoted:
        return text.split(sep)
    fields, current = [], []
    parts = text.split('"')
    for i, part in enumerate(parts):
        if i % 2:
            current.append(part)
        elif part == "" and 0 < i < len(parts) - 1:
            current.append('"')
        else:
            first, *rest = part.split(sep)
            current.append(first)
            for piece in rest:
                fields.append("".join(current))
                current = [piece]
    fields.append("".join(current))
    return fields


def _blank(row: list[str]) -> bool:
    return len(row) <= 1 and not "".join(row).strip()


def _header(names: list[str], file: str, problem: tuple[str, str] | None = None) -> list[str]:
    if problem:
        raise DataError(f"cannot read the header line: {problem[0]}", where=f"{file}:1", hint=SAVE_AS_UTF8)
    names = [name or UNNAMED.format(i + 1) for i, name in enumerate(names)]
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


def read_jsonl(lines: list[str], file: str, fmt: str = "jsonl", bad: dict | None = None) -> RawTable:
    """Parse JSON Lines: one JSON object a line; blank lines are skipped.

    Lines in ``bad`` (1-based number -> reason) could not be decoded and are rejected.
    """
    bad = bad or {}
    records, malformed, columns = [], [], {}
    name, most = Path(file).name, field_limit()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        raw = line.rstrip("\r\n")[:RAW_LIMIT]
        obj, problem = _json_object(line, bad.get(number), most)
        if problem:
            malformed.append(make_reject(file, number, problem[0], raw, problem[1]))
            continue
        columns.update(dict.fromkeys(obj))
        records.append(Record(file, number, raw, obj, f"{name}:{number}"))
    return RawTable(records, malformed, list(columns), {})


def loads_json(text: str, *, unique_keys: bool = False):
    """``json.loads`` for user data: a ValueError (never a RecursionError) for JSON nested too deeply,
    and ``NaN`` / ``Infinity``, which are not JSON, refused rather than read as numbers. With
    ``unique_keys``, an object giving a key twice is refused too (``json`` would keep the last value
    and drop the other without a word).

    >>> loads_json('{"a": [1, "x"]}')
    {'a': [1, 'x']}
    >>> loads_json('{"label": NaN}')
    Traceback (most recent call last):
    ...
    ValueError: NaN is not a JSON value; write null, a number or a string
    >>> loads_json('{"label": "pos", "label": "neg"}', unique_keys=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aimass.data.read.DuplicateKey: field 'label' is given twice in one object: ... keep one 'label'
    """
    hook = _unique_object if unique_keys else None
    try:
        return json.loads(text, parse_constant=_not_json, object_pairs_hook=hook)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class DuplicateKey(ValueError):
    """A JSON object gives the same key twice (:func:`loads_json` with ``unique_keys``)."""


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen = set()
    key = next(k for k, _ in pairs if k in seen or seen.add(k))
    raise DuplicateKey(
        f"field {key!r} is given twice in one object: JSON keeps only the last value ({obj[key]!r:.60}), "
        f"so the other would be lost; keep one {key!r}"
    )


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON value; write null, a number or a string")


def _json_object(line: str, undecodable: str | None, most: int) -> tuple[dict | None, tuple | None]:
    """The line's object, or None and ``(reason, kind)``."""
    if undecodable:
        return None, (undecodable, "undecodable line")
    try:
        obj = loads_json(line, unique_keys=True)
    except json.JSONDecodeError as exc:
        return None, (f"malformed line: invalid JSON ({exc.msg} at column {exc.colno})", "malformed line")
    except DuplicateKey as exc:
        return None, (str(exc), "duplicate key")
    except ValueError as exc:
        return None, (f"malformed line: {exc}", "malformed line")
    if not isinstance(obj, dict):
        return None, (f"malformed line: not a JSON object (found {type(obj).__name__})", "malformed line")
    return obj, _string_problem(obj, most)


def _string_problem(obj: dict, most: int) -> tuple[str, str] | None:
    """``(reason, kind)`` for the first string anywhere in ``obj`` (a label in a list, a message's
    content, a key) that is over ``most`` characters or holds a lone surrogate, else None: every
    field is bounded before any work, and a string that cannot be written as UTF-8 (an unpaired
    ``\\ud800`` escape, which JSON allows) is refused here rather than crashing the import later."""
    stack = [(repr(k), k, v) for k, v in obj.items()]
    while stack:
        where, key, value = stack.pop()
        for text in (key, value) if isinstance(value, str) else (key,):
            if not _encodable(text):
                return _surrogate_reason(where, text), "invalid text"
        if isinstance(value, str) and len(value) > most:
            return _too_large_reason(where, len(value), most), "field too large"
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}", k, v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", "", v) for i, v in enumerate(value))
    return None


def _encodable(text: str) -> bool:
    return text.isascii() or not _SURROGATE.search(text)


def _surrogate_reason(where: str, text: str) -> str:
    found = _SURROGATE.search(text).group()
    return (
        f"field {where} holds a lone surrogate (\\u{ord(found):04x}), half of a character that cannot be "
        "stored as UTF-8; the tool that wrote the file cut a character in two: fix or remove that "
        "escape in the line"
    )


def read_archive(path: Path) -> RawTable:
    """Read a .zip/.tar/.tar.gz of a class folder: extracted safely (:func:`extract_archive`) into
    a scratch folder beside the datasets, read as :func:`read_folder`, the scratch removed.
    Rejects name the member (``news.zip/sport/12.pdf``)."""
    import tempfile

    from aimass.data.storage import datasets_dir

    with tempfile.TemporaryDirectory(prefix=".extract-", dir=datasets_dir()) as scratch:
        extracted = extract_archive(path, scratch)
        root = _lone_folder(Path(scratch))
        table = read_folder(root, shown_as=lambda f: f"{path}/{Path(f).relative_to(scratch).as_posix()}")
    table.info.update(file=str(path), archive=archive_kind(path))
    table.info["hidden_files"] += extracted.ignored  # not extracted: named as in the archive
    return table


def _lone_folder(root: Path) -> Path:
    """Step into a lone top folder (an archive of the dataset folder itself)."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        inner = [p for p in entries[0].iterdir() if not p.name.startswith(".")]
        if not any(p.is_dir() for p in inner):  # the lone folder is a class folder: keep it
            return root
        root = entries[0]


def read_folder(path: Path, shown_as=str) -> RawTable:
    """Read ``<path>/<label>/**/<document>``: one record per file, the label is the class folder's
    name at the top, however deep the file lies below it (``pos/2024/a.txt`` is ``pos``), as the
    image import reads class folders.

    Documents are .txt files (decoded line by line, as tables are), .pdf, .docx, .html and
    .htm (see :mod:`aimass.data.documents`). A file over the field limit, with a line in neither
    UTF-8 nor GB18030, a ``.txt`` that holds a PDF or binary bytes, or a document that cannot be
    read or holds no text is rejected with the reason; other files are listed in
    ``info["ignored_files"]`` (a warning at import), hidden ones in ``info["hidden_files"]``, so
    every file is a row, a reject or named in a warning. A symbolic link that leads outside ``path``
    (a document or a whole folder) is never read: it is a reject saying so (:func:`leads_outside`);
    links that stay inside are followed, each real folder once.

    Args:
        path: The folder.
        shown_as: How a file is named in rejects and rows (an archive names its member).
    """
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    links = [p for p in entries if leads_outside(p, path)]
    class_dirs = [p for p in entries if p.is_dir() and p not in links]
    files, ignored = [], []
    for folder in class_dirs:
        others = tuple(d.resolve() for d in class_dirs if d != folder)  # links there: rejects
        for file, outside in walk(folder, path, others):
            if outside:
                links.append(file)
            elif file.is_file() and documents.is_document(file.name):
                files.append((folder.name, file))
            else:
                ignored.append(file.relative_to(path).as_posix())
    ignored += [p.name for p in entries if p.is_file() and p not in links]
    if not files:
        unread = f"; not read: {len(links)} {LINK_OUT}" if links else ""
        raise DataError(
            f"no documents ({documents.LISTED}) in class sub-folders{unread}",
            where=shown_as(path),
            hint="Lay the folder out as <folder>/<label>/<name>.txt (or .pdf, .docx, .html)"
            + (", with the files themselves in it rather than links to elsewhere." if links else "."),
        )
    _check_table_size(sum(file.stat().st_size for _, file in files), shown_as(path))
    records, encodings, kinds = [], Counter(), Counter()
    malformed = [link_reject(link, path, shown_as(link)) for link in links]
    digest, most = hashlib.sha256(), field_limit()
    for label, file in files:
        data, name = file.read_bytes(), file.relative_to(path).as_posix()
        digest.update(f"{name}\0".encode() + data + b"\0")
        item = _file_record(file, data, (label, name), encodings, most, shown_as)
        (records if isinstance(item, Record) else malformed).append(item)
        kinds[documents.document_kind(file.name, data)] += isinstance(item, Record)
    info = {
        "file": shown_as(path),
        "format": "folder",
        "encoding": encoding_label(encodings, "file") if encodings else "utf-8",
        "encodings": dict(encodings),
        "documents": {kind: n for kind, n in kinds.items() if n},
        "ignored_files": ignored,
        "hidden_files": hidden_files(path),  # left out, said in a warning (litter is not)
        "sha256": digest.hexdigest(),
    }
    return RawTable(records, malformed, ["text", "label"], info)


def walk(folder: Path, root: Path, fenced: tuple[Path, ...] = ()):
    """Every file under ``folder``, sorted, as ``(path, False)``, and every link under it that leads
    outside ``root`` as ``(link, True)``, never followed. Hidden names and litter are skipped
    (:func:`~aimass.data.archive.hidden_files` lists the hidden ones); links that stay inside ``root``
    are followed, each real folder walked once, never one back up to ``folder`` or above it (a
    loop). Class folders of documents and of images are walked alike."""
    seen, start = set(), folder.resolve()
    for top, dirs, names in os.walk(folder, followlinks=True):
        here, real = Path(top), Path(top).resolve()
        if real in seen or (here != folder and start.is_relative_to(real)):
            dirs[:] = []
            continue
        seen.add(real)
        visible = [n for n in sorted(dirs + names) if not is_ignored((n,))]
        outside = {n for n in visible if leads_outside(here / n, root, fenced)}
        dirs[:] = [n for n in visible if n in dirs and n not in outside]
        yield from ((here / n, n in outside) for n in visible if n in outside or n in names)


def _file_record(
    file: Path, data: bytes, place: tuple[str, str], encodings: Counter, most: int, shown_as=str
) -> Record | dict:
    """The file as a record, or its reject; counts a text file's encoding(s) in ``encodings``.
    ``place``: its label (the class folder) and its path in the folder (the row's source)."""
    where, (label, name) = shown_as(file), place
    kind = documents.document_kind(file.name, data)
    if kind != "text":
        try:
            text = documents.extract_text(kind, data, where, most)
        except DataError as exc:
            return _unreadable_reject(exc, where)
        if len(text) > most:  # extraction stops past the limit, so a cut document lands here
            reason = _too_large_reason("the document", len(text), most)
            return make_reject(where, 1, reason, text[:RAW_LIMIT], "field too large")
        return Record(where, 1, text[:RAW_LIMIT], {"text": text, "label": label}, name)
    decoded = decode_lines(data)
    text = "".join(decoded.lines)
    try:
        documents.check_plain_text(data, text, where)
    except DataError as exc:
        return _unreadable_reject(exc, where)
    if decoded.bad:
        number, reason = next(iter(decoded.bad.items()))
        raw = decoded.lines[number - 1][:RAW_LIMIT]
        return make_reject(where, number, reason, raw, "undecodable line")
    if len(text) > most:
        reason = _too_large_reason("the file", len(text), most)
        return make_reject(where, 1, reason, text[:RAW_LIMIT], "field too large")
    found = decoded.label
    encodings.update(decoded.encodings.keys() if found.startswith("mixed") else [found])  # files, not lines
    return Record(where, 1, text[:RAW_LIMIT], {"text": text, "label": label}, name)


def _unreadable_reject(exc: DataError, where: str) -> dict:
    reason = f"{exc.message}. {exc.hint}" if exc.hint else exc.message
    return make_reject(where, 1, reason, "", "unreadable document")


def document_counts(rows: list[dict]) -> dict[str, int]:
    """Rows of a folder import by document format, from the rows kept after the row checks (empty
    texts, duplicates and conflicts rejected), so the counts add up to the rows.

    >>> document_counts([{"source": "pos/a.pdf"}, {"source": "neg/2024/b.txt"}, {"source": "neg/c.TXT"}])
    {'pdf': 1, 'text': 2}
    """
    return dict(Counter(documents.document_kind(row["source"], b"") for row in rows))


def encoding_label(encodings: Counter, unit: str) -> str:
    """One encoding's name, or ``mixed: utf-8 (3 files), latin-1 (1 file)`` (``unit``: line or file)."""
    if len(encodings) == 1:
        return next(iter(encodings))
    parts = [f"{enc} ({n} {unit}{'s' if n > 1 else ''})" for enc, n in encodings.most_common()]
    return "mixed: " + ", ".join(parts)
