"""Administering access with a low-privilege key: what an audit of keys, policies, groups and the
audit log found, each refused now. A lead who may write the team's policies could take a managed
policy's name and run code; add themselves to a stronger group; a key under a Deny could mint a key
without it; refusals of the escalation check left no audit row; a caller chose the request id the
audit files rows under; and a 403 recited another team's resource policy."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.conftest import user_with_key

from aimass.access import audit, directory
from aimass.serve import auth
from aimass.serve.app import create_app

TEAM = [{"Effect": "Allow", "Action": "*", "Resource": ["aimass:project/nlp", "aimass:project/nlp/*"]}]


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    directory.create_project("nlp")
    directory.create_project("cv")
    with TestClient(create_app([])) as client:
        yield client


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_no_policy_takes_a_managed_policys_name(client):
    """``JobsCodeScope`` (the ``jobs:code`` scope's built-in policy) could be written as a stored
    policy of harmless text: the escalation check read that text, decisions the built-in one."""
    lead = bearer(
        user_with_key(
            "lead",
            "Lead",
            [*TEAM, {"Effect": "Allow", "Action": "*", "Resource": ["aimass:policy/*", "aimass:user/lead"]}],
        )
    )
    harmless = {
        "document": {
            "Statement": [{"Effect": "Allow", "Action": "model:Read", "Resource": "aimass:project/nlp/*"}]
        }
    }
    for name in ("JobsCodeScope", "jobscodescope", "ADMIN", "PredictOnly"):
        answer = client.put(f"/v1/policies/{name}", headers=lead, json=harmless)
        assert answer.status_code in (400, 422), (name, answer.text)
        assert "managed policy" in answer.json()["error"]["message"]
    shown = client.get("/v1/policies/JobsCodeScope", headers=bearer(auth.admin_token())).json()
    assert shown["managed"] and shown["document"]["Statement"][0]["Action"] == "job:SubmitCode"
    attach = client.post(
        "/v1/policies/JobsCodeScope/attachments", headers=lead, json={"type": "user", "target": "lead"}
    )
    assert attach.status_code == 403 and "job:SubmitCode" in attach.json()["error"]["message"]


def test_joining_a_group_needs_what_its_policies_give(client):
    may = [*TEAM, {"Effect": "Allow", "Action": "group:Update", "Resource": "aimass:group/nlp-*"}]
    lead = bearer(user_with_key("lead", "Lead", may))
    admin = bearer(auth.admin_token())
    for group in ("nlp-admins", "nlp-readers"):
        directory.create_group(group)
    directory.attach("Admin", "group", "nlp-admins")
    reader = {"Statement": [{"Effect": "Allow", "Action": "model:Read", "Resource": "aimass:project/nlp/*"}]}
    directory.put_policy("nlp-read", reader)
    directory.attach("nlp-read", "group", "nlp-readers")
    directory.create_user("eve")
    refused = client.post("/v1/groups/nlp-admins/members", headers=lead, json={"user": "lead"})
    assert refused.status_code == 403 and "does not hold" in refused.json()["error"]["message"]
    assert "lead" not in directory.show_group("nlp-admins")["members"]
    assert client.get("/v1/audit?limit=1", headers=lead).status_code == 403
    # the refusal is a row of the audit log under the request's id (the guard's allowed row beside it)
    rows = audit.explain_request(refused.headers["x-request-id"])["decisions"]
    assert [r["decision"] for r in rows] == ["allowed", "implicitDeny"] and rows[1]["source"] == "escalation"
    # what the lead holds may be given; the administrator may give anything
    assert (
        client.post("/v1/groups/nlp-readers/members", headers=lead, json={"user": "eve"}).status_code == 200
    )
    assert (
        client.post("/v1/groups/nlp-admins/members", headers=admin, json={"user": "eve"}).status_code == 200
    )


def test_a_key_under_a_deny_mints_keys_under_it(client):
    record, key = auth.create_key("frank", ["manage"])
    deny = {"Statement": [{"Effect": "Deny", "Action": ["audit:Read", "key:Revoke"], "Resource": "*"}]}
    directory.put_policy("NoAudit", deny)
    directory.attach("NoAudit", "key", record.id)
    assert client.get("/v1/audit?limit=1", headers=bearer(key)).status_code == 403
    minted = client.post("/v1/keys", headers=bearer(key), json={"name": "frank2", "scopes": ["manage"]})
    assert minted.status_code == 200, minted.text
    assert directory.attached("key", minted.json()["id"]) == ["NoAudit"]
    assert client.get("/v1/audit?limit=1", headers=bearer(minted.json()["key"])).status_code == 403


def test_the_request_id_is_the_servers_and_audit_rows_are_one_line(client):
    key = bearer(user_with_key("mallory", "Team", TEAM))
    theirs = {**key, "X-Request-ID": "victim-request"}
    answer = client.post("/v1/services", headers=theirs, json={"model": "x\nadmin key:Create allowed"})
    assert answer.headers["x-client-request-id"] == "victim-request"
    assert answer.headers["x-request-id"] != "victim-request"
    with pytest.raises(Exception, match="No audit record"):
        audit.explain_request("victim-request")
    rows = audit.explain_request(answer.headers["x-request-id"])["decisions"]
    assert rows and all("\n" not in row["resource"] for row in audit.query(limit=5))


def test_a_403_recites_no_other_teams_resource_policy(client):
    """Carol, confined to nlp, asked for a job in cv: the 403 quoted cv's resource policy and the
    user it grants (and said nothing of the kind for a project that does not exist)."""
    carol = bearer(user_with_key("carol", "Team", TEAM))
    grant = {
        "Statement": [
            {
                "Sid": "ContractorAcme",
                "Effect": "Allow",
                "Principal": {"AIMASS": ["aimass:user/acme-contractor"]},
                "Action": "*",
                "Resource": "aimass:project/cv/*",
            }
        ]
    }
    directory.put_policy("cv-contractors", grant, kind="resource")
    directory.attach("cv-contractors", "project", "cv")
    messages = []
    for project in ("cv", "nope"):
        body = {"kind": "train", "project": project, "params": {"data": "x"}}
        answer = client.post("/v1/jobs", headers=carol, json=body)
        assert answer.status_code == 403
        messages.append(answer.json()["error"]["message"].replace(project, "P"))
    assert "acme" not in messages[0] and "cv-contractors" not in messages[0]
    assert messages[0] == messages[1]


def test_a_deny_on_an_encoder_holds_under_its_aliases_and_in_a_new_store(client):
    """``minilm`` and ``all-minilm-l6-v2`` open ``minilm-l6``: a Deny on it was passed by naming an
    alias, and a vector store could be made to embed with it."""
    allow_all = [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
    key = bearer(user_with_key("alice", "Everything", allow_all))
    deny = {
        "Statement": [
            {"Effect": "Deny", "Action": "model:Predict", "Resource": "aimass:project/*/model/minilm-l6"}
        ]
    }
    directory.put_policy("NoMiniLM", deny)
    directory.attach("NoMiniLM", "user", "alice")
    for name in ("minilm-l6", "minilm", "all-minilm-l6-v2"):
        for route, body in (
            ("/v1/embeddings", {"model": name, "input": "hi"}),
            ("/v1/rerank", {"model": name, "query": "hi", "documents": ["a"]}),
            ("/score", {"model": name, "text_1": "a", "text_2": "b"}),
        ):
            answer = client.post(route, headers=key, json=body)
            assert answer.status_code == 403 and "NoMiniLM" in answer.json()["error"]["message"], (
                route,
                name,
            )
    store = client.post("/v1/vector_stores", headers=key, json={"name": "s", "embedding_model": "minilm"})
    assert store.status_code == 403 and "minilm-l6" in store.json()["error"]["message"]
    assert client.get("/v1/vector_stores", headers=key).json()["data"] == []
