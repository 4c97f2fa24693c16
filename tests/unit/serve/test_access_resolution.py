"""A caller with a valid low-privilege key, confined to its own project: what names a resource is
decided as the resource the route opens (an id prefix or digest too), errors list nothing of other
projects, a job that rewrites a dataset's stored report needs write access, and the console's retry
decides what the REST retry decides."""

from __future__ import annotations

import csv
import json
import re

import pytest
from fastapi.testclient import TestClient

from aimass import api, jobs
from aimass.access import directory
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.store import registry

NLP_ONLY = [{"Effect": "Allow", "Action": "*", "Resource": ["aimass:project/nlp", "aimass:project/nlp/*"]}]


def user_with_key(user: str, policy: str, statements: list[dict]) -> str:
    directory.create_user(user)
    directory.put_policy(policy, {"Statement": statements})
    directory.attach(policy, "user", user)
    record, key = auth.create_key(user, ["manage"])
    directory.bind_key(record.id, user=user)
    return key


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def signed_in(app, key: str) -> TestClient:
    client = TestClient(app)
    client.post("/console/signin", data={"csrf": csrf_of(client.get("/console/signin").text), "key": key})
    return client


def write_csv(path, n: int = 40, word: str = "row"):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = ("pos", "neg")[i % 2]
            writer.writerow([f"secret {word} {i}: a {label} sentence", label])
    return path


@pytest.fixture
def victim(tmp_path, monkeypatch):
    """Dataset 'secret' in project cv; projects cv and nlp."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    directory.create_project("cv")
    directory.create_project("nlp")
    ds = api.import_dataset(write_csv(tmp_path / "secret.csv"), name="secret")
    directory.assign("dataset", "secret", "cv")
    return ds


def test_an_id_prefix_or_digest_is_decided_as_the_dataset_it_opens(tmp_path, victim):
    key = user_with_key("mallory", "NlpOnly", NLP_ONLY)
    headers = {"Authorization": f"Bearer {key}"}
    prefix = victim.id[:4]
    with TestClient(create_app([])) as client:
        # a dataset of its own named like the victim's id prefix, then deleted: nlp owns the name
        upload = client.post(
            "/v1/uploads?project=nlp",
            headers=headers,
            files={"file": ("t.csv", write_csv(tmp_path / "t.csv", word="mine").read_bytes(), "text/csv")},
        )
        made = client.post(
            "/v1/datasets",
            headers=headers,
            json={"path": upload.json()["path"], "name": prefix, "project": "nlp"},
        )
        assert made.status_code == 201, made.text
        assert client.delete(f"/v1/datasets/{prefix}?force=true", headers=headers).status_code == 200
        assert directory.project_of("dataset", prefix) == "nlp"
        for route in ("", "/rejects", "/issues", "/issues/files/issues.csv"):
            for ref in (victim.id, prefix, victim.digest):
                answer = client.get(f"/v1/datasets/{ref}{route}", headers=headers)
                assert answer.status_code == 404, (route, ref, answer.text[:200])
                assert "secret" not in answer.text
        fixed = client.post(f"/v1/datasets/{prefix}/fix", headers=headers, json={"drop": True})
        assert fixed.status_code == 404, fixed.text
    assert api.load_dataset("secret").id == victim.id  # no version was added to it


def test_not_found_errors_and_job_errors_list_nothing_of_other_projects(tmp_path, victim):
    key = user_with_key("mallory", "NlpOnly", NLP_ONLY)
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app([])) as client:
        missing = client.get("/v1/datasets/no-such-thing", headers=headers)
        submitted = client.post(
            "/v1/jobs",
            headers=headers,
            json={"kind": "train", "params": {"data": "nothing"}, "project": "nlp"},
        )
        assert submitted.status_code == 202, submitted.text
        jobs.run_foreground(submitted.json()["id"])
        failed = client.get(f"/v1/jobs/{submitted.json()['id']}", headers=headers).text
    assert missing.status_code == 404
    for text in (missing.text, failed):
        assert victim.id not in text and "secret" not in text
    assert "no dataset 'nothing'" in failed


def test_an_issues_job_needs_write_access_to_the_dataset_whose_report_it_replaces(tmp_path, victim):
    reader = [
        *NLP_ONLY,
        {"Effect": "Allow", "Action": "dataset:Read", "Resource": "aimass:project/cv/dataset/secret"},
    ]
    key = user_with_key("rita", "NlpPlusReadSecret", reader)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"kind": "issues", "params": {"data": victim.id, "threshold": 0.01}, "project": "nlp"}
    with TestClient(create_app([])) as client:
        assert client.get(f"/v1/datasets/{victim.id}", headers=headers).status_code == 200  # may read it
        refused = client.post("/v1/jobs", headers=headers, json=body)
    assert refused.status_code == 403 and "dataset:Import" in refused.text
    assert jobs.list_jobs() == []
    # one who may also run jobs in cv (where the console queues it) is not offered the button either
    jobs_in_cv = {"Effect": "Allow", "Action": "job:*", "Resource": "aimass:project/cv/job/*"}
    runner = user_with_key("rory", "ReadSecretJobsInCv", [*reader, jobs_in_cv])
    page = signed_in(create_app([]), runner).get(f"/console/datasets/{victim.id}").text
    assert victim.name in page and "Find label issues" not in page


class Registered:
    """A registered version without training anything (only its name and project matter here)."""

    task = "text-classification"

    def get_params(self):
        return {}


def test_a_console_retry_decides_what_the_rest_retry_decides(tmp_path, monkeypatch):
    """A Deny on model:Export holds when a push job is retried from the console."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIMASS_STORES", "team-a=s3://shared-bucket/models")
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "model.json").write_text("{}")
    registry.register(Registered(), "faces", staged=staged)
    directory.create_project("cv")
    directory.assign("model", "faces", "cv")
    earlier = jobs.submit("push", {"model": "faces:1", "store": "team-a"})  # by someone allowed to
    directory.assign("job", earlier["id"], "cv")
    jobs.cancel(earlier["id"])
    statements = [
        {"Effect": "Allow", "Action": "*", "Resource": ["aimass:project/cv", "aimass:project/cv/*"]},
        {"Effect": "Deny", "Action": "model:Export", "Resource": "*"},
    ]
    key = user_with_key("mallory", "NoExport", statements)
    app = create_app([])
    rest = TestClient(app).post(f"/v1/jobs/{earlier['id']}/retry", headers={"Authorization": f"Bearer {key}"})
    client = signed_in(app, key)
    csrf = csrf_of(client.get(f"/console/jobs/{earlier['id']}").text)
    console = client.post(f"/console/jobs/{earlier['id']}/retry", data={"csrf": csrf}, follow_redirects=False)
    assert rest.status_code == 403 and "model:Export" in rest.text
    assert console.status_code == 403, console.text[:300]
    assert [j["id"] for j in jobs.list_jobs()] == [earlier["id"]]  # nothing queued again


def test_a_policy_confines_push_and_pull_jobs_to_the_named_stores_it_allows(tmp_path, monkeypatch):
    """``aimass:Store`` names the operator's store a push or pull job uses: one team's key keeps
    to its team's store (a Deny on the other wins over the project's Allow)."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIMASS_STORES", "team-a=s3://shared/models/a,team-b=s3://shared/models/b")
    directory.create_project("nlp")
    statements = [
        *NLP_ONLY,
        {
            "Effect": "Deny",
            "Action": "job:Submit",
            "Resource": "*",
            "Condition": {"StringNotEquals": {"aimass:Store": "team-a"}},
        },
    ]
    key = user_with_key("alice", "TeamAStoreOnly", statements)
    client = TestClient(create_app([]))

    def submit(params: dict):
        body = {"kind": "pull", "params": params, "project": "nlp"}
        return client.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})

    other = submit({"store": "team-b", "remote": "faces:1"})
    assert other.status_code == 403 and "job:Submit" in other.text, other.text
    own = submit({"store": "team-a", "remote": "news:1"})
    assert own.status_code in (200, 201, 202), own.text
    assert [j["kind"] for j in jobs.list_jobs()] == ["pull"]
    import_job = client.post(
        "/v1/jobs",
        json={"kind": "import", "params": {"path": "x.csv"}, "project": "nlp"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert import_job.status_code != 403, import_job.text  # no store named: the condition does not apply

    # someone else's team-b pull in her project, retried: decided as submitting it is
    earlier = jobs.submit("pull", {"store": "team-b", "remote": "faces:1"})
    directory.assign("job", earlier["id"], "nlp")
    jobs.cancel(earlier["id"])
    retried = client.post(f"/v1/jobs/{earlier['id']}/retry", headers={"Authorization": f"Bearer {key}"})
    assert retried.status_code == 403 and "TeamAStoreOnly" in retried.text, retried.text
    console = signed_in(create_app([]), key)
    csrf = csrf_of(console.get(f"/console/jobs/{earlier['id']}").text)
    again = console.post(f"/console/jobs/{earlier['id']}/retry", data={"csrf": csrf}, follow_redirects=False)
    assert again.status_code == 403, again.text[:300]
    assert sum(j["kind"] == "pull" for j in jobs.list_jobs()) == 2  # nothing queued again


def test_what_the_route_reads_is_what_the_rule_decides(tmp_path, victim):
    """A blank repeated query value, a twin decided on an encoded path, a job id with ``:x`` after
    it: each was decided as one resource while the route acted on another (or named others)."""
    key = user_with_key("mallory", "NlpOnly", NLP_ONLY)
    headers = {"Authorization": f"Bearer {key}"}
    theirs = jobs.submit("import", {"path": "x.csv"})["id"]  # the default project's jobs
    other = jobs.submit("import", {"path": "z.csv"})["id"]
    with TestClient(create_app([])) as client:
        # ?project=nlp&project= : the route imports into "" (default), so the rule decides default
        files = {"file": ("shared.jsonl", b'{"messages": []}\n', "application/jsonl")}
        sent = {"files": files, "data": {"purpose": "fine-tune"}}
        blank = client.post("/v1/files?project=nlp&project=", headers=headers, **sent)
        assert blank.status_code == 403, blank.text
        upload = client.post("/v1/uploads?project=nlp&project=", headers=headers, files=files)
        assert upload.status_code == 403, upload.text
        # a job id with a suffix names no job: not nlp's (which allowed it) and no list of the others
        mine = client.post("/v1/jobs", headers=headers, json={"kind": "import", "params": {"path": "y.csv"}})
        assert mine.status_code == 403  # submitting in default: not nlp's
        for path in (f"/v1/jobs/{theirs}:x", f"/v1/batches/{theirs}@x"):
            answer = client.get(path, headers=headers)
            assert answer.status_code in (403, 404) and other not in answer.text, (path, answer.text)
        # the console's and a job's twin is decided on the decoded path, as a request's is
        q1 = api.import_dataset(write_csv(tmp_path / "q1.csv", word="q"), name="q 1")
        directory.assign("dataset", q1.name, "cv")
        issues = {"kind": "issues", "params": {"data": "q 1"}, "project": "nlp"}
        answer = client.post("/v1/jobs", headers=headers, json=issues)
        assert answer.status_code in (403, 404), answer.text
        gone = client.get(
            "/v1/services/nothing-here", headers={"Authorization": f"Bearer {auth.admin_token()}"}
        )
        assert gone.json()["error"]["message"] == "No service 'nothing-here'."


def test_attaching_a_policy_is_decided_on_what_it_attaches_to(victim):
    """``policy:Write`` on a team's policies lets a lead write them; attaching one changes its
    target, so it also needs ``user:Update`` (group, key, project alike) on that target: otherwise
    the lead writes "Allow * on *" and attaches it to themselves."""
    lead_may = [*NLP_ONLY, {"Effect": "Allow", "Action": "policy:*", "Resource": "aimass:policy/nlp-*"}]
    key = user_with_key("lead", "NlpLead", lead_may)
    headers = {"Authorization": f"Bearer {key}"}
    held = {"document": {"Statement": NLP_ONLY}}  # what the lead holds: writing it is allowed
    with TestClient(create_app([])) as client:
        assert client.put("/v1/policies/nlp-helper", headers=headers, json=held).status_code == 200
        for target in ({"type": "user", "target": "lead"}, {"type": "project", "target": "cv"}):
            answer = client.post("/v1/policies/nlp-helper/attachments", headers=headers, json=target)
            assert answer.status_code == 403 and "Update" in answer.json()["error"]["message"], answer.text
        assert client.get(f"/v1/datasets/{victim.id}", headers=headers).status_code == 404  # still cv's
        nlp = {"type": "project", "target": "nlp"}  # a resource policy on the lead's own project
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "model:Read",
            "Resource": "aimass:project/nlp/*",
        }
        resource = {"document": {"Statement": [statement]}, "kind": "resource"}
        made = client.put("/v1/policies/nlp-open", headers=headers, json=resource)
        assert made.status_code == 200, made.text
        assert client.post("/v1/policies/nlp-open/attachments", headers=headers, json=nlp).status_code == 200
        gone = client.delete("/v1/policies/nlp-open/attachments?type=project&target=nlp", headers=headers)
        assert gone.status_code == 200, gone.text
        admin = {"Authorization": f"Bearer {auth.admin_token()}"}
        directory.create_user("bob")
        to_bob = client.post(
            "/v1/policies/nlp-helper/attachments", headers=admin, json={"type": "user", "target": "bob"}
        )
        assert to_bob.status_code == 200, to_bob.text
        refused = client.delete("/v1/policies/nlp-helper/attachments?type=user&target=bob", headers=headers)
        assert refused.status_code == 403, refused.text


def test_a_policy_gives_no_more_than_its_writer_holds(victim):
    """A lead who may write the team's policies and update the team's group could write "Allow *
    on *" and attach it to the group they are in (or rewrite a policy already attached there, or
    lift the Deny that holds them): a policy gives only what its writer holds, and a Deny is
    lifted only by someone who may do what it denies (Kubernetes RBAC's escalation check)."""
    lead_may = [
        *NLP_ONLY,
        {"Effect": "Allow", "Action": "policy:*", "Resource": "aimass:policy/nlp-*"},
        {"Effect": "Allow", "Action": "group:Update", "Resource": "aimass:group/nlp-team"},
    ]
    key = user_with_key("lead", "NlpLead", lead_may)
    directory.create_group("nlp-team")
    directory.add_member("nlp-team", "lead")
    headers = {"Authorization": f"Bearer {key}"}
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    team = {"type": "group", "target": "nlp-team"}

    def doc(*statements):
        return {"document": {"Statement": list(statements)}}

    def allow(action, resource, effect="Allow"):
        return {"Effect": effect, "Action": action, "Resource": resource}

    with TestClient(create_app([])) as client:
        for wide in (
            allow("*", "*"),
            allow("dataset:Read", "aimass:project/*"),  # a wider pattern than the lead's
            allow("dataset:Read", "aimass:project/cv/dataset/secret"),  # one ARN of cv's
            {"Effect": "Allow", "Action": "dataset:Read", "NotResource": "aimass:project/cv/*"},
        ):
            answer = client.put("/v1/policies/nlp-all", headers=headers, json=doc(wide))
            assert answer.status_code == 403, (wide, answer.text)
            assert "does not hold" in answer.json()["error"]["message"]
        # what the lead holds may be given, attached to the team, and a policy rewritten within it
        mine = doc(
            allow("dataset:Read", "aimass:project/nlp/*"), allow("model:*", "aimass:project/nlp/model/x")
        )
        assert client.put("/v1/policies/nlp-read", headers=headers, json=mine).status_code == 200
        assert client.post("/v1/policies/nlp-read/attachments", headers=headers, json=team).status_code == 200
        again = client.put("/v1/policies/nlp-read", headers=headers, json=doc(allow("*", "*")))
        assert again.status_code == 403, again.text
        assert client.get(f"/v1/datasets/{victim.id}", headers=headers).status_code == 404  # still cv's
        # an administrator's Deny on the team: the lead may not lift it, nor write it away
        guard = doc(allow("dataset:Delete", "*", effect="Deny"))
        assert client.put("/v1/policies/nlp-guard", headers=admin, json=guard).status_code == 200
        assert client.post("/v1/policies/nlp-guard/attachments", headers=admin, json=team).status_code == 200
        lifted = (
            client.delete("/v1/policies/nlp-guard/attachments?type=group&target=nlp-team", headers=headers),
            client.put(
                "/v1/policies/nlp-guard",
                headers=headers,
                json=doc(allow("model:Read", "aimass:project/nlp/*")),
            ),
            client.delete("/v1/policies/nlp-guard", headers=headers),
        )
        assert [a.status_code for a in lifted] == [403, 403, 403], [a.text for a in lifted]
        kept = doc(guard["document"]["Statement"][0], allow("model:Read", "aimass:project/nlp/*"))
        assert client.put("/v1/policies/nlp-guard", headers=headers, json=kept).status_code == 200
        # the administrator holds everything: gives it, lifts it
        assert client.put("/v1/policies/nlp-all", headers=admin, json=doc(allow("*", "*"))).status_code == 200
        gone = client.delete("/v1/policies/nlp-guard/attachments?type=group&target=nlp-team", headers=admin)
        assert gone.status_code == 200, gone.text


def test_the_same_data_cannot_take_a_second_name_in_another_project(tmp_path, victim):
    """A dataset is stored once by content: an identical file imported under a new name gives the
    stored dataset one more name, and whoever holds a name may delete or fix it. From another
    project that is refused (before, ``mine`` then deleted cv's ``secret``)."""
    key = user_with_key("mallory", "NlpOnly", NLP_ONLY)
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app([])) as client:
        data = write_csv(tmp_path / "copy.csv").read_bytes()  # the very rows of cv's 'secret'
        upload = client.post("/v1/uploads?project=nlp", headers=headers, files={"file": ("c.csv", data)})
        made = client.post(
            "/v1/datasets",
            headers=headers,
            json={"path": upload.json()["path"], "name": "mine", "project": "nlp"},
        )
        assert made.status_code == 403, made.text
        assert "secret" not in made.text and "already stored" in made.json()["error"]["message"]
        assert client.delete("/v1/datasets/mine?force=true", headers=headers).status_code == 404
    assert api.load_dataset("secret").names == ["secret"]


def test_a_fine_tuning_file_of_another_project_is_not_found_not_described(tmp_path, victim):
    """``training_file`` naming cv's dataset: a 404 as for a missing one, not "secret holds text
    data" (which told mallory that it exists and what it holds)."""
    key = user_with_key("mallory", "NlpOnly", NLP_ONLY)
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app([])) as client:
        for named in ("secret", victim.id[:8]):  # by name, by id prefix
            body = {"model": "smollm2-135m", "training_file": named, "project": "nlp"}
            answer = client.post("/v1/fine_tuning/jobs", headers=headers, json=body)
            assert answer.status_code == 404 and "text" not in answer.text, (named, answer.text)
        # a missing name, another project's, a deleted one: one answer (the lookup's own said
        # "no dataset" in another case, or a deleted dataset's id and date)
        gone = api.import_dataset(write_csv(tmp_path / "gone.csv", word="gone"), name="gone")
        directory.assign("dataset", "gone", "cv")
        api.delete_dataset(gone.name, force=True)
        answers = {}
        for named in ("secret", "no-such-name", "gone"):
            body = {"model": "smollm2-135m", "training_file": named, "project": "nlp"}
            answer = client.post("/v1/fine_tuning/jobs", headers=headers, json=body)
            answers[named] = (answer.status_code, answer.json()["error"]["message"].replace(named, "X"))
        assert set(answers.values()) == {(404, "No dataset 'X'.")}, answers


def test_another_project_s_dataset_answers_as_a_missing_one(tmp_path, victim):
    """A dataset the caller may not read, by name or id prefix, live or deleted, and a fix of it:
    one 404, worded as for a name that does not exist. Before, "No dataset 'secret'." (the rules')
    against "no dataset 'nothing'" (the lookup's) told which names and id prefixes exist; a deleted
    dataset's id answered its tombstone (id and date: decided as default's); and a fix naming a new
    version answered 403 naming cv."""
    default = {"Effect": "Allow", "Action": "*", "Resource": ["aimass:project/default/*"]}
    key = user_with_key("mallory", "NlpAndDefault", [*NLP_ONLY, default])
    headers = {"Authorization": f"Bearer {key}"}
    gone = api.import_dataset(write_csv(tmp_path / "gone.csv", word="gone"), name="gone")
    directory.assign("dataset", "gone", "cv")
    api.delete_dataset(gone.name, force=True)
    with TestClient(create_app([])) as client:
        answers = {}
        for named in ("secret", victim.id[:5], "nothing", "f0f0f", gone.id, gone.id[:6]):
            for route in ("", "/rejects", "/issues"):
                answer = client.get(f"/v1/datasets/{named}{route}", headers=headers)
                body = answer.json()["error"]
                answers[named, route] = (
                    answer.status_code,
                    body["message"].replace(named, "X"),
                    body["hint"],
                )
        fix = client.post("/v1/datasets/secret/fix", headers=headers, json={"drop": True, "name": "mine"})
        answers["fix"] = (
            fix.status_code,
            fix.json()["error"]["message"].replace("secret", "X"),
            fix.json()["error"]["hint"],
        )
    assert len(set(answers.values())) == 1, answers
    assert next(iter(answers.values()))[:2] == (404, "no dataset 'X'")


def test_a_json_route_does_not_read_a_form_body(victim):
    """The access rules read a form's query, not its body; a route that parsed a JSON body sent
    as ``multipart/form-data`` acted on names the rule never saw (a store in default adding cv's
    file, a fine-tune submitted into cv): such a body is a 415 now."""
    all_but_cv = [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "*", "Resource": ["aimass:project/cv", "aimass:project/cv/*"]},
    ]
    headers = {"Authorization": f"Bearer {user_with_key('dave', 'AllButCv', all_but_cv)}"}
    form = {**headers, "Content-Type": "multipart/form-data; boundary=x"}
    with TestClient(create_app([])) as client:
        store = client.post("/v1/vector_stores", headers=headers, json={"name": "mine"}).json()["id"]
        sent = {
            f"/v1/vector_stores/{store}/files": {"file_id": victim.id},
            "/v1/vector_stores": {"name": "planted", "project": "cv"},
            "/v1/fine_tuning/jobs": {"model": "smollm2-135m", "training_file": "secret", "project": "cv"},
            "/v1/chat/completions": {"model": "secret", "messages": [{"role": "user", "content": "hi"}]},
            "/v1/embeddings": {"model": "secret", "input": "hi"},
        }
        for route, body in sent.items():
            answer = client.post(route, headers=form, content=json.dumps(body))
            assert answer.status_code == 415, (route, answer.text)
            assert answer.json()["error"]["code"] == "unsupported_media_type"
        assert client.get(f"/v1/vector_stores/{store}/files", headers=headers).json()["data"] == []


def test_console_actions_on_another_projects_version_or_store_are_not_found(victim):
    """Compress, push, score and continue on a version, and push on a vector store, were decided
    as ``POST /v1/jobs`` in the target's project first: the 403 named the project that holds it.
    The target is read first now: a 404, as the REST twin answers."""
    from aimass.retrieval import stores

    directory.assign("model", "faces", "cv")
    store = stores.create("cv-store", [])
    directory.assign("vector_store", store["id"], "cv")
    client = signed_in(create_app([]), user_with_key("mallory", "NlpOnly", NLP_ONLY))
    csrf = csrf_of(client.get("/console/").text)
    posts = {
        "/console/models/faces:1/compress": {"method": "int8"},
        "/console/models/faces:1/push": {"store": "s"},
        "/console/models/faces:1/continue": {"data": "x"},
        f"/console/stores/{store['id']}/push": {"store": "s"},
    }
    for path, form in posts.items():
        answer = client.post(path, data={"csrf": csrf, **form})
        assert answer.status_code == 404 and "cv" not in answer.text.split("<main")[-1], (path, answer.text)


def test_the_webhooks_page_shows_deliveries_only_where_rest_would(tmp_path, monkeypatch):
    """The page listed every endpoint's deliveries after deciding only the list; a Deny on one
    endpoint's ``webhook:Read`` (what ``GET .../deliveries`` decides) hid nothing."""
    import time

    from aimass.jobs import webhooks
    from aimass.store.db import DeliveryRecord, session

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIMASS_WEBHOOK_ALLOW", "127.0.0.1")  # no network here: a local receiver
    allow = {"Effect": "Allow", "Action": "webhook:*", "Resource": "*"}
    key = user_with_key("wes", "WesHooks", [allow])
    key_id = auth.Guard(admin=auth.admin_token()).identify(f"Bearer {key}").key_id
    hook = webhooks.create("h", "http://127.0.0.1:9/h", ["job.succeeded"], key_id)
    with session() as s, s.begin():
        s.add(
            DeliveryRecord(
                webhook_id=hook["id"],
                event_id="evt_hidden_delivery",
                type="job.succeeded",
                payload={},
                status="failed",
                attempts=3,
                last_error="refused",
                created=time.time(),
            )
        )
    client = signed_in(create_app([]), key)
    assert "evt_hidden_delivery" in client.get("/console/webhooks").text
    deny = {"Effect": "Deny", "Action": "webhook:Read", "Resource": f"aimass:webhook/{hook['id']}"}
    directory.put_policy("WesHooks", {"Statement": [allow, deny]})
    assert "evt_hidden_delivery" not in client.get("/console/webhooks").text


def test_a_name_only_a_service_has_is_listed_as_the_service_is_decided(victim):
    """A service assigned to cv under a name no model has: its predict route is decided in cv
    (``directory.model_project``), so the lists must not show it to default's readers either."""
    from aimass.serve.access_guard import AccessGuard
    from aimass.serve.auth import Caller

    directory.assign("service", "faces-api", "cv")
    default_only = [{"Effect": "Allow", "Action": "*", "Resource": "aimass:project/default/*"}]
    key = user_with_key("dora", "DefaultOnly", default_only)
    caller = auth.Guard(admin=auth.admin_token()).identify(f"Bearer {key}")
    guard = AccessGuard()
    assert guard.visible(caller, "model", {"faces-api", "plain"}) == {"plain"}
    assert guard.visible(Caller("admin", ("manage",)), "model", {"faces-api"}) == {"faces-api"}


@pytest.mark.parametrize(
    "teachers", [["secret-teacher:1"], "secret-teacher:1", "nlp-student:1, secret-teacher:1"]
)
def test_a_distillation_teacher_of_another_project_is_not_found_however_it_is_written(
    victim, small_model, teachers
):
    """A comma-separated string of teachers (the distillation reads that form too) skipped the read
    check: a key confined to nlp trained a student on the soft labels of cv's model."""
    api.register(small_model, "secret-teacher")
    directory.assign("model", "secret-teacher", "cv")
    api.register(small_model, "nlp-student")
    directory.assign("model", "nlp-student", "nlp")
    key = user_with_key("bob", "NlpOnly", NLP_ONLY)
    params = {"model": "nlp-student:1", "method": "distill", "teachers": teachers, "time_budget": 5}
    with TestClient(create_app([])) as client:
        said = client.post(
            "/v1/jobs",
            json={"kind": "compress", "project": "nlp", "params": params},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert said.status_code == 404, said.text
    assert "secret-teacher" in said.json()["error"]["message"] and jobs.list_jobs() == []
