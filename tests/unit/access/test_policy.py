"""The policy engine: validation names the JSON path; evaluation follows the documented rules."""

from __future__ import annotations

import pytest

from aimass.access import EXPLICIT_DENY, IMPLICIT_DENY, PolicyError, PolicySet, compile_policy
from aimass.access.evaluate import explain
from aimass.access.policy import RESOURCE

ARN = "aimass:project/nlp/model/reviews:3"


def allow(**extra) -> dict:
    return {"Effect": "Allow", "Action": "model:*", "Resource": "*", **extra}


@pytest.mark.parametrize(
    ("statement", "where", "words"),
    [
        (
            {"Effect": "Allow", "Action": "model:Fly", "Resource": "*"},
            "Statement[1].Action",
            "unknown action",
        ),
        ({"Effect": "Allow", "Action": "modle:*", "Resource": "*"}, "Statement[1].Action", "unknown action"),
        ({"Effect": "Allow", "Action": "*", "Resource": "arn:x"}, "Statement[1].Resource", "bad ARN"),
        (
            {"Effect": "Allow", "Action": "*", "Resource": "aimass:project/a/car/x"},
            "Statement[1].Resource",
            "car",
        ),
        ({"Effect": "allow", "Action": "*", "Resource": "*"}, "Statement[1].Effect", "Effect"),
        ({"Effect": "Allow", "Resource": "*"}, "Statement[1]", "Action"),
        (
            allow(Condition={"NumericLessThen": {"aimass:BatchSize": 3}}),
            "Statement[1].Condition.NumericLessThen",
            "operator",
        ),
        (
            allow(Condition={"NumericLessThan": {"aimass:BatchSize": "x"}}),
            "Statement[1].Condition.NumericLessThan.aimass:BatchSize",
            "number",
        ),
        (
            allow(Condition={"IpAddress": {"aimass:SourceIp": "10.0.0.300/8"}}),
            "Statement[1].Condition.IpAddress.aimass:SourceIp",
            "IP",
        ),
        (
            allow(Condition={"StringEquals": {"aimass:Colour": "x"}}),
            "Statement[1].Condition.StringEquals.aimass:Colour",
            "context key",
        ),
        (allow(Principal="*"), "Statement[1].Principal", "identity policy"),
        (allow(Sidd="x"), "Statement[1]", "unknown key"),
    ],
)
def test_validation_names_the_json_path(statement, where, words):
    with pytest.raises(PolicyError) as err:
        compile_policy("p", {"Statement": [allow(), statement]})
    assert err.value.where == where
    assert words in err.value.message


def test_resource_policies_need_a_principal():
    with pytest.raises(PolicyError, match="Principal"):
        compile_policy("p", {"Statement": allow()}, RESOURCE)
    assert compile_policy("p", {"Statement": allow(Principal={"AIMASS": "aimass:user/a"})}, RESOURCE)


def evaluate(statements, action="model:Deploy", resource=ARN, context=None, principals=(), kind="identity"):
    policy = compile_policy("P", {"Statement": statements}, kind)
    return PolicySet([policy]).evaluate(action, resource, principals, context)


def test_default_deny_and_deny_wins():
    assert evaluate([{"Effect": "Allow", "Action": "model:Read", "Resource": "*"}]).decision == IMPLICIT_DENY
    d = evaluate([allow(Sid="A"), {"Sid": "D", "Effect": "Deny", "Action": "model:deploy", "Resource": "*"}])
    assert d.decision == EXPLICIT_DENY
    assert [(r.sid, r.effect) for r in d.matched] == [("D", "Deny")]
    assert [r.sid for r in d.overridden] == ["A"]


def test_actions_ignore_case_and_resources_do_not():
    assert evaluate([allow(Action="MODEL:DEP?OY")]).allowed
    assert not evaluate([allow(Resource="aimass:project/NLP/*")]).allowed


def test_not_action_and_not_resource():
    st = {"Effect": "Allow", "NotAction": "model:Deploy", "Resource": "*"}
    assert not evaluate([st]).allowed
    assert evaluate([st], action="model:Read").allowed
    st = {"Effect": "Allow", "Action": "*", "NotResource": "aimass:project/cv/*"}
    assert evaluate([st]).allowed
    assert not evaluate([st], resource="aimass:project/cv/model/x").allowed


def test_missing_context_key_makes_a_condition_false_even_negated():
    st = allow(Condition={"StringNotEquals": {"aimass:ModelStage": "production"}})
    d = evaluate([st])
    assert d.decision == IMPLICIT_DENY
    assert d.missing_context == ["aimass:ModelStage"]
    assert d.near_misses[0][1] == "condition"
    assert evaluate([st], context={"aimass:modelstage": "staging"}).allowed  # keys ignore case
    null = allow(Condition={"Null": {"aimass:KeyTag/team": "true"}})
    assert evaluate([null]).allowed
    assert not evaluate([null], context={"aimass:KeyTag/team": "x"}).allowed


def test_an_evaluation_error_denies():
    cond = {"NumericLessThan": {"aimass:BatchSize": 10}}
    context = {"aimass:BatchSize": "many"}
    assert not evaluate([allow(Condition=cond)], context=context).allowed
    deny = {"Sid": "D", "Effect": "Deny", "Action": "*", "Resource": "*", "Condition": cond}
    d = evaluate([allow(), deny], context=context)
    assert d.decision == EXPLICIT_DENY and d.errors


@pytest.mark.parametrize(
    ("operator", "value", "context", "holds"),
    [
        ("IpAddress", "10.0.0.0/8", "10.2.3.4", True),
        ("IpAddress", "10.0.0.0/8", "11.2.3.4", False),
        ("NotIpAddress", "10.0.0.0/8", "11.2.3.4", True),
        ("DateLessThan", "2030-01-01T00:00:00Z", "2026-05-01T00:00:00Z", True),
        ("DateGreaterThan", "2030-01-01T00:00:00Z", "2026-05-01T00:00:00Z", False),
        ("Bool", "true", True, True),
        ("StringLike", "prod*", "production", True),
        ("StringNotLike", "prod*", "staging", True),
        ("NumericGreaterThanEquals", 5, "5", True),
    ],
)
def test_operators(operator, value, context, holds):
    key = {
        "IpAddress": "aimass:SourceIp",
        "NotIpAddress": "aimass:SourceIp",
        "Bool": "aimass:SecureTransport",
    }
    key |= {"DateLessThan": "aimass:CurrentTime", "DateGreaterThan": "aimass:CurrentTime"}
    name = key.get(operator, "aimass:ModelStage" if "String" in operator else "aimass:BatchSize")
    d = evaluate([allow(Condition={operator: {name: value}})], context={name: context})
    assert d.allowed is holds


def test_resource_policy_principal():
    st = allow(Principal={"AIMASS": ["aimass:group/nlp-*"]})
    assert evaluate([st], principals=["aimass:user/a", "aimass:group/nlp-team"], kind=RESOURCE).allowed
    d = evaluate([st], principals=["aimass:user/a"], kind=RESOURCE)
    assert d.near_misses[0][1] == "principal"


def test_explain_names_sids_or_near_misses():
    d = evaluate(
        [allow(Sid="A"), {"Sid": "NoProd", "Effect": "Deny", "Action": "model:Deploy", "Resource": "*"}]
    )
    message, _ = explain(d, "user alice")
    assert "NoProd" in message and "'P'" in message
    d = evaluate([allow(Sid="OnlyCv", Resource="aimass:project/cv/*")])
    message, _ = explain(d, "user alice")
    assert "no statement allowed it" in message and "OnlyCv" in message and "resource" in message
    assert d.to_dict()["near_misses"][0]["detail"] == "Resource is ['aimass:project/cv/*']"
