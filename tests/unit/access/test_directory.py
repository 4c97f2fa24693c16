"""Users, groups, projects, policies and attachments in SQLite; keys act by scope or as their user."""

from __future__ import annotations

import pytest

from aimass.access import audit, directory
from aimass.access.authorizer import Authorizer, Principal, simulate
from aimass.access.policy import PolicyError
from aimass.errors import ConfigError, NotFoundError

NLP_ALL = {
    "Statement": [{"Sid": "NlpAll", "Effect": "Allow", "Action": "*", "Resource": "aimass:project/nlp/*"}]
}
MODEL = "aimass:project/nlp/model/reviews:3"


def test_users_groups_policies_and_simulate(home):
    directory.create_project("nlp")
    directory.create_user("alice")
    directory.create_group("nlp-team")
    directory.add_member("nlp-team", "alice")
    directory.put_policy("NlpAll", NLP_ALL)
    assert simulate("model:Deploy", MODEL, user="alice")["decision"] == "implicitDeny"
    directory.attach("NlpAll", "group", "nlp-team")
    answer = simulate("model:Deploy", MODEL, user="alice")
    assert answer["decision"] == "allowed" and answer["matched"][0]["sid"] == "NlpAll"
    assert simulate("model:Deploy", "aimass:project/cv/model/x:1", user="alice")["decision"] == "implicitDeny"
    assert directory.show_user("alice")["groups"] == ["nlp-team"]
    assert directory.show_policy("NlpAll")["attached"] == [{"type": "group", "target": "nlp-team"}]
    directory.detach("NlpAll", "group", "nlp-team")
    assert simulate("model:Deploy", MODEL, user="alice")["decision"] == "implicitDeny"


def test_validation_and_mistakes_are_clear(home):
    with pytest.raises(PolicyError) as err:
        directory.put_policy(
            "Bad", {"Statement": [{"Effect": "Allow", "Action": "model:Fly", "Resource": "*"}]}
        )
    assert err.value.where == "Statement[0].Action"
    with pytest.raises(ConfigError, match="managed"):
        directory.put_policy("Admin", NLP_ALL)
    directory.put_policy("NlpAll", NLP_ALL)
    with pytest.raises(ConfigError, match="identity policy"):
        directory.attach("NlpAll", "project", "nlp")
    with pytest.raises(NotFoundError):
        directory.attach("NlpAll", "user", "nobody")
    with pytest.raises(ConfigError, match="not allowed"):
        directory.create_user("../x")


def test_scopes_are_managed_policies_and_keys_can_be_bound(home):
    key = Principal.of_key("k1", ("predict",))
    assert [p for p, _ in key.policies] == ["PredictOnly"]
    assert simulate("model:Predict", MODEL, key="k1", scopes=("predict",))["decision"] == "allowed"
    assert simulate("model:Deploy", MODEL, key="k1", scopes=("predict",))["decision"] == "implicitDeny"
    assert simulate("model:Deploy", MODEL, key="k2", scopes=("manage",))["decision"] == "allowed"
    assert simulate("job:SubmitCode", MODEL, key="k2", scopes=("manage",))["decision"] == "implicitDeny"
    assert simulate("job:SubmitCode", MODEL, key="k3", scopes=("jobs:code",))["decision"] == "allowed"
    directory.create_project("cv")
    directory.bind_key("k2", project="cv")  # its scopes now reach only project cv
    assert simulate("model:Deploy", MODEL, key="k2", scopes=("manage",))["decision"] == "implicitDeny"
    assert (
        simulate("model:Deploy", "aimass:project/cv/model/a", key="k2", scopes=("manage",))["decision"]
        == "allowed"
    )
    directory.create_user("bob")
    directory.bind_key("k1", user="bob")  # acts as bob, who has no policy
    assert simulate("model:Predict", MODEL, key="k1", scopes=("predict",))["decision"] == "implicitDeny"


def test_resource_policies_on_a_project(home):
    directory.create_project("nlp")
    directory.create_user("carol")
    share = {
        "Statement": {
            "Sid": "Share",
            "Effect": "Allow",
            "Principal": {"AIMASS": "aimass:user/carol"},
            "Action": "model:Predict",
            "Resource": "*",
        }
    }
    directory.put_policy("ShareNlp", share, kind="resource")
    directory.attach("ShareNlp", "project", "nlp")
    answer = simulate("model:Predict", MODEL, user="carol")
    assert answer["decision"] == "allowed" and answer["matched"][0]["kind"] == "resource"


def test_authorizer_caches_and_follows_changes(home):
    directory.create_project("nlp")
    directory.create_user("dan")
    directory.put_policy("NlpAll", NLP_ALL)
    directory.bind_key("kd", user="dan")
    authorizer = Authorizer()
    who = authorizer.principal("kd", ("predict",))
    assert authorizer.decide(who, "model:Deploy", MODEL, {}).decision == "implicitDeny"
    directory.attach("NlpAll", "user", "dan")  # bumps access.changes: the caches drop
    who = authorizer.principal("kd", ("predict",))
    decision = authorizer.decide(who, "model:Deploy", MODEL, {})
    assert decision.allowed
    audit.record(who.name, decision, request_id="r1")
    assert audit.query(principal="dan")[0]["decision"] == "allowed"
    assert "NlpAll" in audit.explain_request("r1")["decisions"][0]["why"]
