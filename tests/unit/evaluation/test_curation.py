"""``dataset_issues`` / ``fix_dataset`` through the Python API: a registered model's predictions,
an image dataset's picture grid, and the checks of a fix."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
from PIL import Image

from aimass import api
from aimass.errors import ConfigError


@pytest.fixture(scope="module")
def news(bbc_csv):
    return api.import_dataset(bbc_csv, name="curation-news")


def test_a_registered_model_can_judge_the_labels(news, small_model, tmp_path):
    record = api.register(small_model, "curation-judge")
    report = api.dataset_issues(news, model=record.ref, out=tmp_path, hard=5)
    assert report["method"]["probabilities"] == f"model {record.ref}"
    assert report["method"]["in_sample_train"] is False  # fitted on texts, not on this stored dataset
    assert report["counts"]["rows"] == 80 and report["accuracy"] > 0.8
    assert len(report["hard_examples"]) == 5
    assert json.loads((tmp_path / "issues.json").read_text())["dataset"]["digest"] == news.digest


def test_an_image_dataset_gets_a_picture_grid(tmp_path, digits_folder):
    ds = api.import_dataset(digits_folder, name="curation-digits")
    report = api.dataset_issues(ds, out=tmp_path / "report", folds=3)
    assert report["dataset"]["kind"] == "image" and report["accuracy"] > 0.8
    assert {(i["label"], i["suggested"]) for i in report["label_issues"]} >= {("seven", "one")}
    png = report["files"]["png"]
    assert png.endswith("issues.png") and Image.open(png).size[0] > 100
    fixed = api.fix_dataset(ds, report, drop=True)
    assert fixed.manifest["changes"]["dropped"] == report["counts"]["label_issues"]

    # the grid over REST and on the console's dataset page (the report in its default folder)
    from fastapi.testclient import TestClient

    from aimass.serve import auth
    from aimass.serve.app import create_app

    api.dataset_issues(ds, folds=3)
    _, key = auth.create_key("curation-pictures", ["manage"])
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(refs=[])) as client:
        png = client.get(f"/v1/datasets/{ds.id}/issues/files/issues.png", headers=headers)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        table = client.get(f"/v1/datasets/{ds.id}/issues/files/issues.csv", headers=headers)
        assert table.status_code == 200 and table.text.startswith("issue,row,split,label")
        for other in ("issues.json", "..%2Fissues.png", "missing.png"):  # only the report's files
            assert (
                client.get(f"/v1/datasets/{ds.id}/issues/files/{other}", headers=headers).status_code == 404
            )
        assert client.get(f"/v1/datasets/{ds.id}/issues/files/issues.png").status_code == 401
        form = client.get("/console/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        client.post("/console/signin", data={"csrf": csrf, "key": auth.admin_token()})
        page = client.get(f"/console/datasets/{ds.id}").text
        assert re.search(rf'<img src="[./]*datasets/{ds.id}/issues/files/issues.png"', page)
        assert f"datasets/{ds.id}/issues/files/issues.csv" in page
        assert client.get(f"/console/datasets/{ds.id}/issues/files/issues.png").content == png.content


@pytest.fixture
def digits_folder(tmp_path):
    """scikit-learn's scanned ones and sevens as 32x32 PNGs in class folders, three of the ones
    filed under ``seven``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    arrays, targets = (data.images * (255 / 16)).round().astype(np.uint8), data.target
    for name in ("one", "seven"):
        (tmp_path / "digits" / name).mkdir(parents=True)
    for digit, name in ((1, "one"), (7, "seven")):
        folder = tmp_path / "digits" / name
        for i, array in enumerate(arrays[targets == digit][:30]):
            target = folder if i >= 3 or digit == 7 else tmp_path / "digits" / "seven"
            image = Image.fromarray(np.kron(array, np.ones((4, 4), dtype=np.uint8)))
            image.save(target / f"{digit}-{i}.png")
    return tmp_path / "digits"


def test_a_fix_checks_the_report(news, tmp_path):
    report = {"dataset": {"digest": "0" * 64}, "label_issues": [], "near_duplicates": []}
    with pytest.raises(ConfigError, match="was made for dataset") as info:
        api.fix_dataset(news, report, drop=True)
    assert "aimass data issues" in info.value.hint
    mine = {**report, "dataset": {"digest": news.digest}}
    with pytest.raises(ConfigError, match="nothing to fix"):
        api.fix_dataset(news, mine)
    with pytest.raises(ConfigError, match="either dropped or relabelled"):
        api.fix_dataset(news, mine, drop=True, relabel=True)
    with pytest.raises(ConfigError, match="flags no row"):
        api.fix_dataset(news, mine, drop=True)
    flagged = {**mine, "label_issues": [{"row": 3, "label": "tech", "suggested": "business", "margin": -0.5}]}
    with pytest.raises(ConfigError, match=r"row\(s\) \[4\] are not flagged"):
        api.fix_dataset(news, flagged, relabel=True, rows=[3, 4])
    same = {**mine, "label_issues": [{"row": 3, "label": "tech", "suggested": "tech", "margin": -0.5}]}
    with pytest.raises(ConfigError, match="flags no row"):  # its suggestion is the label it has
        api.fix_dataset(news, same, relabel=True)
    with pytest.raises(ConfigError, match="no issues report"):
        api.fix_dataset(news, tmp_path / "missing.json", drop=True)
    # a report edited by hand, or another file: the field named, never a traceback
    for broken, field in (
        ([], "it is not a JSON object"),
        ({"dataset": "news"}, "dataset: Input should be a valid dictionary"),
        ({"dataset": {"digest": news.digest}}, "label_issues: Field required"),
        ({**mine, "label_issues": [{"row": 3}]}, "label_issues.0.label: Field required"),
        ({**mine, "label_issues": [{**flagged["label_issues"][0], "row": "x"}]}, "label_issues.0.row:"),
    ):
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(ConfigError, match="is not one `aimass data issues` wrote") as info:
            api.fix_dataset(news, path, drop=True)
        assert field in info.value.message
    with pytest.raises(ConfigError, match="rows must be row numbers"):
        api.fix_dataset(news, flagged, relabel=True, rows=["x"])


def test_bad_options_are_refused(news):
    with pytest.raises(ConfigError, match="folds must be"):
        api.dataset_issues(news, folds=1)
    with pytest.raises(ConfigError, match="threshold must be"):
        api.dataset_issues(news, threshold=1.5)
    with pytest.raises(ConfigError, match="hard must be"):
        api.dataset_issues(news, hard=-1)


def test_the_rest_twin_serves_the_last_report(news):
    from fastapi.testclient import TestClient

    from aimass.serve import auth
    from aimass.serve.app import create_app

    _, key = auth.create_key("curation-ops", ["manage"])
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(refs=[])) as client:
        missing = client.get(f"/v1/datasets/{news.id}/issues", headers=headers)
        assert missing.status_code == 404 and "aimass data issues" in missing.text
        report = api.dataset_issues(news, hard=3)
        served = client.get(f"/v1/datasets/{news.id}/issues", headers=headers)
        assert served.status_code == 200 and served.json()["counts"] == report["counts"]
        assert client.get(f"/v1/datasets/{news.id}/issues").status_code == 401
        # a fix over REST names the stored report it acted on and the JSON fields, not only CLI flags
        flagged = {i["row"] for i in report["label_issues"]}
        clean = next(r for r in range(len(news.rows())) if r not in flagged)
        refused = client.post(
            f"/v1/datasets/{news.id}/fix", json={"drop": True, "rows": [clean]}, headers=headers
        )
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert f"[{clean}] are not flagged in the issues report {report['files']['json']}" in error["message"]
        assert "`rows`" in error["hint"] and "`drop`" in error["hint"]
        nothing = client.post(f"/v1/datasets/{news.id}/fix", json={}, headers=headers).json()["error"]
        assert nothing["message"] == "nothing to fix" and "`drop` or `relabel`" in nothing["hint"]


def test_an_issues_job_writes_the_report_the_rest_twin_serves(news):
    from aimass import jobs
    from aimass.curation import stored_issues
    from aimass.jobs.kinds import get_kind

    with pytest.raises(ConfigError, match="'out' cannot be set"):
        get_kind("issues").check({"data": news.id, "out": "/tmp/elsewhere"})
    for bad, message in (  # refused when submitted, not after a queue and an embedding pass
        ({"network": "no"}, "'network' is invalid: Input should be a valid boolean"),
        ({"netwrk": False}, "'netwrk' is invalid: Extra inputs"),
        ({"folds": 1}, r"folds must be an int in \[2, 50\]"),
        ({"hard": "3"}, "'hard' is invalid"),
    ):
        with pytest.raises(ConfigError, match=message):
            jobs.submit("issues", {"data": news.id, **bad})
    done = jobs.run_foreground(jobs.submit("issues", {"data": news.id, "hard": 2})["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["dataset"] == news.id and done["result"]["hard_examples"] == 2
    assert stored_issues(news.id)["counts"]["hard_examples"] == 2


def test_a_fixed_child_of_the_training_data_is_in_sample(news, small_model, tmp_path):
    """A ``data fix`` child (and its child) holds the texts its parent trained the model on: the
    model's probabilities on them are in sample, though the child's digest is its own."""
    from aimass.data.revise import revise_dataset

    trained = copy.copy(small_model)
    trained.data_digest_ = news.digest  # as `aimass train --data curation-news` records it
    record = api.register(trained, "curation-lineage")
    child = revise_dataset(news, drop={0: "a duplicate"}, name="curation-child")
    grandchild = revise_dataset(child, drop={1: "off topic"}, name="curation-grandchild")
    report = api.dataset_issues(grandchild, model=record.ref, out=tmp_path, hard=0)
    assert report["method"]["in_sample_train"] is True  # its parent's parent trained the model
