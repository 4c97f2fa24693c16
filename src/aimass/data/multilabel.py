"""Rows with several labels each (multi-label data): how they are read, stored and counted.

A row's labels come from a JSON list (``{"text": "...", "labels": ["billing", "urgent"]}``, found
by itself) or from one table cell cut at a separator the user names (``--label-sep ";"``:
``billing;urgent``). They are stored as one string, the distinct labels sorted and joined by
:data:`JOIN`, so every row check that compares labels (conflicts, duplicates, the digest) works
unchanged; :func:`split_labels` reads them back.

>>> joined(["urgent", "billing", "urgent"], None)
'billing|urgent'
>>> joined(" billing ; urgent ;", ";")
'billing|urgent'
>>> split_labels("billing|urgent")
['billing', 'urgent']
>>> joined("a|b", ";")
Traceback (most recent call last):
...
ValueError: the label 'a|b' holds '|', which aimass joins a row's labels with; rename the label
"""

from __future__ import annotations

from collections import Counter

from aimass.data.read import Record, make_reject

JOIN = "|"  # a stored row's labels, sorted, joined by this
KINDS = frozenset({"multilabel", "multilabel-image"})  # the dataset kinds whose rows hold label sets


def joined(value, sep: str | None) -> str:
    """A row's labels as stored: a JSON list's items, or ``value`` cut at ``sep``; stripped,
    distinct, sorted, joined by :data:`JOIN` (``""`` when there are none). A ValueError says
    what is wrong with a value that is not labels (an object, a list of lists)."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        items = value.split(sep) if sep else [value]
    elif isinstance(value, (bool, int, float)):
        items = [value]
    elif value is None:
        items = []
    else:
        raise ValueError("the labels are neither a list nor text")
    labels = set()
    for item in items:
        if isinstance(item, (bool, int, float)):
            item = str(item)
        if not isinstance(item, str):
            raise ValueError(f"the labels list holds {type(item).__name__} {item!r}, not text")
        item = item.strip()
        if JOIN in item and sep != JOIN:
            raise ValueError(
                f"the label {item!r} holds {JOIN!r}, which aimass joins a row's labels with; rename the label"
            )
        if item:
            labels.add(item)
    return JOIN.join(sorted(labels))


def split_labels(stored: str) -> list[str]:
    """A stored row's labels (the inverse of :func:`joined`)."""
    return stored.split(JOIN) if stored else []


def is_multi(records: list[Record], label_col: str, sep: str | None) -> bool:
    """Whether the rows carry several labels each: a separator was named, or a label is a JSON list."""
    return sep is not None or any(isinstance(r.fields.get(label_col), list) for r in records)


def join_records(records: list[Record], label_col: str, sep: str | None) -> tuple[list[Record], list[dict]]:
    """Each record with its labels joined (:func:`joined`), and a reject for each record whose
    labels cannot be read or that has none (naming the file, the line and what is wrong)."""
    good, rejects = [], []
    for rec in records:
        try:
            rec.fields[label_col] = joined(rec.fields.get(label_col), sep)
        except ValueError as exc:
            rejects.append(
                make_reject(rec.file, rec.line, f"malformed labels: {exc}", rec.raw, "malformed line")
            )
            continue
        if not rec.fields[label_col]:
            reason = "no labels: give every row at least one (a label such as 'none' where no tag applies)"
            rejects.append(make_reject(rec.file, rec.line, reason, rec.raw, "missing label"))
            continue
        good.append(rec)
    return good, rejects


def other_separators(rows: list[dict], sep: str | None) -> str | None:
    """A warning when labels cut at ``sep`` still hold another usual separator (``a, b`` with
    ``--label-sep ';'``: one label ``"a, b"``, maybe two meant), else None.

    >>> other_separators([{"label": "a, b|c"}, {"label": "c"}], ";")[:40]
    "1 label(s) hold ',' though the separator"
    """
    if not sep:
        return None
    labels = {label for row in rows for label in split_labels(row["label"])}
    for other in (",", ";", "/"):
        found = sorted(label for label in labels if other in label and other != sep)
        if found:
            return (
                f"{len(found)} label(s) hold {other!r} though the separator is {sep!r}, e.g. "
                f"{found[0][:60]!r}: if a cell mixes separators, make them one (each such label is one "
                "class now)"
            )
    return None


def label_counts(rows: list[dict]) -> Counter:
    """Rows per label (a row counts once for each of its labels)."""
    return Counter(label for row in rows for label in split_labels(row["label"]))


def strata(rows: list[dict]) -> list[str]:
    """What a random split stratifies each row by: its rarest label (ties: the first by name), so
    every label large enough reaches the validation and test splits."""
    counts = label_counts(rows)
    return [min(split_labels(row["label"]), key=lambda label: (counts[label], label)) for row in rows]
