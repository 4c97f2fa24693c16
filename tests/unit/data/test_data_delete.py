"""Deleting a dataset: its folder and the upload it came from go, a file of the user's own disk
stays, a later reference says when it was deleted, and a job that has not ended keeps it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from tests.conftest import bbc_sample
from typer.testing import CliRunner

from aimass import api, jobs, paths
from aimass.cli import app
from aimass.data.storage import datasets_dir
from aimass.data.uploads import store_upload
from aimass.errors import InUseError, NotFoundError
from aimass.store import browse
from aimass.train.cache import cached


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_a_deleted_dataset_is_gone_but_the_users_own_file_stays(home, bbc_csv):
    ds = api.import_dataset(bbc_csv, name="news")
    feature = paths.subdir(paths.FEATURES) / "embeddings.safetensors"
    cached(feature, lambda: {"pooled": torch.ones(2, 4)})  # as a fit caches its rows' embeddings
    gone = json.loads(CliRunner().invoke(app, ["data", "delete", "news", "--json"]).stdout)
    assert gone["id"] == ds.id and gone["names"] == ["news"] and gone["uploads_removed"] == 0
    assert gone["cache_files_removed"] == 1 and not feature.exists()
    assert gone["models"] == [] and gone["derived"] == []
    assert not ds.path.exists() and bbc_csv.is_file()  # the source is the user's, not aimass's
    assert [p.name for p in datasets_dir().iterdir() if not p.name.startswith(".")] == []
    assert api.list_datasets() == [] and browse.datasets()[1] == 0  # the folders and the records
    for key in (ds.id, "news"):
        with pytest.raises(NotFoundError, match=f"was deleted on {gone['deleted'][:10]}"):
            api.load_dataset(key)
    again = CliRunner().invoke(app, ["data", "delete", ds.id])
    assert again.exit_code != 0 and "was deleted on" in again.output

    back = api.import_dataset(bbc_csv, name="news")  # the same content: the same id, no longer deleted
    assert back.id == ds.id and api.load_dataset(ds.id).id == ds.id


def test_deleting_an_upload_removes_the_copies_aimass_kept(home):
    texts, labels = bbc_sample(per_class=12, chars=200)
    rows = [f'"{" ".join(t.replace(chr(34), "").split())}",{label}\n' for t, label in zip(texts, labels)]
    train_rows, test_rows = (
        [r for i, r in enumerate(rows) if i % 4],
        [r for i, r in enumerate(rows) if i % 4 == 0],
    )
    stored, test_upload = (
        store_upload(io.BytesIO(("text,label\n" + "".join(part)).encode()), name)
        for part, name in ((train_rows, "news.csv"), (test_rows, "test.csv"))
    )
    ds = api.import_dataset(stored["path"], name="uploaded", test_path=test_upload["path"])
    folders = [home / "uploads" / stored["upload"], home / "uploads" / test_upload["upload"]]
    assert all(f.is_dir() for f in folders)
    assert ds.manifest["counts"]["by_split"]["test"] == 15 and ds.manifest["rejects"] == 0
    assert api.delete_dataset(ds.id)["uploads_removed"] == 2  # the training file's and the test file's
    assert not any(f.exists() for f in folders) and not ds.path.exists()


def test_a_job_that_has_not_ended_keeps_its_data_and_a_prefix_deletes_nothing(home, bbc_csv):
    ds = api.import_dataset(bbc_csv, name="news")
    job = jobs.submit("train", {"data": "news"})
    with pytest.raises(InUseError, match=job["id"]):
        api.delete_dataset(ds.id)
    with pytest.raises(NotFoundError, match="not the whole id"):
        api.delete_dataset(ds.id[:6])
    assert ds.path.is_dir()
    jobs.cancel(job["id"])
    assert api.delete_dataset("news")["id"] == ds.id


def test_a_deleted_dataset_takes_its_issues_report_with_it(home, tmp_path):
    """The issues report quotes the rows (``issues.json``, 200-character snippets in ``issues.csv``):
    a copy aimass made, so it goes with the dataset; a report written elsewhere (``--out``) stays."""
    from aimass.data.bundled import peoples_daily

    rows = [{"text": t, "entities": e} for t, e in peoples_daily(60)]
    source = tmp_path / "news.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    ds = api.import_dataset(source, name="news")
    report = api.dataset_issues(ds, folds=3, hard=0, network=False)
    elsewhere = api.dataset_issues(ds, folds=3, hard=0, network=False, out=tmp_path / "mine")
    folder = home / "reports" / "issues" / ds.id
    assert Path(report["files"]["csv"]).parent == folder and (folder / "issues.json").is_file()
    gone = json.loads(CliRunner().invoke(app, ["data", "delete", "news", "--json"]).stdout)
    assert not folder.exists() and gone["report_removed"]
    assert Path(elsewhere["files"]["json"]).is_file()  # the user's own folder
