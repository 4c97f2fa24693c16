"""A new dataset version from a stored one: rows dropped or relabelled, lineage kept.

The parent is never changed. The child is stored by content digest like any import; its manifest
names the parent (``parent``: id, digest, name) and counts the changes, and ``changes.jsonl``
beside it lists every dropped or relabelled row with the parent's row number and the reason.

>>> child = revise_dataset(parent, relabel={40: ("sport", "label issue")})  # doctest: +SKIP
>>> child.manifest["parent"]["id"] == parent.id                              # doctest: +SKIP
True
"""

from __future__ import annotations

import os
from pathlib import Path

from aimass.data.dataset import DATA_FILE, KINDS, REJECTS_FILE, Dataset
from aimass.data.entities import entity_counts, entity_lines, spans_of
from aimass.data.image_import import find_leakage, image_lines
from aimass.data.multilabel import JOIN, split_labels
from aimass.data.multilabel import KINDS as MULTI_KINDS
from aimass.data.storage import (
    ID_LENGTH,
    atomic_copy,
    atomic_write,
    canonical_lines,
    compute_digest,
    counts,
    datasets_dir,
    existing,
    jsonl_bytes,
    utc_now,
    write_manifest,
)
from aimass.data.validate import check_trainable
from aimass.errors import ConfigError, DataError
from aimass.store.claims import claim

CHANGES_FILE = "changes.jsonl"
_LINES = {
    "text": canonical_lines,
    "multilabel": canonical_lines,
    "image": image_lines,
    "multilabel-image": image_lines,
    "entities": entity_lines,
}  # the digest's canonical rows per kind


def revise_dataset(
    parent: Dataset,
    *,
    drop: dict[int, str] | None = None,
    relabel: dict[int, tuple[str, str]] | None = None,
    name: str | None = None,
    note: str = "",
) -> Dataset:
    """Store a child of ``parent`` with some rows dropped and some relabelled.

    Args:
        parent: The stored dataset.
        drop: Parent row number (``Dataset.rows()`` order) -> reason.
        relabel: Parent row number -> (new label, reason); the label must be one of the parent's classes.
        name: The child's name (default: the parent's, so loading the name gives the newest version).
        note: Where the changes came from (e.g. the issues report), kept in the manifest.

    Returns:
        The child dataset (the same one again when the same changes were made before).

    Raises:
        ConfigError: No change asked, a row number out of range, a row both dropped and relabelled,
            a label the parent does not have, or a kind of data that cannot be revised.
        DataError: What is left cannot train a classifier.
    """
    drop, relabel = dict(drop or {}), dict(relabel or {})
    if parent.kind in MULTI_KINDS:  # a label set is stored sorted and joined: "a|b"
        relabel = {
            i: (JOIN.join(sorted(set(split_labels(label)))), why) for i, (label, why) in relabel.items()
        }
    rows = parent.rows()
    _check(parent, rows, drop, relabel)
    changes, kept = _apply(parent, rows, drop, relabel)
    multi = parent.kind in MULTI_KINDS
    where = f"dataset {parent.name} after the changes"
    if parent.kind == "entities":
        _entities_trainable(kept, where)
    else:
        check_trainable(kept, [], min_rows=2, where=where, multi=multi)
    settings = {"parent": parent.digest, "changes": _canonical_changes(changes)}
    digest = compute_digest(_LINES[parent.kind](kept), settings)
    stored = existing(digest[:ID_LENGTH])
    if stored is not None:
        return stored
    manifest = _manifest(parent, digest, name or parent.name, kept, changes, note)
    return _save(parent, kept, changes, manifest)


def _check(parent: Dataset, rows: list[dict], drop: dict, relabel: dict) -> None:
    if parent.kind not in _LINES:
        raise ConfigError(
            f"dataset {parent.name!r} holds {parent.kind} data; only text, multi-label, image and entity "
            "datasets are revised",
            hint="Revise a classification dataset.",
        )
    if not drop and not relabel:
        raise ConfigError("no rows to drop or relabel", hint="Name at least one row (see the issues report).")
    outside = sorted(i for i in [*drop, *relabel] if not 0 <= int(i) < len(rows))
    if outside:
        raise ConfigError(
            f"row(s) {outside[:5]} are not in dataset {parent.name!r} ({len(rows)} rows)",
            hint="Use the row numbers of an issues report made for this dataset version.",
        )
    both = sorted(set(drop) & set(relabel))
    if both:
        raise ConfigError(f"row(s) {both[:5]} are both dropped and relabelled", hint="Pick one per row.")
    if parent.kind == "entities":
        return _check_entities(parent, rows, relabel)
    empty = sorted(i for i, (label, _) in relabel.items() if not label)
    if empty:
        raise ConfigError(f"row(s) {empty[:5]} would have no label", hint="Give every row at least one.")
    same = sorted(i for i, (label, _) in relabel.items() if rows[i]["label"] == label)
    if same:
        raise ConfigError(f"row(s) {same[:5]} already have the label they are given", hint="Leave them out.")
    names = split_labels if parent.kind in MULTI_KINDS else (lambda label: [label])
    unknown = sorted({name for label, _ in relabel.values() for name in names(label)} - set(parent.classes))
    if unknown:
        raise ConfigError(
            f"unknown label(s) {unknown} for dataset {parent.name!r}",
            hint=f"Use one of: {', '.join(parent.classes)}.",
        )


def _check_entities(parent: Dataset, rows: list[dict], relabel: dict) -> None:
    """A text's new entities: spans inside it, not overlapping, of the parent's labels."""
    for i, (spans, _) in sorted(relabel.items()):
        _, checked, reason = spans_of({"text": rows[i]["text"], "entities": spans})
        if reason:
            raise ConfigError(
                f"row {i}'s new entities: {reason}", hint="Give [start, end, label] spans of its text."
            )
        if checked == rows[i]["label"]:
            raise ConfigError(f"row {i} already has the entities it is given", hint="Leave it out.")
        unknown = sorted({s[2] for s in checked} - set(parent.classes))
        if unknown:
            raise ConfigError(
                f"unknown label(s) {unknown} in row {i}'s new entities for dataset {parent.name!r}",
                hint=f"Use one of: {', '.join(parent.classes)}.",
            )
        relabel[i] = (checked, relabel[i][1])


def _entities_trainable(rows: list[dict], where: str) -> None:
    if not any(r["split"] == "train" and r["label"] for r in rows):
        raise DataError(
            "no training text with an entity is left", where=where, hint="Drop or relabel fewer rows."
        )


def _apply(parent: Dataset, rows: list[dict], drop: dict, relabel: dict) -> tuple[list[dict], list[dict]]:
    """(the changes, one record per changed row in row order; the rows kept, relabels applied)."""
    column = KINDS[parent.kind].column
    changes, kept = [], []
    for i, row in enumerate(rows):
        base = {"parent_row": i, "split": row["split"], "label": row["label"], column: row[column]}
        if i in drop:
            changes.append({"action": "drop", **base, "reason": drop[i]})
        elif i in relabel:
            new_label, reason = relabel[i]
            changes.append({"action": "relabel", **base, "new_label": new_label, "reason": reason})
            kept.append({**row, "label": new_label})
        else:
            kept.append(row)
    return changes, kept


def _canonical_changes(changes: list[dict]) -> list[list]:
    return [[c["action"], c["parent_row"], c.get("new_label")] for c in changes]


def _manifest(
    parent: Dataset, digest: str, name: str, rows: list[dict], changes: list[dict], note: str
) -> dict:
    now = utc_now()
    actions = [c["action"] for c in changes]
    manifest = {
        **parent.manifest,
        "id": digest[:ID_LENGTH],
        "digest": digest,
        "name": name,
        "created": now,
        "counts": entity_counts(rows)
        if parent.kind == "entities"
        else counts(rows, multi=parent.kind in MULTI_KINDS),
        "parent": {"id": parent.id, "digest": parent.digest, "name": parent.name},
        "changes": {
            "dropped": actions.count("drop"),
            "relabelled": actions.count("relabel"),
            "file": CHANGES_FILE,
            "note": note,
        },
        "imports": [{"name": name, "at": now, "source": f"dataset {parent.id}", "rejects": 0}],
    }
    if KINDS[parent.kind].stored_file:  # images: the same picture in two splits
        manifest["leakage"] = find_leakage(rows)
    return manifest


def _save(parent: Dataset, rows: list[dict], changes: list[dict], manifest: dict) -> Dataset:
    """Link (or copy) stored files, write data, rejects (the parent's) and changes, the manifest last."""
    claim("dataset", manifest["name"])
    folder = datasets_dir() / manifest["id"]
    folder.mkdir(parents=True, exist_ok=True)
    if KINDS[parent.kind].stored_file:
        for row in rows:
            _link(parent.path / row["image"], folder / row["image"])
    atomic_write(folder / DATA_FILE, jsonl_bytes(rows))
    rejects = parent.rejects_path
    atomic_write(folder / REJECTS_FILE, rejects.read_bytes() if rejects.is_file() else b"")
    atomic_write(folder / CHANGES_FILE, jsonl_bytes(changes))
    write_manifest(folder, manifest)
    return Dataset.open(folder)


def _link(source: Path, target: Path) -> None:
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        atomic_copy(source, target)
