"""Deleting a stored dataset: its folder, the uploaded copy it came from, its issues report, and a
tombstone.

A dataset folder is renamed into ``datasets/.trash/`` first (one atomic step) and then deleted, so a
crash leaves a folder nothing lists, never a half-deleted dataset. The file it was imported from is
removed too when it is an upload (a folder under ``AIMASS_HOME/uploads/`` that no other dataset
came from); a file of the user's own disk is never touched. Its issues report in the default folder
(:func:`report_folder`: ``issues.json`` and ``issues.csv`` quote its rows, the pictures show its
images) goes the same way; one written with ``--out`` elsewhere is the user's own file. A tombstone
(``datasets/.deleted/<id>.json``: id, names, digest, when) makes a later reference to it say it
was deleted, and when, instead of "no dataset"; importing the same content again lifts it.

What may be deleted (no model trained on it unless forced, no job about to read it) is decided
above this layer: :func:`aimass.workflow.delete_dataset`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from aimass import paths
from aimass.data.dataset import Dataset
from aimass.data.storage import TOMBSTONES, atomic_write, datasets_dir, list_datasets, utc_now

TRASH = ".trash"  # where a dataset folder goes to be deleted (nothing lists it)
REPORTS = "reports/issues"  # a dataset's issues report, one folder per dataset id


def report_folder(dataset_id: str) -> Path:
    """Where a dataset's issues report is written by default: ``AIMASS_HOME/reports/issues/<id>``.

    It lives in this layer (and :mod:`aimass.curation`, which writes the report, asks it) so that a
    delete, which may not import curation, removes the report with the dataset.
    """
    return paths.subdir(REPORTS) / dataset_id


def remove_dataset(ds: Dataset) -> dict:
    """Delete ``ds`` (see the module); returns ``{"id", "names", "deleted", "uploads_removed",
    "report_removed"}``."""
    others = [d for d in list_datasets() if d.id != ds.id]
    kept = {folder for d in others for folder in _uploads(d)}
    uploads = sorted(_uploads(ds) - kept)
    stone = {"id": ds.id, "digest": ds.digest, "names": ds.names, "deleted": utc_now()}
    folder = datasets_dir() / TOMBSTONES
    folder.mkdir(exist_ok=True)
    atomic_write(folder / f"{ds.id}.json", json.dumps(stone, ensure_ascii=False).encode())
    _remove(ds.path, datasets_dir() / TRASH)
    for upload in uploads:
        _remove(upload, upload.parent)
    report = report_folder(ds.id)
    had_report = report.exists()
    _remove(report, report.parent)
    return {**stone, "uploads_removed": len(uploads), "report_removed": had_report}


def _uploads(ds: Dataset) -> set[Path]:
    """The upload folders (``uploads/<id>/``) ``ds`` was imported from, by any of its imports
    (its validation and test files too)."""
    root = paths.subdir("uploads").resolve()
    sources = [ds.manifest.get("source")] + [i.get("source") for i in ds.manifest.get("imports", [])]
    sources += [f.get("file") for f in (ds.manifest.get("split_files") or {}).values()]  # valid/test files
    found = set()
    for source in filter(None, sources):
        try:
            relative = Path(source).resolve().relative_to(root)
        except ValueError:  # not an upload: the user's own file
            continue
        if relative.parts:
            found.add(root / relative.parts[0])
    return found


def _remove(folder: Path, trash: Path) -> None:
    if not folder.exists():
        return
    trash.mkdir(parents=True, exist_ok=True)
    gone = trash / f".deleted-{folder.name}-{uuid.uuid4().hex[:8]}"
    os.replace(folder, gone)
    shutil.rmtree(gone, ignore_errors=True)


def clear_features() -> int:
    """Delete every cached feature file (text and image embeddings, :mod:`aimass.train.cache`; a
    cache only: the next fit embeds again); how many. A dataset's deletion does this, since a
    cached file does not say which dataset's texts or images it holds."""
    removed = 0
    for path in paths.subdir(paths.FEATURES).glob("*.safetensors"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
