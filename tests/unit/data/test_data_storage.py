"""Storage by digest, manifest, loading by id/prefix/name, Dataset API, speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aimass.data import Dataset, import_dataset, list_datasets, load_dataset
from aimass.errors import ConfigError, NotFoundError


@pytest.fixture
def home(tmp_path, monkeypatch):
    root = tmp_path / "home"
    monkeypatch.setenv("AIMASS_HOME", str(root))
    return root


def make_csv(path, n=30, extra=""):
    rows = "".join(f"review number {i} text,{('pos', 'neg', 'mid')[i % 3]}\n" for i in range(n))
    path.write_text("text,label\n" + rows + extra, encoding="utf-8")
    return path


def test_import_writes_folder_and_manifest(home, tmp_path):
    ds = import_dataset(make_csv(tmp_path / "r.csv", extra=",pos\n"), name="reviews")
    assert isinstance(ds, Dataset) and ds.path == home / "datasets" / ds.id
    assert ds.id == ds.digest[:12] and len(ds.digest) == 64
    assert {p.name for p in ds.path.iterdir()} == {"data.jsonl", "manifest.json", "rejects.jsonl"}
    m = json.loads((ds.path / "manifest.json").read_text())
    for key in (
        "id",
        "digest",
        "name",
        "source",
        "source_sha256",
        "created",
        "format",
        "encoding",
        "columns",
        "language",
        "counts",
        "rejects",
        "warnings",
        "seed",
        "valid_frac",
        "test_frac",
    ):
        assert key in m, key
    assert m["name"] == "reviews" and m["format"] == "csv" and m["language"] == "en"
    assert m["counts"]["total"] == 30 and m["rejects"] == 1
    assert m["counts"]["by_split"] == {"train": 21, "valid": 3, "test": 6}
    rejects = [json.loads(line) for line in (ds.path / "rejects.jsonl").read_text().splitlines()]
    assert rejects[0]["line"] == 32 and rejects[0]["reason"] == "empty text"


def test_data_jsonl_is_canonical_in_file_order(home, tmp_path):
    ds = import_dataset(make_csv(tmp_path / "r.csv"))
    lines = (ds.path / "data.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["text", "label", "split", "source"]
    assert [json.loads(line)["source"] for line in lines] == [f"r.csv:{i}" for i in range(2, 32)]


def test_rejects_file_always_written(home, tmp_path):
    ds = import_dataset(make_csv(tmp_path / "r.csv"))
    assert (ds.path / "rejects.jsonl").read_text() == ""
    assert ds.summary()["rejects"] == 0


def test_same_content_same_id_no_second_copy(home, tmp_path):
    first = import_dataset(make_csv(tmp_path / "a.csv"), name="first")
    data_mtime = (first.path / "data.jsonl").stat().st_mtime_ns
    again = import_dataset(make_csv(tmp_path / "b.csv"), name="second")
    assert again.id == first.id
    assert len(list((home / "datasets").iterdir())) == 1
    assert (first.path / "data.jsonl").stat().st_mtime_ns == data_mtime
    assert load_dataset("second").id == first.id and load_dataset("first").id == first.id
    other = import_dataset(make_csv(tmp_path / "a.csv"), seed=1)
    assert other.id != first.id


def test_no_temporary_files_left(home, tmp_path):
    ds = import_dataset(make_csv(tmp_path / "r.csv"))
    assert not [p for p in ds.path.iterdir() if p.name.startswith(".")]


def test_load_by_id_prefix_name_and_not_found(home, tmp_path):
    ds = import_dataset(make_csv(tmp_path / "r.csv"), name="reviews")
    assert load_dataset(ds.id).digest == ds.digest
    assert load_dataset(ds.id[:6]).id == ds.id
    assert load_dataset("reviews").id == ds.id
    with pytest.raises(NotFoundError) as err:
        load_dataset("missing")
    # named, and nothing listed: the message reaches REST callers and jobs of any project
    assert (
        "'missing'" in err.value.message
        and ds.id not in err.value.message
        and "reviews" not in err.value.message
    )
    assert "aimass data list" in err.value.hint


def test_name_resolves_to_latest_import(home, tmp_path):
    old = import_dataset(make_csv(tmp_path / "r.csv", n=30), name="reviews")
    new = import_dataset(make_csv(tmp_path / "r.csv", n=33), name="reviews")
    assert old.id != new.id
    assert load_dataset("reviews").id == new.id
    assert [d.id for d in list_datasets()] == [old.id, new.id]


def test_list_datasets_skips_incomplete_folders(home, tmp_path):
    assert list_datasets() == []
    (home / "datasets" / "abcdef123456").mkdir(parents=True)
    ds = import_dataset(make_csv(tmp_path / "r.csv"))
    assert [d.id for d in list_datasets()] == [ds.id]


def test_dataset_api(home, tmp_path):
    ds = load_dataset(import_dataset(make_csv(tmp_path / "r.csv")).id)
    assert ds.classes == ["mid", "neg", "pos"]
    assert len(ds.rows()) == 30 and set(ds.rows()[0]) == {"text", "label", "split", "source"}
    assert len(ds.texts("train")) == len(ds.labels("train")) == 21
    assert ds.texts("validation") == ds.texts("valid")
    with pytest.raises(ConfigError):
        ds.rows("holdout")
    summary = ds.summary()
    assert summary["splits"] == {"train": 21, "valid": 3, "test": 6}
    assert summary["classes"] == {"mid": 10, "neg": 10, "pos": 10}
    assert summary["columns"]["text"] == "text" and summary["language"] == "en"
    assert summary["rejects_file"] == str(ds.path / "rejects.jsonl")
    assert str(ds.path / "rejects.jsonl") in ds.describe()


def test_twenty_thousand_rows_are_all_stored(home, tmp_path):
    """How fast is bench/data_import.py's (tests do not time things)."""
    path = tmp_path / "big.csv"
    rows = "".join(f"this is review {i} with words {i * 7},{('pos', 'neg')[i % 2]}\n" for i in range(20_000))
    path.write_text("text,label\n" + rows, encoding="utf-8")
    ds = import_dataset(path)
    assert ds.manifest["counts"]["total"] == 20_000
    assert len((ds.path / "data.jsonl").read_text(encoding="utf-8").splitlines()) == 20_000


def test_canonical_lines_match_json_dumps():
    from aimass.data.storage import canonical_lines

    rows = [
        {
            "text": 'quote " back \\ nl \n tab \t 中文 \x01 \u2028',
            "label": "é",
            "split": "train",
            "source": "x:1",
        }
    ]
    expected = json.dumps({k: rows[0][k] for k in ("text", "label", "split")}, ensure_ascii=False)
    assert canonical_lines(rows) == [expected]
    assert json.loads(canonical_lines(rows)[0])["text"] == rows[0]["text"]


def test_data_jsonl_rows_round_trip_special_characters(home, tmp_path):
    path = tmp_path / "s.jsonl"
    texts = [f'say "hi" \\ {i}\nnext line 中文' for i in range(12)]
    path.write_text(
        "".join(json.dumps({"text": t, "label": "ab"[i % 2]}) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    ds = load_dataset(import_dataset(path).id)
    assert ds.texts() == texts


def test_an_import_of_data_stored_already_reports_and_keeps_its_own_rejects(home, tmp_path):
    """The good rows match a stored dataset: it keeps its id, but this import's bad rows were reported
    as 0 (the first import's rejects) and kept nowhere but as a bare count in the manifest."""
    from aimass.serve.data_routes import rejects_page

    first = import_dataset(make_csv(tmp_path / "base.csv"), name="base")
    bad = "too,many,cols\nreview number 3 text,pos\n,neg\n"
    again = import_dataset(make_csv(tmp_path / "more.csv", extra=bad), name="again")
    assert again.id == first.id and again.name == "base"  # the content is stored once
    s = again.summary()
    assert s["already_stored"] and s["rejects"] == 3 and s["import"]["name"] == "again"
    assert s["rejects_by_reason"] == {"malformed line": 1, "duplicate": 1, "empty text": 1}
    rows = [json.loads(line) for line in Path(s["rejects_file"]).read_text().splitlines()]
    assert [(r["line"], r["kind"]) for r in rows] == [
        (32, "malformed line"),
        (33, "duplicate"),
        (34, "empty text"),
    ]
    assert all(r["file"] == str(tmp_path / "more.csv") for r in rows)
    assert "rejects: 3 (malformed line 1, duplicate 1, empty text 1)" in again.describe()
    assert again.describe().startswith(f"Dataset 'again' (id {first.id}) from {tmp_path / 'more.csv'}")
    assert f"already stored: the same rows as 'base' from {tmp_path / 'base.csv'}" in again.describe()
    assert first.rejects_path.read_text() == ""  # the first import's rejects are its own
    shown = load_dataset("base")  # `aimass data show`: the stored dataset lists each import's rejects
    assert shown.summary()["rejects"] == 0 and shown.summary()["imports"][1]["rejects"] == 3
    assert f"imported again as 'again' on {s['import']['at']}" in shown.describe()
    assert s["rejects_file"] in shown.describe()
    assert shown.names == ["again", "base"]
    listed = rejects_page(first.id, 50, 0, import_index=1)  # GET /v1/datasets/{id}/rejects?import=1
    assert listed["total"] == 3 and listed["rejects"] == rows
    assert rejects_page(first.id, 50, 0)["total"] == 0
    with pytest.raises(NotFoundError, match="has no import 2"):
        rejects_page(first.id, 50, 0, import_index=2)
    from aimass.store import browse, registry

    registry.record_dataset(again)  # as aimass.import_dataset does: the listings show the dataset's
    assert browse.dataset_record(first.id).summary["rejects"] == 0


@pytest.mark.parametrize("kind", ["entities", "chat"])
def test_entities_and_chat_imported_again_report_their_own_rejects(home, tmp_path, kind):
    texts = [f"Alice Smith met Bob number {i} today" for i in range(12)]
    if kind == "entities":
        objects = [{"text": t, "entities": [[0, 11, "PER"]]} for t in texts]
        broken = {"text": "Li", "entities": [[0, 9, "PER"]]}
    else:
        objects = [
            {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]}
            for t in texts
        ]
        broken = {"messages": [{"role": "robot", "content": "x"}]}
    lines = [json.dumps(o) for o in objects]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join([*lines, json.dumps(broken), "{not json"]) + "\n")
    first = import_dataset(tmp_path / "a.jsonl")
    again = import_dataset(tmp_path / "b.jsonl")
    assert again.id == first.id and again.summary()["rejects"] == 2
    rows = [json.loads(line) for line in Path(again.summary()["rejects_file"]).read_text().splitlines()]
    assert [r["line"] for r in rows] == [13, 14]


def test_a_second_import_in_another_format_is_described_as_it_was_read(home, tmp_path):
    """The JSONL of a stored CSV's rows, with its label under another name: the summary said
    "Dataset 'base' ... format csv, columns label='label'", nothing of the import just made."""
    first = import_dataset(make_csv(tmp_path / "base.csv"), name="base")
    lines = [json.dumps({"text": r["text"], "category": r["label"]}) for r in first.rows()]
    (tmp_path / "same.jsonl").write_text("\n".join(lines) + "\n")
    again = import_dataset(tmp_path / "same.jsonl", name="same")
    shown = again.describe()
    assert again.id == first.id, shown
    assert shown.startswith("Dataset 'same'") and "format jsonl" in shown and "label='category'" in shown
