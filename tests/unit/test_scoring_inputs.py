"""Bulk prediction of the files people have: a semicolon CSV (Excel's in most of Europe), a table
split at the wrong separator, a folder of images with a corrupt one, unreadable lines said in the
CLI's output."""

from __future__ import annotations

import csv

import pytest
from tests.conftest import shared_backbones
from typer.testing import CliRunner

from aimass import api, scoring
from aimass.cli import app
from aimass.errors import DataError


@pytest.fixture
def scorer(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    return api.register(small_model, "reviews").ref


def rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_semicolon_csv_is_scored_at_its_semicolons(scorer, small_model, tmp_path):
    path = tmp_path / "unl_semi.csv"
    body = '\ufeffid;comment\r\n1;Terrible, broke at once\r\n2;"Nice quality\nfast shipping"\r\n3;\r\n'
    path.write_bytes(body.encode("utf-8"))
    result = scoring.predict_file(scorer, path, tmp_path / "out.csv")
    scored = rows(tmp_path / "out.csv")
    assert result["rejects"] == [] and [r["id"] for r in scored] == ["1", "2", "3"]
    assert scored[1]["comment"] == "Nice quality\nfast shipping"
    assert scored[0]["label"] == small_model.predict(["Terrible, broke at once"])[0]
    assert scored[2]["label"] == "" and scored[2]["error"] == "empty input"


def test_a_table_split_at_the_wrong_separator_is_refused_as_an_import_is(scorer, tmp_path):
    path = tmp_path / "semi.tsv"  # a .tsv is split at tabs: one column named 'id;comment'
    path.write_text("id;comment\n1;Terrible, broke at once\n2;fine\n", encoding="utf-8")
    with pytest.raises(DataError, match="single column 'id;comment'") as err:
        scoring.predict_file(scorer, path, tmp_path / "out.csv")
    assert "';': is that the separator?" in err.value.hint


def test_the_cli_names_the_unreadable_lines(scorer, tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("id,text\n1,a fine film\n2,three,fields\n3,a dull film\n", encoding="utf-8")
    done = CliRunner().invoke(app, ["predict", scorer, "--file", str(path), "-o", str(tmp_path / "o.csv")])
    assert done.exit_code == 0, done.output[-2000:]
    assert "2 rows scored" in done.output
    assert "line 3: malformed line: expected 2 fields, found 3" in done.output


def test_a_corrupt_image_fails_its_row_not_the_job(tmp_path, monkeypatch):
    from aimass.tasks.image_classification import ImageClassification, ImageClassifier

    monkeypatch.setenv("AIMASS_HOME", str(shared_backbones(tmp_path / "home")))
    images, labels = ImageClassification.sample_data(per_class=6)
    model = ImageClassifier(**ImageClassification.fast_params, seed=0).fit((images, labels), progress=False)
    ref = api.register(model, "digits").ref
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, data in enumerate(images):
        (folder / f"{i:02d}.png").write_bytes(data)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    result = scoring.predict_file(ref, folder, tmp_path / "out.csv")
    scored = {r["file"]: r for r in rows(tmp_path / "out.csv")}
    assert result["rows"] == len(images) + 1 == len(scored)
    assert scored["broken.jpg"]["label"] == "" and "broken.jpg" in scored["broken.jpg"]["error"]
    good = [scored[f"{i:02d}.png"] for i in range(len(images))]
    assert [r["label"] for r in good] == list(model.predict(images)) and not any(r["error"] for r in good)
