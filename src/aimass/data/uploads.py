"""Data files sent over HTTP, kept under ``AIMASS_HOME/uploads`` (a data root REST jobs may name).

Each upload gets its own folder, ``uploads/<id>/``, holding the file under a cleaned name. An
archive (.zip, .tar, .tar.gz) is also unpacked there by the safe extractor
(:func:`aimass.data.archive.extract_archive`: no links, no ``..``, size and ratio limits), and the
path to import is what it holds: its one table, or the folder below any single wrapping folder.

An upload belongs to a project (``.upload.json`` in its folder: project, bytes on disk, when). A
project holds at most ``AIMASS_MAX_PROJECT_UPLOAD_BYTES`` (8 GiB) of uploads, counted as they are
written, so concurrent uploads share the room: one key cannot fill the disk every project shares.
Deleting the upload (:func:`delete_upload`) or the dataset imported from it frees its bytes.

>>> clean_name("../../etc/passwd")
'passwd'
>>> clean_name("我的 数据.csv")
'data.csv'
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import threading
from collections import Counter
from pathlib import Path, PurePath
from typing import BinaryIO

from aimass import paths
from aimass.data.archive import archive_kind, extract_archive
from aimass.data.limits import MIB, limit, mebibytes
from aimass.data.storage import utc_now
from aimass.errors import InsufficientStorage, NotFoundError, TooLargeError

MAX_UPLOAD_BYTES = 512 * MIB
MIN_FREE_BYTES = 256 * MIB  # what an upload leaves free on the disk, for the database, jobs and models
PROJECT_BYTES = "AIMASS_MAX_PROJECT_UPLOAD_BYTES"
MAX_PROJECT_BYTES = 8192 * MIB
RECORD = ".upload.json"  # a cleaned file name never starts with "."
UPLOAD_ID = re.compile(r"[0-9a-f]{12}")
DEFAULT_PROJECT = "default"


def upload_limit() -> int:
    """Most bytes a data upload may have (``AIMASS_MAX_UPLOAD_BYTES``, default 512 MiB)."""
    return int(limit("AIMASS_MAX_UPLOAD_BYTES", MAX_UPLOAD_BYTES, None))


def clean_name(name: str | None) -> str:
    """A safe file name from what a browser sent: the last path part, ASCII letters, digits, ``._-``."""
    base = PurePath(str(name or "").replace("\\", "/")).name
    stem, dot, suffix = base.rpartition(".") if "." in base else (base, "", "")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "", stem)[:80].strip(".-") or "data"
    suffix = re.sub(r"[^A-Za-z0-9]+", "", suffix)[:10]
    return f"{stem}.{suffix}" if suffix else stem


def store_upload(source: BinaryIO, filename: str | None, project: str | None = None) -> dict:
    """Copy ``source`` into a new folder under ``uploads/`` (unpacking an archive), owned by
    ``project`` (``default`` when None); returns ``{"upload", "path", "file", "bytes", "archive",
    "files", "project", "project_bytes"}`` where ``path`` is what to import and ``project_bytes``
    what the project's uploads now hold.

    Raises:
        TooLargeError: past :func:`upload_limit`, or past the project's room (nothing is kept).
        DataError: an archive that cannot be read or holds an unsafe member (nothing is kept).
    """
    upload_id = secrets.token_hex(6)
    folder = paths.subdir("uploads") / upload_id
    folder.mkdir(parents=True)
    target = folder / clean_name(filename)
    room = _Room(project or DEFAULT_PROJECT)
    try:
        size = _copy(source, target, room)
        kind = archive_kind(target)
        found = _unpack(target, folder / "files") if kind else (target, 1)
        held = room.keep(folder, _disk_bytes(folder))
    except BaseException as exc:
        room.drop()
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # an archive unpacked past the room
            raise _disk_full(int(limit("AIMASS_MIN_FREE_BYTES", MIN_FREE_BYTES, None))) from None
        raise
    path, files = found
    return {
        "upload": upload_id,
        "path": str(path),
        "file": target.name,
        "bytes": size,
        "archive": kind,
        "files": files,
        "project": room.project,
        "project_bytes": held,
    }


def project_upload_limit() -> int:
    """Most bytes one project's uploads may hold on disk (``AIMASS_MAX_PROJECT_UPLOAD_BYTES``, 8 GiB)."""
    return int(limit(PROJECT_BYTES, MAX_PROJECT_BYTES, None))


def uploads(project: str | None = None) -> list[dict]:
    """The kept uploads (of ``project``, or all), oldest first: ``{"upload", "project", "file",
    "bytes", "created"}``. A folder without its record (an upload cut short by a crash, or kept
    before uploads had owners) is not listed."""
    root = paths.home() / "uploads"
    found = []
    for record in root.glob(f"*/{RECORD}") if root.is_dir() else ():
        try:
            info = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if not UPLOAD_ID.fullmatch(record.parent.name):  # one being deleted
            continue
        if project is None or info.get("project") == project:
            found.append({"upload": record.parent.name, **info})
    return sorted(found, key=lambda u: (u.get("created") or "", u["upload"]))


def upload_project(upload_id: str) -> str | None:
    """The project an upload belongs to; None when there is no such upload (or it has no record)."""
    if not UPLOAD_ID.fullmatch(upload_id):
        return None
    try:
        return json.loads((paths.home() / "uploads" / upload_id / RECORD).read_text()).get("project")
    except (OSError, ValueError):
        return None


def delete_upload(upload_id: str) -> dict:
    """Remove an upload's folder (a dataset imported from it keeps its own copy of the rows and
    images); its bytes leave its project's share. 404 when there is no such upload."""
    project = upload_project(upload_id)
    if project is None:
        raise missing_upload(upload_id)
    folder = paths.home() / "uploads" / upload_id
    with _LOCK:  # out of the count in the same step as it leaves the disk
        trash = folder.with_name(f".{upload_id}.deleting")
        os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return {"upload": upload_id, "project": project, "deleted": True}


def missing_upload(upload_id: str) -> NotFoundError:
    return NotFoundError(
        f"No upload {upload_id[:64]!r}.",
        hint="GET /v1/uploads?project=P lists a project's uploads; POST /v1/uploads answers each one's id.",
    )


_LOCK = threading.Lock()
_WRITING: Counter = Counter()  # bytes being written now, per project
_KEPT: Counter = Counter()  # bytes of uploads kept since this process started, per project


class _Room:
    """A project's share of upload bytes, taken chunk by chunk as the file is written. What it
    holds is what its kept uploads' records say when this upload started, plus every upload of
    it kept since and every one being written now."""

    def __init__(self, project: str):
        self.project, self.most, self.mine = project, project_upload_limit(), 0
        with _LOCK:
            self.base = sum(int(u.get("bytes") or 0) for u in uploads(project))
            self.kept_then = _KEPT[project]

    def _held(self) -> int:  # under _LOCK
        return self.base + _KEPT[self.project] - self.kept_then + _WRITING[self.project]

    def take(self, n: int) -> None:
        with _LOCK:
            if self._held() + n > self.most:
                raise self._full(self._held() + n)
            _WRITING[self.project] += n
            self.mine += n

    def keep(self, folder: Path, size: int) -> int:
        """Keep the upload (its folder holds ``size`` bytes, unpacked): its record is written and
        its bytes counted as kept, in one step; what the project holds now."""
        with _LOCK:
            if self._held() - self.mine + size > self.most:  # an archive unpacked past the room
                raise self._full(self._held() - self.mine + size)
            created = utc_now()
            record = {"project": self.project, "file": _first_file(folder), "bytes": size, "created": created}
            (folder / RECORD).write_text(json.dumps(record))
            _WRITING[self.project] -= self.mine
            _KEPT[self.project] += size
            self.mine = 0
            return self._held()

    def drop(self) -> None:
        with _LOCK:
            _WRITING[self.project] -= self.mine
            self.mine = 0

    def _full(self, would: int) -> TooLargeError:
        oldest = [u["upload"] for u in uploads(self.project)[:3]]
        return TooLargeError(
            f"Project {self.project!r} may hold at most {mebibytes(self.most)} of uploads; this one "
            f"would make {mebibytes(would)}.",
            hint="Delete uploads it no longer needs (DELETE /v1/uploads/{id}"
            + (f"; its oldest: {', '.join(oldest)}" if oldest else "")
            + "), or datasets imported from them; the operator sets "
            f"{PROJECT_BYTES}.",
        )


def _first_file(folder: Path) -> str:
    return next((p.name for p in sorted(folder.iterdir()) if p.is_file() and p.name != RECORD), "")


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _copy(source: BinaryIO, target: Path, room: _Room) -> int:
    most, written = upload_limit(), 0
    keep = int(limit("AIMASS_MIN_FREE_BYTES", MIN_FREE_BYTES, None))
    try:
        with open(target, "wb") as out:
            while chunk := source.read(MIB):
                written += len(chunk)
                if written > most:
                    raise TooLargeError(
                        f"The upload is over {mebibytes(most)}.",
                        hint="Send a smaller file, or raise AIMASS_MAX_UPLOAD_BYTES on the server.",
                    )
                if shutil.disk_usage(target.parent).free - len(chunk) < keep:
                    raise _disk_full(keep)
                room.take(len(chunk))
                out.write(chunk)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _disk_full(keep) from None
        raise
    return written


def _disk_full(keep: int) -> InsufficientStorage:
    """The upload would leave less than ``keep`` bytes free on the disk of ``AIMASS_HOME`` (the
    database, running jobs and new model versions need room more than a file not yet imported)."""
    return InsufficientStorage(
        f"The server's disk is nearly full: an upload leaves at least {mebibytes(keep)} free.",
        hint="Try again later or send a smaller file; the operator can free space (old uploads, "
        "datasets, versions) or lower AIMASS_MIN_FREE_BYTES.",
    )


def _unpack(archive: Path, dest: Path) -> tuple[Path, int]:
    extracted = extract_archive(archive, dest)
    path = dest
    while path.is_dir() and len(inside := [p for p in path.iterdir() if not p.name.startswith(".")]) == 1:
        path = inside[0]  # one folder wrapping everything, or one table: import what it holds
    return path, len(extracted.files)
