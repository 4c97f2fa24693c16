"""Operations gaps an audit found: the home and its database readable by every local user, damaged
or hostile backups answered with an internal error (or restored, hashing a file of the host), a
port out of range bound modulo 65536, and a full or read-only disk reported as a bug."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import sqlite3
import stat
import tarfile

import pytest
from sqlalchemy import text
from tests.conftest import write_csv
from typer.testing import CliRunner

from aimass import api, paths
from aimass.cli import app
from aimass.cli.shell import command
from aimass.errors import DataError
from aimass.store import backup, db


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A tiny real home, new (not yet on disk): one imported dataset, a serving.json, a runner lock."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    rows = [(f"The striker scored {i} goals", "sport") for i in range(6)]
    rows += [(f"Shares fell {i} percent after the warning", "business") for i in range(6)]
    api.import_dataset(write_csv(tmp_path / "news.csv", rows), name="tiny")
    (paths.home() / "serving.json").write_text("{}")
    (paths.subdir("jobs") / "runner.lock").write_text("")
    return paths.home()


@pytest.fixture
def archive(home, tmp_path):
    out = tmp_path / "home.tar"
    backup.backup(out)
    return out


# ------------------------------------------------------------------ 1. owner-only home and database
def test_a_new_home_and_its_database_are_owner_only(home):
    with db.session() as s:  # the pool keeps this connection: -wal and -shm stay
        s.execute(text("CREATE TABLE IF NOT EXISTS probe (x)"))
        s.execute(text("INSERT INTO probe VALUES (1)"))
        s.commit()
        assert mode(home) == 0o700
        for name in ("aimass.db", "aimass.db-wal", "aimass.db-shm"):
            assert mode(home / name) == 0o600, name


def test_a_home_an_older_aimass_made_readable_is_tightened(tmp_path, monkeypatch):
    old = tmp_path / "old-home"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    umask = os.umask(0o022)
    try:
        holder = sqlite3.connect(old / "aimass.db")  # as SQLite made it: 0644, with -wal and -shm
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE t (x)")
        holder.commit()
    finally:
        os.umask(umask)
    try:
        assert mode(old) == 0o755 and mode(old / "aimass.db-wal") == 0o644
        monkeypatch.setenv("AIMASS_HOME", str(old))
        assert paths.home() == old
        db.session().close()
        assert mode(old) == 0o700
        for name in ("aimass.db", "aimass.db-wal", "aimass.db-shm"):
            assert mode(old / name) == 0o600, name
    finally:
        holder.close()


def test_a_restored_home_is_owner_only(archive, tmp_path):
    backup.restore(archive, tmp_path / "restored")
    assert mode(tmp_path / "restored") == 0o700
    assert mode(tmp_path / "restored" / "aimass.db") == 0o600


# ------------------------------------------------------------------ 2, 3. damaged and hostile archives
def forge(source, target, members=(), entries=()) -> None:
    """A copy of backup ``source`` with ``members`` ((name, bytes)) added to the tar and
    ``entries`` (dicts) to its manifest."""
    with tarfile.open(source) as old:
        files = {m.name: old.extractfile(m).read() for m in old.getmembers()}
    manifest = json.loads(files.pop(backup.MANIFEST))
    manifest["files"] += list(entries)
    files[backup.MANIFEST] = json.dumps(manifest).encode()
    with tarfile.open(target, "w") as new:
        for name, data in [*files.items()][:-1] + list(members) + [[*files.items()][-1]]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))


def listed(name: str, data: bytes) -> dict:
    return {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_member_named_by_an_absolute_path_is_refused_and_no_host_file_is_read(archive, tmp_path):
    """The manifest listed /etc/debian_version with that file's real sha256: restore hashed the
    host's file, said every check passed and left the member in the restored home."""
    host = tmp_path / "host.txt"
    host.write_bytes(b"a file of this machine\n")
    bad = tmp_path / "absolute.tar"
    forge(archive, bad, [(str(host), host.read_bytes())], [listed(str(host), host.read_bytes())])
    with pytest.raises(DataError, match="not a file aimass backs up"):
        backup.restore(bad, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def cut(archive, target) -> None:
    data = archive.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def gzipped_and_cut(archive, target) -> None:
    with tarfile.open(archive) as old, tarfile.open(target.with_suffix(".whole.gz"), "w:gz") as new:
        for member in old.getmembers():
            new.addfile(member, old.extractfile(member))
    cut(target.with_suffix(".whole.gz"), target)


@pytest.mark.parametrize(
    "case, why",
    [
        ("file_and_folder", "both a file and a folder"),  # was NotADirectoryError
        ("dot", "not a file aimass backs up"),  # './': was IsADirectoryError
        ("bytes_text", "not a file aimass backs up"),  # was ValueError
        ("bytes_null", "not a file aimass backs up"),  # was TypeError
        ("cut_gzip", "archive is damaged"),  # was EOFError
        ("cut_tar", "archive is damaged"),  # was 'not an aimass backup'
    ],
)
def test_a_damaged_or_hostile_archive_is_a_data_error_and_leaves_nothing(archive, tmp_path, case, why):
    bad = tmp_path / f"{case}.tar"
    if case == "file_and_folder":
        forge(archive, bad, [("aimass.db/x", b"x")], [listed("aimass.db/x", b"x")])
    elif case == "dot":
        forge(archive, bad, [("./", b"x")], [listed("./", b"x")])
    elif case in ("bytes_text", "bytes_null"):
        forge(archive, bad, entries=[{"path": "zz", "bytes": "abc" if case == "bytes_text" else None}])
    elif case == "cut_gzip":
        bad = tmp_path / "cut.tar.gz"
        gzipped_and_cut(archive, bad)
    else:
        cut(archive, bad)
    with pytest.raises(DataError, match=why):
        backup.restore(bad, tmp_path / "target")
    assert not (tmp_path / "target").exists()
    assert not [p for p in os.listdir(tmp_path) if ".restoring-" in p]


def test_the_cli_says_a_cut_archive_is_damaged_and_how_to_fix_it(archive, tmp_path):
    bad = tmp_path / "cut.tar.gz"
    gzipped_and_cut(archive, bad)
    done = CliRunner().invoke(app, ["restore", str(bad), "--home", str(tmp_path / "t"), "--json"])
    error = json.loads(done.output)["error"]
    assert done.exit_code == 2 and error["code"] == "data_error"
    assert "archive is damaged" in error["message"] and "new backup" in error["hint"]


# ------------------------------------------------------------------ 4. the port's range
def test_serve_refuses_a_port_out_of_range():
    """--port 99999 bound 99999 mod 65536 (34463). An unknown engine stops it before any server
    starts should the range check be missing."""
    for port in ("99999", "-1"):
        done = CliRunner().invoke(app, ["serve", "--port", port, "--engine", "none"])
        assert done.exit_code == 2 and "--port" in done.output and "Unknown engine" not in done.output


# ------------------------------------------------------------------ 5. the disk's errors
def test_a_full_disk_is_an_error_that_names_the_file_not_a_bug(home, tmp_path, monkeypatch):
    """The archive is written to /dev/full: the kernel's ENOSPC, as on a full disk."""
    monkeypatch.setattr(backup, "_create", lambda partial, out: os.open("/dev/full", os.O_WRONLY))
    out = tmp_path / "full.tar"
    done = CliRunner().invoke(app, ["backup", str(out), "--json"])
    error = json.loads(done.output)["error"]
    assert done.exit_code == 1 and error["code"] == "insufficient_storage"
    assert error["where"] == str(out) and "Free some space" in error["hint"] and not out.exists()


def test_the_cli_maps_the_disk_errors_to_clear_ones():
    import typer

    cli = typer.Typer()

    @cli.command()
    @command
    def write(path: str, as_json: bool = typer.Option(False, "--json")):
        if path == "/dev/full":
            with open(path, "wb") as f:  # a real ENOSPC
                f.write(b"x" * 65536)
        raise OSError(errno.EROFS if path == "/ro" else errno.EACCES, os.strerror(errno.EROFS), path)

    for path, code, hint in (
        ("/dev/full", "insufficient_storage", "Free some space"),
        ("/ro", "permission_denied", "/ro is read-only"),
        ("/secret", "permission_denied", "no permission to write (or read) /secret"),
    ):
        done = CliRunner().invoke(cli, [path, "--json"])
        error = json.loads(done.output)["error"]
        assert done.exit_code != 0 and error["code"] == code and hint in error["hint"], error


def test_a_backup_into_a_folder_that_cannot_hold_files_names_it(home):
    done = CliRunner().invoke(app, ["backup", "/proc/x.tar", "--json"])
    error = json.loads(done.output)["error"]
    assert done.exit_code == 2 and error["code"] == "config_error" and "/proc" in error["message"]


# ------------------------------------------------------------------ 6. small ones
def test_the_runner_lock_is_not_backed_up(archive):
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "jobs/runner.lock" not in names and "serving.json" in names


def test_a_restore_into_a_relative_folder_answers_its_absolute_path(archive, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["restore", str(archive), "--home", "relative", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["home"] == str(tmp_path / "relative")
