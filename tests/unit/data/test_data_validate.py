"""Row rejects (empty, missing, malformed, conflicts, duplicates) and trainability checks."""

from __future__ import annotations

import re

import pytest

from aimass.data import import_dataset, read_table
from aimass.errors import DataError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def balanced(n_per_class=6, classes=("a", "b")):
    return "".join(f"text number {i} for {c},{c}\n" for c in classes for i in range(n_per_class))


def test_every_reject_reason(tmp_path):
    body = (
        "text,label\n"
        "good one,a\n"  # 2
        ",a\n"  # 3 empty text
        "no label here,\n"  # 4 missing label
        "too,many,fields\n"  # 5 malformed
        "same  words,a\n"  # 6 conflict (whitespace differs)
        "same words,b\n"  # 7 conflict
        "good one,a\n"  # 8 duplicate of 2
        "another,b\n"
    )  # 9
    good, rejects, info = read_table(write(tmp_path / "r.csv", body))
    assert [r["source"] for r in good] == ["r.csv:2", "r.csv:9"]
    by_line = {r["line"]: r for r in rejects}
    assert by_line[3]["reason"] == "empty text"
    assert by_line[4]["reason"] == "missing label"
    assert by_line[5]["reason"].startswith("malformed line: expected 2 fields, found 3")
    assert "'b' at line 7" in by_line[6]["reason"] and "'a' at line 6" in by_line[7]["reason"]
    assert by_line[8]["reason"] == "duplicate of line 2"
    assert set(rejects[0]) >= {"file", "line", "reason", "raw"}
    assert by_line[8]["raw"] == "good one,a" and by_line[8]["file"] == str(tmp_path / "r.csv")
    assert len(good) + len(rejects) == info["records"] == 8
    assert info["rejects_by_reason"]["conflicting labels"] == 2


def test_conflicts_reject_all_rows_and_name_all_other_labels(tmp_path):
    body = "text,label\nx y,a\nx y,b\nx y,c\nx y,a\nok,a\n"
    good, rejects, _ = read_table(write(tmp_path / "c.csv", body))
    assert [r["text"] for r in good] == ["ok"]
    assert len(rejects) == 4
    first = rejects[0]["reason"]
    assert "'b' at line 3" in first and "'c' at line 4" in first and "'a'" not in first


def test_duplicates_are_the_same_text_up_to_white_space(tmp_path):
    """As conflicts are: a copy whose line breaks or spaces differ (a PDF of a .txt article) would
    otherwise train twice, or sit in train and in test."""
    body = 'text,label\nhello world,a\n  hello world ,a\nhello  world,a\n"hello\nworld",a\nhello worlds,a\n'
    good, rejects, _ = read_table(write(tmp_path / "d.csv", body))
    assert [r["text"] for r in good] == ["hello world", "hello worlds"]
    assert [(r["line"], r["reason"]) for r in rejects] == [(n, "duplicate of line 2") for n in (3, 4, 5)]


def test_jsonl_malformed_lines(tmp_path):
    body = (
        '{"text": "fine", "label": "a"}\n'
        '{"text": "broken", \n'
        '["a", "list"]\n'
        '{"text": ["not", "text"], "label": "a"}\n'
        '{"text": "no label", "label": null}\n'
    )
    good, rejects, info = read_table(write(tmp_path / "j.jsonl", body))
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert len(good) == 1 and info["records"] == 5
    assert reasons[2].startswith("malformed line: invalid JSON")
    assert reasons[3].startswith("malformed line: not a JSON object")
    assert reasons[4].startswith("malformed line: 'text' is not a string")
    assert reasons[5] == "missing label"


def test_unknown_split_values_are_rejected(tmp_path):
    body = "text,label,split\nt1,a,train\nt2,b,Validation\nt3,a,dev\nt4,b,holdout\nt5,a,\n"
    good, rejects, _ = read_table(write(tmp_path / "s.csv", body))
    assert [r["split"] for r in good] == ["train", "valid", "valid"]
    assert rejects[0]["reason"].startswith("unknown split 'holdout' (accepted: train, valid,")
    assert rejects[1]["reason"].startswith("unknown split (empty)")


def test_split_col_flag(tmp_path):
    body = "text,label,fold\nt1,a,train\nt2,b,test\n"
    good, _, info = read_table(write(tmp_path / "s.csv", body), split_col="fold")
    assert info["split_col"] == "fold" and good[1]["split"] == "test"


def test_too_few_rows(tmp_path):
    path = write(tmp_path / "few.csv", "text,label\n" + balanced(2) + ",a\n")
    with pytest.raises(DataError) as err:
        import_dataset(path)
    assert "only 4 usable row(s)" in err.value.message
    assert "1 row(s) were rejected (empty text: 1)" in err.value.hint
    assert import_dataset(path, min_rows=4).manifest["counts"]["total"] == 4


def test_only_one_class(tmp_path):
    path = write(tmp_path / "one.csv", "text,label\n" + balanced(12, ("a",)))
    with pytest.raises(DataError, match="only one class \\('a'\\)") as err:
        import_dataset(path)
    assert err.value.hint


def test_class_with_one_example_is_named(tmp_path):
    path = write(tmp_path / "tiny.csv", "text,label\n" + balanced(6) + "lonely,c\n")
    with pytest.raises(DataError) as err:
        import_dataset(path)
    assert "'c' has 1 example" in err.value.message and err.value.hint


def test_messages_stay_short_however_many_labels_a_mistake_makes(tmp_path):
    """The label column given as the text and an id column as the label: 3,000 rows, each its own
    label. Each conflict names three other labels (not 2,999: the import stayed quadratic), and the
    error lists ten classes of one example, not every one."""
    path = tmp_path / "swapped.csv"
    path.write_text(
        "id,text,label\n" + "".join(f"{i},{('pos', 'neg')[i % 2]},row {i}\n" for i in range(3000))
    )
    rows, rejects, _ = read_table(path, text_col="text", label_col="id")
    assert rows == [] and len(rejects) == 3000
    assert all(len(r["reason"]) < 300 for r in rejects)
    assert rejects[0]["reason"].endswith("and 1496 more label(s)")  # 1,500 rows share its text
    ids = tmp_path / "ids.csv"
    ids.write_text(
        "id,text,label\n" + "".join(f"{i},unique text {i},{('pos', 'neg')[i % 2]}\n" for i in range(3000))
    )
    with pytest.raises(DataError) as info:
        import_dataset(ids, label_col="id")
    assert len(info.value.message) < 600 and "and 2990 more class(es) of one example" in info.value.message


@pytest.mark.parametrize(
    ("name", "said"), [("sheet.xlsx", "a spreadsheet (.xlsx)"), ("memo.docx", "one document")]
)
def test_a_spreadsheet_or_one_document_is_named_for_what_it_is(tmp_path, name, said):
    """A .xlsx or .docx is a zip file inside: it was read as an archive of images ("only 0 usable rows")."""
    import zipfile

    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
    with pytest.raises(DataError, match=re.escape(said)) as info:
        import_dataset(path)
    assert "CSV" in info.value.hint or "folder per class" in info.value.hint


def test_a_guessed_label_column_is_said_with_the_others_it_could_have_been(tmp_path):
    rows = "".join(f"review {i} of the product,{1 + i % 5},{'YN'[i % 2]}\n" for i in range(40))
    ds = import_dataset(write(tmp_path / "reviews.csv", "body,stars,verified_purchase\n" + rows))
    assert ds.manifest["columns"]["label"] == "verified_purchase"
    said = [w for w in ds.manifest["warnings"] if w.startswith("the label column was guessed")]
    assert said and "also possible: 'stars' (5 values)" in said[0] and "--label-col" in said[0]
    named = import_dataset(
        write(tmp_path / "named.csv", "body,stars,verified_purchase\n" + rows), label_col="stars"
    )
    assert not any("guessed" in w for w in named.manifest["warnings"])


def test_a_nul_character_is_kept_but_said_with_its_lines(tmp_path):
    body = "text,label\n" + balanced() + "broken\x00 export here,a\nother\x00 one,b\n"
    ds = import_dataset(write(tmp_path / "nul.csv", body))
    assert "broken\x00 export here" in ds.texts()  # the user's data, as given
    [said] = [w for w in ds.manifest["warnings"] if "NUL" in w]
    assert said.startswith("2 row(s) hold a NUL character") and "nul.csv:14, nul.csv:15" in said


def test_labels_that_differ_only_in_case_width_or_spacing_are_named_in_a_warning(tmp_path):
    """``Pos``, ``pos`` and full-width ``ｐｏｓ`` are three classes as written (the user's labels are
    never merged behind their back), and the import says so: it was a generic "few examples" note."""
    body = "text,label\n" + balanced(6, ("pos", "neg"))
    body += "".join(f"another text {i},Pos\n" for i in range(3)) + "full width text,ｐｏｓ\nwide two,ｐｏｓ\n"
    ds = import_dataset(write(tmp_path / "labels.csv", body))
    assert set(ds.summary()["classes"]) == {"pos", "Pos", "ｐｏｓ", "neg"}
    (warning,) = [w for w in ds.summary()["warnings"] if "differ only in case" in w]
    assert "'pos' (6 rows) and 'Pos' (3), 'ｐｏｓ' (2)" in warning and "neg" not in warning


def test_a_json_array_saved_as_jsonl_is_told_what_jsonl_is(tmp_path):
    path = write(tmp_path / "rows.jsonl", '[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]\n')
    with pytest.raises(DataError, match="not a JSON object") as refused:
        import_dataset(path)
    assert "one JSON object a line" in refused.value.hint and "header" not in refused.value.hint
