"""Safe extraction of .zip, .tar and .tar.gz archives, with limits checked while streaming.

Every member is checked before it is written: no absolute paths, no ``..``, no links,
device nodes or FIFOs, and its target must resolve inside the destination. Limits are
checked first against the headers, then against the bytes actually decompressed: a
file is written with ``O_EXCL | O_NOFOLLOW`` chunk by chunk, and the chunk that would
pass a limit is never written. ``tarfile.extractall`` is not used.

The libraries' own reading is bounded too, since it happens before any member is seen: a zip's
central directory is counted against the member limit before ``zipfile`` loads it, and a tar's
long names and pax records are refused past ``MAX_TAR_HEADER`` bytes before ``tarfile`` reads
them, its whole stream past the byte limit.

>>> archive_kind(__file__) is None
True
"""

from __future__ import annotations

import gzip
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
MAX_TAR_HEADER = 64 * 1024  # a GNU long name or pax record; real ones hold a path of a few hundred bytes
TAR_ROOM = 4096  # stream bytes allowed per member on top of its data: header, padding, long name
IGNORED_NAMES = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")
_TAR_MAGIC_OFFSET = 257
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError, RuntimeError)
_TAR_EXTENDED = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
_ZIP_END = struct.Struct("<4s4H2LH")  # End Of Central Directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")
_ZIP_ENTRY = 46  # fixed part of a central directory entry; name, extra and comment lengths at 28
_SHORT = 300  # characters of a library's error text kept in a message
ZIP_ENCODINGS = ("utf-8", "gb18030")  # tried on a zip name without the UTF-8 flag, before cp437


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
    with _reading(path):
        for member in _members(path, kind, limits):
            writer.add(member)
    return writer.result


def member_names(path: str | Path, *, max_members: int | None = None) -> list[str]:
    """Every member name of an archive, from its headers (nothing is extracted), for a caller that
    needs them all: refused past the member limit as :func:`extract_archive` refuses, so a listing
    of millions of names is never built.

    Raises:
        DataError: Not a supported archive, or unreadable.
        TooLargeError: More members than ``max_members`` (default ``AIMASS_MAX_ARCHIVE_MEMBERS``).
    """
    path = Path(path)
    kind = archive_kind(path)
    if kind is None:
        raise DataError("not a .zip, .tar or .tar.gz archive", where=str(path))
    with _reading(path):
        return [member.name for member in _members(path, kind, Limits.resolve(max_members=max_members))]


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Errors while reading become DataErrors naming the archive. The library's text is shortened:
    it can quote a member name, which a crafted archive makes megabytes long."""
    try:
        yield
    except _READ_ERRORS as exc:
        raise DataError(
            f"cannot read the archive: {_short(str(exc))}",
            where=str(path),
            hint="Check that the file is complete.",
        ) from exc
    except AimassError as exc:  # a member refused: the message names it, ``where`` the archive
        exc.where = exc.where or str(path)
        raise


def archive_names(path: str | Path, max_names: int = MAX_MEMBERS) -> Iterator[str]:
    """The member names of an archive, one by one from its headers (nothing is extracted; a caller
    that has seen enough stops reading a .tar.gz there). At most ``max_names``; none when it is not
    an archive, and no more once it turns out unreadable."""
    path = Path(path)
    kind = archive_kind(path)
    if kind is None:
        return
    try:
        for member in _members(path, kind, Limits.resolve(max_members=max_names)):
            yield member.name
    except (*_READ_ERRORS, DataError):
        return


def _members(path: Path, kind: str, limits: Limits) -> Iterator[_Member]:
    if kind == "zip" and _zip_entries(path, limits.max_members) > limits.max_members:
        raise _too_many(path, limits.max_members)
    members = _zip_members(path, limits.max_members) if kind == "zip" else _tar_members(path, kind, limits)
    for count, member in enumerate(members, 1):
        if count > limits.max_members:
            raise _too_many(path, limits.max_members)
        yield member


def _too_many(path: Path, most: int) -> TooLargeError:
    return TooLargeError(
        f"the archive has more than {most:,} members",
        where=str(path),
        hint="Split it into several archives, or raise AIMASS_MAX_ARCHIVE_MEMBERS.",
    )


def _zip_entries(path: Path, most: int) -> int:
    """The entries of a zip's central directory, counted up to ``most + 1`` from their records.

    ``zipfile.ZipFile`` loads the whole directory (about 500 bytes of memory per entry) before any
    limit can be applied, and the count the End Of Central Directory record declares may lie, so
    the records zipfile will parse are counted first: from where it will start (the end record,
    or its ZIP64 version, less the directory's size) for as many bytes. 0 when there is no end
    record: zipfile then refuses the file.
    """
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        tail_at = max(0, size - 0x10000 - _ZIP_END.size)
        fh.seek(tail_at)
        tail = fh.read()
        end = tail.rfind(b"PK\x05\x06")
        if end < 0 or len(tail) - end < _ZIP_END.size:
            return 0
        *_, declared, cd_size, _, _ = _ZIP_END.unpack_from(tail, end)
        start = tail_at + end - cd_size
        locator = tail_at + end - _ZIP64_LOCATOR.size
        if locator - _ZIP64_END.size >= 0:
            fh.seek(locator - _ZIP64_END.size)
            zip64 = fh.read(_ZIP64_END.size + _ZIP64_LOCATOR.size)
            if zip64[:4] == b"PK\x06\x06" and zip64[_ZIP64_END.size :][:4] == b"PK\x06\x07":
                *_, declared, cd_size, _ = _ZIP64_END.unpack_from(zip64)
                start = locator - _ZIP64_END.size - cd_size
        if declared > most:
            return declared
        count, read = 0, 0
        fh.seek(max(start, 0))
        while read < cd_size and count <= most:
            entry = fh.read(_ZIP_ENTRY)
            if len(entry) < _ZIP_ENTRY or entry[:4] != b"PK\x01\x02":
                break  # zipfile refuses the directory here
            skip = sum(struct.unpack_from("<3H", entry, 28))
            fh.seek(skip, os.SEEK_CUR)
            count, read = count + 1, read + _ZIP_ENTRY + skip
        return count


def _zip_members(path: Path, most: int) -> Iterator[_Member]:
    with zipfile.ZipFile(path) as zf:
        if len(zf.infolist()) > most:  # checked before anything is written
            raise _too_many(path, most)
        for info, name in zip(zf.infolist(), zip_names(zf.infolist()), strict=True):
            opener = None if info.is_dir() else (lambda info=info: zf.open(info))
            yield _Member(name, info.is_dir(), info.file_size, info.compress_size, opener, _zip_refusal(info))


def zip_names(infos: list[zipfile.ZipInfo]) -> list[str]:
    """The members' names as their maker meant them. Without the UTF-8 flag (bit 11) ``zipfile``
    reads a name's bytes as cp437, which is rarely what they are: Linux ``zip`` writes UTF-8 without
    the flag, Chinese Windows writes GBK. So such a name is, in this order: the Info-ZIP Unicode
    Path extra field (0x7075) when it is there for this name; the bytes in the first of UTF-8 and
    GB18030 that reads every such name of the archive (a short GBK name can pass for UTF-8: ``猫``
    reads as ``è``, so one archive is read in one encoding); in whichever of the two reads it; else
    cp437. The safety checks run on the names given here (:func:`safe_parts`).

    >>> zip_names([zipfile.ZipInfo("蓝色.狗/1.png".encode().decode("cp437"))])
    ['蓝色.狗/1.png']
    >>> zip_names([zipfile.ZipInfo(n.encode("gbk").decode("cp437")) for n in ("猫/1.png", "狗/1.png")])
    ['猫/1.png', '狗/1.png']
    """
    raws = [None if info.flag_bits & 0x800 else info.orig_filename.encode("cp437") for info in infos]
    others = [raw for raw in raws if raw is not None and not raw.isascii()]
    first = next(
        (enc for enc in ZIP_ENCODINGS if all(_decoded(raw, enc) is not None for raw in others)), None
    )
    order = (first, *(enc for enc in ZIP_ENCODINGS if enc != first)) if first else ZIP_ENCODINGS
    return [
        info.filename if raw is None else _unicode_path(info.extra, raw) or _first_decoding(raw, order)
        for info, raw in zip(infos, raws, strict=True)
    ]


def _first_decoding(raw: bytes, encodings: tuple[str, ...]) -> str:
    found = (_decoded(raw, encoding) for encoding in encodings)
    return next((name for name in found if name is not None), raw.decode("cp437"))


def _decoded(raw: bytes, encoding: str) -> str | None:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return None


def _unicode_path(extra: bytes, raw: bytes) -> str | None:
    """The name in an Info-ZIP Unicode Path extra field (id 0x7075: version 1, the CRC-32 of the
    name it stands for, the name in UTF-8), when there is one and it is for ``raw``."""
    at = 0
    while at + 4 <= len(extra):
        kind, size = struct.unpack_from("<2H", extra, at)
        body = extra[at + 4 : at + 4 + size]
        at += 4 + size
        if (
            kind == 0x7075
            and len(body) > 5
            and body[0] == 1
            and struct.unpack_from("<L", body, 1)[0] == zlib.crc32(raw)
        ):
            return _decoded(body[5:], "utf-8")
    return None


def _zip_refusal(info: zipfile.ZipInfo) -> str | None:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "it is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "it is a device node, FIFO or socket"
    if info.flag_bits & 0x1:
        return "it is encrypted"
    return None


def _tar_members(path: Path, kind: str, limits: Limits) -> Iterator[_Member]:
    """Read as a stream (``r|``) through :class:`_Bounded`, with :class:`_TarInfo` headers."""
    most = limits.max_bytes + limits.max_members * TAR_ROOM
    raw = gzip.open(path, "rb") if kind == "tar.gz" else open(path, "rb")  # noqa: SIM115
    with raw, tarfile.open(fileobj=_Bounded(raw, most), mode="r|", tarinfo=_TarInfo) as tf:
        for info in tf:
            opener = (lambda info=info: tf.extractfile(info)) if info.isreg() else None
            yield _Member(info.name, info.isdir(), info.size, None, opener, _tar_refusal(info))


class _Bounded:
    """A tar's uncompressed stream, refused once more than ``most`` bytes were read: the headers,
    long names and pax records tarfile reads, and the data it skips, are not member data, so the
    limits on what is written never see them."""

    def __init__(self, raw: IO[bytes], most: int):
        self.raw, self.most, self.seen = raw, most, 0

    def read(self, size: int) -> bytes:
        data = self.raw.read(size)  # tarfile's stream mode reads one record (10 KiB) at a time
        self.seen += len(data)
        if self.seen > self.most:
            raise TooLargeError(
                f"the archive unpacks to more than {mebibytes(self.most)} of headers and data",
                hint="Split it into several archives, or raise AIMASS_MAX_ARCHIVE_BYTES.",
            )
        return data


class _TarInfo(tarfile.TarInfo):
    """Refuses, before tarfile reads them whole into memory, the headers whose size the archive
    chooses: a GNU long name or pax record over ``MAX_TAR_HEADER`` bytes, a second global pax
    header (their keys add up for the whole archive), and GNU sparse maps."""

    def _proc_member(self, tf):  # the hook tarfile documents for subclasses
        if self.type in _TAR_EXTENDED and self.size > MAX_TAR_HEADER:
            raise TooLargeError(
                f"a tar header announces a {self.size:,}-byte long name or pax record, "
                f"over the {MAX_TAR_HEADER:,}-byte limit",
                hint="Repack the archive with ordinary file names.",
            )
        if self.type == tarfile.XGLTYPE and tf.pax_headers:
            raise _unsafe(self.name, "it is a second global pax header")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _unsafe(self.name, "it is a sparse file")
        return super()._proc_member(tf)

    def _proc_gnusparse_10(self, member, pax_headers, tf):  # GNU sparse 1.0: its map is in the data
        raise _unsafe(member.name, "it is a sparse file")


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


def is_litter(parts: tuple[str, ...]) -> bool:
    """True for what tools leave beside the data, never data itself: macOS Finder files
    (``.DS_Store``, ``__MACOSX/``, the AppleDouble ``._name`` copies) and Windows' ``Thumbs.db``,
    ``desktop.ini``. Skipped without a word; any other hidden file is skipped and said
    (:func:`hidden_warnings`)."""
    return any(part in IGNORED_NAMES or part.startswith("._") for part in parts)


def hidden_files(root: Path) -> list[str]:
    """The files under ``root`` that a hidden name or folder (starting with ``.``) keeps out of an
    import, litter left out (:func:`is_litter`), as ``/``-separated paths relative to ``root``."""
    found = []
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not is_litter((d,)))
        folder = Path(top).relative_to(root).parts
        found += [
            "/".join((*folder, name))
            for name in sorted(files)
            if is_ignored((*folder, name)) and not is_litter((*folder, name))
        ]
    return found


def hidden_warnings(names: list[str]) -> list[str]:
    """A warning listing the hidden files (``names``: paths, folders ending in ``/`` left out) skipped
    by an import, litter left out: a real image or document named ``.cat.png`` is the user's data,
    and is not dropped without a word."""
    hidden = [n for n in names if not n.endswith("/") and not is_litter(PurePosixPath(n).parts)]
    if not hidden:
        return []
    more = f" and {len(hidden) - 5} more" if len(hidden) > 5 else ""
    return [
        f"skipped {len(hidden)} hidden file(s), whose name or folder starts with '.': "
        f"{', '.join(hidden[:5])}{more}; rename them without the leading dot to import them"
    ]


def _short(text: str) -> str:
    return text if len(text) <= _SHORT else f"{text[:_SHORT]}... ({len(text):,} characters)"


def _unsafe(name: str, rule: str) -> DataError:
    return DataError(
        f"archive member {_short(repr(name))} refused: {rule}",
        hint="Archives may hold only plain files and folders with relative paths; "
        "repack it without that member.",
    )
