"""``import_images``: image classification data from folders, manifests or archives.

Every file found is accounted for: it becomes a row, a reject (with its reason) or an
ignored file listed in the warnings. Images are decoded once at import with the same
code training and serving use, then stored by content under ``images/``.

Rows are kept in content order (by sha256), not file order: renaming, moving or
re-packing the same images changes neither the dataset id nor the split. (The text
importer keeps file order; there the order of lines is part of what the user gave.)

>>> from aimass.data.image_import import looks_like_images
>>> looks_like_images("reviews.csv")
False
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aimass.data.archive import archive_kind, extract_archive, hidden_warnings
from aimass.data.dataset import DATA_FILE, REJECTS_FILE, Dataset, HeldOut
from aimass.data.documents import holds_documents
from aimass.data.image_layout import Item, Layout, image_files, manifest_columns, read_layout
from aimass.data.images import check_image, pixel_limit, read_image_file
from aimass.data.split import check_column_splits, check_fractions, draw_splits
from aimass.data.storage import (
    ID_LENGTH,
    atomic_copy,
    atomic_write,
    compute_digest,
    counts,
    datasets_dir,
    existing,
    import_entry,
    jsonl_bytes,
    record_import,
    utc_now,
    write_manifest,
)
from aimass.data.validate import check_trainable, reject_counts, sort_rejects
from aimass.errors import DataError, TooLargeError
from aimass.store.claims import claim

FORMAT_VERSION = 1
IMAGES_DIR = "images"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def looks_like_images(path: str | Path) -> bool:
    """True when ``path`` is an archive (not one of documents), a folder holding images, or a
    ``path,label`` manifest.

    Only names and headers are read (a folder is walked until its first image).
    """
    path = Path(path)
    if path.is_dir():
        return next(image_files(path), None) is not None
    if path.is_file() and archive_kind(path) is not None:
        return not holds_documents(path)  # an archive of PDFs, .docx or .txt is a text dataset
    return path.is_file() and manifest_columns(path) is not None


def import_images(
    path: str | Path,
    *,
    name: str | None = None,
    seed: int = 0,
    valid_frac: float = 0.1,
    test_frac: float = 0.2,
    max_pixels: int | None = None,
    min_rows: int = 10,
    label_sep: str | None = None,
) -> Dataset:
    """Import an image classification dataset into ``AIMASS_HOME/datasets/<id>/``.

    Layouts: a folder with one sub-folder per class; ``train/``, ``valid/`` (or
    ``val/``) and ``test/`` folders each holding class sub-folders (the given split is
    kept; a missing valid or test split is drawn from train); a CSV or JSONL manifest
    with ``path,label`` (and optionally ``split``) columns, paths relative to its
    folder; or a .zip, .tar or .tar.gz archive of any of these.

    Args:
        path: The folder, manifest or archive.
        name: Name to load it by later (default: the file or folder name without extension).
        seed: Seed of the stratified random split.
        valid_frac: Share of each class for validation (when not given by the data).
        test_frac: Share of each class for test (when not given by the data).
        max_pixels: Pixel limit per image (default ``AIMASS_MAX_PIXELS`` or 40 million);
            larger images are rejected.
        min_rows: Fewest good images accepted.
        label_sep: A manifest's label cell holds several labels cut at this separator; a JSONL
            manifest whose labels are lists needs none. The dataset's kind is then
            ``multilabel-image`` (each image any number of labels, stored joined: ``"a|b"``).

    Returns:
        The stored dataset; the same images, labels and split settings give the same id.

    Raises:
        DataError: Nothing usable, a single class, a class with one image, an unsafe
            archive member or a manifest path outside its folder.
        TooLargeError: The archive is over a size, member-count or compression limit.
        ConfigError: Invalid fractions or limits.
    """
    check_fractions(valid_frac, test_frac)
    path = Path(path)
    options = _Options(
        name or _default_name(path), seed, valid_frac, test_frac, pixel_limit(max_pixels), min_rows
    )
    if not path.exists():
        raise DataError(f"{path} does not exist", where=str(path), hint="Check the path.")
    kind = archive_kind(path)
    if kind is None:
        return _import(read_layout(path, show=str, label_sep=label_sep), path, None, options)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=datasets_dir()) as scratch:
        extracted = extract_archive(path, scratch)
        shown = _shown_in(path, Path(scratch))
        layout = read_layout(Path(scratch), show=shown, descend=True, label_sep=label_sep)
        layout.hidden += extracted.ignored  # hidden members were not extracted: named as in the archive
        return _import(layout, path, kind, options)


def read_held_out(path: str | Path, *, max_pixels: int | None = None) -> HeldOut:
    """Every usable image of a folder, manifest or archive as held-out data, and its label: what
    ``evaluate --data`` scores. Nothing is stored, no split is drawn and none of the training rules
    holds (one class, one image a class and fewer than 10 images are a fine test set); unreadable,
    conflicting and repeated images are left out as an import leaves them out.

    Returns:
        ``(inputs, labels)``: a folder's or manifest's image files as paths, an archive's images
        as bytes (its extracted copy is gone when this returns); its ``rejects``, those left out.

    Raises:
        DataError: No usable image (the message counts the rejects by reason).
    """
    path = Path(path)
    limit = pixel_limit(max_pixels)
    if archive_kind(path) is None:
        images, rejects = _usable(read_layout(path, show=str), limit, str(path))
        files = [str(image.item.file) for image in images]
        return HeldOut(files, [image.item.label for image in images], rejects)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=datasets_dir()) as scratch:
        extract_archive(path, scratch)
        layout = read_layout(Path(scratch), show=_shown_in(path, Path(scratch)), descend=True)
        images, rejects = _usable(layout, limit, str(path))
        data = [Path(image.item.file).read_bytes() for image in images]
        return HeldOut(data, [image.item.label for image in images], rejects)


def _usable(layout: Layout, max_pixels: int, where: str) -> tuple[list[_Image], list[dict]]:
    """The decoded images of ``layout`` without conflicts or repeats, in the layout's order, and
    the rejects (unreadable, too large, conflicting, repeated, links that lead outside)."""
    images, rejects = _decoded(layout, max_pixels)
    if not images:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in reject_counts(rejects).items()) or "none found"
        raise DataError(
            f"No usable image to evaluate on ({len(rejects)} rejected: {kinds}).",
            where=where,
            hint="Give a folder with one sub-folder per class, a path,label manifest, or an archive of one.",
        )
    return images, sort_rejects(rejects)


@dataclass(frozen=True)
class _Options:
    name: str
    seed: int
    valid_frac: float
    test_frac: float
    max_pixels: int
    min_rows: int


@dataclass
class _Image:
    """A decoded, accepted image and where it came from."""

    item: Item
    sha256: str
    extension: str
    width: int
    height: int
    split: str | None = None

    def row(self) -> dict:
        sha = self.sha256
        return {
            "image": f"{IMAGES_DIR}/{sha[:2]}/{sha}{self.extension}",
            "label": self.item.label,
            "split": self.split,
            "source": self.item.source,
            "sha256": sha,
            "width": self.width,
            "height": self.height,
        }


def _default_name(path: Path) -> str:
    lower = path.name.lower()
    suffix = next((s for s in ARCHIVE_SUFFIXES if lower.endswith(s)), None)
    return path.name[: -len(suffix)] if suffix and len(path.name) > len(suffix) else path.stem or path.name


def _shown_in(archive: Path, scratch: Path) -> Callable[[Path], str]:
    """How a file extracted into ``scratch`` is named in rejects: ``archive.zip/cat/1.jpg``."""
    return lambda file: f"{archive}/{Path(file).relative_to(scratch).as_posix()}"


def _import(layout: Layout, path: Path, archive: str | None, opts: _Options) -> Dataset:
    images, rejects = _accepted(layout, opts, where=str(path))
    settings, warnings = _assign_splits(images, opts, where=str(path), multi=layout.multi)
    if layout.multi:  # the same manifest read as one label an image is another dataset
        settings["multi_label"] = True
    rows = [image.row() for image in images]
    digest = compute_digest(image_lines(rows), settings)
    sha = _source_sha(path, archive, images)
    info = {"file": str(path), "sha256": sha, "rejects_by_reason": reject_counts(rejects)}
    stored = existing(digest[:ID_LENGTH])
    if stored is not None:
        return record_import(stored, opts.name, info, rejects)
    leakage = find_leakage(rows)
    warnings = _layout_warnings(layout) + warnings + _leakage_warnings(leakage)
    manifest = _manifest(digest, opts, rows, rejects, info, layout, archive, warnings, settings, leakage)
    return _save(images, rows, rejects, manifest)


def _accepted(layout: Layout, opts: _Options, where: str) -> tuple[list[_Image], list[dict]]:
    """Decode every item, drop conflicts and repeats, and stop when the rest cannot train a classifier.

    The images come back in content order (sha256), the rejects in file order.
    """
    images, rejects = _decoded(layout, opts.max_pixels)
    images.sort(key=lambda image: (image.sha256, image.item.split or "", image.item.source))
    rejects = sort_rejects(rejects)
    labels = [{"label": image.item.label} for image in images]
    check_trainable(labels, rejects, min_rows=opts.min_rows, where=where, multi=layout.multi)
    return images, rejects


def _decoded(layout: Layout, max_pixels: int) -> tuple[list[_Image], list[dict]]:
    """Every item of ``layout`` decoded, conflicts and repeats dropped (the layout's order), and
    every reject: the layout's, the undecodable and the dropped."""
    images, rejects = _decode_all(layout.items, max_pixels)
    images, dropped = _drop_conflicts_and_duplicates(images)
    return images, layout.rejects + rejects + dropped


def _decode_all(items: list[Item], max_pixels: int) -> tuple[list[_Image], list[dict]]:
    """Read, hash and fully decode every item (in threads: Pillow releases the GIL)."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda item: _decode_one(item, max_pixels), items))
    images = [r for r in results if isinstance(r, _Image)]
    return images, [r for r in results if isinstance(r, dict)]


def _decode_one(item: Item, max_pixels: int) -> _Image | dict:
    try:
        data = read_image_file(item.file, where=item.source)
        info = check_image(data, max_pixels=max_pixels, where=item.source)
    except TooLargeError as exc:
        return item.reject(exc.message, "too large")
    except DataError as exc:
        return item.reject(exc.message, "unreadable image")
    return _Image(item, hashlib.sha256(data).hexdigest(), info.extension, info.width, info.height)


def _drop_conflicts_and_duplicates(images: list[_Image]) -> tuple[list[_Image], list[dict]]:
    """Reject every copy of content found under two labels, and repeats within a label.

    A repeat is the same bytes with the same label in the same given split (the first
    is kept). The same image in two given splits is kept and reported as leakage.
    """
    labels: dict[str, dict[str, list[_Image]]] = defaultdict(dict)
    for image in images:
        labels[image.sha256].setdefault(image.item.label, []).append(image)
    keep, rejects, first = [], [], {}
    for image in images:
        by_label = labels[image.sha256]
        if len(by_label) > 1:
            rejects.append(image.item.reject(_conflict_reason(image, by_label), "conflicting labels"))
            continue
        earlier = first.setdefault((image.sha256, image.item.label, image.item.split), image)
        if earlier is image:
            keep.append(image)
        else:
            rejects.append(image.item.reject(f"duplicate of {earlier.item.source}", "duplicate"))
    return keep, rejects


def _conflict_reason(image: _Image, by_label: dict[str, list[_Image]], limit: int = 3) -> str:
    others = "; ".join(
        f"{label!r} at " + ", ".join(other.item.source for other in found[:limit])
        for label, found in by_label.items()
        if label != image.item.label
    )
    return f"conflicting labels: the same image is also labelled {others}"


def _assign_splits(images: list[_Image], opts: _Options, where: str, multi: bool) -> tuple[dict, list[str]]:
    """Keep the given splits and draw the missing ones from train; return the settings and warnings.

    Without given splits every image is drawn as the text importer does. With them, a
    missing valid or test split is drawn from the train images with its fraction.
    """
    fractions = {"seed": opts.seed, "valid_frac": opts.valid_frac, "test_frac": opts.test_frac}
    given = {image.item.split for image in images} - {None}
    if not given:
        return {"kind": "image", "split_source": "random", **fractions}, _draw(images, fractions, multi)
    given_rows = [{"label": i.item.label, "split": i.item.split} for i in images]
    warnings = check_column_splits(given_rows, where, multi)
    drawn = {f"{s}_frac": 0.0 if s in given else fractions[f"{s}_frac"] for s in ("valid", "test")}
    for image in images:
        image.split = image.item.split
    train = [image for image in images if image.split == "train"]
    warnings += _draw(train, {"seed": opts.seed, **drawn}, multi)
    settings = {"seed": opts.seed, **drawn} if any(drawn.values()) else {}
    return {"kind": "image", "split_source": "given", **settings}, warnings


def _draw(images: list[_Image], fractions: dict, multi: bool) -> list[str]:
    """Stratified random split of these images (``random_splits``; several labels an image:
    by its rarest label); returns its warnings."""
    rows = [{"label": image.item.label} for image in images]
    splits, warnings = draw_splits(rows, multi, **fractions)
    for image, split in zip(images, splits, strict=True):
        image.split = split
    return warnings


def find_leakage(rows: list[dict]) -> list[dict]:
    """Images whose content is in more than one split: ``{"sha256", "splits", "sources"}``."""
    found: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        found[row["sha256"]].append(row)
    return [
        {"sha256": sha, "splits": sorted({r["split"] for r in same}), "sources": [r["source"] for r in same]}
        for sha, same in found.items()
        if len({r["split"] for r in same}) > 1
    ]


def _leakage_warnings(leakage: list[dict]) -> list[str]:
    if not leakage:
        return []
    first = leakage[0]
    return [
        f"leakage: {len(leakage)} image(s) are in more than one split, e.g. {' and '.join(first['sources'])} "
        f"({'/'.join(first['splits'])}): valid/test scores will look better than they are"
    ]


def _layout_warnings(layout: Layout) -> list[str]:
    ignored = layout.ignored
    warnings = layout.warnings + hidden_warnings(layout.hidden)  # empty class folders too
    if not ignored:
        return warnings
    return [f"ignored {len(ignored)} file(s) that are not part of the layout: {ignored[:5]}", *warnings]


def image_lines(rows: list[dict]) -> list[str]:
    """Each row as canonical ``{"sha256": ..., "label": ..., "split": ...}`` JSON, in row order."""
    return [
        json.dumps({"sha256": r["sha256"], "label": r["label"], "split": r["split"]}, ensure_ascii=False)
        for r in rows
    ]


def _source_sha(path: Path, archive: str | None, images: list[_Image]) -> str:
    """The archive's sha256, or one over the listing of accepted images (source and content)."""
    digest = hashlib.sha256()
    if archive is not None:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    for image in images:
        digest.update(f"{image.item.source}\0{image.sha256}\n".encode())
    return digest.hexdigest()


def _manifest(digest, opts, rows, rejects, info, layout, archive, warnings, settings, leakage) -> dict:
    now = utc_now()
    return {
        "format_version": FORMAT_VERSION,
        "kind": "multilabel-image" if layout.multi else "image",
        "id": digest[:ID_LENGTH],
        "digest": digest,
        "name": opts.name,
        "created": now,
        "source": str(Path(info["file"]).resolve()),
        "source_sha256": info["sha256"],
        "format": archive or layout.format,
        "layout": layout.kind,
        "columns": layout.columns,
        "counts": counts(rows, layout.multi),
        "rejects": len(rejects),
        "rejects_by_reason": info["rejects_by_reason"],
        "warnings": warnings,
        "leakage": leakage,
        "max_pixels": opts.max_pixels,
        "seed": settings.get("seed"),
        "valid_frac": settings.get("valid_frac"),
        "test_frac": settings.get("test_frac"),
        "split_source": settings["split_source"],
        "imports": [import_entry(opts.name, info, now)],
    }


def _save(images: list[_Image], rows: list[dict], rejects: list[dict], manifest: dict) -> Dataset:
    """Copy the images (original bytes, by content), then data, rejects and the manifest last."""
    claim("dataset", manifest["name"])
    folder = datasets_dir() / manifest["id"]
    for image, row in zip(images, rows, strict=True):
        target = folder / row["image"]
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(image.item.file, target)
    atomic_write(folder / DATA_FILE, jsonl_bytes(rows))
    atomic_write(folder / REJECTS_FILE, jsonl_bytes(rejects))
    write_manifest(folder, manifest)
    return Dataset.open(folder)
