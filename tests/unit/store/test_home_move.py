"""A home copied or moved elsewhere reads its own files: paths are stored relative to AIMASS_HOME."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from aimass import api, paths
from aimass.data import import_dataset, load_dataset
from aimass.errors import IntegrityError
from aimass.jobs import state as jobs
from aimass.store import registry
from aimass.store.db import DatasetRecord, session

TEXTS = ["The striker scored twice in the final", "Shares fell after the profit warning"]


class TinyEstimator:
    task = "text-classification"

    def get_params(self) -> dict:
        return {"epochs": 1}

    def save(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.json").write_text("{}")


def move_home(old: Path, new: Path, monkeypatch, *, keep_old: bool = False) -> Path:
    """Copy the home (as a restore from backup would), hide the original, use the copy."""
    shutil.copytree(old, new)
    if not keep_old:
        old.rename(old.with_name(old.name + "-gone"))
    monkeypatch.setenv("AIMASS_HOME", str(new))
    return new


def stored(home: Path, query: str) -> list[tuple]:
    with sqlite3.connect(home / "aimass.db") as db:
        return db.execute(query).fetchall()


def test_a_restored_home_loads_and_predicts_with_its_own_model(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "a"))
    record = api.register(small_model, "bbc")
    before = api.predict("bbc", TEXTS)
    home = move_home(tmp_path / "a", tmp_path / "b", monkeypatch)
    assert api.predict("bbc", TEXTS) == before
    assert stored(home, "select path from model_versions") == [("models/bbc/v1",)]
    moved = registry.get_version("bbc")
    assert moved.path == str(home / "models" / "bbc" / "v1") and record.path != moved.path
    assert api.list_models()[0]["path"] == moved.path


def test_a_copy_next_to_its_original_reads_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "a"))
    registry.register(TinyEstimator(), "m")
    home = move_home(tmp_path / "a", tmp_path / "b", monkeypatch, keep_old=True)
    (tmp_path / "a" / "models" / "m" / "v1" / "model.json").write_text("changed in the original")
    folder = registry.open_folder(registry.get_version("m:1"))
    assert folder == home / "models" / "m" / "v1" and json.loads((folder / "model.json").read_text()) == {}


def test_rows_written_with_absolute_paths_still_load(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "a"))
    registry.register(TinyEstimator(), "m")
    registry.register(TinyEstimator(), "n")
    old = tmp_path / "a"
    with sqlite3.connect(old / "aimass.db") as db:  # what aimass wrote before relative paths
        db.execute("update model_versions set path = ? where name = 'm'", (str(old / "models/m/v1"),))
    assert registry.get_version("m:1").path == str(old / "models/m/v1")  # under the home: kept
    home = move_home(old, tmp_path / "b", monkeypatch)
    assert stored(home, "select name, path from model_versions order by name") == [
        ("m", str(old / "models/m/v1")),
        ("n", "models/n/v1"),
    ]
    for ref in ("m:1", "n:1"):
        record = registry.get_version(ref)
        assert Path(record.path).parent.parent == home / "models"
        assert (registry.open_folder(record) / "model.json").is_file()


def test_an_absolute_row_outside_any_home_is_kept_and_a_missing_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "a"))
    registry.register(TinyEstimator(), "m")
    elsewhere = str(tmp_path / "elsewhere" / "m" / "v1")
    with sqlite3.connect(tmp_path / "a" / "aimass.db") as db:
        db.execute("update model_versions set path = ?", (elsewhere,))
    record = registry.get_version("m:1")
    assert record.path == elsewhere
    with pytest.raises(IntegrityError, match="missing") as caught:
        registry.open_folder(record)
    assert "AIMASS_HOME" in caught.value.hint


def test_datasets_and_jobs_follow_the_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "a"))
    source = paths.subdir("samples") / "r.csv"
    source.write_text("text,label\n" + "".join(f"review {i},{'ab'[i % 2]}\n" for i in range(20)))
    ds = import_dataset(source, name="reviews")
    registry.record_dataset(ds)
    job = jobs.create("import", {"path": str(source), "name": "reviews"})
    assert jobs.finish(job.id, jobs.claim(job.id, 1).attempt, "succeeded", result={"path": str(ds.path)})
    home = move_home(tmp_path / "a", tmp_path / "b", monkeypatch)
    (path, summary), (params,) = (
        stored(home, "select path, summary from datasets")[0],
        stored(home, "select params from jobs")[0],
    )
    assert path == f"datasets/{ds.id}" and json.loads(params)["path"] == "$AIMASS_HOME/samples/r.csv"
    assert json.loads(summary)["rejects_file"] == f"$AIMASS_HOME/datasets/{ds.id}/rejects.jsonl"
    with session() as s:
        record = s.get(DatasetRecord, ds.id)
    assert record.path == str(home / "datasets" / ds.id)
    assert record.summary["rejects_file"] == str(home / "datasets" / ds.id / "rejects.jsonl")
    done = jobs.get(job.id)
    assert done.params == {"path": str(home / "samples" / "r.csv"), "name": "reviews"}
    assert done.result == {"path": str(home / "datasets" / ds.id)}
    assert load_dataset("reviews").texts()[0] == "review 0"
