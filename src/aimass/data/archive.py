"""Safe extraction of .zip, .tar and .tar.gz archives, with limits checked while streaming.

Every member is checked before it is written: no absolute paths, no ``..``, no links,
device nodes or FIFOs, and its target must resolve inside the destination. Limits are
checked first against the headers, then against the bytes actually decompressed: a
file is written with ``O_EXCL | O_NOFOLLOW`` chunk by chunk, and the chunk that would
pass a limit is never written. ``tarfile.extractall`` is not used.

>>> archive_kind(__file__) is None
True
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from aimass.data.limits import MIB, limit, mebibytes
from aimass.errors import AimassError, DataError, TooLargeError

MAX_ARCHIVE_BYTES = 2 * 1024 * MIB
MAX_MEMBERS = 100_000
MAX_RATIO = 100
RATIO_FLOOR = MIB
CHUNK = MIB
IGNORED_NAMES = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")
_TAR_MAGIC_OFFSET = 257
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError, RuntimeError)


@dataclass(frozen=True)
class Limits:
    """Extraction limits: total bytes written, member count, compression ratio."""

    max_bytes: int
    max_members: int
    max_ratio: float

    @classmethod
    def resolve(cls, max_bytes=None, max_members=None, max_ratio=None) -> Limits:
        """Given values, else ``AIMASS_MAX_ARCHIVE_BYTES`` / ``_MEMBERS`` / ``_RATIO``, else defaults."""
        return cls(
            limit("AIMASS_MAX_ARCHIVE_BYTES", MAX_ARCHIVE_BYTES, max_bytes, param="max_bytes"),
            limit("AIMASS_MAX_ARCHIVE_MEMBERS", MAX_MEMBERS, max_members, param="max_members"),
            limit("AIMASS_MAX_ARCHIVE_RATIO", MAX_RATIO, max_ratio, param="max_ratio"),
        )


@dataclass
class Extracted:
    """What :func:`extract_archive` wrote.

    Attributes:
        root: The destination folder.
        kind: ``zip``, ``tar`` or ``tar.gz``.
        files: Relative paths (``/``-separated) of the files written, in archive order.
        ignored: Members skipped on purpose (``__MACOSX/``, ``.DS_Store``, hidden files).
        bytes_written: Total bytes written.
    """

    root: Path
    kind: str
    files: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    bytes_written: int = 0


@dataclass
class _Member:
    """One archive member, whatever the format; ``refused`` says why it may not be extracted."""

    name: str
    is_dir: bool
    size: int
    packed: int | None  # compressed size, when the format records it
    open: Callable[[], IO[bytes]] | None
    refused: str | None = None


def archive_kind(path: str | Path) -> str | None:
    """``zip``, ``tar`` or ``tar.gz`` from the file's first bytes (not its name); None otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        head = fh.read(_TAR_MAGIC_OFFSET + 8)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if _is_tar_header(head):
        return "tar"
    if head[:2] == b"\x1f\x8b" and _is_tar_header(_gunzip_head(path)):
        return "tar.gz"
    return None


def _is_tar_header(head: bytes) -> bool:
    return head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar"


def _gunzip_head(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(_TAR_MAGIC_OFFSET + 8)
    except (OSError, EOFError, zlib.error):
        return b""


def extract_archive(
    path: str | Path,
    dest: str | Path,
    *,
    max_bytes: int | None = None,
    max_members: int | None = None,
    max_ratio: float | None = None,
) -> Extracted:
    """Extract a .zip, .tar or .tar.gz archive into ``dest``, refusing anything unsafe.

    Args:
        path: The archive (its type is read from its content).
        dest: Destination folder (created if needed); nothing is ever written outside it.
        max_bytes: Most bytes written in all (default ``AIMASS_MAX_ARCHIVE_BYTES`` or 2 GiB).
        max_members: Most members (default ``AIMASS_MAX_ARCHIVE_MEMBERS`` or 100,000).
        max_ratio: Highest compression ratio, per member and overall, applied above
            ``RATIO_FLOOR`` bytes (default ``AIMASS_MAX_ARCHIVE_RATIO`` or 100).

    Returns:
        What was written and what was skipped.

    Raises:
        DataError: Not a supported archive, unreadable, or a member is unsafe (absolute
            path, ``..``, link, device, FIFO, or a name given twice); the message names it.
        TooLargeError: A limit is exceeded; extraction stops there. What was written so
            far stays in ``dest`` for the caller to remove.
    """
    path, root = Path(path), Path(dest)
    kind = archive_kind(path)
    if kind is None:
        raise DataError(
            "not a .zip, .tar or .tar.gz archive",
            where=str(path),
            hint="Pack the images as .zip or .tar.gz, or give the folder itself.",
        )
    root.mkdir(parents=True, exist_ok=True)
    limits = Limits.resolve(max_bytes, max_members, max_ratio)
    writer = _Writer(root.resolve(), path.stat().st_size, limits, Extracted(root, kind))
    try:
        for member in _members(path, kind, limits.max_members):
            writer.add(member)
    except _READ_ERRORS as exc:
        raise DataError(
            f"cannot read the archive: {exc}", where=str(path), hint="Check that the file is complete."
        ) from exc
    except AimassError as exc:  # a member refused: the message names it, ``where`` the archive
        exc.where = exc.where or str(path)
        raise
    return writer.result


def archive_names(path: str | Path, max_names: int = MAX_MEMBERS) -> Iterator[str]:
    """The member names of an archive, one by one from its headers (nothing is extracted; a caller
    that has seen enough stops reading a .tar.gz there). At most ``max_names``; none when it is not
    an archive, and no more once it turns out unreadable."""
    path = Path(path)
    kind = archive_kind(path)
    if kind is None:
        return
    try:
        for member in _members(path, kind, max_names):
            yield member.name
    except (*_READ_ERRORS, TooLargeError):
        return


def _members(path: Path, kind: str, max_members: int) -> Iterator[_Member]:
    reader = _zip_members if kind == "zip" else _tar_members
    for count, member in enumerate(reader(path), 1):
        if count > max_members:
            raise TooLargeError(
                f"the archive has more than {max_members:,} members",
                where=str(path),
                hint="Split it into several archives, or raise AIMASS_MAX_ARCHIVE_MEMBERS.",
            )
        yield member


def _zip_members(path: Path) -> Iterator[_Member]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            opener = None if info.is_dir() else (lambda info=info: zf.open(info))
            yield _Member(
                info.filename, info.is_dir(), info.file_size, info.compress_size, opener, _zip_refusal(info)
            )


def _zip_refusal(info: zipfile.ZipInfo) -> str | None:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "it is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "it is a device node, FIFO or socket"
    if info.flag_bits & 0x1:
        return "it is encrypted"
    return None


def _tar_members(path: Path) -> Iterator[_Member]:
    with tarfile.open(path, "r:*") as tf:
        for info in tf:
            opener = (lambda info=info: tf.extractfile(info)) if info.isreg() else None
            yield _Member(info.name, info.isdir(), info.size, None, opener, _tar_refusal(info))


def _tar_refusal(info: tarfile.TarInfo) -> str | None:
    if info.isreg() or info.isdir():
        return None
    if info.issym():
        return "it is a symbolic link"
    if info.islnk():
        return "it is a hard link"
    if info.isdev():
        return "it is a device node or FIFO"
    return "it is not a plain file or folder"


@dataclass
class _Writer:
    """Checks and writes members one by one, keeping the running totals."""

    root: Path
    archive_size: int
    limits: Limits
    result: Extracted
    declared: int = 0

    def add(self, member: _Member) -> None:
        """Check one member, then write it or skip it when it is ignorable."""
        parts = safe_parts(member.name)
        if member.refused:
            raise _unsafe(member.name, member.refused)
        if not member.is_dir:
            self._check_declared(member)
        if is_ignored(parts):
            self.result.ignored.append(member.name)
            return
        target = self._target(parts, member.name, member.is_dir)
        if not member.is_dir:
            self._write(member, target)
            self.result.files.append("/".join(parts))

    def _target(self, parts: tuple[str, ...], name: str, is_dir: bool) -> Path:
        """The path to write, its folders created after checking no link leads outside the root."""
        target = self.root.joinpath(*parts)
        folder = target if is_dir else target.parent
        for depth in range(1, len(parts) + 1):
            if self.root.joinpath(*parts[:depth]).is_symlink():
                raise _unsafe(name, "its path goes through a symbolic link")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise _unsafe(name, "a file of the same name is in its path") from exc
        if not folder.resolve().is_relative_to(self.root):
            raise _unsafe(name, "it would be written outside the destination")
        return target

    def _check_declared(self, member: _Member) -> None:
        """Stop before reading when the headers already say a limit would be passed."""
        self.declared += member.size
        if self.declared > self.limits.max_bytes:
            raise self._over_size(member.name, self.declared)
        if member.packed is not None:
            self._check_ratio(member.name, member.size, member.packed)

    def _write(self, member: _Member, target: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(target, flags, 0o644)
        except (FileExistsError, IsADirectoryError) as exc:
            raise _unsafe(member.name, "the same name appears twice") from exc
        written = 0
        with os.fdopen(fd, "wb") as out, member.open() as src:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                written += len(chunk)
                self.result.bytes_written += len(chunk)
                self._check_stream(member, written)
                out.write(chunk)

    def _check_stream(self, member: _Member, written: int) -> None:
        """Limits on the bytes actually produced, not the ones the headers announce."""
        if self.result.bytes_written > self.limits.max_bytes:
            raise self._over_size(member.name, self.result.bytes_written)
        if written > member.size:
            raise _unsafe(member.name, f"it holds more than the {member.size:,} bytes its header says")
        if member.packed is not None:
            self._check_ratio(member.name, written, member.packed)
        self._check_ratio("the archive as a whole", self.result.bytes_written, self.archive_size)

    def _check_ratio(self, name: str, size: int, packed: int) -> None:
        if size > RATIO_FLOOR and size > self.limits.max_ratio * max(packed, 1):
            raise TooLargeError(
                f"{name} expands more than {self.limits.max_ratio:g}:1 ({mebibytes(size)} from "
                f"{mebibytes(packed)}): refused as a possible compression bomb",
                hint="Pack the images themselves (already compressed), or raise AIMASS_MAX_ARCHIVE_RATIO.",
            )

    def _over_size(self, name: str, total: int) -> TooLargeError:
        return TooLargeError(
            f"extracting {name} would bring the archive past {mebibytes(self.limits.max_bytes)} "
            f"(at least {mebibytes(total)})",
            hint="Split it into several archives, or raise AIMASS_MAX_ARCHIVE_BYTES.",
        )


def safe_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, refusing absolute paths and ``..``.

    Backslashes count as separators (archives made on Windows), and empty and ``.``
    components are dropped.

    Raises:
        DataError: The name is absolute, has a drive letter, a ``..`` component, a NUL
            character, or nothing left after normalising.
    """
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise _unsafe(name, "it has an absolute path")
    if "\0" in text:
        raise _unsafe(name, "its name contains a NUL character")
    parts = tuple(p for p in PurePosixPath(text).parts if p not in ("", "."))
    if ".." in parts:
        raise _unsafe(name, "its path contains '..'")
    if not parts:
        raise _unsafe(name, "its name is empty")
    return parts


def is_ignored(parts: tuple[str, ...]) -> bool:
    """True for macOS and Windows litter and hidden files or folders."""
    return any(part in IGNORED_NAMES or part.startswith(".") for part in parts)


def _unsafe(name: str, rule: str) -> DataError:
    return DataError(
        f"archive member {name!r} refused: {rule}",
        hint="Archives may hold only plain files and folders with relative paths; "
        "repack it without that member.",
    )
