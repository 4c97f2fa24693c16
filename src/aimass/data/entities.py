"""Import texts with their named entities, for ``token-classification``.

Accepted JSONL rows (one a line), in the shapes labelling tools and hubs write:

- **spans** (doccano, spaCy, Label Studio exports): ``{"text": "...", "entities": [[start, end,
  "PER"], ...]}``; the list may be called ``entities``, ``spans``, ``ner`` or ``label``, and a span
  may be an object ``{"start", "end", "label"}``. Offsets are characters, ``end`` exclusive;
- **tokens and tags** (Hugging Face's ``conll2003`` style): ``{"tokens": ["Li", "Na", ...], "tags":
  ["B-PER", "I-PER", ...]}`` (``ner_tags`` too, as text), in BIO, IOB1, BIOES or BILOU. Tokens are
  joined with a space, except between two CJK characters;
- **CoNLL** (``.conll``, ``.bio``, ``.iob``, ``.iob2``, ``.bioes``): one token a line, its tag in the
  last column, a blank line between sentences (``-DOCSTART-`` lines skipped).

A ``split`` field (train, valid, test) is kept; otherwise the rows are split at random. Each bad row
is rejected with its line and the reason (a span outside the text, an empty span, a span of spaces
only, overlapping spans, a tag that is not ``O`` or ``X-LABEL``, tokens and tags of different
lengths ...). Spans with spaces at their edges are trimmed, and spans that start or end inside a
word are counted, both in the warnings.

>>> spans_of({"text": "Li Na won", "entities": [{"start": 0, "end": 5, "label": "PER"}]})
('Li Na won', [[0, 5, 'PER']], None)
>>> spans_of({"tokens": ["Li", "Na", "won"], "tags": ["B-PER", "I-PER", "O"]})
('Li Na won', [[0, 5, 'PER']], None)
>>> spans_of({"text": "Li", "entities": [[0, 9, "PER"]]})[2]
'entities[0] [0, 9] is outside the text (2 characters)'
>>> spans_of({"text": "Li  Na", "entities": [[2, 4, "PER"]]})[2]
"entities[0] [2, 4] holds only spaces ('  '): it marks no word"
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

from aimass.data.dataset import Dataset, HeldOut
from aimass.data.language import detect_language
from aimass.data.pairs_import import random_splits
from aimass.data.read import (
    RAW_LIMIT,
    RawTable,
    Record,
    _check_table_size,
    decode_lines,
    loads_json,
    make_reject,
    read_source,
)
from aimass.data.storage import (
    ID_LENGTH,
    compute_digest,
    existing,
    import_entry,
    record_import,
    save_dataset,
    utc_now,
)
from aimass.data.validate import SPLIT_ALIASES, sort_rejects
from aimass.errors import DataError

FORMAT_VERSION = 1
CONLL_SUFFIXES = (".conll", ".bio", ".iob", ".iob2", ".bioes")
CONLL_HINT = (
    "Write one token a line with its tag in the last column (B-PER, I-PER, O), "
    "a blank line between sentences."
)
SPAN_KEYS = ("entities", "spans", "ner", "label")
TAG_KEYS = ("tags", "ner_tags")
CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
WORD = re.compile(r"\w")


def _is_span_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(x, list | dict) for x in value)


def _row_shape(obj) -> str | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tokens"), list) and any(k in obj for k in TAG_KEYS):
        return "tokens and tags"
    if isinstance(obj.get("text"), str) and any(_is_span_list(obj.get(k)) and obj.get(k) for k in SPAN_KEYS):
        return "texts with entity spans"
    return None


def looks_like_entities(path: Path) -> str | None:
    """A short description when ``path`` is a JSONL file of entity rows (in its first 50 lines:
    a row with ``tokens`` and tags, or a text with a non-empty list of spans), else None."""
    path = Path(path)
    if is_conll(path):
        return "a CoNLL file of tagged tokens (named entities)"
    if not path.is_file() or path.suffix.lower() not in (".jsonl", ".ndjson"):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for _, line in zip(range(50), fh):
                try:
                    shape = _row_shape(loads_json(line))
                except ValueError:
                    continue
                if shape:
                    return f"a JSONL file of {shape} (named entities)"
    except OSError:
        return None
    return None


def is_conll(path: Path) -> bool:
    """A CoNLL file: ``.conll``, ``.bio``, ``.iob``, ``.iob2`` or ``.bioes`` (one token a line, its
    tag in the last column, a blank line between sentences)."""
    return Path(path).is_file() and Path(path).suffix.lower() in CONLL_SUFFIXES


def read_conll(path: Path) -> RawTable:
    """One record per sentence of a CoNLL file, ``{"tokens", "tags"}`` read from the first and the
    last column of each line (``-DOCSTART-`` lines skipped); a line with a single column makes its
    sentence a malformed record, rejected with that line."""
    _check_table_size(path.stat().st_size, str(path))
    data = path.read_bytes()
    decoded = decode_lines(data)
    records, malformed, name = [], [], path.name
    sentence: list[tuple[int, list[str]]] = []

    def close() -> None:
        if not sentence:
            return
        first = sentence[0][0]
        raw = "\n".join(" ".join(cols) for _, cols in sentence)[:RAW_LIMIT]
        short = next((n for n, cols in sentence if len(cols) < 2), None)
        if short is not None or any(n in decoded.bad for n, _ in sentence):
            why = f"line {short} has no tag column" if short is not None else "a line could not be decoded"
            malformed.append(make_reject(str(path), first, why, raw, "malformed"))
        else:
            fields = {"tokens": [c[0] for _, c in sentence], "tags": [c[-1] for _, c in sentence]}
            records.append(Record(str(path), first, raw, fields, f"{name}:{first}"))
        sentence.clear()

    for number, line in enumerate(decoded.lines, start=1):
        cols = line.split()
        if not cols:
            close()
        elif cols[0] != "-DOCSTART-":
            sentence.append((number, cols))
    close()
    if not records and not malformed:
        raise DataError("the file holds no sentences", where=str(path), hint=CONLL_HINT)
    info = {
        "file": str(path),
        "format": "conll",
        "encoding": decoded.label,
        "encodings": dict(decoded.encodings),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return RawTable(records, malformed, ["tokens", "tags"], info)


def _span(i: int, raw) -> tuple[list | None, str | None]:
    if isinstance(raw, dict):
        raw = [raw.get("start"), raw.get("end"), raw.get("label")]
    if not isinstance(raw, list) or len(raw) != 3:
        return None, f"entities[{i}] is not [start, end, label] or {{start, end, label}}"
    start, end, label = raw
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
        return None, f"entities[{i}] has start/end {start!r}/{end!r}, not whole numbers"
    if not isinstance(label, str) or not label.strip():
        return None, f"entities[{i}] has no label (got {label!r})"
    return [start, end, label.strip()], None


def spans_of(fields: dict) -> tuple[str, list[list], str | None]:
    """(text, spans, None) or (text, [], reason)."""
    if isinstance(fields.get("tokens"), list):
        return _from_tokens(fields)
    text = fields.get("text")
    if not isinstance(text, str) or not text.strip():
        return "", [], "no text (a 'text' field with the sentence is needed)"
    key = next((k for k in SPAN_KEYS if k in fields), None)
    raw = fields.get(key) if key else []
    if not isinstance(raw, list):
        return text, [], f"'{key}' is {type(raw).__name__}, not a list of [start, end, label]"
    spans = []
    for i, item in enumerate(raw):
        span, reason = _span(i, item)
        if reason:
            return text, [], reason
        reason = _bad_offsets(i, span, text)
        if reason:
            return text, [], reason
        spans.append(span)
    return text, *_checked(text, spans)


def _bad_offsets(i: int, span: list, text: str) -> str | None:
    """Why span ``i`` marks no characters of ``text`` (None when it marks some that are not all
    spaces): an empty span and one of spaces only are rejected, not dropped, so that the row's
    annotation is not silently changed."""
    start, end = span[0], span[1]
    if start == end and 0 <= start <= len(text):
        return f"entities[{i}] {span[:2]} is an empty span (start == end): it marks no character"
    if end < start:
        return f"entities[{i}] {span[:2]} ends before it starts (end is exclusive: [start, end])"
    if not 0 <= start < end <= len(text):
        return f"entities[{i}] {span[:2]} is outside the text ({len(text)} characters)"
    if not text[start:end].strip():
        return f"entities[{i}] {span[:2]} holds only spaces ({text[start:end]!r}): it marks no word"
    return None


def _checked(text: str, spans: list[list]) -> tuple[list[list], str | None]:
    spans = sorted(spans)
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            return [], (
                f"overlapping entities {a} and {b}: a tagger gives each character one label; keep one"
            )
    return spans, None


def _from_tokens(fields: dict) -> tuple[str, list[list], str | None]:
    tokens = fields["tokens"]
    key = next((k for k in TAG_KEYS if k in fields), None)
    tags = fields.get(key) if key else None
    if not isinstance(tags, list):
        return "", [], "no 'tags' list beside 'tokens'"
    if len(tags) != len(tokens):
        return "", [], f"{len(tokens)} tokens but {len(tags)} tags"
    if not tokens:
        return "", [], "no tokens"
    text, offsets = "", []
    for i, token in enumerate(tokens):
        if not isinstance(token, str) or not token.strip():
            return "", [], f"tokens[{i}] is not a word (got {token!r})"
        if text and not (CJK.match(text[-1]) and CJK.match(token[0])):
            text += " "
        offsets.append((len(text), len(text) + len(token)))
        text += token
    spans: list[list] = []
    for i, (tag, (start, end)) in enumerate(zip(tags, offsets, strict=True)):
        if not isinstance(tag, str) or not (tag == "O" or re.fullmatch(r"[BIESLU]-\S+", tag)):
            return text, [], f"tags[{i}] is {tag!r}: use O or B-/I-LABEL (BIOES and BILOU too)"
        prefix, label = tag[:1], tag[2:]
        opens = prefix in "BSU" or not spans or spans[-1][2] != label or spans[-1][3]
        if tag == "O":
            if spans:
                spans[-1][3] = True  # closed
            continue
        if opens:
            spans.append([start, end, label, prefix in "SUEL"])
        else:
            spans[-1][1] = end
            spans[-1][3] = prefix in "EL"
    return text, *_checked(text, [s[:3] for s in spans])


ROW_HINT = (
    'Each line needs {"text": ..., "entities": [[start, end, label], ...]} '
    'or {"tokens": [...], "tags": [...]}.'
)


def import_entities(
    path: str | Path,
    *,
    name: str | None = None,
    seed: int = 0,
    valid_frac: float = 0.1,
    test_frac: float = 0.2,
    min_rows: int = 10,
) -> Dataset:
    """Read, check, split and store entity data under ``AIMASS_HOME/datasets/<id>/`` (kind
    ``entities``; one stored row ``{"text", "label": [[start, end, label], ...], "split"}``).

    Raises:
        DataError: Fewer than ``min_rows`` good rows, or no entity at all.
    """
    path = Path(path)
    rows, rejects, info, trimmed, inside_words = _read(path)
    by_reason = dict(Counter(r["kind"] for r in rejects))
    if len(rows) < min_rows or not any(r["label"] for r in rows):
        shown = "; ".join(f"{r['file']}:{r['line']}: {r['reason']}" for r in rejects[:3])
        raise DataError(
            f"{len(rows)} usable row(s) with {sum(len(r['label']) for r in rows)} entities; at least "
            f"{min_rows} rows and one entity needed"
            + (f"; {len(rejects)} rejected, e.g. {shown}" if rejects else ""),
            where=str(path),
            hint=ROW_HINT,
        )
    given = [r["split"] is not None for r in rows]
    if all(given):
        for row in rows:
            row["split"] = SPLIT_ALIASES[str(row["split"]).lower()]
        missing = [split for split in ("train", "test") if not any(r["split"] == split for r in rows)]
        if missing:  # training needs the one, the evaluation after it the other
            raise DataError(
                f"every row names its split, and none is {' or '.join(missing)}",
                where=str(path),
                hint="Give some rows split train and some split test (valid is optional), or leave the split "
                "field out to split at random.",
            )
        settings = {"kind": "entities", "split_source": "column"}
    else:
        for row, split in zip(rows, random_splits(len(rows), seed, valid_frac, test_frac), strict=True):
            row["split"] = split
        settings = {
            "kind": "entities",
            "split_source": "random",
            "seed": seed,
            "valid_frac": valid_frac,
            "test_frac": test_frac,
        }
    lines = entity_lines(rows)
    digest = compute_digest(lines, settings)
    name = name or path.stem
    stored = existing(digest[:ID_LENGTH])
    if stored is not None:
        return record_import(stored, name, {**info, "rejects_by_reason": by_reason}, rejects)
    warnings = []
    if any(given) and not all(given):
        warnings.append(f"{given.count(False)} row(s) have no split field: every row was split at random")
    if trimmed:
        warnings.append(f"{trimmed} entity span(s) had spaces at an edge and were trimmed")
    if inside_words:
        warnings.append(
            f"{inside_words} entity span(s) start or end inside a word: the tagger marks whole words, "
            "so these cannot be found exactly"
        )
    manifest = _manifest(digest, name, rows, rejects, info, by_reason, warnings, settings)
    manifest["language"] = detect_language([r["text"] for r in rows])
    return save_dataset(lines, rows, rejects, manifest)


def read_held_out(path: str | Path) -> HeldOut:
    """Every usable row of an entity file as held-out data: ``(texts, spans)``, what ``evaluate
    --data`` scores. Nothing is stored and the training minimum does not hold (one row is a test
    set); malformed, repeated and conflicting rows are left out as an import leaves them out.

    Raises:
        DataError: No usable row.
    """
    rows, rejects, *_ = _read(Path(path))
    if not rows:
        shown = "; ".join(f"{r['file']}:{r['line']}: {r['reason']}" for r in rejects[:3])
        raise DataError(
            f"No usable row to evaluate on ({len(rejects)} rejected" + (f", e.g. {shown})" if shown else ")"),
            where=str(path),
            hint=ROW_HINT,
        )
    return HeldOut([r["text"] for r in rows], [r["label"] for r in rows], rejects)


def _read(path: Path) -> tuple[list[dict], list[dict], dict, int, int]:
    """The good rows of an entity file (repeats and conflicts out), its rejects, the reader's info,
    and how many spans were trimmed and how many cut a word."""
    table = read_conll(path) if is_conll(path) else read_source(path)
    rows, rejects = [], list(table.malformed)
    trimmed = inside_words = 0
    for record in table.records:
        text, spans, reason = spans_of(record.fields)
        split = record.fields.get("split")
        if reason is None and split is not None and SPLIT_ALIASES.get(str(split).lower()) is None:
            reason = f"split {split!r} is not train, valid or test"
        if reason:
            rejects.append(make_reject(record.file, record.line, reason, record.raw, "invalid row"))
            continue
        spans, n = _trim(text, spans)
        trimmed += n
        inside_words += sum(_cuts_a_word(text, s) for s in spans)
        rows.append(
            {"text": text, "label": spans, "source": record.source, "split": split, "_record": record}
        )
    rows, repeated = _drop_repeats(rows)
    return rows, sort_rejects(rejects + repeated), table.info, trimmed, inside_words


def entity_lines(rows: list[dict]) -> list[str]:
    """The rows as the digest reads them (one JSON line each: text, spans, split)."""
    return [
        json.dumps({"text": r["text"], "label": r["label"], "split": r["split"]}, ensure_ascii=False)
        for r in rows
    ]


def entity_counts(rows: list[dict]) -> dict:
    """The manifest's ``counts``: rows in all and by split, entities by label and by split and label."""
    splits = ("train", "valid", "test")
    by_class = Counter(s[2] for r in rows for s in r["label"])
    by_split_class = {
        split: dict(sorted(Counter(s[2] for r in rows if r["split"] == split for s in r["label"]).items()))
        for split in splits
    }
    return {
        "total": len(rows),
        "by_split": {s: n for s in splits if (n := sum(r["split"] == s for r in rows))},
        "by_class": dict(sorted(by_class.items())),
        "by_split_class": {s: c for s, c in by_split_class.items() if c},
    }


def _drop_repeats(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """A text given again with the same entities is a duplicate (the first kept); with other
    entities, a conflict (every copy rejected, naming where the others are)."""
    by_text: dict[str, list[dict]] = {}
    for row in rows:
        by_text.setdefault(row["text"], []).append(row)
    keep, rejects = [], []
    for row in rows:
        copies = by_text[row["text"]]
        record = row.pop("_record")
        if len(copies) == 1:
            keep.append(row)
            continue
        others = [c for c in copies if c is not row and c["label"] != row["label"]]
        if others:
            shown = ", ".join(f"line {c['source'].rpartition(':')[2]}" for c in others[:3])
            reason = f"conflicting entities: the same text has other entities at {shown}"
            rejects.append(make_reject(record.file, record.line, reason, record.raw, "conflicting entities"))
        elif copies[0] is not row:
            reason = f"duplicate of line {copies[0]['source'].rpartition(':')[2]}"
            rejects.append(make_reject(record.file, record.line, reason, record.raw, "duplicate"))
        else:
            keep.append(row)
    return keep, rejects


def _trim(text: str, spans: list[list]) -> tuple[list[list], int]:
    out, n = [], 0
    for start, end, label in spans:
        a, b = start, end
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        n += (a, b) != (start, end)
        if a < b:
            out.append([a, b, label])
    return out, n


def _cuts_a_word(text: str, span: list) -> bool:
    start, end = span[0], span[1]

    def joined(i: int) -> bool:  # text[i-1] and text[i] belong to one word (not CJK characters)
        return 0 < i < len(text) and all(WORD.match(c) and not CJK.match(c) for c in text[i - 1 : i + 1])

    return joined(start) or joined(end)


def _manifest(digest, name, rows, rejects, info, by_reason, warnings, settings) -> dict:
    now = utc_now()
    return {
        "format_version": FORMAT_VERSION,
        "kind": "entities",
        "id": digest[:ID_LENGTH],
        "digest": digest,
        "name": name,
        "created": now,
        "source": str(Path(info["file"]).resolve()),
        "source_sha256": info["sha256"],
        "format": info["format"],
        "encoding": info["encoding"],
        "encodings": info.get("encodings", {}),
        "columns": {
            "text": "text",
            "label": "entities",
            "split": "split" if settings["split_source"] == "column" else None,
        },
        "counts": entity_counts(rows),
        "rejects": len(rejects),
        "rejects_by_reason": by_reason,
        "warnings": warnings,
        "split_settings": settings,
        "imports": [import_entry(name, {**info, "rejects_by_reason": by_reason}, now)],
    }


__all__ = [
    "entity_counts",
    "entity_lines",
    "import_entities",
    "is_conll",
    "looks_like_entities",
    "read_conll",
    "spans_of",
]
