"""Data files sent over HTTP, kept under ``AIMASS_HOME/uploads`` (a data root REST jobs may name).

Each upload gets its own folder, ``uploads/<id>/``, holding the file under a cleaned name. An
archive (.zip, .tar, .tar.gz) is also unpacked there by the safe extractor
(:func:`aimass.data.archive.extract_archive`: no links, no ``..``, size and ratio limits), and the
path to import is what it holds: its one table, or the folder below any single wrapping folder.

>>> clean_name("../../etc/passwd")
'passwd'
>>> clean_name("我的 数据.csv")
'data.csv'
"""

from __future__ import annotations

import errno
import re
import secrets
import shutil
from pathlib import Path, PurePath
from typing import BinaryIO

from aimass import paths
from aimass.data.archive import archive_kind, extract_archive
from aimass.data.limits import MIB, limit, mebibytes
from aimass.errors import InsufficientStorage, TooLargeError

MAX_UPLOAD_BYTES = 512 * MIB
MIN_FREE_BYTES = 256 * MIB  # what an upload leaves free on the disk, for the database, jobs and models


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


def store_upload(source: BinaryIO, filename: str | None) -> dict:
    """Copy ``source`` into a new folder under ``uploads/`` (unpacking an archive); returns
    ``{"upload", "path", "file", "bytes", "archive", "files"}`` where ``path`` is what to import.

    Raises:
        TooLargeError: past :func:`upload_limit` (nothing is kept).
        DataError: an archive that cannot be read or holds an unsafe member (nothing is kept).
    """
    upload_id = secrets.token_hex(6)
    folder = paths.subdir("uploads") / upload_id
    folder.mkdir(parents=True)
    target = folder / clean_name(filename)
    try:
        size = _copy(source, target)
        kind = archive_kind(target)
        found = _unpack(target, folder / "files") if kind else (target, 1)
    except BaseException as exc:
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
    }


def _copy(source: BinaryIO, target: Path) -> int:
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
