"""Multi-label images: a manifest whose labels are lists (or cut at a separator), the task picked by
the stored data, the frozen backbone against the raw pixels, evaluation, exports, the CLI, auto and
the REST answer with every label."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aimass import api, scoring
from aimass.cli.main import app
from aimass.errors import DataError
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.tasks.image_multilabel import ImageMultiLabel


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """72 mosaics of scanned digits 0, 1 and 7 (one or two digits each) as PNG files, and their labels."""
    root = tmp_path_factory.mktemp("mosaics")
    images, labels = ImageMultiLabel.sample_data(per_class=12)
    (root / "img").mkdir()
    rows = []
    for i, (data, tags) in enumerate(zip(images, labels)):
        (root / "img" / f"{i}.png").write_bytes(data)
        rows.append({"image": f"img/{i}.png", "labels": tags})
    return root, rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_a_manifest_with_label_lists_imports_as_multilabel_images_and_bad_rows_are_rejected_by_line(
    tmp_path, monkeypatch, folder
):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    root, rows = folder
    bad = [
        {"image": "img/0.png", "labels": {"0": 1}},  # line 73: not labels
        {"image": "img/1.png", "labels": []},  # line 74: none
        {"image": "img/2.png", "labels": ["1", "7"]},  # line 75: img/2.png is also labelled ['0']
    ]
    ds = api.import_dataset(write_jsonl(root / "tags.jsonl", rows + bad))
    assert ds.kind == "multilabel-image" and ds.classes == ["0", "1", "7"]
    assert sum(ds.manifest["counts"]["by_class"].values()) == sum(len(r["labels"]) for r in rows) - 1
    rejects = {r["line"]: r for r in map(json.loads, ds.rejects_path.read_text().splitlines())}
    assert "neither a list nor text" in rejects[73]["reason"]
    assert rejects[74]["reason"].startswith("no labels: give every row at least one")
    assert rejects[75]["kind"] == rejects[3]["kind"] == "conflicting labels"  # both copies, with their lines
    assert len(ds.labels()) + len(rejects) == len(rows) + len(bad)  # nothing dropped unreported
    # every label reaches valid and test (stratified by each image's rarest label), and no warning
    # speaks of a stratum as if it were a label
    assert set(ds.manifest["counts"]["by_split_class"]["test"]) == {"0", "1", "7"}
    assert not any("only" in w for w in ds.manifest["warnings"])

    # the same manifest as a CSV, the labels cut at ';': the same images and labels
    with (root / "tags.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["path", "labels"], *([r["image"], ";".join(r["labels"])] for r in rows)])
    cut = api.import_dataset(root / "tags.csv", label_sep=";")
    assert cut.kind == "multilabel-image" and cut.manifest["counts"]["by_class"] == {
        label: sum(label in r["labels"] for r in rows) for label in ("0", "1", "7")
    }
    # a separator means nothing to class folders: said so, not ignored
    (tmp_path / "folders" / "a").mkdir(parents=True)
    (tmp_path / "folders" / "a" / "x.png").write_bytes((root / "img" / "0.png").read_bytes())
    with pytest.raises(DataError, match="label_sep applies to an image manifest"):
        api.import_dataset(tmp_path / "folders", label_sep=";")


def test_a_given_split_needs_each_label_in_train_not_each_combination(tmp_path, monkeypatch, folder):
    """A label set seen only in the test split is fine when each of its labels is in train."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    root, rows = folder
    given = [dict(r, split="test" if r["labels"] == ["0", "7"] else "train") for r in rows]
    ds = api.import_dataset(write_jsonl(root / "split.jsonl", given))
    assert ds.manifest["split_source"] == "given"
    assert ds.manifest["counts"]["by_split"]["test"] == sum(r["labels"] == ["0", "7"] for r in rows)
    only_test = [dict(r, split="test" if "7" in r["labels"] else "train") for r in rows]
    with pytest.raises(DataError, match=r"class\(es\) \['7'\] have no rows in the train split"):
        api.import_dataset(write_jsonl(root / "split7.jsonl", only_test))


def test_training_exports_and_serving_answer_every_label(tmp_path, monkeypatch, folder):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    root, rows = folder
    ds = api.import_dataset(write_jsonl(root / "digits.jsonl", rows), name="digits")
    result = api.train_model(None, ds.id)
    model = api.load(result["model"])
    assert model.task == "image-multilabel"
    metrics = result["metrics"]
    assert metrics["micro_f1"] >= 0.8 and 0 < metrics["threshold"] < 1
    candidates = result["portfolio"]["candidates"]
    assert set(candidates) == {"network", "pixels-logreg"}
    best = max(
        candidates, key=lambda n: (candidates[n]["micro_f1"], candidates[n]["macro_f1"], n == "network")
    )
    assert result["portfolio"]["chosen"] == best
    test_images = ds.inputs("test")
    answers = model.predict(test_images[:4])
    assert all(isinstance(a, list) and a and set(a) <= {"0", "1", "7"} for a in answers)
    report = model.evaluate(api.load_dataset(ds.id), "test")
    assert report["n"] == len(test_images) and report["micro_f1"] == pytest.approx(metrics["micro_f1"])
    assert set(report["top_losses"][0]) >= {"image", "actual", "predicted", "scores", "loss"}

    # saved and loaded: the same scores; the ONNX runtime and both exports answer the same
    again = api.load(result["model"])
    assert (again.predict_proba(test_images) == model.predict_proba(test_images)).all()
    from aimass.exporters import export

    for fmt in ("onnx", "safetensors"):
        done = export(result["model"], fmt, tmp_path / f"export-{fmt}")
        assert done["check"]["predict_py_max_abs_diff_proba"] < 1e-4, (fmt, done["check"])
        prep = json.loads((tmp_path / f"export-{fmt}" / "preprocessing.json").read_text())
        assert prep["activation"] == "sigmoid" and prep["threshold"] == model.threshold_

    # bulk scoring of a folder: the label column lists every label given, joined by ';'
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for i, path in enumerate(test_images[:3]):
        (unlabelled / f"{i}.png").write_bytes(Path(path).read_bytes())
    scoring.predict_file(result["model"], unlabelled, tmp_path / "scored.csv")
    with open(tmp_path / "scored.csv", encoding="utf-8") as fh:
        scored = [row["label"].split(";") for row in csv.DictReader(fh)]
    assert scored == model.predict(test_images[:3])

    # the CLI: predict prints every label with its score; evaluate the per-label table
    runner = CliRunner()
    out = runner.invoke(app, ["predict", result["model"], test_images[0]])
    assert out.exit_code == 0, out.output
    assert "labels" in out.output
    out = runner.invoke(app, ["evaluate", result["model"]])
    assert out.exit_code == 0, out.output
    assert "micro-F1" in out.output and "pixels-logreg" in out.output and "Top losses" in out.output

    # REST: a list of labels per image, on torch and on the ONNX int8 child
    sent = [base64.b64encode(Path(p).read_bytes()).decode() for p in test_images[:3]]
    child = api.compress(result["model"], "onnx-int8")
    assert child["gate"]["status"] == "accepted"
    with TestClient(create_app([result["model"]], open_predict=True)) as client:
        body = client.post(f"/v1/models/{ds.name}/predict", json={"inputs": sent}).json()
        form = client.get("/console/signin").text
        client.post("/console/signin", data={"csrf": csrf_of(form), "key": auth.admin_token()})
        listed = client.get("/console/datasets").text
        csrf = csrf_of(client.get(f"/console/try/{ds.name}").text)
        upload = [("files", ("first.png", Path(test_images[0]).read_bytes(), "image/png"))]
        page = client.post(f"/console/try/{ds.name}", data={"csrf": csrf}, files=upload).text
    assert re.search(rf"<code>{ds.id[:16]}</code></td><td>multi-label images</td>", listed)
    assert [p["labels"] for p in body["predictions"]] == model.predict(test_images[:3])
    assert set(body["predictions"][0]["scores"]) == {"0", "1", "7"}
    shown = body["predictions"][0]  # the console's "try a model" page shows every label given, with its score
    assert ">labels<" in page and "first.png" in page
    assert all(f"<strong>{label}</strong> {shown['scores'][label]:.3f}" in page for label in shown["labels"])
    with TestClient(create_app([child["model"]], open_predict=True)) as client:
        quick = client.post(f"/v1/models/{ds.name}/predict", json={"inputs": sent}).json()
    assert [p["labels"] for p in quick["predictions"]] == [p["labels"] for p in body["predictions"]]


def test_auto_detects_an_image_manifest_with_label_lists(tmp_path, monkeypatch, folder):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    root, rows = folder
    path = write_jsonl(root / "auto.jsonl", rows)
    from aimass.autolearn.run import detect_task

    task, why = detect_task(path)
    assert task == "image-multilabel" and "labels are lists" in why


def test_label_issues_name_the_label_to_add_or_remove_and_a_fix_is_a_new_version(
    tmp_path, monkeypatch, folder
):
    """Four images with a digit left out of their labels: ``data issues`` (out of fold, one-vs-rest
    per label on the frozen features) flags them with the label to add, and ``fix`` stores the
    suggested label sets as a new version of the images."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    root, rows = folder
    wrong = [i for i, r in enumerate(rows) if len(r["labels"]) == 2][:4]
    noisy = [dict(r, labels=r["labels"][:1]) if i in wrong else r for i, r in enumerate(rows)]
    ds = api.import_dataset(write_jsonl(root / "noisy.jsonl", noisy), name="noisy")
    report = api.dataset_issues(ds, out=tmp_path / "issues")
    row_of = {r["source"]: i for i, r in enumerate(ds.rows())}
    planted = {row_of[rows[i]["image"]]: rows[i]["labels"][1] for i in wrong}
    flagged = {i["row"]: i for i in report["label_issues"]}
    found = set(planted) & set(flagged)
    assert len(found) >= 3, (planted, list(flagged)[:10])
    assert all(flagged[r]["add"] == [planted[r]] for r in found)
    assert (tmp_path / "issues" / "issues.png").is_file()
    child = api.fix_dataset(ds, tmp_path / "issues" / "issues.json", relabel=True, rows=sorted(found))
    assert child.kind == "multilabel-image" and child.id != ds.id and len(child.rows()) == len(ds.rows())
    relabelled = {r["source"]: r["label"] for r in child.rows()}
    given_back = [rows[i] for i in wrong if row_of[rows[i]["image"]] in found]
    assert all(relabelled[r["image"]] == "|".join(r["labels"]) for r in given_back)
