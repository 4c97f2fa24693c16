"""The console's "label a file" keeps the upload in the model's project, decided as
``POST /v1/uploads?project=P`` is: it kept every file in ``default``, so a user confined to the
model's project got a 403 on ``aimass:project/default/dataset/*`` and everyone else's rows of one
project landed in ``default``.

No model is trained: the registry holds a version record, so its project resolves and the job is
queued; the stored upload's project is read back."""

from __future__ import annotations

import pytest
from tests.conftest import user_with_key
from tests.unit.serve.test_console_gaps import csrf_of, signed_in

from aimass import jobs, paths
from aimass.access import directory
from aimass.data import uploads
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.store.db import ModelVersionRecord, session

ROWS = b"id,text\n1,a private nlp text\n"


def team(project: str) -> list[dict]:
    return [
        {"Effect": "Allow", "Action": "*", "Resource": f"aimass:project/{project}/*"},
        {"Effect": "Allow", "Action": ["*:List"], "Resource": "aimass:project/*"},
    ]


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    with session() as s, s.begin():
        s.add(ModelVersionRecord(name="reviews", version=1, task="text-classification", path=str(tmp_path)))
    for project in ("nlp", "other"):
        directory.create_project(project)
    directory.assign("model", "reviews", "nlp")
    return {
        "alice": user_with_key("alice", "NlpTeam", team("nlp")),
        "eve": user_with_key("eve", "OtherTeam", team("other")),
        "admin": auth.admin_token(),
    }


def label_a_file(key: str):
    with signed_in(create_app(refs=[]), key) as web:
        csrf = csrf_of(web.get("/console/jobs").text)
        return web.post(
            "/console/models/reviews:1/score",
            data={"csrf": csrf},
            files={"file": ("mine.csv", ROWS, "text/csv")},
            follow_redirects=False,
        )


@pytest.mark.parametrize("user", ["alice", "admin"])
def test_the_file_is_kept_in_the_models_project(world, user):
    sent = label_a_file(world[user])
    assert sent.status_code == 303, sent.text[-800:]
    job = jobs.show(sent.headers["location"].rsplit("/", 1)[-1])
    upload = paths.upload_of(job["params"]["path"])
    assert uploads.upload_project(upload) == "nlp" == directory.project_of("job", job["id"])


def test_another_projects_user_gets_the_404_of_the_model_and_nothing_is_kept(world):
    sent = label_a_file(world["eve"])
    assert sent.status_code == 404 and "default" not in sent.text and "nlp" not in sent.text
    assert not [p for p in paths.subdir("uploads").iterdir() if not p.name.startswith(".")]


def test_the_form_is_offered_only_to_who_may_also_upload_into_the_models_project(world):
    """The model page offers "label a file" where both REST twins are allowed: the upload into the
    model's project and the predict job; a user denied imports there gets no form to be refused by."""
    no_imports = [*team("nlp"), {"Effect": "Deny", "Action": "dataset:Import", "Resource": "*"}]
    keys = {"alice": world["alice"], "dora": user_with_key("dora", "NlpNoImports", no_imports)}
    for user, offered in (("alice", True), ("dora", False)):
        with signed_in(create_app(refs=[]), keys[user]) as web:
            page = web.get("/console/models/reviews:1")
        assert page.status_code == 200, page.text[-500:]
        assert ("models/reviews:1/score" in page.text) == offered, user
