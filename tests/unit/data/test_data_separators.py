"""Separators and quoting: a semicolon CSV (Excel's in most of Europe), a quoted TSV (what Python's csv
module and pandas write), an empty header cell."""

from __future__ import annotations

import csv

import pytest

from aimass.data import import_dataset, read_table
from aimass.errors import DataError

ROWS = [
    (f"review {i} of the product, {'good' if i % 2 else 'bad'} one", "pos" if i % 2 else "neg")
    for i in range(12)
]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))


def write_rows(path, rows, **options):
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, **options).writerows(rows)
    return path


def test_a_semicolon_csv_is_read_at_its_semicolons(tmp_path):
    rows = [("Review", "Rating"), *ROWS, ("two lines;\nwith a semicolon", "neg")]
    path = write_rows(tmp_path / "excel.csv", rows, delimiter=";", lineterminator="\r\n")
    good, rejects, info = read_table(path)
    assert rejects == [] and info["delimiter"] == ";"
    assert [(r["text"], r["label"]) for r in good] == rows[1:]  # commas in the text stay in the text
    assert (info["text_col"], info["label_col"]) == ("Review", "Rating")


def test_a_comma_csv_is_read_as_before(tmp_path):
    path = write_rows(tmp_path / "plain.csv", [("text", "label"), ("a;b|c", "x"), ("d;e", "y")])
    good, rejects, info = read_table(path)
    assert [(r["text"], r["label"]) for r in good] == [("a;b|c", "x"), ("d;e", "y")]
    assert rejects == [] and "delimiter" not in info


def test_the_same_rows_with_commas_or_semicolons_are_one_dataset(tmp_path):
    rows = [("text", "label"), *ROWS]
    commas = import_dataset(write_rows(tmp_path / "c.csv", rows), name="reviews")
    semis = import_dataset(write_rows(tmp_path / "s.csv", rows, delimiter=";"), name="reviews")
    assert semis.id == commas.id  # the digest is the content's, whatever separated it


def test_a_semicolon_tsv_still_asks_about_the_separator(tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text("text;label\nhi;a\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert "';'" in err.value.hint


def test_a_quoted_tsv_keeps_its_multi_line_cells(tmp_path):
    rows = [("Review", "Rating"), *ROWS]
    rows[3] = ('two lines\nand a "quote"', "neg")
    rows[6] = ("a\ttab inside", "pos")
    path = write_rows(tmp_path / "pandas.tsv", rows, delimiter="\t")
    good, rejects, _ = read_table(path)
    assert rejects == [] and [(r["text"], r["label"]) for r in good] == rows[1:]


def test_a_tsv_with_a_stray_open_quote_is_read_without_quoting(tmp_path):
    body = "text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in ROWS) + '"unclosed start\tneg\n'
    body += "".join(f'{t} "said"\t{lab}\n' for t, lab in ROWS)
    path = tmp_path / "hand.tsv"
    path.write_text(body, encoding="utf-8")
    good, rejects, _ = read_table(path)
    assert rejects == [] and good[12]["text"] == '"unclosed start' and good[13]["text"].endswith('"said"')


def test_an_empty_header_cell_used_as_the_label_column_is_said(tmp_path):
    path = tmp_path / "nolabelname.tsv"
    path.write_text("text\t\n" + "".join(f"{t}\t{lab}\n" for t, lab in ROWS), encoding="utf-8")
    ds = import_dataset(path)
    assert ds.manifest["columns"]["label"] == "column2"
    [said] = [w for w in ds.manifest["warnings"] if "empty header cell" in w]
    assert "column 2" in said and "'column2'" in said and "--label-col" in said
