"""A dataset from one table per split (train.csv, dev.csv, test.csv), as Hugging Face's
``data_files`` takes them: each row keeps its file's split, rows are checked across the files, and a
split without a file is drawn from the training rows."""

from __future__ import annotations

import json

import pytest
from tests.conftest import bbc_sample
from typer.testing import CliRunner

from aimass import api
from aimass.cli import app
from aimass.errors import ConfigError


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    return tmp_path


def clean(text: str) -> str:
    return " ".join(text.replace('"', "").split())  # one physical line a row


def table(path, rows) -> str:
    path.write_text("text,label\n" + "".join(f'"{clean(t)}",{label}\n' for t, label in rows))
    return str(path)


@pytest.fixture()
def files(home):
    texts, labels = bbc_sample(per_class=12, chars=200)
    by_topic = list(zip(texts, labels))  # 12 of each of the 5 topics, topic by topic
    rows = [by_topic[topic * 12 + i] for i in range(12) for topic in range(5)]  # round robin
    return {
        "train": table(home / "train.csv", rows[:40]),
        "valid": table(home / "dev.csv", rows[40:50]),
        "test": table(home / "test.csv", rows[50:] + [rows[3]]),  # the last repeats a training row
        "rows": rows,
    }


def test_each_row_keeps_its_files_split_and_a_repeated_training_row_is_rejected(files):
    ds = api.import_dataset(files["train"], valid_path=files["valid"], test_path=files["test"], name="split")
    assert ds.manifest["counts"]["by_split"] == {"train": 40, "valid": 10, "test": 10}
    assert ds.manifest["split_source"] == "files" and set(ds.manifest["split_files"]) == {"valid", "test"}
    assert [r["text"] for r in ds.rows("test")] == [clean(t) for t, _ in files["rows"][50:]]
    (reject,) = [json.loads(line) for line in ds.rejects_path.read_text().splitlines()]
    assert reject["file"].endswith("test.csv") and reject["line"] == 12 and reject["kind"] == "duplicate"
    assert reject["reason"] == "duplicate of train.csv:5"  # the header is line 1
    again = api.import_dataset(files["train"], valid_path=files["valid"], test_path=files["test"])
    assert again.id == ds.id  # the same files: the same dataset


def test_a_split_without_a_file_is_drawn_from_the_training_rows(files):
    ds = api.import_dataset(files["train"], test_path=files["test"], name="drawn")
    by_split = ds.manifest["counts"]["by_split"]
    assert by_split["test"] == 10 and by_split["valid"] > 0 and by_split["train"] + by_split["valid"] == 40
    assert ds.manifest["valid_frac"] == 0.1 and ds.manifest["test_frac"] == 0.0


def test_the_cli_takes_split_files_and_refuses_them_beside_a_split_column(files, home):
    run = CliRunner().invoke(
        app,
        [
            "data",
            "import",
            files["train"],
            "--valid-file",
            files["valid"],
            "--test-file",
            files["test"],
            "--json",
        ],
    )
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["rows"] == 60
    with_column = home / "with_split.csv"
    with_column.write_text("text,label,split\n" + "".join(f"row {i},a{i % 2},train\n" for i in range(20)))
    with pytest.raises(ConfigError, match="split column"):
        api.import_dataset(with_column, test_path=files["test"])
