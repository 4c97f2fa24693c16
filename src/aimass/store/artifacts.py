"""Artifacts that a crash cannot tear: write to a temporary name, fsync, rename; check on read.

A model folder is sealed with ``SHA256SUMS`` (one ``digest  relative/path`` line per file) before
it is moved into place; :func:`verify` recomputes the digests when the folder is loaded, so a
truncated or altered file is named instead of failing somewhere deep in a loader.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "weights.bin").write_bytes(b"abc")
>>> seal(folder); verify(folder)
1
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from aimass.errors import IntegrityError

SUMS = "SHA256SUMS"


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp_path)`` then fsync and rename over ``path``: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SUMS)


def seal(folder: Path) -> None:
    """fsync every file of ``folder`` and write its ``SHA256SUMS``."""
    folder = Path(folder)
    lines = []
    for path in _files(folder):
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
        lines.append(f"{sha256_file(path)}  {path.relative_to(folder).as_posix()}\n")
    write_atomic(folder / SUMS, lambda tmp: Path(tmp).write_text("".join(lines)))


def read_sums(folder: Path) -> dict[str, str]:
    """``SHA256SUMS`` as ``{relative path: sha256}`` (empty when the folder has none)."""
    sums = Path(folder) / SUMS
    if not sums.exists():
        return {}
    pairs = (line.partition("  ") for line in sums.read_text().splitlines())
    return {name: digest for digest, _, name in pairs}


def verify(folder: Path) -> int:
    """Check every file listed in ``SHA256SUMS``; returns how many. Folders written before
    sealing existed (no ``SHA256SUMS``) are accepted as they are (returns 0); a missing folder is not.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise IntegrityError(
            f"The model folder {folder} is missing.",
            hint="Restore it from a backup (or point AIMASS_HOME at the home that holds it), "
            "or train the version again.",
        )
    if not (folder / SUMS).exists():
        return 0
    checked = 0
    for name, expected in read_sums(folder).items():
        path = folder / name
        if not path.is_file():
            raise IntegrityError(
                f"{path} is missing from the model folder.",
                hint="The artifact is incomplete: restore the folder or train the version again.",
            )
        if sha256_file(path) != expected:
            raise IntegrityError(
                f"{path} does not match its sha256 in {SUMS} (the file was truncated or changed).",
                hint="Restore the folder from a backup or train the version again.",
            )
        checked += 1
    return checked
