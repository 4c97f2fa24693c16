"""Access end to end, over REST: two users in two projects, a Deny that beats Admin, the audit log.

No model is trained: the registry holds two version records (and a production alias) so ARNs,
projects and stages resolve; every request here is decided before any model would load.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from tests.conftest import user_with_key

from aimass.access import audit, directory
from aimass.data import load_dataset
from aimass.errors import PermissionDenied
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.serve.engine import Service
from aimass.store import registry
from aimass.store.db import AliasRecord, ModelVersionRecord, session

TEAM = "Allow every action on the project's resources, and listing"
NO_PROD = {
    "Statement": [
        {
            "Sid": "NoProductionDeploys",
            "Effect": "Deny",
            "Action": "model:Deploy",
            "Resource": "aimass:project/*/model/*",
            "Condition": {"StringEquals": {"aimass:ModelStage": "production"}},
        }
    ]
}


def team(project: str) -> dict:
    return {
        "Statement": [
            {
                "Sid": f"{project}All",
                "Effect": "Allow",
                "Action": "*",
                "Resource": f"aimass:project/{project}/*",
            },
            {"Sid": "List", "Effect": "Allow", "Action": ["*:List"], "Resource": "aimass:project/*"},
        ]
    }


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    with session() as s, s.begin():
        for name, version in (("reviews", 3), ("faces", 1)):
            s.add(
                ModelVersionRecord(
                    name=name, version=version, task="text-classification", path=str(tmp_path / name)
                )
            )
        s.add(AliasRecord(name="reviews", alias="production", version=3))
    keys = {}
    for user, project, model in (("alice", "nlp", "reviews"), ("bob", "cv", "faces")):
        directory.create_project(project)
        directory.create_user(user)
        directory.put_policy(f"{project}Team", team(project), description=TEAM)
        directory.attach(f"{project}Team", "user", user)
        for kind in ("model", "service"):
            directory.assign(kind, model, project)
        record, keys[user] = auth.create_key(user, ["predict"])
        directory.bind_key(record.id, user=user)
    directory.create_user("carol")
    directory.put_policy("NoProdDeploys", NO_PROD)
    directory.attach("Admin", "user", "carol")
    directory.attach("NoProdDeploys", "user", "carol")
    record, keys["carol"] = auth.create_key("carol", ["predict"])
    directory.bind_key(record.id, user="carol")
    with TestClient(create_app([])) as client:
        client.keys = keys
        yield client, {u: {"Authorization": f"Bearer {k}"} for u, k in keys.items()}


def served(ref: str) -> SimpleNamespace:
    """A stand-in deployment: what the list routes read of one (no model is loaded)."""
    record = SimpleNamespace(created=None, task="text-classification")
    return SimpleNamespace(
        ref=ref, record=record, weight=100, info=lambda: {"ref": ref, "weight": 100, "queue": 0}
    )


def test_a_user_cannot_see_predict_deploy_or_delete_another_projects_resources(world):
    client, keys = world
    alice = keys["alice"]
    answers = {
        "predict": client.post("/v1/models/faces/predict", json={"inputs": ["x"]}, headers=alice),
        "read": client.get("/v1/services/faces", headers=alice),
        "deploy": client.post("/v1/services", json={"model": "faces:1"}, headers=alice),
        "delete": client.delete("/v1/services/faces", headers=alice),
    }
    for what, answer in answers.items():
        # 404, not 403: a key cannot even learn that another project's model exists
        assert answer.status_code == 404, (what, answer.text)
        assert answer.json()["error"]["message"] in (
            "No model 'faces:1'.",
            "No model 'faces'.",
            "No service 'faces'.",
            "Model 'faces' is not served here.",  # the predict route's own words for a name not served
        )
    denied = audit.query(principal="alice")
    assert {row["decision"] for row in denied} == {"implicitDeny"} and len(denied) == 4
    request_id = answers["deploy"].headers["x-request-id"]
    assert "no statement allowed it" in audit.explain_request(request_id)["decisions"][0]["why"]
    # her own project's model is hers: the policy lets it through (the engine then says it is not deployed)
    own = client.get("/v1/services/reviews", headers=alice)
    assert own.status_code == 404  # the same words as the guard's 404: nothing to tell them apart by
    decided = audit.explain_request(own.headers["x-request-id"])["decisions"]
    assert [d["decision"] for d in decided] == ["allowed"], decided
    assert client.get("/v1/services/faces", headers=keys["bob"]).json()["error"]["code"] == "not_found"
    assert not audit.query(principal="bob", decision="implicitDeny")


def test_a_deny_on_production_deploys_wins_over_admin_and_names_its_sid(world):
    client, keys = world
    answer = client.post("/v1/services", json={"model": "reviews@production"}, headers=keys["carol"])
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == "permission_denied"
    assert "model:Deploy on aimass:project/nlp/model/reviews:3" in error["message"]
    assert "'NoProductionDeploys' of policy 'NoProdDeploys'" in error["message"]
    assert "'Admin'" in error["message"]  # the Allow it overrode
    row = audit.query(principal="carol", action="model:Deploy")[0]
    assert row["decision"] == "explicitDeny" and row["request_id"] == error["request_id"]
    assert row["matched"] == [
        {"policy": "NoProdDeploys", "sid": "NoProductionDeploys", "effect": "Deny", "kind": "identity"}
    ]
    ask = {"user": "carol", "action": "model:Deploy", "resource": "aimass:project/nlp/model/reviews:3"}
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    simulated = client.post("/v1/policies/simulate", json=ask, headers=admin).json()
    # without the stage the Deny's condition is false (a missing key never matches), and the simulator says so
    assert simulated["decision"] == "allowed" and simulated["missing_context"] == ["aimass:ModelStage"]
    ask["context"] = {"aimass:ModelStage": "production"}
    simulated = client.post("/v1/policies/simulate", json=ask, headers=admin).json()
    assert simulated["decision"] == "explicitDeny" and simulated["matched"][0]["sid"] == "NoProductionDeploys"


def named(body: dict | None, name: str) -> dict | None:
    return None if body is None else {k: v.format(name) if v == "{}" else v for k, v in body.items()}


def test_another_projects_name_is_answered_word_for_word_as_one_of_hers_that_does_not_exist(world):
    """The guard's 404 for a name the caller may not read is the route's own 404 for a name that does
    not exist: no message or hint tells another project's names from names that are not there."""
    client, keys = world
    for kind in ("model", "service"):
        directory.assign(kind, "ghost", "nlp")  # alice may read it: the route itself answers
    asks = (
        ("GET", "/v1/services/{}", None),
        ("GET", "/v1/services/{}/events", None),
        ("GET", "/v1/services/{}/metrics", None),
        ("POST", "/v1/models/{}/predict", {"inputs": ["x"]}),
        ("GET", "/v1/models/{}", None),
        ("GET", "/v1/versions/{}:1", None),
        ("POST", "/v1/chat/completions", {"model": "{}", "messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/tokenize", {"model": "{}", "prompt": "hi"}),
    )
    for method, route, body in asks:
        answers = [
            client.request(method, route.format(name), json=named(body, name), headers=keys["alice"])
            for name in ("faces", "ghost")
        ]
        assert [a.status_code for a in answers] == [404, 404], (route, [a.text for a in answers])
        theirs, missing = ({k: v for k, v in a.json()["error"].items() if k != "request_id"} for a in answers)
        assert theirs == json.loads(json.dumps(missing).replace("ghost", "faces")), (route, theirs, missing)


def test_existing_keys_keep_their_scopes(world):
    client, _ = world
    _, predict_only = auth.create_key("app", ["predict"])
    answer = client.get("/v1/keys", headers={"Authorization": f"Bearer {predict_only}"})
    assert answer.status_code == 403 and "key:Read" in answer.json()["error"]["message"]
    _, manager = auth.create_key("ops", ["manage"])
    assert client.get("/v1/keys", headers={"Authorization": f"Bearer {manager}"}).status_code == 200
    assert (
        client.get("/v1/keys", headers={"Authorization": f"Bearer {auth.admin_token()}"}).status_code == 200
    )


@pytest.fixture
def listed(world):
    """Two services as the list routes see them (stand-ins: no model is loaded)."""
    client, keys = world
    services = client.app.state.engine.services
    for name, ref in (("reviews", "reviews:3"), ("faces", "faces:1")):
        services[name] = Service(name, [served(ref)], state="ready")
    yield client, keys
    services.clear()


def test_lists_show_each_user_only_their_projects_models_and_services(listed):
    client, keys = listed
    for user, own, other in (("alice", "reviews", "faces"), ("bob", "faces", "reviews")):
        models = client.get("/v1/models", headers=keys[user]).json()
        assert [m["name"] for m in models["models"]] == [own], user
        ids = {m["id"] for m in models["data"]}
        assert f"{own}:" in " ".join(ids) and not any(i.startswith(other) for i in ids), (user, ids)
        services = client.get("/v1/services", headers=keys[user])
        assert [s["name"] for s in services.json()["services"]] == [own], (user, services.text)
        assert (
            client.get(
                "/v1/versions/" + ("faces:1" if user == "alice" else "reviews:3"), headers=keys[user]
            ).status_code
            == 404
        )
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    assert {s["name"] for s in client.get("/v1/services", headers=admin).json()["services"]} == {
        "reviews",
        "faces",
    }
    # the console lists the same
    page = TestClient(client.app)
    form = page.get("/console/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert page.post("/console/signin", data={"csrf": csrf, "key": client.keys["alice"]}).status_code == 200
    services = page.get("/console/services")
    assert services.status_code == 200 and "reviews" in services.text and "faces" not in services.text
    assert page.get("/console/services/faces").status_code == 404  # as REST: not even its name
    served_page = page.get("/console/try")
    assert "reviews" in served_page.text and "faces" not in served_page.text


def test_moving_the_production_alias_is_a_production_deploy(world):
    client, keys = world
    answer = client.put("/v1/versions/faces:1/aliases/production", headers=keys["carol"])
    assert answer.status_code == 403, answer.text
    assert "'NoProductionDeploys' of policy 'NoProdDeploys'" in answer.json()["error"]["message"]
    row = audit.query(principal="carol", action="model:Deploy")[0]
    assert row["decision"] == "explicitDeny" and row["resource"] == "aimass:project/cv/model/faces:1"
    # removing it empties production: decided on the version it names, as moving it
    registry.set_alias("faces:1", "production")
    answer = client.delete("/v1/versions/faces/aliases/production", headers=keys["carol"])
    assert answer.status_code == 403, answer.text
    row = audit.query(principal="carol", action="model:Deploy")[0]
    assert row["decision"] == "explicitDeny" and row["resource"] == "aimass:project/cv/model/faces:1"
    assert registry.aliases("faces") == {"production": 1}
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    assert client.delete("/v1/versions/faces:2/aliases/production", headers=admin).status_code == 409
    answer = client.delete("/v1/versions/faces:1/aliases/production", headers=admin)
    assert answer.json() == {"alias": "faces@production", "ref": "faces:1", "removed": True}
    assert registry.aliases("faces") == {}
    assert client.delete("/v1/versions/faces/aliases/production", headers=admin).status_code == 404


def test_a_deny_holds_however_the_version_is_named_moved_or_reached(world):
    """A helper's audit: a second alias hid ``production`` from a Deny (the first alias by name was
    the stage decided), ``reviews:03`` was decided as a model no Deny names, a traffic split and an
    auto job that deploys never asked for ``model:Deploy``, and nothing asked for ``model:Train``."""
    client, keys = world
    with session() as s, s.begin():
        s.add(AliasRecord(name="reviews", alias="aaa", version=3))  # a second alias on production's version
    answer = client.post("/v1/services", json={"model": "reviews:3"}, headers=keys["carol"])
    assert answer.status_code == 403 and "NoProductionDeploys" in answer.json()["error"]["message"], (
        answer.text
    )
    weights = client.put("/v1/services/reviews/traffic", json={"reviews:3": 100}, headers=keys["carol"])
    assert weights.status_code == 403 and "NoProductionDeploys" in weights.json()["error"]["message"]
    auto = {"data": "anything", "name": "reviews", "deploy": True, "project": "nlp"}
    answer = client.post("/v1/auto", json=auto, headers=keys["carol"])
    assert answer.status_code == 403 and "NoProductionDeploys" in answer.json()["error"]["message"]
    assert "model:Deploy on aimass:project/nlp/model/reviews" in answer.json()["error"]["message"]

    deny = {
        "Sid": "NotThisOne",
        "Effect": "Deny",
        "Action": ["model:Read", "model:Export"],
        "Resource": "aimass:project/nlp/model/reviews:3",
    }
    untrained = {
        "Sid": "NoTraining",
        "Effect": "Deny",
        "Action": "model:Train",
        "Resource": ["aimass:project/nlp/model/reviews", "aimass:project/nlp/model/ft-news"],
    }
    key = user_with_key("dave", "DaveNlp", [*team("nlp")["Statement"], deny, untrained])
    dave = {"Authorization": f"Bearer {key}"}
    with session() as s, s.begin():  # a version dave may read
        s.add(ModelVersionRecord(name="reviews", version=4, task="text-classification", path="/nowhere"))
    for ref in ("reviews:3", "reviews:03", "reviews:003"):  # the same version, however it is written
        assert client.get(f"/v1/versions/{ref}", headers=dave).status_code == 404, ref
        assert client.get(f"/v1/versions/{ref}/export", headers=dave).status_code == 404, ref
    for kind, params in (
        ("train", {"data": "anything", "name": "reviews"}),
        ("train", {"data": "/srv/uploads/0a1b2c3d4e5f/reviews.csv"}),  # a file trains under its name
        ("train", {"data": "anything", "from": "reviews:3"}),  # a continued version under its parent's
        ("compress", {"model": "reviews:4", "method": "int8-dynamic"}),  # a child version of reviews
        ("pull", {"store": "team", "remote": "reviews:2"}),  # a pulled version under its own name
    ):
        job = {"kind": kind, "params": params, "project": "nlp"}
        answer = client.post("/v1/jobs", json=job, headers=dave)
        assert answer.status_code == 403 and "model:Train" in answer.json()["error"]["message"], answer.text
    # OpenAI's route trains ft-SUFFIX as a train job would
    tune = {"model": "smollm2-135m", "training_file": "anything", "suffix": "news", "project": "nlp"}
    answer = client.post("/v1/fine_tuning/jobs", json=tune, headers=dave)
    assert answer.status_code == 403 and "model:Train on aimass:project/nlp/model/ft-news" in answer.text


def news(folder, project: str) -> str:
    """The id of a small dataset named ``news-PROJECT``, owned by ``project``."""
    from aimass import api

    table = folder / f"news-{project}.csv"
    rows = [f"{w} story number {i} for {project},{w}" for i in range(12) for w in ("sport", "money")]
    table.write_text("text,label\n" + "\n".join(rows) + "\n")
    directory.assign("dataset", f"news-{project}", project)
    return api.import_dataset(table, name=f"news-{project}").id


def test_jobs_and_versions_lists_page_only_what_each_user_may_read(world, tmp_path):
    """A user key acts by its policies, not its scopes: alice's key (scope predict) may queue a
    job in her project, not in bob's; each list shows, and ``total`` counts, only what its
    caller may read."""

    client, keys = world
    data = {project: news(tmp_path, project) for project in ("nlp", "cv")}
    mine = {"kind": "train", "params": {"data": data["nlp"]}, "project": "nlp"}
    queued = client.post("/v1/jobs", json=mine, headers=keys["alice"])
    assert queued.status_code == 202, queued.text
    theirs = client.post("/v1/jobs", json={**mine, "project": "cv"}, headers=keys["alice"])
    assert theirs.status_code == 403 and "job:Submit" in theirs.json()["error"]["message"]
    nowhere = client.post("/v1/jobs", json={**mine, "project": "nope"}, headers=keys["carol"])
    assert nowhere.status_code == 404, nowhere.text
    bobs = {"kind": "train", "params": {"data": data["cv"]}, "project": "cv"}
    bobs = client.post("/v1/jobs", json=bobs, headers=keys["bob"])
    assert bobs.status_code == 202, bobs.text
    for user, job in (("alice", queued), ("bob", bobs)):
        listed = client.get("/v1/jobs", params={"limit": 1}, headers=keys[user]).json()
        assert [j["id"] for j in listed["jobs"]] == [job.json()["id"]] and listed["total"] == 1, listed
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    assert client.get("/v1/jobs", headers=admin).json()["total"] == 2
    versions = client.get("/v1/versions", headers=keys["alice"]).json()
    assert [v["name"] for v in versions["versions"]] == ["reviews"] and versions["total"] == 1
    assert client.get("/v1/versions", headers=admin).json()["total"] == 2


def test_a_train_job_continues_only_a_version_its_submitter_may_read(world, tmp_path):
    """``{"kind": "train", "params": {"from": REF}}`` learns from REF's weights and data: alice
    may continue her project's version; bob's is a 404, exactly like one that does not exist."""

    client, keys = world
    data = news(tmp_path, "nlp")
    job = {"kind": "train", "params": {"data": data, "from": "reviews:3"}, "project": "nlp"}
    mine = client.post("/v1/jobs", json=job, headers=keys["alice"])
    assert mine.status_code == 202, mine.text
    assert mine.json()["params"]["from"] == "reviews:3"
    for ref in ("faces:1", "nothing:1"):
        theirs = client.post(
            "/v1/jobs", json={**job, "params": {"data": data, "from": ref}}, headers=keys["alice"]
        )
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found", theirs.text


def test_a_job_names_only_versions_and_datasets_its_submitter_may_read(world, tmp_path):
    """Every version and dataset a job's params name must be the submitter's to read, whatever the
    kind: alice cannot score, compress, distil from, inspect or train on bob's model or data
    (404s, exactly like names that do not exist); her own are accepted."""
    client, keys = world
    ours, theirs = news(tmp_path, "nlp"), news(tmp_path, "cv")
    refused = [
        {"kind": "evaluate", "params": {"model": "faces:1"}},
        {"kind": "evaluate", "params": {"model": "reviews:3", "data": theirs}},
        {"kind": "compress", "params": {"model": "faces:1", "method": "onnx"}},
        {"kind": "compress", "params": {"model": "reviews:3", "method": "distill", "teachers": ["faces:1"]}},
        {"kind": "issues", "params": {"data": theirs}},
        {"kind": "issues", "params": {"data": "news-cv", "model": "reviews:3"}},
        {"kind": "train", "params": {"data": theirs[:8]}},  # an id prefix names it too
        {"kind": "auto", "params": {"data": "news-cv"}},
    ]
    for job in refused:
        answer = client.post("/v1/jobs", json={**job, "project": "nlp"}, headers=keys["alice"])
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", (job, answer.text)
        assert "faces" in answer.text or "news-cv" in answer.text or theirs[:8] in answer.text
    auto = client.post("/v1/auto", json={"data": theirs, "project": "nlp"}, headers=keys["alice"])
    assert auto.status_code == 404, auto.text
    for job in (
        {"kind": "evaluate", "params": {"model": "reviews:3", "data": ours}},
        {"kind": "issues", "params": {"data": "news-nlp"}},
    ):
        answer = client.post("/v1/jobs", json={**job, "project": "nlp"}, headers=keys["alice"])
        assert answer.status_code == 202, (job, answer.text)
    assert (
        client.post("/v1/auto", json={"data": ours, "project": "nlp"}, headers=keys["alice"]).status_code
        == 202
    )
    bobs = {"kind": "issues", "params": {"data": theirs}, "project": "cv"}
    mine = client.post("/v1/jobs", json=bobs, headers=keys["bob"])
    assert mine.status_code == 202, mine.text


def test_a_deploy_cannot_take_over_another_projects_service(world):
    """A deploy changes the service it deploys into (``service:Update``): alice may deploy her model
    only into her project's services (or a new one named after her model, which joins her project).
    Into bob's ``faces``, or an unassigned service of another name (``default``'s), is a 404: she may
    not even read them. Each denial is audited with the real resource."""
    client, keys = world
    alice = keys["alice"]
    hijack = client.post("/v1/services", json={"model": "reviews:3", "service": "faces"}, headers=alice)
    assert hijack.status_code == 404 and hijack.json()["error"]["message"] == "No service 'faces'.", (
        hijack.text
    )
    elsewhere = client.post("/v1/services", json={"model": "reviews:3", "service": "shared"}, headers=alice)
    assert elsewhere.status_code == 404, elsewhere.text  # default's, which she may not read either
    denied = audit.query(principal="alice", action="service:Update")
    assert [row["resource"] for row in denied] == [
        "aimass:project/default/service/shared",
        "aimass:project/cv/service/faces",
    ]
    # her own service passes both checks (the engine then fails to load the stand-in record)
    own = client.post("/v1/services", json={"model": "reviews:3"}, headers=alice)
    assert own.status_code not in (403, 404), own.text
    assert audit.query(principal="alice", action="service:Update")[0]["decision"] == "allowed"
    assert client.post("/v1/services", json={"model": "faces:1"}, headers=keys["bob"]).status_code not in (
        403,
        404,
    )


def test_a_new_service_named_after_a_project_model_joins_that_project(world):
    from aimass.serve.access_guard import adopt_service, deployed_into

    directory.assign("model", "notes", "nlp")
    assert deployed_into({}, {"model": "notes:1"}) == ("", "aimass:project/nlp/service/notes")
    assert deployed_into({}, {"model": "notes:1", "service": "faces"}) == ("service", "faces")
    adopt_service("notes", "notes@production")
    adopt_service("elsewhere", "notes:1")  # another name: nobody's, so default's
    adopt_service("faces", "faces:1")  # already cv's
    assert directory.owners("service") == {"reviews": "nlp", "faces": "cv", "notes": "nlp"}
    assert deployed_into({}, {"model": "notes:1"}) == ("service", "notes")


def test_moving_a_resource_needs_both_projects(world):
    """Assigning a resource to a project takes it out of another: a lead who may update project nlp
    cannot pull bob's model out of cv (nor an unassigned one out of default) unless they may update
    that project too."""
    client, _ = world
    lead = {"Statement": [{"Effect": "Allow", "Action": "project:Update", "Resource": "aimass:project/nlp"}]}
    directory.create_user("dave")
    directory.put_policy("NlpLead", lead)
    directory.attach("NlpLead", "user", "dave")
    record, key = auth.create_key("dave", ["predict"])
    directory.bind_key(record.id, user="dave")
    dave = {"Authorization": f"Bearer {key}"}
    steal = client.post("/v1/projects/nlp/resources", json={"kind": "model", "name": "faces"}, headers=dave)
    assert steal.status_code == 403 and "aimass:project/cv" in steal.json()["error"]["message"], steal.text
    unowned = client.post("/v1/projects/nlp/resources", json={"kind": "model", "name": "x"}, headers=dave)
    assert unowned.status_code == 403 and "aimass:project/default" in unowned.text, unowned.text
    assert directory.project_of("model", "faces") == "cv"
    lead["Statement"][0]["Resource"] = ["aimass:project/nlp", "aimass:project/cv"]
    directory.put_policy("NlpLead", lead)
    moved = client.post("/v1/projects/nlp/resources", json={"kind": "model", "name": "faces"}, headers=dave)
    assert moved.status_code == 200, moved.text
    assert directory.project_of("model", "faces") == "nlp"


def test_an_import_over_rest_does_not_add_a_version_to_a_projects_dataset(world, tmp_path):
    """``POST /v1/datasets`` lands in ``default``: even the admin's import may not make another
    project's dataset name point at new rows (its trainings by name would pick them up)."""
    from aimass import paths

    client, _ = world
    news(tmp_path, "nlp")
    other = paths.subdir("uploads") / "0123456789ab" / "other.csv"  # where an upload keeps it
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_text(
        "text,label\n" + "\n".join(f"other {w} row {i},{w}" for i in range(12) for w in "ab") + "\n"
    )
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    over = client.post("/v1/datasets", json={"path": str(other), "name": "news-nlp"}, headers=admin)
    assert over.status_code == 403 and "belongs to another project" in over.json()["error"]["message"], (
        over.text
    )
    assert "other" not in load_dataset("news-nlp").rows()[0]["text"]
    fresh = client.post("/v1/datasets", json={"path": str(other), "name": "fresh"}, headers=admin)
    assert fresh.status_code == 201, fresh.text


def test_a_team_imports_its_data_into_its_own_project(world, tmp_path):
    """A user whose policies cover only project nlp uploads and imports into nlp (``?project=`` on
    the upload, ``"project"`` on the import): the new dataset is nlp's, bob does not see it, and
    neither ``default`` nor cv's dataset names are alice's to import into."""
    client, keys = world
    news(tmp_path, "cv")
    rows = "text,label\n" + "\n".join(f"team story {i} about {w},{w}" for i in range(12) for w in "ab")
    upload = {"file": ("mine.csv", rows.encode(), "text/csv")}

    into_default = client.post("/v1/uploads", files=upload, headers=keys["alice"])
    assert into_default.status_code == 403, into_default.text
    assert "aimass:project/default/dataset/*" in into_default.json()["error"]["message"]
    missing = client.post("/v1/uploads?project=nope", files=upload, headers=keys["carol"])
    assert missing.status_code == 404, missing.text
    stored = client.post("/v1/uploads?project=nlp", files=upload, headers=keys["alice"])
    assert stored.status_code == 201, stored.text
    path = stored.json()["path"]

    denied = client.post("/v1/datasets", json={"path": path}, headers=keys["alice"])
    assert denied.status_code == 403, denied.text
    made = client.post("/v1/datasets", json={"path": path, "project": "nlp"}, headers=keys["alice"])
    assert made.status_code == 201 and made.json()["project"] == "nlp", made.text
    assert directory.project_of("dataset", "mine") == "nlp"
    assert "mine" in [d["name"] for d in client.get("/v1/datasets", headers=keys["alice"]).json()["datasets"]]
    assert "mine" not in [
        d["name"] for d in client.get("/v1/datasets", headers=keys["bob"]).json()["datasets"]
    ]
    again = client.post("/v1/datasets", json={"path": path, "project": "nlp"}, headers=keys["alice"])
    assert again.status_code == 201, again.text  # a new version of nlp's own dataset

    over = {"path": path, "name": "news-cv", "project": "nlp"}
    taken = client.post("/v1/datasets", json=over, headers=keys["alice"])
    message = taken.json()["error"]["message"]
    assert taken.status_code == 403 and "belongs to another project" in message and "'cv'" not in message
    assert all("team story" not in r["text"] for r in load_dataset("news-cv").rows())


def test_a_conditional_deny_on_reading_holds_for_lists_and_jobs(world, tmp_path):
    """A Deny on reading with a condition on the request's context (here the time, as a Deny outside
    office hours or the office network would be) hides the version from the lists and from a job's
    params as it does from ``GET /v1/versions/{ref}``: they are decided with the request's context."""
    client, keys = world
    after = {"DateGreaterThan": {"aimass:CurrentTime": "2000-01-01T00:00:00Z"}}
    deny = {
        "Sid": "NoReviews",
        "Effect": "Deny",
        "Action": "model:Read",
        "Resource": "aimass:project/nlp/model/reviews:*",
        "Condition": after,
    }
    directory.put_policy("NoReviewsNow", {"Statement": [deny]})
    directory.attach("NoReviewsNow", "user", "alice")
    assert client.get("/v1/versions/reviews:3", headers=keys["alice"]).status_code == 404
    listed = client.get("/v1/versions", headers=keys["alice"]).json()
    assert listed["versions"] == [] and listed["total"] == 0, listed
    assert client.get("/v1/models", headers=keys["alice"]).json()["data"] == []
    job = {
        "kind": "evaluate",
        "params": {"model": "reviews:3", "data": news(tmp_path, "nlp")},
        "project": "nlp",
    }
    refused = client.post("/v1/jobs", json=job, headers=keys["alice"])
    assert refused.status_code == 404 and "reviews:3" in refused.json()["error"]["message"], refused.text


def test_a_deny_on_a_stage_hides_that_stages_versions_from_lists_row_by_row(world, tmp_path):
    """A Deny on reading conditioned on ``aimass:ModelStage`` is decided with each row's own stage in
    the lists, as on the version's own route: the production version is hidden, the unaliased one
    of the same model is not."""
    client, keys = world
    with session() as s, s.begin():
        s.add(
            ModelVersionRecord(
                name="reviews", version=2, task="text-classification", path=str(tmp_path / "r2")
            )
        )
    deny = {
        "Sid": "NoProduction",
        "Effect": "Deny",
        "Action": "model:Read",
        "Resource": "aimass:project/nlp/model/*",
        "Condition": {"StringEquals": {"aimass:ModelStage": "production"}},
    }
    directory.put_policy("NoProductionReads", {"Statement": [deny]})
    directory.attach("NoProductionReads", "user", "alice")
    assert client.get("/v1/versions/reviews:3", headers=keys["alice"]).status_code == 404
    shown = client.get("/v1/versions/reviews:2", headers=keys["alice"])
    assert shown.status_code == 200 and shown.json()["files_missing"] is True  # no folder: said, not a 500
    listed = client.get("/v1/versions", headers=keys["alice"]).json()
    assert [(v["name"], v["version"]) for v in listed["versions"]] == [("reviews", 2)], listed
    assert listed["total"] == 1
    assert (
        client.get("/v1/models/reviews", headers=keys["alice"]).status_code == 404
    )  # its latest is production
    assert client.get("/v1/models", headers=keys["alice"]).json()["data"] == []
    carol = client.get("/v1/versions", headers=keys["carol"]).json()  # no such Deny: sees every version
    assert {(v["name"], v["version"]) for v in carol["versions"]} >= {("reviews", 2), ("reviews", 3)}


def test_a_minted_key_is_bound_as_its_creators_key(world):
    """A key mints keys bound as it is (user, project, tags): alice, who may create keys, cannot mint
    an unbound predict key that reads every project's models, and a key tagged env=dev cannot mint
    an untagged one that escapes a Deny on that tag."""
    client, keys = world
    minting = {"Statement": [{"Effect": "Allow", "Action": "key:Create", "Resource": "aimass:key/*"}]}
    directory.put_policy("MintKeys", minting)
    directory.attach("MintKeys", "user", "alice")
    made = client.post("/v1/keys", json={"name": "alice-2", "scopes": ["predict"]}, headers=keys["alice"])
    assert made.status_code == 200, made.text
    assert directory.key_binding(made.json()["id"])["user"] == "alice"
    second = {"Authorization": f"Bearer {made.json()['key']}"}
    assert client.get("/v1/services/faces", headers=second).status_code == 404  # bob's, as for alice
    assert [v["name"] for v in client.get("/v1/versions", headers=second).json()["versions"]] == ["reviews"]

    record, tagged = auth.create_key("dev-ops", ["manage"])  # acts by its scopes, tagged env=dev
    directory.bind_key(record.id, tags={"env": "dev"})
    dev = {"Authorization": f"Bearer {tagged}"}
    minted = client.post("/v1/keys", json={"name": "dev-2", "scopes": ["manage"]}, headers=dev)
    assert minted.status_code == 200, minted.text
    assert directory.key_binding(minted.json()["id"])["tags"] == {"env": "dev"}  # a Deny on env=dev holds
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    free = client.post("/v1/keys", json={"name": "ops", "scopes": ["manage"]}, headers=admin).json()
    assert directory.key_binding(free["id"]) == {
        "key_id": free["id"],
        "user": None,
        "project": None,
        "tags": {},
    }


def test_a_predict_job_is_decided_as_the_predict_route_on_its_model(world):
    """A ``predict`` job calls its version as ``POST /v1/models/{ref}/predict`` would: a Deny on
    ``model:Predict`` refuses the job (403 naming the Deny, audited) though the same user may still
    evaluate that version; an Allow queues it; a model its submitter cannot read is a 404."""
    import io

    from aimass.data.uploads import store_upload

    client, keys = world
    table = store_upload(io.BytesIO(b"text\nwhat a match\n"), "to-label.csv", project="nlp")["path"]
    job = {"kind": "predict", "params": {"model": "reviews:3", "path": table}, "project": "nlp"}
    queued = client.post("/v1/jobs", json=job, headers=keys["alice"])
    assert queued.status_code == 202, queued.text
    no_predict = {
        "Statement": [
            {
                "Sid": "NoScoring",
                "Effect": "Deny",
                "Action": "model:Predict",
                "Resource": "aimass:project/nlp/model/*",
            }
        ]
    }
    directory.put_policy("NoScoring", no_predict)
    directory.attach("NoScoring", "user", "alice")
    refused = client.post("/v1/jobs", json=job, headers=keys["alice"])
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert "model:Predict on aimass:project/nlp/model/reviews:3" in error["message"]
    assert "'NoScoring' of policy 'NoScoring'" in error["message"]
    row = audit.query(principal="alice", action="model:Predict")[0]
    assert row["decision"] == "explicitDeny" and row["request_id"] == error["request_id"]
    evaluate = {"kind": "evaluate", "params": {"model": "reviews:3"}, "project": "nlp"}
    assert client.post("/v1/jobs", json=evaluate, headers=keys["alice"]).status_code == 202
    theirs = {**job, "project": "cv"}
    assert client.post("/v1/jobs", json=theirs, headers=keys["bob"]).status_code == 404


def default_user(name: str) -> dict:
    """A user of the default project alone, and the headers of their key."""
    directory.create_user(name)
    directory.put_policy(f"{name}Default", team("default"))
    directory.attach(f"{name}Default", "user", name)
    record, key = auth.create_key(name, ["predict"])
    directory.bind_key(record.id, user=name)
    return {"Authorization": f"Bearer {key}"}


def decided(answer) -> list[str]:
    """The decisions the audit log kept for a request (an allowed prediction is not kept)."""
    return [d["decision"] for d in audit.explain_request(answer.headers["x-request-id"])["decisions"]]


def test_a_service_nobody_assigned_is_its_models_projects(world):
    """``aimass serve --model logos`` starts a service nobody assigned, named after cv's model: it
    is decided as cv's for reading, scaling and undeploying (as a deploy into it already was), not
    as the default project's, whose users could otherwise undeploy it and cv's could not read it."""
    client, keys = world
    with session() as s, s.begin():
        s.add(ModelVersionRecord(name="logos", version=1, task="text-classification", path="/x/logos"))
    directory.assign("model", "logos", "cv")
    dan = default_user("dan")
    for method in ("GET", "DELETE"):
        answer = client.request(method, "/v1/services/logos", headers=dan)
        assert answer.status_code in (403, 404) and decided(answer) == ["implicitDeny"], answer.text
    read = client.get("/v1/services/logos", headers=keys["bob"])  # not deployed here: the engine's 404
    assert read.status_code == 404 and decided(read) == ["allowed"], read.text


def test_a_name_only_a_service_has_is_decided_in_the_services_project(world):
    """cv serves ``secret:1`` in a service named ``helpdesk``; no model has that name. A request for
    model ``helpdesk`` reaches that service, so it is decided as cv's (before: as the default
    project's, which dan may use), and no other project may register a model of that name."""
    from aimass.store import claims

    client, keys = world
    directory.assign("service", "helpdesk", "cv")
    dan = default_user("dan")
    body = {
        "model": "helpdesk",
        "messages": [{"role": "user", "content": "hi"}],
        "input": "hi",
        "prompt": "hi",
    }
    for route in ("/v1/chat/completions", "/v1/embeddings", "/tokenize"):
        answer = client.post(route, json=body, headers=dan)
        assert answer.status_code in (403, 404) and decided(answer) == ["implicitDeny"], (route, answer.text)
    in_nlp = claims.checked(lambda kind, name: directory.may_write("nlp", kind, name))
    with pytest.raises(PermissionDenied, match="belongs to another project"), in_nlp:
        claims.claim("model", "helpdesk")
