"""Decide which columns hold the text, the label and (optionally) the split."""

from __future__ import annotations

from dataclasses import dataclass

from aimass.data.read import UNNAMED, Record
from aimass.errors import DataError

TEXT_NAMES = (
    "text",
    "sentence",
    "review",
    "content",
    "review_text",
    "question",
    "body",
    "comment",
    "message",
    "document",
    "tweet",
)
LABEL_NAMES = (
    "label",
    "labels",
    "class",
    "category",
    "sentiment",
    "target",
    "y",
    "intent",
    "topic",
    "tags",
    "tag",
)
SPLIT_NAMES = ("split",)
SAMPLE = 2000


@dataclass(frozen=True)
class Columns:
    """The columns used: ``split`` is None when rows get a random split."""

    text: str
    label: str
    split: str | None = None
    # how the label column was told from others that could hold labels; a column picked whose header
    # cell is empty (both: a warning at import)
    guessed: str | None = None

    def as_dict(self) -> dict:
        """The mapping stored in manifests: role -> column name."""
        return {"text": self.text, "label": self.label, "split": self.split}


def norm(name: str) -> str:
    """Normalise a column name for matching: lower case, spaces and dashes as ``_``."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def choose_columns(
    columns: list[str],
    records: list[Record],
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    split_col: str | None = None,
    where: str = "",
) -> Columns:
    """Pick the text, label and split columns; explicit names win.

    Args:
        columns: Column names in file order.
        records: The records (the first ``SAMPLE`` are inspected).
        text_col: Column name given by the user, if any; likewise label_col, split_col.
        label_col: See text_col.
        split_col: See text_col.
        where: File name for error messages.

    Raises:
        DataError: A named column is missing, or no text/label column can be found.
    """
    for wanted in (text_col, label_col, split_col):
        _require(wanted, columns, where)
    sample = records[:SAMPLE]
    split = split_col or _by_name(columns, SPLIT_NAMES)
    rest = [c for c in columns if c != split]
    label = label_col or _by_name([c for c in rest if c != text_col], LABEL_NAMES)
    text = text_col or _pick_text([c for c in rest if c != label], sample, where)
    guessed = None
    if label is None:
        label, guessed = _pick_label([c for c in rest if c != text], sample, where)
    if text == label:
        raise DataError(
            f"the text and label columns are both {text!r}", where=where, hint="Name two different columns."
        )
    picked = {"text": (text, text_col), "label": (label, label_col)}
    notes = [guessed] + [
        _unnamed(columns, name, role) for role, (name, given) in picked.items() if given is None
    ]
    return Columns(text, label, split, "; ".join(filter(None, notes)) or None)


def _unnamed(columns: list[str], name: str, role: str) -> str | None:
    """A note when the column picked for ``role`` has an empty header cell (``text<TAB>``): a table
    reader names it ``column2`` (:data:`aimass.data.read.UNNAMED`), and a label column nobody named
    should not go unsaid. Only the names are seen here, so a column its header calls ``column2``, in
    second place, is taken for one with an empty cell too."""
    number = columns.index(name) + 1
    if name != UNNAMED.format(number):
        return None
    return (
        f"column {number} has an empty header cell: it was named {name!r} and used as the {role} column; "
        f"give it a name in the header line, or name the column with --{role}-col"
    )


def _require(name: str | None, columns: list[str], where: str) -> None:
    if name is not None and name not in columns:
        raise DataError(
            f"no column named {name!r}; the columns are {columns}",
            where=where,
            hint="Use one of the columns listed (names are case-sensitive). If the file has "
            "no header line, add one as its first line.",
        )


def _by_name(columns: list[str], names: tuple[str, ...]) -> str | None:
    found = {norm(c): c for c in reversed(columns)}
    return next((found[n] for n in names if n in found), None)


def _pick_text(candidates: list[str], sample: list[Record], where: str) -> str:
    named = [c for c in candidates if norm(c) in TEXT_NAMES]
    pool = named or [c for c in candidates if _is_text_column(c, sample)]
    if not pool:
        raise DataError(
            "cannot tell which column holds the text",
            where=where,
            hint="Name it with text_col (e.g. --text-col review).",
        )
    return max(pool, key=lambda c: _average_length(c, sample))


def _is_text_column(column: str, sample: list[Record]) -> bool:
    values = [r.fields.get(column) for r in sample]
    strings = [v for v in values if isinstance(v, str) and v.strip()]
    return len(strings) * 2 > len(values) and sum(map(_is_number, strings)) * 2 < len(strings)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _average_length(column: str, sample: list[Record]) -> float:
    lengths = [len(v) for r in sample if isinstance(v := r.fields.get(column), str)]
    return sum(lengths) / len(lengths) if lengths else 0.0


def _pick_label(candidates: list[str], sample: list[Record], where: str) -> tuple[str, str | None]:
    """(the column with the fewest distinct values, at least 2; a note naming the others that could
    hold labels too, or None when it was the only one)."""
    limit = max(2, len(sample) // 2)
    distinct = {c: len({str(r.fields.get(c)).strip() for r in sample}) for c in candidates}
    pool = [c for c in candidates if distinct[c] <= limit]
    if not pool:
        raise DataError(
            "cannot tell which column holds the labels",
            where=where,
            hint="Name it with label_col (e.g. --label-col sentiment).",
        )
    label = min(pool, key=lambda c: (distinct[c] < 2, distinct[c]))
    others = [c for c in pool if c != label and distinct[c] >= 2]
    if not others:
        return label, None
    listed = ", ".join(f"{c!r} ({distinct[c]} values)" for c in others[:5])
    return label, (
        f"the label column was guessed: {label!r} ({distinct[label]} values), the fewest of the columns "
        f"that could hold labels; also possible: {listed}. Name it with --label-col if it is another"
    )


def check_header(columns: list[str], records: list[Record], where: str, *, need: int = 2) -> None:
    """Stop when a CSV/TSV seems to have no header line (its first line looks like data) or was split
    at the wrong separator.

    Args:
        columns: The header's column names.
        records: The records (the first ``SAMPLE`` are inspected).
        where: The file, for messages.
        need: The fewest columns the file must have: 2 (a text and a label) to import it, 1 to
            score it; a single column whose name holds a separator is refused either way.

    Raises:
        DataError: Too few columns, a lone column named like ``id;comment``, or the first line
            looks like a data row.
    """
    sep = next((s for s in (";", "\t", ",", "|") if s in columns[0]), None) if len(columns) == 1 else None
    if len(columns) < need or sep:
        extra = (
            f" The header contains {sep!r}: is that the separator? A .csv is read with the one of "
            "',', ';', tab or '|' its header line holds."
            if sep
            else ""
        )
        raise DataError(
            f"found a single column {columns[0]!r}"
            + ("; need a text and a label column" if need > 1 else ""),
            where=where,
            hint="Use a header line such as `text,label`." + extra,
        )
    if _looks_like_data(columns, records[:SAMPLE]):
        raise DataError(
            f"the first line looks like data, not a header: {columns}",
            where=f"{where}:1",
            hint="Add a header line naming the columns, e.g. `text,label`.",
        )


def _looks_like_data(columns: list[str], sample: list[Record]) -> bool:
    known = set(TEXT_NAMES + LABEL_NAMES + SPLIT_NAMES)
    if any(norm(c) in known for c in columns):
        return False
    if any(len(c) > 40 or _is_number(c) for c in columns):
        return True
    return any(c in {r.fields.get(c) for r in sample} for c in columns)
