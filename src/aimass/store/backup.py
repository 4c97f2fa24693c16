"""Back up an ``AIMASS_HOME`` while its server runs, and restore it into a new folder.

:func:`backup` snapshots the SQLite database with SQLite's online backup API (a consistent copy
while the server, its job runner and its metering keep writing), then adds every file of the home
(datasets, models, runs, jobs, uploads, code, ``serving.json``, the admin token) to one tar
(``.tar.gz`` when the name says so), with a ``BACKUP.json`` manifest of each file's size and
sha256 last. The feature cache and the converted backbones are left out unless asked for: they
are rebuilt on the next fit. Files are read after the snapshot, so one deleted in between is
missing from the archive and listed in ``changed``; one added in between is kept (the database
does not know it yet). The archive is written under a temporary name, made mode 0600 (it holds
the admin token, webhook signing secrets and key hashes), and renamed when complete.

:func:`restore` refuses a target folder that is not empty, reads the manifest, checks every
member's name, type and size against it before anything is written (the bytes written are the
manifest's, and the disk must have room for them), extracts with tarfile's ``data`` filter into a
staging folder (mode 0700, as a home is) beside the target, checks every file's sha256 and the
database's ``PRAGMA integrity_check``, and only then moves the staging folder into place. Every
manifest entry is checked before any work: its path relative and normalised (``models/x/v1/...``:
never ``/etc/...``, ``..`` or ``./``), its size a whole number. An archive cut short or corrupted
(a copy that stopped half-way) is a :class:`DataError` that says so, and nothing is left behind.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath

from aimass import paths
from aimass.errors import ConfigError, DataError

MANIFEST = "BACKUP.json"
DATABASE = "aimass.db"
FORMAT = 1
DERIVED = ("cache", "backbones")  # rebuilt on demand: left out unless include_cache
NOT_COPIED = {DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", "server.pid", "jobs/runner.lock"}
CHUNK = 1 << 20
DAMAGED = (EOFError, zlib.error, tarfile.TarError, OSError)  # what a torn or corrupted archive raises
DISK = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}  # the disk's, not the archive's
ALTERED = "The archive was altered; use another backup."


class _Hashing:
    """A file read for the tar: exactly ``size`` bytes (a file that shrank while read is padded
    with zeros, so the tar stays whole, and ``short`` says so), hashed as handed out."""

    def __init__(self, handle, size: int):
        self.handle, self.left, self.digest, self.short = handle, size, hashlib.sha256(), False

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.handle.read(n)
        if len(data) < n:
            data, self.short = data + b"\0" * (n - len(data)), True
        self.left -= len(data)
        self.digest.update(data)
        return data


IN_PROGRESS = (".pulling-", ".building-")  # folders a pull or a version save is filling (or died filling)


def _files(home: Path, include_cache: bool) -> list[tuple[str, Path]]:
    skip_top = set() if include_cache else set(DERIVED)
    found = []
    for folder, dirs, names in os.walk(home):
        rel = Path(folder).relative_to(home)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in skip_top]
        dirs[:] = sorted(d for d in dirs if not d.startswith(IN_PROGRESS))  # a pull or save under way
        for name in sorted(names):
            path = Path(folder) / name
            relative = (rel / name).as_posix()
            if relative in NOT_COPIED or ".partial-" in name or not path.is_file() or path.is_symlink():
                continue
            found.append((relative, path))
    return found


def backup(out: str | Path, *, include_cache: bool = False) -> dict:
    """Write a backup of ``AIMASS_HOME`` to ``out`` (``.tar``, or ``.tar.gz``/``.tgz``).

    Returns ``{"path", "files", "bytes", "seconds", "changed"}``; ``changed``: files that went
    away while they were read (left out), or shrank (kept, padded with zeros to the size they had).

    Raises:
        ConfigError: ``out`` exists, lies inside the home, its folder cannot be written (``/proc``,
            a missing or read-only folder), or the home has no database. OSError: the disk filled
            up while writing (its ``filename`` is ``out``; the partial file is removed).
    """
    began = time.perf_counter()
    home, out = paths.home().resolve(), Path(out).expanduser().resolve()
    if out.exists():
        raise ConfigError(f"{out} exists already.", hint="Name a new file; a backup never overwrites one.")
    if out.is_relative_to(home):
        raise ConfigError(f"{out} lies inside AIMASS_HOME ({home}).", hint="Write the backup elsewhere.")
    if not (home / DATABASE).exists():
        raise ConfigError(f"{home} has no {DATABASE}: nothing to back up.", hint="Is AIMASS_HOME set right?")
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    entries, changed = [], []
    fd = _create(partial, out)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode=mode, **_level(mode)) as tar:
            with tempfile.TemporaryDirectory() as work:
                snapshot = Path(work) / DATABASE
                _snapshot(home / DATABASE, snapshot)
                entries.append(_add(tar, DATABASE, snapshot))
                entries[-1].pop("short")
            for relative, path in _files(home, include_cache):
                try:
                    entries.append(_add(tar, relative, path))
                except FileNotFoundError:  # deleted since the walk
                    changed.append(relative)
                    continue
                if entries[-1].pop("short"):
                    changed.append(relative)
            manifest = {
                "format": FORMAT,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "home": str(home),
                "include_cache": include_cache,
                "files": entries,
            }
            data = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
        os.replace(partial, out)
    except OSError as exc:
        if exc.filename is None:  # a write to the archive (a full disk): name the file it was
            exc.filename = str(out)
        raise
    finally:
        partial.unlink(missing_ok=True)
    total = sum(e["bytes"] for e in entries)
    seconds = round(time.perf_counter() - began, 2)
    return {"path": str(out), "files": len(entries), "bytes": total, "seconds": seconds, "changed": changed}


def _create(partial: Path, out: Path) -> int:
    """A new file ``partial`` (mode 0600) for the archive ``out``, opened for writing; a
    ConfigError naming the folder when it cannot be made there."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"Cannot write a backup in {out.parent}: {exc.strerror or exc}.",
            hint="Name a file in a folder you can write to, on a disk with room for the home.",
            where=str(out),
        ) from None


def _level(mode: str) -> dict:
    return {"compresslevel": 1} if mode.endswith("gz") else {}  # weights barely compress: be fast


def _snapshot(source: Path, target: Path) -> None:
    """SQLite's online backup of ``source`` into ``target``: consistent while others write."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _add(tar: tarfile.TarFile, name: str, path: Path) -> dict:
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), st.st_mode & 0o700 | 0o600
        reader = _Hashing(handle, st.st_size)
        tar.addfile(info, reader)
    return {"path": name, "bytes": st.st_size, "sha256": reader.digest.hexdigest(), "short": reader.short}


# ------------------------------------------------------------------ restore
def read_manifest(archive: str | Path) -> dict:
    """The archive's ``BACKUP.json``.

    Raises:
        DataError: not a tar, a tar cut short or corrupted, or no readable manifest of a known format.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            manifest = _manifest(tar)
    except (EOFError, zlib.error) as exc:  # cut short or corrupted
        raise _damaged(archive, exc) from None
    except (tarfile.TarError, KeyError, ValueError, OSError) as exc:
        raise DataError(
            f"The file is not an aimass backup: {type(exc).__name__}: {exc}",
            hint="Give a file written by `aimass backup`.",
            where=str(archive),
        ) from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), list)
    ):
        raise DataError(f"{MANIFEST} is not a backup manifest aimass reads.", where=str(archive))
    return manifest


def _manifest(tar: tarfile.TarFile):
    """The parsed manifest of an archive tarfile could open. One that breaks off past its first
    member, or begins as a backup does (the database first) yet lacks the manifest (written last:
    tarfile stops quietly at a corrupted header), was cut short or corrupted: an EOFError."""
    try:
        member = tar.getmember(MANIFEST)
    except tarfile.ReadError as exc:
        raise EOFError(f"it breaks off: {exc}") from None
    except KeyError:
        if [m.name for m in tar.getmembers()[:1]] == [DATABASE]:
            raise EOFError(f"no {MANIFEST}, the member written last") from None
        raise
    if not member.isfile() or member.size > 64 << 20:
        raise KeyError(MANIFEST)
    return json.loads(tar.extractfile(member).read())


def _damaged(archive: Path, exc: BaseException) -> DataError:
    return DataError(
        f"The archive is damaged (cut short or corrupted): {type(exc).__name__}: {exc}",
        hint="Copy it again from where it was written, or take a new backup with `aimass backup`.",
        where=str(archive),
    )


def restore(archive: str | Path, home: str | Path | None = None) -> dict:
    """Restore ``archive`` into ``home`` (default ``AIMASS_HOME``), which must be empty or absent.

    Returns ``{"home", "files", "bytes", "seconds", "created"}``.

    Raises:
        ConfigError: the target is not empty, or lacks room. DataError: the archive is not a
            backup or is damaged, a manifest entry is not a relative path with a size, a member is
            not in its manifest (or is a link, device or unsafe path), or a file's size or sha256
            differs from it.
    """
    began = time.perf_counter()
    archive = Path(archive)
    target = (Path(home).expanduser() if home is not None else paths.home()).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            f"{target} is not an empty folder.",
            hint="Restore into a new folder and point AIMASS_HOME at it; nothing is merged or overwritten.",
        )
    manifest = read_manifest(archive)
    want = _entries(manifest, archive)
    total = sum(e["bytes"] for e in want.values())
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if total > free:
        raise ConfigError(
            f"The backup holds {total:,} bytes; {target.parent} has {free:,} free.", hint="Free space first."
        )
    staging = target.parent / f".{target.name}.restoring-{os.getpid()}"
    try:
        staging.mkdir(mode=0o700)  # the restored home is owner-only, as paths.home() makes one
        _extract(archive, staging, want)
        for name, entry in want.items():
            _check_file(staging / name, entry, archive)  # name is relative and normalised (_entries)
        _check_database(staging / DATABASE, archive)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = round(time.perf_counter() - began, 2)
    return {
        "home": str(target),
        "files": len(want),
        "bytes": total,
        "seconds": seconds,
        "created": manifest.get("created"),
    }


def _entries(manifest: dict, archive: Path) -> dict[str, dict]:
    """The manifest's files by path, each checked before any work: a relative, normalised POSIX
    path (see :func:`_relative`), listed once and never both a file and a folder, with ``bytes`` a
    whole number >= 0 and a ``sha256``; the database among them."""
    want: dict[str, dict] = {}
    for number, entry in enumerate(manifest["files"], 1):
        if not _valid(entry) or entry["path"] in want:
            raise DataError(
                f"Entry {number} of its {MANIFEST} is not a file aimass backs up: {str(entry)[:200]}",
                hint=ALTERED,
                where=str(archive),
            )
        want[entry["path"]] = entry
    folders = {folder.as_posix() for path in want for folder in PurePosixPath(path).parents}
    if clash := sorted(folders & set(want)):
        raise DataError(
            f"{clash[0]!r} is both a file and a folder in its manifest.", hint=ALTERED, where=str(archive)
        )
    if DATABASE not in want:
        raise DataError(f"The manifest lists no {DATABASE}.", hint=ALTERED, where=str(archive))
    return want


def _valid(entry) -> bool:
    return (
        isinstance(entry, dict)
        and _relative(entry.get("path"))
        and type(entry.get("bytes")) is int
        and entry["bytes"] >= 0
        and isinstance(entry.get("sha256"), str)
    )


def _relative(name) -> bool:
    """``name`` is a relative, normalised POSIX path: no leading ``/``, no ``.``, ``..`` or empty part.

    >>> [_relative(n) for n in ("models/a/v1/model.json", "/etc/passwd", "a/../b", "./", "a//b", "")]
    [True, False, False, False, False, False]
    """
    return (
        isinstance(name, str) and "\0" not in name and all(p not in ("", ".", "..") for p in name.split("/"))
    )


def _extract(archive: Path, staging: Path, want: dict) -> None:
    """Check the members against the manifest, then extract them into ``staging``. An archive cut
    short or corrupted is a DataError that says so; a full or read-only disk is the disk's error."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.name != MANIFEST]
            _check_members(members, want, archive)
            tar.extractall(staging, members=members, filter="data")
    except tarfile.FilterError as exc:  # an absolute path, '..', a link out: the data filter's refusals
        raise DataError(str(exc), hint=ALTERED, where=str(archive)) from None
    except DAMAGED as exc:
        if isinstance(exc, OSError) and exc.errno in DISK:
            raise
        raise _damaged(archive, exc) from None


def _check_members(members: list[tarfile.TarInfo], want: dict, archive: Path) -> None:
    """Each member is a plain file under a relative, normalised name its manifest lists, once, of
    the size listed; every file listed is there."""
    names = set()
    for member in members:
        entry = want.get(member.name) if _relative(member.name) else None
        if entry is None or not member.isfile() or member.size != entry["bytes"] or member.name in names:
            why = "is not in its manifest" if entry is None else "is not the file its manifest lists"
            raise DataError(f"Member {member.name!r} {why}.", hint=ALTERED, where=str(archive))
        names.add(member.name)
    if missing := sorted(set(want) - names):
        raise DataError(
            f"{len(missing)} file(s) of its manifest are missing, e.g. {missing[0]!r}.",
            hint=ALTERED,
            where=str(archive),
        )


def _check_file(path: Path, entry: dict, archive: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    if digest.hexdigest() != entry.get("sha256"):
        raise DataError(
            f"{entry['path']} does not match its sha256 in the manifest.",
            hint="The archive is damaged or was altered; use another backup.",
            where=str(archive),
        )


def _check_database(path: Path, archive: Path) -> None:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    finally:
        db.close()
    if verdict != "ok":
        raise DataError(f"Its database fails SQLite's integrity check: {verdict}.", where=str(archive))
