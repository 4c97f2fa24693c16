"""Label issues in the console and over REST: find them (a job), see the report on the dataset's
page, fix the rows ticked (a new version); ``POST /v1/datasets/{id}/fix`` decided by the policies."""

from __future__ import annotations

import csv
import re

import pytest
from fastapi.testclient import TestClient
from tests.conftest import bbc_sample, user_with_key
from tests.unit.serve.test_console import csrf_of, signed_in

from aimass import api, jobs
from aimass.serve import auth
from aimass.serve.app import create_app

FLIPPED = {0: "sports", 20: "tech", 40: "business"}  # row of the file -> the wrong label it gets


@pytest.fixture
def noisy_news(tmp_path, monkeypatch):
    """80 BBC articles (16 a topic), three of them given another topic's label; all rows train."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    texts, labels = bbc_sample()
    path = tmp_path / "news.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((t, FLIPPED.get(i, label)) for i, (t, label) in enumerate(zip(texts, labels)))
    ds = api.import_dataset(path, name="noisy-news", test_frac=0, valid_frac=0)
    stored = {" ".join(r["text"].split())[:80]: i for i, r in enumerate(ds.rows())}
    rows = {stored[" ".join(texts[i].split())[:80]]: labels[i] for i in FLIPPED}  # stored row -> right label
    return ds, rows


def test_the_console_finds_label_issues_and_relabels_the_rows_ticked(noisy_news):
    ds, flipped = noisy_news
    with signed_in(create_app(refs=[]), auth.admin_token()) as client:
        page = client.get(f"/console/datasets/{ds.id}").text
        assert "No report yet" in page and "Find label issues" in page
        asked = client.post(
            f"/console/datasets/{ds.id}/issues", data={"csrf": csrf_of(page)}, follow_redirects=False
        )
        assert asked.status_code == 303, asked.text[-300:]
        job_id = asked.headers["location"].rsplit("/", 1)[1]
        assert jobs.run_foreground(job_id)["status"] == "succeeded"
        assert f"datasets/{ds.id}#issues" in client.get(f"/console/jobs/{job_id}").text

        page = client.get(f"/console/datasets/{ds.id}").text
        ticked = [int(r) for r in re.findall(r'name="row" value="(\d+)"', page)]
        found = sorted(set(ticked) & set(flipped))
        assert len(found) >= 2 and len(ticked) <= 10, ticked
        nothing = client.post(
            f"/console/datasets/{ds.id}/fix", data={"csrf": csrf_of(page), "action": "relabel"}
        )
        assert nothing.status_code == 422 and "No row ticked" in nothing.text
        fixed = client.post(
            f"/console/datasets/{ds.id}/fix",
            data={"csrf": csrf_of(page), "action": "relabel", "row": [str(r) for r in found]},
            follow_redirects=False,
        )
        assert fixed.status_code == 303, fixed.text[-300:]
        child_id = fixed.headers["location"].rsplit("/", 1)[1]
        child_page = client.get(f"/console/datasets/{child_id}").text
        assert f"{len(found)} relabelled, 0 dropped" in child_page
    child = api.load_dataset(child_id)
    assert child.manifest["parent"]["id"] == ds.id
    assert all(child.labels()[row] == flipped[row] for row in found)  # each got its true topic back


def test_the_rest_fix_is_decided_by_the_policies(noisy_news):
    ds, flipped = noisy_news
    api.dataset_issues(ds, hard=0)
    reader = user_with_key(
        "rita",
        "RitaReads",
        [{"Effect": "Allow", "Action": ["dataset:Read", "dataset:List"], "Resource": "*"}],
    )
    barred = user_with_key(
        "bart",
        "BartNoFixes",
        [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "dataset:Import",
                "Resource": "aimass:project/default/dataset/noisy-news",
            },
        ],
    )
    guarded = user_with_key(  # may fix anything, but never add a version to dataset 'protected'
        "nina",
        "NinaNotProtected",
        [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "dataset:Import",
                "Resource": "aimass:project/default/dataset/protected",
            },
        ],
    )
    _, manager = auth.create_key("fixer", ["manage"])
    body = {"drop": True}
    with TestClient(create_app(refs=[])) as client:
        for key in (reader, barred):
            denied = client.post(
                f"/v1/datasets/{ds.id}/fix", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert denied.status_code == 403, denied.text
        with signed_in(client.app, reader) as console:  # the page shows the report, no boxes to fix
            page = console.get(f"/console/datasets/{ds.id}").text
            assert "Likely label errors" in page and 'name="row"' not in page
        into = client.post(
            f"/v1/datasets/{ds.id}/fix",
            json={"drop": True, "name": "protected"},
            headers={"Authorization": f"Bearer {guarded}"},
        )
        assert into.status_code == 403 and "dataset:Import" in into.json()["error"]["message"], into.text
        headers = {"Authorization": f"Bearer {manager}"}
        bad = client.post(f"/v1/datasets/{ds.id}/fix", json={"drop": True, "name": "../x"}, headers=headers)
        assert bad.status_code == 422
        done = client.post(f"/v1/datasets/{ds.id}/fix", json=body, headers=headers)
        assert done.status_code == 201, done.text
        child = done.json()
        assert child["changes"]["dropped"] >= 2 and child["rows"] == 80 - child["changes"]["dropped"]
        again = client.post(f"/v1/datasets/{child['id']}/fix", json=body, headers=headers)
        assert again.status_code == 404 and "aimass data issues" in again.text  # no report for it yet
