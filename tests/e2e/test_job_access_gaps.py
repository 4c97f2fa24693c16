"""Access gaps an audit found in jobs, over REST with real keys and policies: an evaluation saved by a
key that may only read the model, another project's upload used as data, and a model's aliases
named to a caller who may not read it.

No model is trained: the registry holds version records (and aliases) so refs, projects and stages
resolve; every request here is decided before any model would load.
"""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from tests.conftest import user_with_key

from aimass import paths
from aimass.access import audit, directory
from aimass.data.uploads import store_upload
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.store.db import AliasRecord, ModelVersionRecord, session

ROWS = "text,label\n" + "\n".join(f"secret nlp row {i} about {w},{w}" for i in range(12) for w in "ab")


def team(project: str) -> list[dict]:
    return [
        {"Effect": "Allow", "Action": "*", "Resource": f"aimass:project/{project}/*"},
        {"Effect": "Allow", "Action": ["*:List"], "Resource": "aimass:project/*"},
    ]


# the auditor's "ana": reads nlp's models, submits jobs there and uploads/imports into it; no training
READER = [
    {
        "Effect": "Allow",
        "Action": ["model:Read", "model:List", "job:Submit", "job:Read", "job:List", "dataset:Import"],
        "Resource": "aimass:project/nlp/*",
    }
]


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIMASS_DATA_ROOTS", raising=False)
    with session() as s, s.begin():
        for name, version in (("reviews", 2), ("reviews", 3), ("evemodel", 1)):
            path = str(tmp_path / f"{name}{version}")
            s.add(ModelVersionRecord(name=name, version=version, task="text-classification", path=path))
        s.add(AliasRecord(name="reviews", alias="prod-secret", version=3))
    for project, model in (("nlp", "reviews"), ("other", "evemodel")):
        directory.create_project(project)
        directory.assign("model", model, project)
    keys = {
        "alice": user_with_key("alice", "NlpTeam", team("nlp"), scopes=("predict",)),
        "eve": user_with_key("eve", "OtherTeam", team("other"), scopes=("predict",)),
        "ana": user_with_key("ana", "NlpReader", READER, scopes=("manage",)),
        "admin": auth.admin_token(),
    }
    with TestClient(create_app([])) as client:
        yield client, {user: {"Authorization": f"Bearer {key}"} for user, key in keys.items()}


def submit(client, headers, kind: str, params: dict, project: str):
    return client.post("/v1/jobs", json={"kind": kind, "params": params, "project": project}, headers=headers)


def test_saving_an_evaluation_is_a_write_to_the_version(world):
    """``"save": true`` rewrites a version's stored evaluation and headline metrics: a key that may
    only read the model (and submit jobs) was let do it. It needs ``model:Train`` on the version the
    ref opens (an alias or a bare name decided as that version), as a retry of such a job does."""
    client, keys = world
    for ref, version in (
        ("reviews:2", "reviews:2"),
        ("reviews@prod-secret", "reviews:3"),
        ("reviews", "reviews:3"),
    ):
        saved = submit(client, keys["ana"], "evaluate", {"model": ref, "save": True}, "nlp")
        assert saved.status_code == 403, (ref, saved.text)
        assert f"model:Train on aimass:project/nlp/model/{version}" in saved.json()["error"]["message"]
    unsaved = submit(client, keys["ana"], "evaluate", {"model": "reviews:2"}, "nlp")
    assert unsaved.status_code == 202, unsaved.text  # scoring without saving stays a read
    assert (
        submit(client, keys["alice"], "evaluate", {"model": "reviews", "save": True}, "nlp").status_code
        == 202
    )
    # another project's model: a 404, as a model that does not exist
    theirs = submit(client, keys["eve"], "evaluate", {"model": "reviews:2", "save": True}, "other")
    assert theirs.status_code == 404, theirs.text
    assert audit.query(principal="eve", action="model:Train")[0]["decision"] == "implicitDeny"
    # a Deny on training one version holds for saving onto it however it is named
    directory.put_policy(
        "NoTrain3",
        {
            "Statement": [
                {"Effect": "Deny", "Action": "model:Train", "Resource": "aimass:project/nlp/model/reviews:3"}
            ]
        },
    )
    directory.attach("NoTrain3", "user", "alice")
    for ref in ("reviews:3", "reviews:03", "reviews@prod-secret", "reviews"):
        denied = submit(client, keys["alice"], "evaluate", {"model": ref, "save": True}, "nlp")
        assert denied.status_code == 403 and "explicitly denied" in denied.json()["error"]["message"], ref
    # a retry runs the job's stored params again: decided as submitting them
    first = submit(client, keys["admin"], "evaluate", {"model": "reviews:2", "save": True}, "nlp").json()
    client.post(f"/v1/jobs/{first['id']}/cancel", headers=keys["admin"])
    retried = client.post(f"/v1/jobs/{first['id']}/retry", headers=keys["ana"])
    assert retried.status_code == 403 and "model:Train" in retried.json()["error"]["message"], retried.text


def test_another_projects_upload_is_not_data_for_a_job_or_an_import(world):
    """An upload is data of the project it was sent to: every ``uploads/<id>/...`` path was granted
    to every caller, so eve (project other) evaluated on, imported and auto-trained on nlp's file.
    She gets the 404 of a missing upload (naming no project); nlp's team and the uploader use it."""
    client, keys = world
    path = store_upload(io.BytesIO(ROWS.encode()), "heldout.csv", project="nlp")["path"]
    upload = paths.upload_of(path)
    refused = {
        "evaluate": submit(
            client, keys["eve"], "evaluate", {"model": "evemodel:1", "data": path, "save": True}, "other"
        ),
        "import job": submit(client, keys["eve"], "import", {"path": path}, "other"),
        "auto": client.post("/v1/auto", json={"path": path, "project": "other"}, headers=keys["eve"]),
        "import": client.post("/v1/datasets", json={"path": path, "project": "other"}, headers=keys["eve"]),
    }
    mine = store_upload(io.BytesIO(ROWS.encode()), "mine.csv", project="other")["path"]
    refused["import's test rows"] = client.post(
        "/v1/datasets", json={"path": mine, "test_path": path, "project": "other"}, headers=keys["eve"]
    )
    for what, answer in refused.items():
        assert answer.status_code == 404, (what, answer.text)
        assert answer.json()["error"]["message"] == f"No upload '{upload}'.", what
    assert not directory.owners("dataset")  # nothing was imported
    # nlp's team, and a reader who may import into nlp (who uploads and lists its uploads), use it
    assert (
        submit(client, keys["alice"], "evaluate", {"model": "reviews:2", "data": path}, "nlp").status_code
        == 202
    )
    assert (
        submit(client, keys["ana"], "evaluate", {"model": "reviews:2", "data": path}, "nlp").status_code
        == 202
    )
    # eve's own upload is hers
    assert (
        submit(client, keys["eve"], "evaluate", {"model": "evemodel:1", "data": mine}, "other").status_code
        == 202
    )


def test_an_upload_without_a_record_is_no_projects(world):
    """A folder under uploads with no record (an upload cut short, or kept before uploads had
    projects) is no project's: only a grant on every resource (the admin token, an unbound
    ``manage`` key) may name it, as before; a project's user may not."""
    client, keys = world
    stray = paths.subdir("uploads") / "0123456789ab" / "stray.csv"
    stray.parent.mkdir(parents=True)
    stray.write_text(ROWS)
    answer = client.post("/v1/datasets", json={"path": str(stray), "project": "nlp"}, headers=keys["alice"])
    assert answer.status_code == 404 and "No upload '0123456789ab'" in answer.text, answer.text
    job = submit(client, keys["alice"], "evaluate", {"model": "reviews:2", "data": str(stray)}, "nlp")
    assert job.status_code == 404, job.text
    made = client.post("/v1/datasets", json={"path": str(stray), "project": "nlp"}, headers=keys["admin"])
    assert made.status_code == 201, made.text


def test_a_jobs_model_named_by_alias_names_nothing_to_who_may_not_read_it(world):
    """eve's job on ``reviews@staging`` was answered "Model 'reviews' has no alias 'staging'.
    Aliases: reviews@prod-secret.": the model's name and aliases, of a project she may not read.
    She gets the version routes' words; nlp's team still learns why."""
    client, keys = world
    for kind, params in (
        ("evaluate", {"model": "reviews@staging"}),
        ("predict", {"model": "reviews@staging", "path": "x"}),  # the kind's own check looked it up first
        ("evaluate", {"model": "reviews:9"}),
    ):
        answer = submit(client, keys["eve"], kind, params, "other")
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["message"] == f"No model '{params['model']}'.", answer.text
        assert "prod-secret" not in answer.text
    compared = client.get(
        "/v1/versions/compare", params={"a": "reviews@staging", "b": "evemodel:1"}, headers=keys["eve"]
    )
    assert compared.status_code == 404 and "prod-secret" not in compared.text, compared.text
    ours = submit(client, keys["alice"], "evaluate", {"model": "reviews@staging"}, "nlp")
    assert ours.status_code == 404 and "Aliases: reviews@prod-secret" in ours.text, ours.text
