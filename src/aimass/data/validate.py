"""Row checks (empty text, missing label, conflicts, duplicates) and trainability checks."""

from __future__ import annotations

import itertools
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass

from aimass.data import multilabel
from aimass.data.columns import Columns
from aimass.data.read import Record, make_reject
from aimass.errors import DataError

SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
ACCEPTED_SPLITS = ", ".join(SPLIT_ALIASES)


@dataclass(slots=True)
class _Row:
    record: Record
    text: str
    label: str
    split: str | None
    key: str

    def public(self) -> dict:
        return {"text": self.text, "label": self.label, "split": self.split, "source": self.record.source}

    def reject(self, reason: str, kind: str) -> dict:
        rec = self.record
        return make_reject(rec.file, rec.line, reason, rec.raw, kind)


def validate_records(records: list[Record], cols: Columns) -> tuple[list[dict], list[dict]]:
    """Split records into good rows and rejects.

    Args:
        records: Parsed records in file order.
        cols: The columns to use.

    Returns:
        Good rows (``text``, ``label``, ``split``, ``source``) in file order, and rejects
        (``file``, ``line``, ``reason``, ``raw``, ``kind``) in file order.
    """
    rows, rejects = _check_fields(records, cols)
    rows, conflicts = _drop_conflicts(rows)
    rows, duplicates = _drop_duplicates(rows)
    rejects = sort_rejects(rejects + conflicts + duplicates)
    return [row.public() for row in rows], rejects


def sort_rejects(rejects: list[dict]) -> list[dict]:
    """Rejects in file order."""
    return sorted(rejects, key=lambda r: (r["file"], r["line"]))


def _value(value) -> str | None:
    """A field as stripped text; None for JSON lists/objects, which are not text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, int, float)):
        return str(value)
    return None


def _check_fields(records: list[Record], cols: Columns) -> tuple[list[_Row], list[dict]]:
    rows, rejects = [], []
    for rec in records:
        text, label = _value(rec.fields.get(cols.text)), _value(rec.fields.get(cols.label))
        split = _value(rec.fields.get(cols.split)) if cols.split else None
        row = _Row(rec, text or "", label or "", None, " ".join((text or "").split()))
        problem = _problem(text, label, split, cols)
        if problem:
            rejects.append(row.reject(*problem))
            continue
        row.split = SPLIT_ALIASES[split.lower()] if cols.split else None
        rows.append(row)
    return rows, rejects


def _problem(text, label, split, cols: Columns) -> tuple[str, str] | None:
    """The (reason, kind) that rejects a row, or None when its fields are fine."""
    if text is None:
        return f"malformed line: {cols.text!r} is not a string", "malformed line"
    if not text:
        return "empty text", "empty text"
    if label is None:
        return f"malformed line: {cols.label!r} is not a string", "malformed line"
    if not label:
        return "missing label", "missing label"
    if cols.split and (split or "").lower() not in SPLIT_ALIASES:
        shown = repr(split) if split else "(empty)"
        return f"unknown split {shown} (accepted: {ACCEPTED_SPLITS})", "unknown split"
    return None


def _drop_conflicts(rows: list[_Row]) -> tuple[list[_Row], list[dict]]:
    """Reject every row whose normalised text also appears with another label."""
    first_label: dict[str, str] = {}
    conflicted: set[str] = set()
    for row in rows:
        if first_label.setdefault(row.key, row.label) != row.label:
            conflicted.add(row.key)
    if not conflicted:
        return rows, []
    groups: dict[str, dict[str, list[_Row]]] = defaultdict(dict)
    for row in rows:
        if row.key in conflicted:
            groups[row.key].setdefault(row.label, []).append(row)
    keep = [row for row in rows if row.key not in conflicted]
    return keep, [_conflict_reject(row, groups[row.key]) for row in rows if row.key in conflicted]


def _conflict_reject(row: _Row, by_label: dict[str, list[_Row]], limit: int = 3) -> dict:
    """The reject of one conflicting row: at most ``limit`` other labels named (a reason stays short,
    and n rows of n labels cost n, not n squared)."""
    others = [label for label in itertools.islice(by_label, limit + 1) if label != row.label][:limit]
    shown = "; ".join(
        f"{shown_label(label)} at {_places(by_label[label], row.record.file)}" for label in others
    )
    more = len(by_label) - 1 - len(others)
    shown += f"; and {more} more label(s)" if more > 0 else ""
    return row.reject(f"conflicting labels: the same text is also labelled {shown}", "conflicting labels")


def shown_label(label: str, most: int = 60) -> str:
    """A label as a message shows it: quoted, and cut at ``most`` characters.

    >>> shown_label("x" * 100).endswith("…' (100 chars)"), shown_label("tech")
    (True, "'tech'")
    """
    return repr(label) if len(label) <= most else repr(label[:most] + "…") + f" ({len(label)} chars)"


def _places(rows: list[_Row], file: str, limit: int = 3) -> str:
    places = [_place(r.record, file) for r in rows[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(places) + more


def _place(record: Record, file: str) -> str:
    return f"line {record.line}" if record.file == file else record.source


def _drop_duplicates(rows: list[_Row]) -> tuple[list[_Row], list[dict]]:
    """Duplicates (the same text up to white space, as conflicts are found; the same label): the
    first is kept. A PDF's line breaks do not make its article a new row beside the .txt copy."""
    first: dict[str, _Row] = {}
    keep, rejects = [], []
    for row in rows:
        earlier = first.setdefault(row.key, row)
        if earlier is row:
            keep.append(row)
        else:
            reason = f"duplicate of {_place(earlier.record, row.record.file)}"
            rejects.append(row.reject(reason, "duplicate"))
    return keep, rejects


def reject_counts(rejects: list[dict]) -> dict[str, int]:
    """Number of rejects by kind, most frequent first."""
    return dict(Counter(r["kind"] for r in rejects).most_common())


def _rejects_note(rejects: list[dict]) -> str:
    if not rejects:
        return ""
    kinds = ", ".join(f"{kind}: {n}" for kind, n in reject_counts(rejects).items())
    return f" {len(rejects)} row(s) were rejected ({kinds})."


def check_trainable(
    rows: list[dict], rejects: list[dict], *, min_rows: int, where: str, multi: bool = False
) -> Counter:
    """Stop when the good rows cannot train a classifier.

    Args:
        rows: Good rows.
        rejects: Rejected rows (only to explain the numbers).
        min_rows: Fewest good rows accepted.
        where: File name for error messages.
        multi: The rows carry several labels each: every label is a class, counted once per row
            that has it.

    Returns:
        Row counts by class.

    Raises:
        DataError: Too few rows, fewer than two classes, or a class with one example.
    """
    counts = multilabel.label_counts(rows) if multi else Counter(row["label"] for row in rows)
    note = _rejects_note(rejects)
    if len(rows) < min_rows:
        raise DataError(
            f"only {len(rows)} usable row(s); at least {min_rows} are needed",
            where=where,
            hint="Add more labelled rows." + note,
        )
    if len(counts) < 2:
        found = f"only one class ({shown_label(next(iter(counts)))})" if counts else "no classes"
        raise DataError(
            f"{found}: a classifier needs at least two",
            where=where,
            hint="Add rows for at least one other class, or check the label column." + note,
        )
    small = {label: n for label, n in sorted(counts.items()) if n < 2}
    if small:
        listed = ", ".join(f"{shown_label(label)} has {n} example" for label, n in list(small.items())[:10])
        listed += f", and {len(small) - 10} more class(es) of one example" if len(small) > 10 else ""
        raise DataError(
            f"every class needs at least 2 examples: {listed}",
            where=where,
            hint="Add examples for that class or remove its rows."
            + note
            + ("" if multi else _lists_hint(counts)),
        )
    return counts


def _lists_hint(counts: Counter) -> str:
    """A hint when most classes read like lists of labels (``billing;urgent``): the separator to name.

    >>> "--label-sep ';'" in _lists_hint(Counter({"billing;urgent": 1, "billing": 3, "urgent;other": 1}))
    True
    """
    for sep in (";", "|", ","):
        joined = [label for label in counts if sep in label]
        if len(joined) * 3 >= len(counts):
            return (
                f" The labels look like lists ({joined[0]!r}): for several labels per text, "
                f"import with --label-sep {sep!r} (Python and REST: label_sep)."
            )
    return ""


def look_alike_labels(by_class: dict[str, int], shown: int = 3) -> list[str]:
    """A warning for each set of labels that differ only in case, full- or half-width characters or
    spacing (``Pos``, ``pos``, ``ｐｏｓ``): they are separate classes, as they were written, which
    is rarely what was meant. ``by_class``: rows per label.

    >>> look_alike_labels({"pos": 18, "Pos": 2, "ｐｏｓ ": 1, "neg": 20})[0][:55]
    "labels 'pos' (18 rows) and 'Pos' (2), 'ｐｏｓ ' (1) differ"
    """
    groups: dict[str, list[str]] = {}
    for label in by_class:
        key = " ".join(unicodedata.normalize("NFKC", label).casefold().split())
        groups.setdefault(key, []).append(label)
    warnings = []
    for labels in groups.values():
        if len(labels) < 2:
            continue
        labels.sort(key=lambda label: -by_class[label])
        first, rest = labels[0], labels[1:shown]
        listed = f"{first!r} ({by_class[first]:,} rows) and " + ", ".join(
            f"{x!r} ({by_class[x]:,})" for x in rest
        )
        more = f" and {len(labels) - shown} more" if len(labels) > shown else ""
        warnings.append(
            f"labels {listed}{more} differ only in case, width or spacing: they are kept as separate "
            "classes; write them alike if they are one class"
        )
    return warnings
