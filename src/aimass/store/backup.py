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
staging folder beside the target, checks every file's sha256 and the database's
``PRAGMA integrity_check``, and only then moves the staging folder into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from aimass import paths
from aimass.errors import ConfigError, DataError

MANIFEST = "BACKUP.json"
DATABASE = "aimass.db"
FORMAT = 1
DERIVED = ("cache", "backbones")  # rebuilt on demand: left out unless include_cache
NOT_COPIED = {DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", "server.pid", "runner.lock"}
CHUNK = 1 << 20


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
        ConfigError: ``out`` exists, lies inside the home, or the home has no database.
    """
    began = time.perf_counter()
    home, out = paths.home().resolve(), Path(out).expanduser().resolve()
    if out.exists():
        raise ConfigError(f"{out} exists already.", hint="Name a new file; a backup never overwrites one.")
    if out.is_relative_to(home):
        raise ConfigError(f"{out} lies inside AIMASS_HOME ({home}).", hint="Write the backup elsewhere.")
    if not (home / DATABASE).exists():
        raise ConfigError(f"{home} has no {DATABASE}: nothing to back up.", hint="Is AIMASS_HOME set right?")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    entries, changed = [], []
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
    finally:
        partial.unlink(missing_ok=True)
    total = sum(e["bytes"] for e in entries)
    seconds = round(time.perf_counter() - began, 2)
    return {"path": str(out), "files": len(entries), "bytes": total, "seconds": seconds, "changed": changed}


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
        DataError: not a tar, or no readable manifest of a known format.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            member = tar.getmember(MANIFEST)
            if not member.isfile() or member.size > 64 << 20:
                raise KeyError(MANIFEST)
            manifest = json.loads(tar.extractfile(member).read())
    except (tarfile.TarError, KeyError, ValueError, OSError) as exc:
        raise DataError(
            f"{archive} is not an aimass backup: {type(exc).__name__}: {exc}",
            hint="Give a file written by `aimass backup`.",
            where=str(archive),
        ) from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), list)
    ):
        raise DataError(f"{archive}: {MANIFEST} is not a backup manifest aimass reads.", where=str(archive))
    return manifest


def restore(archive: str | Path, home: str | Path | None = None) -> dict:
    """Restore ``archive`` into ``home`` (default ``AIMASS_HOME``), which must be empty or absent.

    Returns ``{"home", "files", "bytes", "seconds", "created"}``.

    Raises:
        ConfigError: the target is not empty, or lacks room. DataError: the archive is not a
            backup, a member is not in its manifest (or is a link, device or unsafe path), or a
            file's size or sha256 differs from it.
    """
    began = time.perf_counter()
    archive = Path(archive)
    target = Path(home).expanduser() if home is not None else paths.home()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            f"{target} is not an empty folder.",
            hint="Restore into a new folder and point AIMASS_HOME at it; nothing is merged or overwritten.",
        )
    manifest = read_manifest(archive)
    want = {e["path"]: e for e in manifest["files"] if isinstance(e, dict) and isinstance(e.get("path"), str)}
    if DATABASE not in want:
        raise DataError(f"{archive}: the manifest lists no {DATABASE}.", where=str(archive))
    total = sum(int(e.get("bytes", 0)) for e in want.values())
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if total > free:
        raise ConfigError(
            f"The backup holds {total:,} bytes; {target.parent} has {free:,} free.", hint="Free space first."
        )
    staging = target.parent / f".{target.name}.restoring-{os.getpid()}"
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.name != MANIFEST]
            _check_members(members, want, archive)
            try:
                tar.extractall(staging, members=members, filter="data")
            except tarfile.TarError as exc:  # an absolute path, '..', a link out: the data filter's refusals
                raise DataError(
                    f"{archive}: {exc}", hint="The archive was altered.", where=str(archive)
                ) from None
        for name, entry in want.items():
            _check_file(staging / name, entry, archive)
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


def _check_members(members: list[tarfile.TarInfo], want: dict, archive: Path) -> None:
    names = set()
    for member in members:
        entry = want.get(member.name)
        if (
            entry is None
            or not member.isfile()
            or member.size != int(entry.get("bytes", -1))
            or member.name in names
        ):
            why = "is not in its manifest" if entry is None else "is not the file its manifest lists"
            raise DataError(
                f"{archive}: member {member.name!r} {why}.",
                hint="The archive was altered; use another backup.",
                where=str(archive),
            )
        names.add(member.name)
    if missing := sorted(set(want) - names):
        raise DataError(
            f"{archive}: {len(missing)} file(s) of its manifest are missing, e.g. {missing[0]!r}.",
            where=str(archive),
        )


def _check_file(path: Path, entry: dict, archive: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    if digest.hexdigest() != entry.get("sha256"):
        raise DataError(
            f"{archive}: {entry['path']} does not match its sha256 in the manifest.",
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
        raise DataError(
            f"{archive}: its database fails SQLite's integrity check: {verdict}.", where=str(archive)
        )
