"""Content-addressed storage of datasets under ``AIMASS_HOME/datasets/<id>/``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from aimass.data import multilabel
from aimass.data.dataset import DATA_FILE, IMPORTS_DIR, MANIFEST_FILE, REJECTS_FILE, Dataset
from aimass.errors import NotFoundError, PermissionDenied
from aimass.paths import subdir
from aimass.store.claims import claim

ID_LENGTH = 12
MIN_PREFIX = 4
TOMBSTONES = ".deleted"  # datasets/.deleted/<id>.json: what was deleted, when (aimass.data.removal)
_ENCODER = json.JSONEncoder(ensure_ascii=False)
_ENCODE_STRING = json.encoder.encode_basestring


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_copy(source: Path, path: Path) -> None:
    """Copy the file ``source`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def jsonl_bytes(items: list[dict]) -> bytes:
    """JSON Lines, UTF-8 with non-ASCII characters kept."""
    encode = _ENCODER.encode
    return "".join([encode(item) + "\n" for item in items]).encode()


def canonical_lines(rows: list[dict]) -> list[str]:
    """Each row as ``{"text": ..., "label": ..., "split": ...}`` JSON (no newline).

    Same output as ``json.dumps(row, ensure_ascii=False)`` for string values, built from
    the C string encoder because it runs on every row of every import.
    """
    enc = _ENCODE_STRING
    return [
        f'{{"text": {enc(r["text"])}, "label": {enc(r["label"])}, "split": {enc(r["split"])}}}' for r in rows
    ]


def compute_digest(lines: list[str], settings: dict) -> str:
    """Return the dataset digest.

    It is the sha256 of the canonical content (``canonical_lines``, newline-terminated,
    in file order) followed by the split settings as sorted-key JSON.
    """
    digest = hashlib.sha256("".join(line + "\n" for line in lines).encode())
    digest.update(b"\n" + json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def datasets_dir() -> Path:
    """``AIMASS_HOME/datasets``."""
    return subdir("datasets")


def existing(dataset_id: str) -> Dataset | None:
    """The stored dataset with this id, if complete (its manifest written)."""
    folder = datasets_dir() / dataset_id
    return Dataset.open(folder) if (folder / MANIFEST_FILE).is_file() else None


def save_dataset(lines: list[str], rows: list[dict], rejects: list[dict], manifest: dict) -> Dataset:
    """Store a dataset in ``datasets/<id>/``.

    Writes ``data.jsonl`` (the canonical lines with each row's ``source`` added),
    ``rejects.jsonl``, then ``manifest.json`` last, so that a folder with a manifest is
    always complete.
    """
    claim("dataset", manifest["name"])  # before a file is written (a job may write only its own names)
    folder = datasets_dir() / manifest["id"]
    folder.mkdir(parents=True, exist_ok=True)
    data = "".join(
        f'{line[:-1]}, "source": {_ENCODE_STRING(row["source"])}}}\n'
        for line, row in zip(lines, rows, strict=True)
    )
    atomic_write(folder / DATA_FILE, data.encode())
    atomic_write(folder / REJECTS_FILE, jsonl_bytes(rejects))
    write_manifest(folder, manifest)
    (datasets_dir() / TOMBSTONES / f"{manifest['id']}.json").unlink(missing_ok=True)  # stored again
    return Dataset.open(folder)


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically."""
    text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    atomic_write(folder / MANIFEST_FILE, text.encode())


def counts(rows: list[dict], multi: bool = False) -> dict:
    """The manifest's ``counts``: total, by split, by class and by split and class (``multi``: each
    of a row's labels is a class, and the row counts once for each)."""
    by_split = Counter(row["split"] for row in rows)
    labels = multilabel.split_labels if multi else (lambda label: [label])
    pairs = Counter((row["split"], label) for row in rows for label in labels(row["label"]))
    return {
        "total": len(rows),
        "by_split": {s: by_split[s] for s in ("train", "valid", "test") if by_split[s]},
        "by_class": dict(sorted(Counter(label for row in rows for label in labels(row["label"])).items())),
        "by_split_class": {
            s: {label: n for (split, label), n in sorted(pairs.items()) if split == s}
            for s in ("train", "valid", "test")
            if by_split[s]
        },
    }


def import_entry(name: str, info: dict, at: str, rejects_file: str = REJECTS_FILE) -> dict:
    """One entry of the manifest's ``imports`` list (``info`` has file, sha256, rejects_by_reason);
    ``rejects_file`` is where that import's rejects are listed, relative to the dataset folder."""
    by_reason = dict(info["rejects_by_reason"])
    entry = {
        "name": name,
        "at": at,
        "source": str(Path(info["file"]).resolve()),
        "source_sha256": info["sha256"],
        "rejects": sum(by_reason.values()),
        "rejects_by_reason": by_reason,
        "rejects_file": rejects_file,
    }
    # how this import read its file (a JSONL of the rows a CSV held is stored once, read otherwise)
    entry |= {k: info[k] for k in ("format", "encoding") if isinstance(info.get(k), str)}
    if info.get("text_col") is not None:
        entry["columns"] = {
            "text": info["text_col"],
            "label": info.get("label_col"),
            "split": info.get("split_col"),
        }
    return entry


def record_import(stored: Dataset, name: str, info: dict, rejects: list[dict]) -> Dataset:
    """Same content imported again: nothing is copied; the import is noted in the manifest.

    Its rejects differ from the first import's (the good rows were the same, the bad ones need
    not be), so they are written to a file of their own under ``imports/``, named by the import's
    entry, and the returned dataset reports them (:attr:`Dataset.imported`): no bad row of this
    import goes unreported.

    The stored dataset gets one more name, and whoever holds any of its names may then delete or
    fix it, so the code running must be allowed to write under every name it has already, not
    only under ``name``: a job or REST import in one project cannot give another project's data a
    name of its own (:mod:`aimass.store.claims`)."""
    claim("dataset", name)
    for held in stored.names:
        try:
            claim("dataset", held)
        except PermissionDenied:
            raise PermissionDenied(
                f"This data is already stored, under a name another project holds; it cannot also be "
                f"dataset {name!r} here (a dataset is stored once, by its content).",
                hint="Import it in the project that holds it, or change the data.",
            ) from None
    at = utc_now()
    kept = f"{IMPORTS_DIR}/{at[:19].replace(':', '')}-{uuid.uuid4().hex[:8]}.rejects.jsonl"
    (stored.path / IMPORTS_DIR).mkdir(exist_ok=True)
    atomic_write(stored.path / kept, jsonl_bytes(rejects))  # before the manifest names it
    entry = import_entry(name, info, at, kept)
    stored.manifest.setdefault("imports", []).append(entry)
    write_manifest(stored.path, stored.manifest)
    stored.imported = entry
    return stored


def utc_now() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def list_datasets() -> list[Dataset]:
    """Every stored dataset, oldest first (folders without a readable manifest are skipped)."""
    found = []
    for folder in sorted(datasets_dir().iterdir()):
        if not (folder / MANIFEST_FILE).is_file():
            continue
        try:
            found.append(Dataset.open(folder))
        except (OSError, ValueError, KeyError):
            continue
    return sorted(found, key=lambda ds: (ds.manifest.get("created", ""), ds.id))


def load_dataset(id_or_name: str) -> Dataset:
    """Find a stored dataset by id, by name (latest import of it) or by unique id prefix.

    Args:
        id_or_name: Full id (or digest), a dataset name, or at least ``MIN_PREFIX``
            leading characters of an id.

    Raises:
        NotFoundError: Nothing matches, or a prefix matches several datasets; the message
            lists what exists.
    """
    key = str(id_or_name).strip()
    datasets = list_datasets()
    exact = [ds for ds in datasets if key in (ds.id, ds.digest)]
    named = [ds for ds in datasets if key in ds.names]
    if exact or named:
        return exact[0] if exact else max(named, key=lambda ds: _last_import(ds, key))
    prefixed = [ds for ds in datasets if len(key) >= MIN_PREFIX and ds.id.startswith(key.lower())]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:  # no listing (nor below): these messages reach REST callers and job results
        raise NotFoundError(
            f"{key!r} matches {len(prefixed)} datasets", hint="Give more characters of the id, or the name."
        )
    gone = deleted_dataset(key)
    if gone is not None:
        raise NotFoundError(
            f"dataset {key!r} ({gone['id']}) was deleted on {gone['deleted']}",
            hint="Import its file again to get it back (the same content gets the same id).",
        )
    raise missing_dataset(key)


def missing_dataset(key: str) -> NotFoundError:
    """The one answer for a dataset that is not there, or that the caller may not see (REST's
    access rules answer it too: no difference between the two tells a name exists)."""
    return NotFoundError(
        f"no dataset {str(key)[:200]!r}",
        hint="`aimass data list` (or GET /v1/datasets) lists the datasets you may use; "
        "import the file first.",
    )


def deleted_dataset(key: str) -> dict | None:
    """The tombstone of the newest deleted dataset with id, digest or name ``key``, or None."""
    folder = datasets_dir() / TOMBSTONES
    stones = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            stone = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if key in (stone.get("id"), stone.get("digest")) or key in stone.get("names", []):
            stones.append(stone)
    return max(stones, key=lambda s: s.get("deleted", ""), default=None)


def _last_import(ds: Dataset, name: str) -> str:
    times = [e["at"] for e in ds.manifest.get("imports", []) if e["name"] == name]
    return max(times, default=ds.manifest.get("created", ""))
