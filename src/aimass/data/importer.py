"""``import_dataset``: read, check, split and store a labelled text dataset."""

from __future__ import annotations

from pathlib import Path

from aimass.data import multilabel
from aimass.data.archive import hidden_warnings
from aimass.data.dataset import Dataset
from aimass.data.documents import LISTED, old_format_hint
from aimass.data.entities import import_entities, looks_like_entities
from aimass.data.image_import import import_images, looks_like_images
from aimass.data.pairs_import import import_pairs, looks_like_pairs
from aimass.data.read import document_counts
from aimass.data.split import check_column_splits, check_fractions, draw_splits
from aimass.data.storage import (
    ID_LENGTH,
    canonical_lines,
    compute_digest,
    counts,
    existing,
    import_entry,
    record_import,
    save_dataset,
    utc_now,
)
from aimass.data.table import read_split_files, read_table
from aimass.data.validate import check_trainable, look_alike_labels
from aimass.errors import ConfigError, DataError

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
    max_pixels: int | None = None,
    valid_path: str | Path | None = None,
    test_path: str | Path | None = None,
    label_sep: str | None = None,
) -> Dataset:
    """Import a labelled dataset into ``AIMASS_HOME/datasets/<id>/``: text or images.

    Archives, folders holding images and ``path,label`` manifests go to
    :func:`aimass.data.image_import.import_images` (see :func:`looks_like_images`);
    anything else is read as a text table or a folder of .txt files. The same content
    with the same split settings gets the same id and is stored once.

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
        max_pixels: Image datasets only: pixel limit per image.
        valid_path, test_path: Text tables only: a file of validation rows, of test rows
            (:func:`~aimass.data.table.read_split_files`); ``path`` then holds the training rows,
            and a split without a file of its own is drawn from them (``valid_frac``, ``test_frac``).
        label_sep: Each row has several labels, one cell cut at this separator (``";"``): a text
            table, or an image manifest. Rows whose label is a JSON list are read so without it.
            The dataset's kind is then ``multilabel`` (texts) or ``multilabel-image``
            (:mod:`aimass.data.multilabel`).

    Returns:
        The stored dataset.

    Raises:
        DataError: The data cannot train a classifier (see the message and hint).
        ConfigError: Invalid fractions.
    """
    check_fractions(valid_frac, test_frac)
    path = Path(path)
    options = {"seed": seed, "valid_frac": valid_frac, "test_frac": test_frac, "min_rows": min_rows}
    split_files = {k: v for k, v in (("valid", valid_path), ("test", test_path)) if v is not None}
    if split_files and (
        looks_like_images(path) or looks_like_pairs(path) or looks_like_entities(path) or split_col
    ):
        raise ConfigError(
            "split files (valid_path, test_path) apply to text classification tables without a split column",
            where=str(path),
            hint="Put a split column in one table instead; conversations take a validation file at "
            "training: aimass train --task text-generation --data train.jsonl --valid-data valid.jsonl.",
        )
    _check_not_an_office_file(path)
    if looks_like_images(path):
        _check_no_columns(text_col=text_col, label_col=label_col, split_col=split_col)
        return import_images(path, name=name, max_pixels=max_pixels, label_sep=label_sep, **options)
    if max_pixels is not None:
        raise ConfigError(
            "max_pixels applies to image datasets only", where=str(path), hint="Leave out max_pixels."
        )
    if looks_like_entities(path):  # texts with entity spans or tagged tokens: token classification
        given = [
            k
            for k, v in (
                ("text_col", text_col),
                ("label_col", label_col),
                ("split_col", split_col),
                ("label_sep", label_sep),
            )
            if v
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} apply to text tables, not to entity rows",
                where=str(path),
                hint="Entity rows are read by their fields: text and entities (or tokens and tags), split.",
            )
        return import_entities(path, name=name, **options)
    if looks_like_pairs(path):  # chat / prompt-completion / source-target: text generation
        if label_sep is not None:
            raise ConfigError(
                "label_sep applies to tables of labelled texts, not to conversations or pairs",
                where=str(path),
                hint="Leave out label_sep.",
            )
        return import_pairs(path, name=name, text_col=text_col, label_col=label_col, **options)
    if split_files:
        files = {"train": path, **split_files}
        rows, rejects, info = read_split_files(
            files, text_col=text_col, label_col=label_col, label_sep=label_sep
        )
    else:
        rows, rejects, info = read_table(
            path, text_col=text_col, label_col=label_col, split_col=split_col, label_sep=label_sep
        )
    multi = info["multi_label"]
    check_trainable(rows, rejects, min_rows=min_rows, where=str(path), multi=multi)
    settings, warnings = _assign_splits(rows, info, seed, valid_frac, test_frac)
    mixed = multilabel.other_separators(rows, label_sep) if multi else None
    warnings += [mixed] if mixed else []
    warnings += _control_characters(rows)
    warnings += look_alike_labels(counts(rows, multi)["by_class"])
    if multi:  # the same stored lines read as one label each are another dataset
        settings["multi_label"] = True
    lines = canonical_lines(rows)
    digest = compute_digest(lines, settings)
    name = name or path.stem or path.name
    stored = existing(digest[:ID_LENGTH])
    if stored is not None:
        return record_import(stored, name, info, rejects)
    manifest = _manifest(
        digest, name, rows, rejects, info, warnings=_info_warnings(info) + warnings, settings=settings
    )
    return save_dataset(lines, rows, rejects, manifest)


SPREADSHEETS = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")
ONE_DOCUMENT = (".docx", ".doc", ".odt", ".pdf", ".html", ".htm", ".rtf")


def _check_not_an_office_file(path: Path) -> None:
    """A spreadsheet or a single document is said to be one (a .xlsx is a zip file inside, and
    would otherwise be read as an archive of images)."""
    suffix = path.suffix.lower()
    if path.is_file() and suffix in SPREADSHEETS:
        raise DataError(
            f"a spreadsheet ({suffix}): aimass reads tables as CSV, TSV or JSONL",
            where=str(path),
            hint="Save the sheet as CSV UTF-8 (Excel: File > Save As > CSV UTF-8) and import that file.",
        )
    if path.is_file() and suffix in ONE_DOCUMENT:
        raise DataError(
            f"one document ({suffix}) is not a labelled dataset",
            where=str(path),
            hint="Put documents in one folder per class (<folder>/<label>/<file>) and import the folder "
            "(or a .zip of it); to label this one, use `aimass predict MODEL FILE`.",
        )


def _check_no_columns(**columns) -> None:
    given = [name for name, value in columns.items() if value]
    if given:
        raise ConfigError(
            f"{', '.join(given)} apply to text tables, not to image datasets",
            hint="Image manifests use the columns path (or image), label and optionally split.",
        )


def _assign_splits(rows, info, seed, valid_frac, test_frac) -> tuple[dict, list[str]]:
    """Set ``row["split"]``; return the split settings (part of the digest) and warnings."""
    fractions = {"seed": seed, "valid_frac": valid_frac, "test_frac": test_frac}
    if info.get("split_files"):  # each file its split; a split without a file drawn from train's rows
        given = set(info["split_files"])
        fractions.update(valid_frac=0.0 if "valid" in given else valid_frac)
        fractions.update(test_frac=0.0 if "test" in given else test_frac)
        train = [row for row in rows if row["split"] == "train"]
        drawn, warnings = draw_splits(train, info["multi_label"], **fractions)
        for row, split in zip(train, drawn, strict=True):
            row["split"] = split
        warnings += check_column_splits(rows, info["file"], info["multi_label"])
        sums = {split: f["sha256"] for split, f in sorted(info["split_files"].items())}
        return {"split_source": "files", "files": sums, **fractions}, warnings
    if info["split_col"]:
        warnings = check_column_splits(rows, info["file"], info["multi_label"])
        return {"split_source": "column", "split_col": info["split_col"]}, warnings
    splits, warnings = draw_splits(rows, info["multi_label"], **fractions)
    for row, split in zip(rows, splits, strict=True):
        row["split"] = split
    return {"split_source": "random", **fractions}, warnings


def _control_characters(rows: list[dict]) -> list[str]:
    """A warning naming the rows whose text or label holds a NUL character (kept as they are: it is
    the user's data, but it usually means a binary file or a broken export)."""
    found = [row["source"] for row in rows if "\x00" in row["text"] or "\x00" in str(row["label"])]
    if not found:
        return []
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return [
        f"{len(found)} row(s) hold a NUL character (\\0), kept as they are: {shown}; a NUL in text "
        "usually means a binary file or a broken export: check those lines"
    ]


def _info_warnings(info: dict) -> list[str]:
    warnings = [info["label_guessed"]] if info.get("label_guessed") else []
    if info.get("delimiter"):
        warnings.append(f"read as a {info['delimiter']!r}-separated CSV: its header line holds no comma")
    if "latin-1" in info["encoding"]:
        warnings.append(
            f"latin-1 used as a last resort (encoding {info['encoding']}): "
            "check accented and special characters"
        )
    if info["encoding"].startswith("mixed") and info["format"] == "folder":
        warnings.append(
            f"the files use different encodings ({info['encoding'][len('mixed: ') :]}): each file was "
            "decoded by its own; save them as UTF-8 to be sure"
        )
    elif info["encoding"].startswith("mixed"):
        warnings.append(
            f"the file mixes encodings ({info['encoding'][len('mixed: ') :]}): each line was decoded "
            "by its own; save it as UTF-8 to be sure"
        )
    ignored = info.get("ignored_files") or []
    if ignored:
        warnings.append(f"ignored {len(ignored)} file(s) that are not documents ({LISTED}): {ignored[:5]}")
    old = sorted({hint for name in ignored if (hint := old_format_hint(name))})
    if old:
        warnings.append(f"files in an older format were ignored: {', '.join(old)} to import them")
    return warnings + hidden_warnings(info.get("hidden_files") or [])


def _manifest(digest, name, rows, rejects, info, *, warnings, settings) -> dict:
    now = utc_now()
    return {
        "format_version": FORMAT_VERSION,
        "kind": "multilabel" if info["multi_label"] else "text",
        "id": digest[:ID_LENGTH],
        "digest": digest,
        "name": name,
        "created": now,
        "source": str(Path(info["file"]).resolve()),
        "source_sha256": info["sha256"],
        "format": info["format"],
        "encoding": info["encoding"],
        "encodings": info.get("encodings", {}),
        "language": info["language"],
        "columns": {"text": info["text_col"], "label": info["label_col"], "split": info["split_col"]},
        "counts": counts(rows, info["multi_label"]),
        "rejects": len(rejects),
        "rejects_by_reason": info["rejects_by_reason"],
        "warnings": warnings,
        "seed": settings.get("seed"),
        "valid_frac": settings.get("valid_frac"),
        "test_frac": settings.get("test_frac"),
        "split_source": settings["split_source"],
        "imports": [import_entry(name, info, now)],
        **({"documents": document_counts(rows)} if info.get("documents") else {}),  # a folder: rows by format
        **({"split_files": info["split_files"]} if info.get("split_files") else {}),  # valid/test files
    }
