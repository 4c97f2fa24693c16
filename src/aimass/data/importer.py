"""``import_dataset``: read, check, split and store a labelled text dataset."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from aimass.data.dataset import Dataset
from aimass.data.split import check_column_splits, check_fractions, random_splits
from aimass.data.store import (
    ID_LENGTH,
    canonical_lines,
    compute_digest,
    existing,
    save_dataset,
    write_manifest,
)
from aimass.data.table import read_table
from aimass.data.validate import check_trainable

FORMAT_VERSION = 1


def import_dataset(
    path: str | Path,
    *,
    name: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    split_col: str | None = None,
    seed: int = 0,
    valid_frac: float = 0.1,
    test_frac: float = 0.2,
    min_rows: int = 10,
) -> Dataset:
    """Import a CSV/TSV/JSONL file or class folder into ``AIMASS_HOME/datasets/<id>/``.

    The same content with the same split settings gets the same id and is stored once.

    Args:
        path: The file or folder (see :func:`aimass.data.read_table`).
        name: Name to load it by later (default: the file or folder name without extension).
        text_col: Text column (detected when None).
        label_col: Label column (detected when None).
        split_col: Column holding train/valid/test; a column named ``split`` is used when
            present, otherwise rows are split at random.
        seed: Seed of the stratified random split.
        valid_frac: Share of each class for validation.
        test_frac: Share of each class for test.
        min_rows: Fewest good rows accepted.

    Returns:
        The stored dataset.

    Raises:
        DataError: The data cannot train a classifier (see the message and hint).
        ConfigError: Invalid fractions.
    """
    check_fractions(valid_frac, test_frac)
    path = Path(path)
    rows, rejects, info = read_table(path, text_col=text_col, label_col=label_col, split_col=split_col)
    check_trainable(rows, rejects, min_rows=min_rows, where=str(path))
    settings, warnings = _assign_splits(rows, info, seed, valid_frac, test_frac)
    lines = canonical_lines(rows)
    digest = compute_digest(lines, settings)
    name = name or path.stem or path.name
    stored = existing(digest[:ID_LENGTH])
    if stored is not None:
        return _record_import(stored, name, info)
    manifest = _manifest(
        digest, name, rows, rejects, info, warnings=_info_warnings(info) + warnings, settings=settings
    )
    return save_dataset(lines, rows, rejects, manifest)


def _assign_splits(rows, info, seed, valid_frac, test_frac) -> tuple[dict, list[str]]:
    """Set ``row["split"]``; return the split settings (part of the digest) and warnings."""
    fractions = {"seed": seed, "valid_frac": valid_frac, "test_frac": test_frac}
    if info["split_col"]:
        warnings = check_column_splits(rows, info["file"])
        return {"split_source": "column", "split_col": info["split_col"]}, warnings
    splits, warnings = random_splits([row["label"] for row in rows], **fractions)
    for row, split in zip(rows, splits, strict=True):
        row["split"] = split
    return {"split_source": "random", **fractions}, warnings


def _info_warnings(info: dict) -> list[str]:
    warnings = []
    if "latin-1" in info["encoding"]:
        warnings.append(
            f"latin-1 used as a last resort (encoding {info['encoding']}): "
            "check accented and special characters"
        )
    ignored = info.get("ignored_files") or []
    if ignored:
        warnings.append(f"ignored {len(ignored)} file(s) that are not .txt: {ignored[:5]}")
    return warnings


def _manifest(digest, name, rows, rejects, info, *, warnings, settings) -> dict:
    now = _now()
    return {
        "format_version": FORMAT_VERSION,
        "id": digest[:ID_LENGTH],
        "digest": digest,
        "name": name,
        "created": now,
        "source": str(Path(info["file"]).resolve()),
        "source_sha256": info["sha256"],
        "format": info["format"],
        "encoding": info["encoding"],
        "language": info["language"],
        "columns": {"text": info["text_col"], "label": info["label_col"], "split": info["split_col"]},
        "counts": _counts(rows),
        "rejects": len(rejects),
        "rejects_by_reason": info["rejects_by_reason"],
        "warnings": warnings,
        "seed": settings.get("seed"),
        "valid_frac": settings.get("valid_frac"),
        "test_frac": settings.get("test_frac"),
        "split_source": settings["split_source"],
        "imports": [_import_entry(name, info, now)],
    }


def _counts(rows: list[dict]) -> dict:
    by_split = Counter(row["split"] for row in rows)
    pairs = Counter((row["split"], row["label"]) for row in rows)
    return {
        "total": len(rows),
        "by_split": {s: by_split[s] for s in ("train", "valid", "test") if by_split[s]},
        "by_class": dict(sorted(Counter(row["label"] for row in rows).items())),
        "by_split_class": {
            s: {label: n for (split, label), n in sorted(pairs.items()) if split == s}
            for s in ("train", "valid", "test")
            if by_split[s]
        },
    }


def _import_entry(name: str, info: dict, at: str) -> dict:
    return {
        "name": name,
        "at": at,
        "source": str(Path(info["file"]).resolve()),
        "source_sha256": info["sha256"],
        "rejects": sum(info["rejects_by_reason"].values()),
    }


def _record_import(stored: Dataset, name: str, info: dict) -> Dataset:
    """Same content imported again: nothing is copied; the import is noted in the manifest."""
    stored.manifest.setdefault("imports", []).append(_import_entry(name, info, _now()))
    write_manifest(stored.path, stored.manifest)
    return stored


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
