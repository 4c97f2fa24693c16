"""Multi-label text: import (JSON lists, a separator in a cell), the task picked by the stored data,
training against TF-IDF alone, evaluation, the CLI and the REST answer with every label."""

from __future__ import annotations

import csv
import json
import re

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aimass import api, jobs, scoring
from aimass.cli.main import app
from aimass.errors import ConfigError, DataError
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.tasks.text_multilabel import TextMultiLabel


@pytest.fixture(scope="module")
def rows():
    """BBC openings alone (one topic) and two of different topics joined (two topics): 200 rows."""
    texts, labels = TextMultiLabel.sample_data(per_class=20)
    return [{"text": t, "labels": lab} for t, lab in zip(texts, labels)]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_json_lists_import_as_multilabel_rows_and_bad_labels_are_rejected_by_line(
    tmp_path, monkeypatch, rows
):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    bad = [
        {"text": "a row whose labels are an object", "labels": {"sports": 1}},
        {"text": "a row whose labels hold a list", "labels": [["sports"]]},
        {"text": "a label holding the join character", "labels": ["sports|tech"]},
        {"text": "a row without labels", "labels": []},
    ]
    ds = api.import_dataset(write_jsonl(tmp_path / "tags.jsonl", rows[:60] + bad))
    assert ds.kind == "multilabel" and ds.manifest["columns"]["label"] == "labels"
    # every label is a class, counted once per row that has it
    assert ds.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert sum(ds.manifest["counts"]["by_class"].values()) == sum(len(r["labels"]) for r in rows[:60])
    rejects = [json.loads(line) for line in ds.rejects_path.read_text().splitlines()]
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert "neither a list nor text" in reasons[61] and "holds list" in reasons[62]
    assert "holds '|'" in reasons[63] and "rename the label" in reasons[63]
    assert reasons[64].startswith("no labels: give every row at least one")
    assert ds.manifest["rejects_by_reason"] == {"malformed line": 3, "missing label": 1}
    # stored sorted and joined; read back as lists
    assert api.load_dataset(ds.id).labels()[1] == "|".join(sorted(rows[1]["labels"]))
    # every label reaches the test split (stratified by each row's rarest label)
    assert set(ds.manifest["counts"]["by_split_class"]["test"]) == set(ds.classes)
    # the console's wizard offers to train the multi-label task on it
    with TestClient(create_app([])) as client:
        client.post(
            "/console/signin",
            data={"csrf": csrf_of(client.get("/console/signin").text), "key": auth.admin_token()},
        )
        page = client.get(f"/console/start/{ds.id}").text
    assert "Task: <strong>text-multilabel</strong>" in page
    assert "several labels each" in page


def test_a_cell_cut_at_the_separator_is_the_same_dataset_and_without_it_each_combination_is_a_class(
    tmp_path, monkeypatch, rows
):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    path = tmp_path / "tags.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "tags"])
        writer.writerows([r["text"], " ; ".join(reversed(r["labels"]))] for r in rows[:60])
    listed = api.import_dataset(write_jsonl(tmp_path / "tags.jsonl", rows[:60]))
    cut = api.import_dataset(path, label_sep=";")
    assert cut.id == listed.id  # the same rows and labels: stored once
    plain = api.import_dataset(path, min_rows=2)  # one label per row: "business ; tech" is a class of its own
    assert plain.kind == "text" and plain.id != listed.id
    tags = ["billing", "billing;urgent", "urgent", "urgent;refund", "refund", "billing", "refund", "urgent"]
    odd = tmp_path / "odd.csv"
    odd.write_text("text,tags\n" + "".join(f"ticket number {i},{t}\n" for i, t in enumerate(tags)))
    with pytest.raises(DataError, match="at least 2 examples") as caught:  # combinations seen once
        api.import_dataset(odd, min_rows=2)
    assert "import with --label-sep ';'" in caught.value.hint
    assert api.import_dataset(odd, min_rows=2, label_sep=";").classes == ["billing", "refund", "urgent"]
    # REST: POST /v1/datasets takes label_sep too
    _, key = auth.create_key("ml-ops", ["manage"])
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app([])) as client:
        stored = client.post(
            "/v1/uploads", headers=headers, files={"file": ("tickets.csv", path.read_bytes())}
        )
        assert stored.status_code == 201, stored.text
        body = {"path": stored.json()["path"], "name": "tickets", "label_sep": ";"}
        report = client.post("/v1/datasets", headers=headers, json=body)
        blank = client.post("/v1/datasets", headers=headers, json={**body, "label_sep": ""})
    assert report.status_code == 201, report.text
    assert report.json()["kind"] == "multilabel" and report.json()["id"] == listed.id
    assert blank.status_code == 422 and "label_sep" in blank.text
    with pytest.raises(DataError, match="several labels per text") as caught:
        api.train_model("text-classification", listed.id)
    assert "--task text-multilabel" in caught.value.hint


def test_training_picks_the_task_from_the_data_and_beats_or_keeps_tfidf_alone(tmp_path, monkeypatch, rows):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    ds = api.import_dataset(write_jsonl(tmp_path / "topics.jsonl", rows))
    result = api.train_model(None, ds.id, backbone="minilm-l6", max_length=64)
    model = api.load(result["model"])
    assert model.task == "text-multilabel"
    metrics = result["metrics"]
    assert metrics["micro_f1"] >= 0.85 and 0 < metrics["threshold"] < 1
    candidates = result["portfolio"]["candidates"]
    assert set(candidates) == {"network", "tfidf-logreg"}
    best = max(
        candidates, key=lambda n: (candidates[n]["micro_f1"], candidates[n]["macro_f1"], n == "network")
    )
    assert result["portfolio"]["chosen"] == best
    answer = model.predict(["Shares in the mobile phone maker fell after its handset flopped at launch."])
    assert isinstance(answer[0], list) and set(answer[0]) <= set(model.classes_)
    report = model.evaluate(api.load_dataset(ds.id), "test")
    assert report["n"] == ds.manifest["counts"]["by_split"]["test"]
    assert report["micro_f1"] == pytest.approx(metrics["micro_f1"])
    worst = report["top_losses"][0]  # the row the model gets most wrong: its labels and what was given
    assert worst["actual"] != worst["predicted"] and set(worst["scores"]) == set(model.classes_)

    # exports: the ONNX folder and the fine-tuned weights, each predict.py checked against aimass
    from aimass.exporters import export

    for fmt in ("onnx", "safetensors"):
        done = export(result["model"], fmt, tmp_path / f"export-{fmt}")
        assert done["check"]["predict_py_max_abs_diff_proba"] < 1e-4, (fmt, done["check"])
        prep = json.loads((tmp_path / f"export-{fmt}" / "preprocessing.json").read_text())
        assert prep["activation"] == "sigmoid" and prep["threshold"] == model.threshold_

    judged = api.dataset_issues(ds, model=result["model"], out=tmp_path / "judged")  # its own predictions
    assert judged["method"]["in_sample_train"] is True and judged["accuracy"] > 0.8
    assert all(i["add"] or i["remove"] for i in judged["label_issues"])

    # bulk scoring: the label column lists every label given, joined by ';'
    table = tmp_path / "unlabelled.csv"
    with table.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["text"], *([r["text"]] for r in rows[:6])])
    scoring.predict_file(result["model"], table, tmp_path / "scored.csv")
    with open(tmp_path / "scored.csv", encoding="utf-8") as fh:
        scored = [row["label"].split(";") for row in csv.DictReader(fh)]
    assert scored == model.predict([r["text"] for r in rows[:6]])

    # the CLI: predict prints every label with its score; evaluate the per-label table
    runner = CliRunner()
    out = runner.invoke(app, ["predict", result["model"], "The band's new album topped the charts."])
    assert out.exit_code == 0, out.output
    assert "labels" in out.output and "entertainment" in out.output
    out = runner.invoke(app, ["evaluate", result["model"]])
    assert out.exit_code == 0, out.output
    assert "micro-F1" in out.output and "exact match" in out.output and "tfidf-logreg" in out.output
    # `train` without --task: its --set options are the task's the data calls for
    out = runner.invoke(app, ["train", "--data", ds.id, "--set", "threshold=0.4", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["metrics"]["threshold"] == 0.4
    out = runner.invoke(app, ["train", "--data", ds.id, "--set", "unfreeze=2"])
    assert out.exit_code == 2 and "Task 'text-multilabel' has no option 'unfreeze'" in " ".join(
        out.output.split()
    )

    # REST (on the ONNX runtime, the default backend for text): a list of labels per text
    texts = ["The striker scored twice in the cup final.", "The chancellor's budget cut taxes on shares."]
    with TestClient(create_app([result["model"]], open_predict=True)) as client:
        body = client.post(f"/v1/models/{ds.name}/predict", json={"inputs": texts}).json()
        # the console's "try a model" page shows every label given, with its score
        form = client.get("/console/signin").text
        client.post("/console/signin", data={"csrf": csrf_of(form), "key": auth.admin_token()})
        csrf = csrf_of(client.get(f"/console/try/{ds.name}").text)
        page = client.post(f"/console/try/{ds.name}", data={"csrf": csrf, "text": texts[0]}).text
        listed = client.get("/console/datasets").text  # the list says what kind of data each holds
        assert re.search(rf"<code>{ds.id[:16]}</code></td><td>multi-label text</td>", listed)
        # the model page labels a file (a predict job), every label of a row joined by ';'
        assert "Label a file with this model" in client.get(f"/console/models/{result['model']}").text
        upload = {"file": ("unlabelled.csv", table.read_bytes(), "text/csv")}
        asked = client.post(
            f"/console/models/{result['model']}/score",
            data={"csrf": csrf},
            files=upload,
            follow_redirects=False,
        )
        assert asked.status_code == 303, asked.text[-300:]
        job_id = asked.headers["location"].rsplit("/", 1)[1]
        assert jobs.run_foreground(job_id)["status"] == "succeeded"
        labelled = client.get(f"/console/jobs/{job_id}/predictions").text
    assert [row["label"].split(";") for row in csv.DictReader(labelled.splitlines())] == scored
    answers = [p["labels"] for p in body["predictions"]]
    assert answers == model.predict(texts)
    assert set(body["predictions"][0]["scores"]) == set(model.classes_)
    shown = body["predictions"][0]
    assert ">labels<" in page and all(
        f"<strong>{label}</strong> {shown['scores'][label]:.3f}" in page for label in shown["labels"]
    )


def test_auto_detects_label_lists_and_reports_what_the_fit_chose(tmp_path, monkeypatch, rows):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    report = api.auto(write_jsonl(tmp_path / "topics.jsonl", rows), time_budget="3m", progress=False)
    assert report["task"] == "text-multilabel"
    assert {"micro_f1", "accuracy", "macro_f1", "threshold"} <= set(report["metrics"])
    choices = {c["what"]: c for c in report["choices"]}
    assert "nothing to search" in choices["hyper-parameters"]["why"]
    fit = choices["final fit"]
    assert fit["value"]["time_budget_s"] > 0 and fit["value"]["chosen"] in ("network", "tfidf-logreg")
    assert "validation micro-F1: network" in fit["why"]
    # the served version is the int8 child when it kept the parent's exact-match accuracy (the gate)
    assert report["compression"]["method"] == "onnx-int8"


def test_many_labels_try_fewer_settings_each(monkeypatch):
    """Each setting costs one regression per label: the candidates try as many settings as
    ``LABEL_FITS`` label fits allow, most promising first (100 labels: 2 settings each)."""
    from aimass.tasks import label_sets, text_multilabel

    monkeypatch.setattr(label_sets, "LABEL_FITS", 10)  # 5 labels: 2 settings per candidate
    texts, labels = TextMultiLabel.sample_data(per_class=6)
    model = text_multilabel.MultiLabelTextClassifier(backbone="minilm-l6", max_length=64)
    model.fit((texts, labels), progress=False)
    tried = {name: c["settings_tried"] for name, c in model.candidates_.items()}
    assert tried == {"network": 2, "tfidf-logreg": 2}
    chosen = model.candidates_[model.chosen_]
    assert (chosen["C"], chosen["w"]) in (text_multilabel.NETWORK_GRID[:2] + text_multilabel.TFIDF_GRID[:2])


def test_label_issues_name_the_label_to_add_or_remove_and_a_fix_is_a_new_version(tmp_path, monkeypatch, rows):
    """Six rows with a wrong label decision each: three with a topic added, three with theirs swapped.
    ``data issues`` finds them (out of fold, one-vs-rest per label) and says which label to add or
    remove; ``data fix --relabel`` stores a child version with those label sets."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    noisy = [dict(r) for r in rows]
    single = [i for i, r in enumerate(noisy) if r["labels"] == ["sports"]][:6]
    for n, i in enumerate(single):
        noisy[i]["labels"] = ["politics", "sports"] if n < 3 else ["politics"]
    ds = api.import_dataset(write_jsonl(tmp_path / "noisy.jsonl", noisy), test_frac=0, valid_frac=0)
    out = CliRunner().invoke(app, ["data", "issues", ds.id, "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["dataset"]["kind"] == "multilabel" and "one-vs-rest" in report["method"]["detector"]
    flagged = {i["row"]: i for i in report["label_issues"]}
    stored = {" ".join(r["text"].split()): i for i, r in enumerate(ds.rows())}  # as imported: spaces folded
    changed = [stored[" ".join(noisy[i]["text"].split())] for i in single]
    found = sorted(set(changed) & set(flagged))  # 200 rows: 4 of the 6 (the swapped ones are harder)
    assert len(found) >= 4 and len(flagged) <= 15
    for row in found:
        assert flagged[row]["add"] in ([], ["sports"]) and flagged[row]["remove"] == ["politics"]
        assert flagged[row]["suggested"] == "sports"
    qualities = [i["self_confidence"] for i in report["label_issues"]]
    assert qualities == sorted(qualities)  # the least likely label set first
    hard = report["hard_examples"][0]
    assert hard["unsure"] in ds.classes and "runner_up" not in hard

    fixed = api.fix_dataset(ds, report, relabel=True, rows=found)
    assert fixed.kind == "multilabel" and fixed.manifest["parent"]["id"] == ds.id
    labels = fixed.labels()
    assert all(labels[row] == "sports" for row in found)
    before, after = ds.manifest["counts"]["by_class"], fixed.manifest["counts"]["by_class"]
    assert after["politics"] == before["politics"] - len(found)
    with pytest.raises(ConfigError, match="unknown label"):
        from aimass.data.revise import revise_dataset

        revise_dataset(ds, relabel={0: ("sports|weather", "a typo")})


def test_a_version_continues_on_new_rows_with_a_new_label(tmp_path, monkeypatch, rows):
    """The parent never saw ``tech``; the child continues it on rows that have it (and more of the
    others), replaying old rows from the parent's feature cache, and reports what it kept."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    old_rows = [r for r in rows[:120] if "tech" not in r["labels"]]
    new_rows = [r for r in rows[120:]] + [r for r in rows[:120] if "tech" in r["labels"]]
    old = api.import_dataset(write_jsonl(tmp_path / "old.jsonl", old_rows), name="tags-old")
    new = api.import_dataset(write_jsonl(tmp_path / "new.jsonl", new_rows), name="tags-new")
    parent = api.train_model(None, old.id, name="tags", backbone="minilm-l6", max_length=64)
    out = CliRunner().invoke(
        app, ["train", "--from", parent["model"], "--data", new.id, "--replay", "10", "--json"]
    )
    assert out.exit_code == 0, out.output[-2000:]
    child = json.loads(out.stdout)
    assert child["model"] == "tags:2" and child["parent"] == "tags:1"
    assert child["replay"] == {
        "per_class": 10,
        "rows": child["replay"]["rows"],
        "valid_rows": child["replay"]["valid_rows"],
        "from_cache": True,
    }
    assert 10 <= child["replay"]["rows"] <= 40  # up to 10 rows per label (a row counts for each of its)
    assert child["old_test"]["n"] == len(old.labels("test")) and child["new_test"]["n"] == len(
        new.labels("test")
    )
    assert child["forgetting"] == pytest.approx(
        100 * (child["old_test"]["parent"] - child["old_test"]["child"]), abs=0.01
    )
    # in micro-F1, what a multi-label model is judged by; both splits scored as one
    assert child["old_test"]["metric"] == child["all_test"]["metric"] == "micro_f1"
    assert child["old_test"]["child"] == pytest.approx(api.evaluate("tags:2", old.id)["micro_f1"])
    assert child["new_test"]["child"] == pytest.approx(child["metrics"]["micro_f1"])
    scores = sorted((child["old_test"]["child"], child["new_test"]["child"]))
    assert scores[0] - 0.05 <= child["all_test"]["child"] <= scores[1] + 0.05
    from PIL import Image

    for label, shade in (("dark", 30), ("light", 220)):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (16, 16), shade + i).save(tmp_path / "pics" / label / f"{i}.png")
    images = api.import_dataset(tmp_path / "pics", name="pics")
    with pytest.raises(ConfigError, match="holds image rows"):
        api.train_model(None, images.id, continue_from=parent["model"])
    before, after = api.load(parent["model"]), api.load(child["model"])
    assert "tech" not in before.classes_ and after.classes_ == [*before.classes_, "tech"]
    tech = [r["text"] for r in new_rows if r["labels"] == ["tech"]][:6]
    assert sum("tech" in labels for labels in after.predict(tech)) >= 4


def test_a_time_budget_bounds_the_grid_of_regressions(tmp_path, monkeypatch, rows):
    """``aimass train --time-budget`` is taken (not "has no option 'time_budget'"): once it is spent
    each candidate keeps the first, most promising setting it tried."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    ds = api.import_dataset(write_jsonl(tmp_path / "topics.jsonl", rows[:80]))
    args = ["train", "--data", ds.id, "--backbone", "minilm-l6", "--set", "max_length=64", "--json"]
    out = CliRunner().invoke(app, [*args, "--time-budget", "0.01s"])
    assert out.exit_code == 0, out.output[-2000:]
    candidates = json.loads(out.stdout)["portfolio"]["candidates"]
    assert {name: c["settings_tried"] for name, c in candidates.items()} == {"network": 1, "tfidf-logreg": 1}
    assert api.load(json.loads(out.stdout)["model"]).get_params()["time_budget"] == "0.01s"
