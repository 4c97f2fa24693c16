"""Bulk prediction gaps an audit reproduced: added columns that repeated the input's names (a
labelled file lost its gold label), an input column ``_line`` overwritten, JSONL values written as
Python's repr, formulas passed through to a CSV opened in Excel, an output path that failed only
after the work, and a file held whole in memory (read in pieces now, with the import's parsers)."""

from __future__ import annotations

import csv
import json
import tracemalloc

import pytest
from typer.testing import CliRunner

from aimass import api, jobs, scoring
from aimass.cli import app
from aimass.data.read import read_source
from aimass.errors import ConfigError

TEXTS = ["Shares fell sharply after the bank's results.", "The striker scored twice in the final."]


@pytest.fixture(scope="module")
def scorer(small_model):
    return api.register(small_model, "gaps-scorer").ref


def rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def header(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle))


def write(path, table: list[list]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(table)
    return str(path)


def test_a_labelled_file_keeps_its_gold_label_beside_the_predicted_one(scorer, small_model, tmp_path):
    """``text,label,score,line`` came out as ``text,label,score,line,line,label,score,error,...``:
    pandas and DictReader kept the prediction under ``label`` and lost the gold label."""
    gold = write(
        tmp_path / "gold.csv", [["text", "label", "score", "line"], [TEXTS[0], "business", "5", "a"]]
    )
    result = scoring.predict_file(scorer, gold, tmp_path / "out.csv")
    names = header(tmp_path / "out.csv")
    assert len(names) == len(set(names))
    assert names[:9] == [
        "text", "label", "score", "line",
        "predicted_line", "predicted_label", "predicted_score", "error", f"p_{result['classes'][0]}",
    ]  # fmt: skip
    [row] = rows(tmp_path / "out.csv")
    assert (row["label"], row["score"], row["line"], row["predicted_line"]) == ("business", "5", "a", "2")
    assert row["predicted_label"] == small_model.predict([TEXTS[0]])[0]
    plain = write(tmp_path / "plain.csv", [["id", "text"], ["1", TEXTS[1]]])  # no clash: the names as before
    scoring.predict_file(scorer, plain, tmp_path / "plain.out.csv")
    assert header(tmp_path / "plain.out.csv")[:6] == ["id", "text", "line", "label", "score", "error"]


def test_a_column_named_line_with_an_underscore_keeps_its_values(scorer, tmp_path):
    source = write(tmp_path / "in.csv", [["_line", "text"], ["row-a", TEXTS[0]], ["row-b", TEXTS[1]]])
    scoring.predict_file(scorer, source, tmp_path / "out.csv")
    scored = rows(tmp_path / "out.csv")
    assert [(r["_line"], r["line"]) for r in scored] == [("row-a", "2"), ("row-b", "3")]


def test_jsonl_values_that_are_not_text_are_written_as_json(scorer, tmp_path):
    source = tmp_path / "in.jsonl"
    record = {"text": TEXTS[0], "meta": {"a": 1, "b": ["é"]}, "flag": True, "n": None, "x": 1.5}
    source.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    scoring.predict_file(scorer, source, tmp_path / "out.csv")
    [row] = rows(tmp_path / "out.csv")
    assert (row["meta"], row["flag"], row["n"], row["x"]) == ('{"a": 1, "b": ["é"]}', "true", "", "1.5")
    assert json.loads(row["meta"]) == record["meta"]


def test_cells_a_spreadsheet_would_run_get_a_quote_in_front(scorer, tmp_path):
    """OWASP's remedy for CSV injection: the predictions CSV is downloaded and opened in Excel."""
    given = ['=HYPERLINK("http://evil","x")', "+1+1", "@SUM(A1)", "-2+3+cmd|' /C calc'!A0", "\tTab", "\rCR"]
    kept = ["-1.5", "-7", "a = b", "", "plain text"]
    source = write(tmp_path / "in.csv", [["id", "text"], *([v, f"{v} {TEXTS[0]}"] for v in given + kept)])
    scoring.predict_file(scorer, source, tmp_path / "out.csv")
    scored = rows(tmp_path / "out.csv")
    assert [r["id"] for r in scored] == [f"'{v}" for v in given] + kept
    assert [r["text"][0] for r in scored[: len(given)]] == ["'"] * len(given)
    assert all(r["label"] and not r["label"].startswith("'") for r in scored)


@pytest.mark.parametrize("where", ["missing/dir/x.csv", "folder", "in.csv", "in.csv/x.csv"])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(scorer, tmp_path, where):
    """It was an 'internal' FileNotFoundError (or IsADirectoryError) once the rows were read, the
    model loaded (and, from the CLI, every row scored)."""
    source = write(tmp_path / "in.csv", [["text"], [TEXTS[0]]])
    (tmp_path / "folder").mkdir()
    heard = []
    with pytest.raises(ConfigError, match="output|folder") as err:
        scoring.predict_file(scorer, source, tmp_path / where, progress=lambda *a: heard.append(a))
    assert str(tmp_path) in err.value.message and err.value.hint and not heard
    assert (tmp_path / "in.csv").read_bytes() == f"text\r\n{TEXTS[0]}\r\n".encode()  # the input is untouched


def test_the_cli_checks_the_output_before_the_job(scorer, tmp_path):
    source = write(tmp_path / "in.csv", [["text"], [TEXTS[0]]])
    before = len(jobs.list_jobs(limit=1000))
    missing = tmp_path / "missing" / "x.csv"
    done = CliRunner().invoke(app, ["predict", scorer, "--file", source, "-o", str(missing)])
    assert done.exit_code != 0 and "mkdir -p" in done.output and "internal" not in done.output.lower()
    assert len(jobs.list_jobs(limit=1000)) == before  # nothing was scored for nothing


def test_a_table_is_read_in_pieces_as_the_import_reads_it_whole(tmp_path, monkeypatch):
    """Records cut across pieces (a cell over several lines, blank lines, a repeated header, a field
    count that is wrong, a quote left open over 5 lines) come out as read_source reads the file."""
    monkeypatch.setattr(scoring, "PIECE", 2)
    path = tmp_path / "t.csv"
    body = (
        '\ufeffid,text\r\n\r\n1,"two\r\nlines"\r\n2,three,fields\r\n3,ok\r\nid,text\r\n'
        '4,fine\r\n5,"open\r\na\r\nb\r\nc\r\nd\r\ne",x\r\n6,last\r\n'
    )
    path.write_bytes(body.encode("utf-8"))
    whole = read_source(path)
    source = scoring._read("text-classification", path, None)
    assert source.columns == whole.columns and source.total == len(whole.records) == 4
    assert source.rejects == [{"line": m["line"], "reason": m["reason"]} for m in whole.malformed]
    assert "from line 9 to 14" in source.rejects[-1]["reason"]
    expected = [(r.line, [r.fields["id"], r.fields["text"]], r.fields["text"]) for r in whole.records]
    assert list(source.rows()) == expected
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "a"}\n\nnot json\n{"text": "b", "k": 1}\n{"text": "c"}\n', encoding="utf-8")
    source, whole = scoring._read("text-classification", jsonl, None), read_source(jsonl)
    assert source.columns == ["text", "k"] and [r[0] for r in source.rows()] == [1, 4, 5]
    assert source.rejects == [{"line": 3, "reason": whole.malformed[0]["reason"]}]


def read_peak(path) -> int:
    """The most memory (bytes, tracemalloc) held while every row of ``path`` is read for scoring."""
    tracemalloc.start()
    try:
        source = scoring._read("text-classification", path, None)
        assert sum(1 for _ in source.rows()) == source.total
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_piece_not_the_file(tmp_path, monkeypatch):
    """A 16 MB file took 220 MB to read and was copied again: the memory grew with the file. Read in
    pieces a run holds a piece (and the first records, for the header check): 4 times the rows, about
    the same memory."""
    monkeypatch.setattr(scoring, "PIECE", 256)
    line = "这个产品质量很好 great item number {},{}\n"
    peaks = []
    for n in (2500, 10000):
        path = tmp_path / f"big{n}.csv"
        path.write_text(
            "text,extra\n" + "".join(line.format(i, "x" * 60) for i in range(n)), encoding="utf-8"
        )
        peaks.append(read_peak(path))
    assert peaks[1] < 1.3 * peaks[0], f"{peaks[0]:,} bytes for 2,500 rows, {peaks[1]:,} for 10,000"


def test_a_resumed_run_cuts_its_output_at_the_last_whole_chunk_reading_a_line_at_a_time(
    scorer, tmp_path, monkeypatch
):
    """A cell over the csv module's 131,072 characters made the resume read fail (csv.Error); it is
    cut where its last whole chunk ends, without reading it whole."""
    monkeypatch.setattr(scoring, "CHUNK", 2)
    texts = [TEXTS[0], "x" * 140_000, TEXTS[1], 'a "quoted"\nline', TEXTS[0]]
    source = write(tmp_path / "in.csv", [["text"], *([t] for t in texts)])
    straight = tmp_path / "straight.csv"
    scoring.predict_file(scorer, source, straight)
    cut = tmp_path / "cut.csv"
    data = straight.read_bytes()
    cut.write_bytes(data[: data.index(b'a ""quoted') + 5])  # in the 2nd chunk's 2nd row
    resumed = scoring.predict_file(scorer, source, cut, resume=True)
    assert resumed["resumed_at"] == 2 and cut.read_bytes() == straight.read_bytes()


def test_unreadable_lines_past_a_thousand_are_counted_not_listed(tmp_path, monkeypatch):
    """A file of bad lines gave a reject entry each (300,000 lines: a 22 MB job result): the first
    MAX_REJECTS are listed, one last entry counts the rest."""
    from aimass import scoring

    monkeypatch.setattr(scoring, "MAX_REJECTS", 3)
    monkeypatch.setattr(scoring, "PIECE", 2)
    path = tmp_path / "bad.csv"
    path.write_text("text,label\n" + "".join(f"row {i},a,extra\n" for i in range(7)) + "fine,a\n")
    source = scoring._table(path, None, None)
    assert source.total == 1 and [r["line"] for r in source.rejects] == [2, 3, 4, None]
    assert source.rejects[-1]["reason"] == "4 more unreadable lines not listed"


def test_a_reason_quoting_the_users_text_keeps_its_words(tmp_path, monkeypatch):
    """Line numbers of a streamed piece's rejects are shifted to the file's, but only in reasons that
    name lines: a column called "seen at line 1" in a too-large reason stayed "seen at line 7"."""
    from aimass import scoring
    from aimass.data.read import read_source

    monkeypatch.setattr(scoring, "PIECE", 2)
    monkeypatch.setenv("AIMASS_MAX_FIELD_CHARS", "5")
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n' * 6 + '{"seen at line 1": "toolongvalue"}\n')
    streamed = scoring._table(path, "text", None).rejects
    assert streamed == [{"line": m["line"], "reason": m["reason"]} for m in read_source(path).malformed]
    assert "seen at line 1" in streamed[0]["reason"]
