"""Backup and restore of a whole AIMASS_HOME: taken while the database is being written, restored
into a new folder where the same datasets, model, key and job are there and the model answers the
same; an altered archive, a non-empty target and an unsafe member are refused."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import threading

import pytest
from tests.conftest import bbc_sample, shared_backbones

from aimass import api, jobs, paths
from aimass.errors import ConfigError, DataError
from aimass.serve import auth, metering
from aimass.store import backup


@pytest.fixture
def home(tmp_path, monkeypatch, small_model):
    """A home of its own with a dataset, a registered model, a key, a job and usage rows."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    shared_backbones(paths.home())
    texts, labels = bbc_sample(per_class=4)
    table = tmp_path / "news.csv"
    table.write_text(
        "text,label\n" + "".join(f'"{t[:200]}",{y}\n' for t, y in zip(texts, labels, strict=True))
    )
    dataset = api.import_dataset(table, name="news-backup")
    version = api.register(small_model, "news-backup")
    record, key = auth.create_key("backed-up", ["predict"], quota=1000)
    auth.admin_token()  # a server made one
    job = jobs.submit("import", {"path": str(table), "name": "news-again"})
    return {"dataset": dataset.id, "model": version.ref, "key": key, "key_id": record.id, "job": job["id"]}


def test_a_backup_taken_while_the_database_is_written_restores_whole(home, tmp_path, monkeypatch):
    meter, stop, wrote = metering.Meter(), threading.Event(), threading.Event()

    def write_usage():  # the server's metering keeps writing while the backup runs
        while not stop.is_set():
            meter.add(home["key_id"], "news-backup", 1, 1.0)
            meter.flush()
            wrote.set()

    writer = threading.Thread(target=write_usage)
    writer.start()
    try:
        assert wrote.wait(30)
        done = backup.backup(tmp_path / "home.tar.gz")
    finally:
        stop.set()
        writer.join()
    archive = tmp_path / "home.tar.gz"
    written = metering.usage(home["key_id"])[0]["requests"]
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600 and done["changed"] == []
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "aimass.db" and names[-1] == "BACKUP.json"
    assert not any(n.startswith(("backbones/", "cache/")) or n.endswith(("-wal", "-shm")) for n in names)
    texts = bbc_sample(per_class=2)[0]
    before = api.load(home["model"]).predict_proba(texts)

    restored = tmp_path / "restored"
    answer = backup.restore(archive, restored)
    assert answer["files"] == done["files"] and answer["bytes"] == done["bytes"]
    monkeypatch.setenv("AIMASS_HOME", str(restored))
    shared_backbones(restored)  # left out of the backup: rebuilt on demand (here: the session's)
    assert home["dataset"] in [d.id for d in api.list_datasets()]
    assert jobs.show(home["job"])["status"] == "queued"
    after = api.load(home["model"]).predict_proba(texts)
    assert (after == before).all()
    caller = auth.Guard().identify(f"Bearer {home['key']}")
    assert caller is not None and caller.key_id == home["key_id"]
    assert [k["quota"] for k in auth.list_keys() if k["id"] == home["key_id"]] == [1000]
    assert (restored / "admin.token").read_text() == (tmp_path / "home" / "admin.token").read_text()
    assert stat.S_IMODE((restored / "admin.token").stat().st_mode) == 0o600
    assert 0 < metering.usage(home["key_id"])[0]["requests"] <= written  # those before the snapshot

    with pytest.raises(ConfigError, match="not an empty folder"):
        backup.restore(archive, restored)
    with pytest.raises(ConfigError, match="exists already"):
        backup.backup(archive)
    with pytest.raises(ConfigError, match="inside AIMASS_HOME"):
        backup.backup(restored / "inside.tar")


def rewrite(source, target, change) -> None:
    """A copy of tar ``source`` whose members pass through ``change(info, data) -> [(info, data)]``."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for info in old.getmembers():
            data = old.extractfile(info).read()
            for out_info, out_data in change(info, data):
                out_info.size = len(out_data)
                new.addfile(out_info, io.BytesIO(out_data))


def test_an_altered_archive_is_refused_before_anything_is_in_place(home, tmp_path):
    archive = tmp_path / "home.tar"
    backup.backup(archive)
    target = tmp_path / "target"

    def flip(info, data):  # one byte of the dataset's rows, same size
        if info.name.endswith("data.jsonl"):
            data = data.replace(b"e", b"E", 1)
        return [(info, data)]

    def smuggle(info, data):  # a member outside the home
        extra = tarfile.TarInfo("../evil.txt")
        return [(info, data)] + ([(extra, b"x")] if info.name == "aimass.db" else [])

    for change, why in (
        (flip, "does not match its sha256"),
        (smuggle, "'../evil.txt' is not in its manifest"),
    ):
        bad = tmp_path / f"{change.__name__}.tar"
        rewrite(archive, bad, change)
        with pytest.raises(DataError, match=why):
            backup.restore(bad, target)
        assert not target.exists() and not (tmp_path / "evil.txt").exists()
        assert not [p for p in os.listdir(tmp_path) if ".restoring-" in p]  # the staging folder is gone
    (tmp_path / "plain.tar").write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match="not an aimass backup"):
        backup.restore(tmp_path / "plain.tar", target)


def test_the_cli_backs_up_and_restores(home, tmp_path):
    from typer.testing import CliRunner

    from aimass.cli import app

    made = CliRunner().invoke(app, ["backup", str(tmp_path / "cli.tar"), "--json"])
    assert made.exit_code == 0, made.output
    done = json.loads(made.output)
    assert done["files"] > 5 and done["path"].endswith("cli.tar")
    back = CliRunner().invoke(
        app, ["restore", str(tmp_path / "cli.tar"), "--home", str(tmp_path / "new"), "--json"]
    )
    assert back.exit_code == 0, back.output
    assert json.loads(back.output)["files"] == done["files"]
    again = CliRunner().invoke(
        app, ["restore", str(tmp_path / "cli.tar"), "--home", str(tmp_path / "new"), "--json"]
    )
    assert again.exit_code == 2 and "not an empty folder" in json.loads(again.output)["error"]["message"]


def test_a_pull_or_save_under_way_is_not_backed_up(home, tmp_path):
    """A killed pull left ``models/.pulling-*`` (up to 20 GiB) that every backup then archived."""
    for leftover in (".pulling-999999-ab12", ".building-cd34"):
        folder = paths.home() / "models" / leftover
        folder.mkdir(parents=True)
        (folder / "zz-big.bin").write_bytes(b"x" * 1024)
    archive = tmp_path / "home.tar"
    backup.backup(archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert not [n for n in names if ".pulling-" in n or ".building-" in n]
    assert any(n.startswith("models/news-backup/") for n in names)
