"""Reading formats and encodings, column detection and language detection."""

from __future__ import annotations

import json

import pytest

from aimass.data import detect_language, read_table
from aimass.errors import DataError

ROWS = [("I loved this film", "pos"), ("Terrible acting", "neg"), ("Great plot", "pos")]


def write_csv(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_basic(tmp_path):
    body = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in ROWS)
    path = write_csv(tmp_path / "r.csv", body)
    good, rejects, info = read_table(path)
    assert [(r["text"], r["label"]) for r in good] == ROWS
    assert rejects == []
    assert good[0]["split"] is None and good[0]["source"] == "r.csv:2"
    assert info["format"] == "csv" and info["encoding"] == "utf-8"
    assert (info["text_col"], info["label_col"], info["split_col"]) == ("text", "label", None)
    assert info["records"] == 3 and len(info["sha256"]) == 64


def test_tsv_keeps_quotes_literally(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text('sentence\tcategory\n"Quoted" start\ta\nplain\tb\n', encoding="utf-8")
    good, _, info = read_table(path)
    assert info["format"] == "tsv"
    assert good[0]["text"] == '"Quoted" start' and good[1]["label"] == "b"


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_jsonl(tmp_path, suffix):
    lines = [json.dumps({"text": t, "label": lab}, ensure_ascii=False) for t, lab in ROWS]
    path = tmp_path / f"r{suffix}"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    good, rejects, info = read_table(path)
    assert info["format"] == "jsonl" and len(good) == 3 and rejects == []
    assert good[2]["source"] == f"r{suffix}:3"


def test_jsonl_numeric_labels_become_strings(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "a b", "y": 1}\n{"text": "c d", "y": 0}\n', encoding="utf-8")
    good, _, info = read_table(path)
    assert info["label_col"] == "y" and [r["label"] for r in good] == ["1", "0"]


def test_txt_file_is_not_a_table(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\nworld\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert "not a table" in err.value.message and "CSV" in err.value.hint


def test_unknown_extension_and_missing_file(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"xx")
    with pytest.raises(DataError, match="unsupported"):
        read_table(path)
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    path = write_csv(tmp_path / "e.csv", "\n\n")
    with pytest.raises(DataError, match="empty"):
        read_table(path)


def test_header_only(tmp_path):
    path = write_csv(tmp_path / "h.csv", "text,label\n")
    with pytest.raises(DataError, match="no readable data rows"):
        read_table(path)


def test_class_folder(tmp_path):
    root = tmp_path / "corpus"
    for label, texts in {"sport": ["goal!", "match won"], "tech": ["new chip"]}.items():
        (root / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / label / f"{i:03d}.txt").write_bytes(text.encode("latin-1") + b"\n")
    (root / "tech" / "README.md").write_text("not data")
    good, rejects, info = read_table(root)
    assert [(r["label"], r["text"]) for r in good] == [
        ("sport", "goal!"),
        ("sport", "match won"),
        ("tech", "new chip"),
    ]
    assert good[0]["source"] == "sport/000.txt"
    assert info["format"] == "folder" and info["ignored_files"] == ["tech/README.md"]
    assert rejects == []


def test_folder_rejects_column_flags_and_needs_txt(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match=r"no documents \(.txt, .pdf"):
        read_table(tmp_path)
    (tmp_path / "a" / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="column options"):
        read_table(tmp_path, text_col="text")


@pytest.mark.parametrize(
    ("encoding", "expected", "prefix"),
    [
        ("utf-8", "utf-8", b""),
        ("utf-8", "utf-8-sig", b"\xef\xbb\xbf"),
        ("gb18030", "gb18030", b""),
        ("utf-16", "utf-16", b""),  # with its byte order mark: Excel's "Unicode text"
        ("utf-16-le", "utf-16", b""),  # without one: told by the NULs of its ASCII characters
        ("utf-16-be", "utf-16", b""),
    ],
)
def test_encodings(tmp_path, encoding, expected, prefix):
    text = "text,label\n这部电影非常好看,正面\n剧情太无聊了,负面\n"
    path = tmp_path / "zh.csv"
    path.write_bytes(prefix + text.encode(encoding))
    good, _, info = read_table(path)
    assert info["encoding"] == expected
    assert info["columns"] == ["text", "label"]
    assert good[0]["text"] == "这部电影非常好看" and good[1]["label"] == "负面"


def test_latin1_last_resort(tmp_path):
    path = tmp_path / "fr.csv"
    path.write_bytes("text,label\ncafé crème à 5€,x\nçà,y\n".replace("€", "").encode("latin-1"))
    good, _, info = read_table(path)
    assert info["encoding"] == "latin-1"
    assert good[0]["text"] == "café crème à 5"


def test_multiline_csv_uses_starting_line(tmp_path):
    body = 'text,label\n"first\nspans\nthree",a\n"bad one",a,extra\nlast,b\n'
    good, rejects, info = read_table(write_csv(tmp_path / "m.csv", body))
    assert [r["source"] for r in good] == ["m.csv:2", "m.csv:6"]
    assert good[0]["text"] == "first\nspans\nthree"
    assert rejects[0]["line"] == 5 and rejects[0]["raw"] == '"bad one",a,extra'
    assert "expected 2 fields, found 3" in rejects[0]["reason"]
    assert info["records"] == 3


def test_crlf_and_blank_lines(tmp_path):
    body = "text,label\r\n\r\nhello world,a\r\nbye now,b\r\n"
    good, _, _ = read_table(write_csv(tmp_path / "w.csv", body))
    assert [r["source"] for r in good] == ["w.csv:3", "w.csv:4"]


def test_column_detection_by_name_and_length(tmp_path):
    body = (
        "id,title,review_text,sentiment,split\n"
        "1,Short,A much longer review body here,positive,train\n"
        "2,Tiny,Another long review text for it,negative,test\n"
    )
    _, _, info = read_table(write_csv(tmp_path / "c.csv", body))
    assert info["text_col"] == "review_text"
    assert info["label_col"] == "sentiment"
    assert info["split_col"] == "split"


def test_column_detection_without_known_names(tmp_path):
    rows = "".join(f"{i},some fairly long words number {i},{'ab'[i % 2]}\n" for i in range(10))
    _, _, info = read_table(write_csv(tmp_path / "u.csv", "num,words,kind\n" + rows))
    assert (info["text_col"], info["label_col"]) == ("words", "kind")


def test_flags_override_and_missing_column(tmp_path):
    body = "text,label,other\nhello there,a,x\nbye bye,b,y\n"
    path = write_csv(tmp_path / "f.csv", body)
    _, _, info = read_table(path, label_col="other")
    assert info["label_col"] == "other"
    with pytest.raises(DataError) as err:
        read_table(path, text_col="body")
    assert "'body'" in err.value.message and "['text', 'label', 'other']" in err.value.message


def test_headerless_csv_is_reported(tmp_path):
    body = "I loved it,pos\nTerrible film,neg\nGreat fun,pos\n"
    with pytest.raises(DataError) as err:
        read_table(write_csv(tmp_path / "nh.csv", body))
    assert "looks like data" in err.value.message and "header" in err.value.hint


def test_single_column_suggests_separator(tmp_path):
    """A .tsv cut at ';' (a .csv whose header has no comma is read at its one other separator)."""
    with pytest.raises(DataError) as err:
        read_table(write_csv(tmp_path / "s.tsv", "text;label\nhi;a\n"))
    assert "';'" in err.value.hint


def test_detect_language():
    assert detect_language(["这部电影非常好看", "剧情太无聊了 ok"]) == "zh"
    assert detect_language(["This film is great", "含 one char"]) == "en"
    assert detect_language([]) == "en"


def test_jsonl_lines_that_are_not_plain_json_are_rejected_by_line(tmp_path, monkeypatch):
    """NaN and Infinity are not JSON (Python reads them as numbers: the class 'nan'); a line nested
    100,000 deep is rejected, not a RecursionError; a string over the field limit anywhere in a line
    (a label in a list) is refused before any work."""
    monkeypatch.setenv("AIMASS_MAX_FIELD_CHARS", "1000")
    good = [json.dumps({"text": f"row {i}", "label": "ab"[i % 2]}) for i in range(4)]
    bad = [
        '{"text": "a", "label": NaN}',
        '{"text": Infinity, "label": "a"}',
        '{"text": "x", "label": ' + "[" * 100_000 + "]" * 100_000 + "}",
        json.dumps({"text": "x", "labels": ["a", "b" * 2000]}),
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(good + bad) + "\n")
    table = read_table(path)
    rows, rejects = table[0], {r["line"]: r["reason"] for r in table[1]}
    assert len(rows) == 4 and sorted(rejects) == [5, 6, 7, 8]
    assert "NaN is not a JSON value" in rejects[5] and "Infinity is not a JSON value" in rejects[6]
    assert rejects[7] == "malformed line: nested too deeply"
    assert "'labels'[1] holds 2,000 characters; the limit is 1,000" in rejects[8]


def test_a_table_of_more_rows_than_the_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    """Bytes do not bound memory: a row costs ~1 KB while parsed, so 512 MiB of short rows took
    ~60 GB. Rows are counted on the raw bytes first (AIMASS_MAX_TABLE_ROWS, 2 million)."""
    from aimass.errors import TooLargeError

    monkeypatch.setenv("AIMASS_MAX_TABLE_ROWS", "10")
    path = tmp_path / "rows.csv"
    path.write_text("text,label\n" + "".join(f"row {i},a\n" for i in range(10)))
    assert len(read_table(path)[0]) == 10  # ten rows and a header: within the limit
    path.write_text("text,label\n" + "".join(f"row {i},a\n" for i in range(11)))
    with pytest.raises(TooLargeError, match="the limit is 10 rows") as refused:
        read_table(path)
    assert "AIMASS_MAX_TABLE_ROWS" in refused.value.hint


def test_a_lone_surrogate_in_jsonl_is_a_reject_naming_line_and_field(tmp_path):
    """JSON allows an unpaired ``\\ud800`` escape, which is half a character: it cannot be written as
    UTF-8, and storing the row crashed the import with a UnicodeEncodeError."""
    good = [json.dumps({"text": f"row {i}", "label": "ab"[i % 2]}) for i in range(4)]
    bad = [
        '{"text": "lone \\ud800 surrogate", "label": "a"}',
        '{"text": "ok", "labels": ["a", "\\udfff"]}',
        '{"text": "a pair \\ud83d\\ude00 is one character", "label": "b"}',
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(good + bad) + "\n")
    rows, rejects, _ = read_table(path)
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert sorted(reasons) == [5, 6] and {r["kind"] for r in rejects} == {"invalid text"}
    assert reasons[5].startswith("field 'text' holds a lone surrogate (\\ud800)")
    assert "field 'labels'[1] holds a lone surrogate (\\udfff)" in reasons[6] and "remove" in reasons[6]
    assert rows[-1]["text"] == "a pair \U0001f600 is one character"  # a whole pair is a character


def test_a_lone_surrogate_is_rejected_in_every_kind_of_jsonl_import(home, tmp_path):
    """Classification, entities and chat rows all go through the JSON row reader: each imports with
    the bad row rejected by its line (chat data crashed with a TypeError counting tokens)."""
    from aimass.data import import_dataset

    texts = [f"Alice Smith met Bob number {i} today" for i in range(12)]
    kinds = {
        "labels": [{"text": t, "label": "ab"[i % 2]} for i, t in enumerate(texts)],
        "entities": [{"text": t, "entities": [[0, 11, "PER"]]} for t in texts],
        "chat": [
            {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]}
            for t in texts
        ],
    }
    for kind, objects in kinds.items():
        lines = [json.dumps(o) for o in objects]
        lines.append(lines[0].replace("Alice", "Alice \\ud800", 1))  # the escape as the file holds it
        path = tmp_path / f"{kind}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        ds = import_dataset(path)
        (reject,) = [json.loads(line) for line in ds.rejects_path.read_text().splitlines()]
        assert (reject["line"], reject["kind"]) == (13, "invalid text"), kind
        assert "lone surrogate" in reject["reason"] and ds.summary()["rows"] == 12, kind


def test_a_json_key_given_twice_rejects_the_row_naming_the_key(tmp_path):
    """``json`` keeps the last of two equal keys: ``"label":"pos","label":"neg"`` was stored as neg,
    the pos dropped without a word."""
    good = [json.dumps({"text": f"row {i}", "label": "ab"[i % 2]}) for i in range(4)]
    bad = [
        '{"text": "a", "label": "pos", "label": "neg"}',
        '{"text": "b", "meta": {"k": 1, "k": 2}, "label": "a"}',
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(good + bad) + "\n")
    rows, rejects, _ = read_table(path)
    assert len(rows) == 4 and [r["line"] for r in rejects] == [5, 6]
    assert {r["kind"] for r in rejects} == {"duplicate key"}
    assert rejects[0]["reason"].startswith("field 'label' is given twice in one object")
    assert "keep one 'label'" in rejects[0]["reason"] and "field 'k' is given twice" in rejects[1]["reason"]


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n"])
def test_the_row_limit_counts_lines_however_they_end(tmp_path, monkeypatch, newline):
    """A file with old Mac line ends (a lone CR) holds no LF: counting LFs found one line, and any
    number of rows passed AIMASS_MAX_TABLE_ROWS."""
    from aimass.errors import TooLargeError

    monkeypatch.setenv("AIMASS_MAX_TABLE_ROWS", "10")
    path = tmp_path / "rows.csv"
    path.write_bytes(newline.join(["text,label"] + [f"row {i},a" for i in range(10)]).encode())
    assert len(read_table(path)[0]) == 10  # ten rows and a header, the last line without an end
    path.write_bytes(newline.join(["text,label"] + [f"row {i},a" for i in range(11)]).encode() + b"\r")
    with pytest.raises(TooLargeError, match="the data has 12 lines; the limit is 10 rows"):
        read_table(path)


def test_a_header_repeated_mid_file_is_a_reject_with_its_line(tmp_path):
    """Two CSV files joined: the second header was read as a row, and the import then failed with
    "'label' has 1 example", naming no line."""
    body = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in ROWS)
    second = " text , label \n" + "".join(f"{t} again,{lab}\n" for t, lab in ROWS)
    path = write_csv(tmp_path / "joined.csv", body + second)
    rows, rejects, _ = read_table(path)
    assert len(rows) == 6 and {r["label"] for r in rows} == {"pos", "neg"}
    (reject,) = rejects
    assert (reject["line"], reject["kind"], reject["raw"]) == (5, "repeated header", " text , label ")
    assert reject["reason"].startswith("the header repeated at line 5")
