"""Bulk prediction of a file: every row scored into a CSV with its label, score and class
probabilities, unreadable lines listed, a run cut short resumed without scoring a row twice; the
CLI (a durable job) and the REST download give the same file."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient
from tests.conftest import bbc_held_out
from typer.testing import CliRunner

from aimass import api, scoring
from aimass.cli import app
from aimass.errors import DataError
from aimass.serve import auth
from aimass.serve.app import create_app


@pytest.fixture(scope="module")
def scorer(small_model):
    return api.register(small_model, "bulk-scorer").ref


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """600 rows (3 chunks of 256, the last short), one with an empty text and one line that is no
    CSV row at all."""
    texts, _ = bbc_held_out(seen=16, extra=8)
    path = tmp_path_factory.mktemp("bulk") / "unlabelled.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(600):
            writer.writerow([f"n{i}", "" if i == 7 else texts[i % len(texts)][:300]])
    with path.open("a", encoding="utf-8") as handle:
        handle.write("n600,three,fields\n")
    return path


def rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_row_is_scored_and_a_cut_run_resumes_without_scoring_twice(
    scorer, unlabelled, small_model, tmp_path
):
    straight = tmp_path / "straight.csv"
    result = scoring.predict_file(scorer, unlabelled, straight)
    scored = rows(straight)
    assert result["rows"] == 600 == len(scored) and result["classes"] == list(small_model.classes_)
    assert [r["id"] for r in scored] == [f"n{i}" for i in range(600)]
    assert scored[7]["label"] == "" and scored[7]["error"] == "empty input"
    starts = [int(r["line"]) for r in scored]  # where each row starts in the file (texts span lines)
    assert starts[0] == 2 and starts == sorted(set(starts))
    [reject] = result["rejects"]
    assert reject["line"] > starts[-1] and "field" in reject["reason"]
    sample = [r for r in scored if r["text"]][:20]
    assert [r["label"] for r in sample] == small_model.predict([r["text"] for r in sample])
    for r in sample:
        probs = [float(r[f"p_{c}"]) for c in result["classes"]]
        assert abs(sum(probs) - 1) < 1e-4 and float(r["score"]) == max(probs)

    cut = tmp_path / "cut.csv"  # a worker killed while writing row 301 (in the second chunk)
    with open(straight, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    with open(cut, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(table[:301])
        handle.write(",".join(table[301])[:30])
    resumed = scoring.predict_file(scorer, unlabelled, cut, resume=True)
    assert resumed["resumed_at"] == 256 and cut.read_bytes() == straight.read_bytes()

    with pytest.raises(DataError, match="no column 'body'"):
        scoring.predict_file(scorer, unlabelled, tmp_path / "x.csv", text_col="body")


def test_the_cli_runs_it_as_a_job_and_rest_serves_its_csv(scorer, unlabelled, tmp_path):
    out = tmp_path / "scored.csv"
    done = CliRunner().invoke(app, ["predict", scorer, "--file", str(unlabelled), "-o", str(out), "--json"])
    assert done.exit_code == 0, done.output[-2000:]
    result = json.loads(done.output[done.output.index("{") :])
    assert result["rows"] == 600 and result["output"] == str(out) and len(rows(out)) == 600
    _, key = auth.create_key("bulk", ["manage"])
    with TestClient(create_app(refs=[])) as client:
        got = client.get(f"/v1/jobs/{result['job']}/predictions", headers={"Authorization": f"Bearer {key}"})
        assert got.status_code == 200 and got.content == out.read_bytes()
        show = client.get(f"/v1/jobs/{result['job']}", headers={"Authorization": f"Bearer {key}"}).json()
        assert show["kind"] == "predict" and show["result"]["rows"] == 600
    both = CliRunner().invoke(app, ["predict", scorer, "some text", "--file", str(unlabelled)])
    assert both.exit_code != 0 and "one of the two" in both.output


def test_the_console_labels_an_uploaded_file_from_the_model_page(scorer, unlabelled):
    from tests.unit.serve.test_console_gaps import csrf_of, signed_in

    from aimass import jobs

    with signed_in(create_app(refs=[]), auth.admin_token()) as web:
        page = web.get(f"/console/models/{scorer}")
        assert "Label the file" in page.text
        sent = web.post(
            f"/console/models/{scorer}/score",
            data={"csrf": csrf_of(page.text)},
            files={"file": ("new.csv", unlabelled.read_bytes(), "text/csv")},
            follow_redirects=False,
        )
        assert sent.status_code == 303, sent.text[-500:]
        job_id = sent.headers["location"].rsplit("/", 1)[-1]
        assert jobs.run_foreground(job_id)["status"] == "succeeded"
        shown = web.get(f"/console/jobs/{job_id}")
        assert "Download the labels (CSV)" in shown.text and "1 unreadable line " in shown.text
        csv_file = web.get(f"/console/jobs/{job_id}/predictions")
        assert csv_file.status_code == 200 and csv_file.text.splitlines()[0].startswith("id,text,line,label")
        assert len(list(csv.reader(io.StringIO(csv_file.text)))) == 601  # the header and every row
        empty = web.post(f"/console/models/{scorer}/score", data={"csrf": csrf_of(page.text)})
        assert empty.status_code == 422 and "Choose a file" in empty.text
