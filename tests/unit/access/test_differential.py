"""aimass's policy engine against Cedar (``cedarpy``), the reference evaluator, on random policies.

Hypothesis draws policy sets (identity and resource policies; Allow and Deny; Action and
NotAction with ``*``/``?`` wildcards and case variations; resource patterns; conditions on keys
present, missing or of the wrong type) and batches of requests; each set is translated to Cedar
*here*, independently of the engine:

- action patterns are expanded over the finite catalog with this file's own case-insensitive
  wildcard match (:func:`fnmatch.fnmatchcase` on lower case);
- resource patterns use Cedar's ``like`` on the ARN (passed in the context) when they hold only
  ``*``, otherwise they are expanded over the finite universe of resources with a case-sensitive
  :func:`fnmatch.fnmatchcase`; principals the same way over the finite set of principals;
- context values are typed in Cedar (``ip(...)``, longs, booleans; dates as epoch seconds); a value
  of the wrong type is sent as ``<key>_bad`` so that the translation can say "this condition
  errs" without Cedar erring (a Cedar ``forbid`` whose evaluation errors is skipped, aimass's Deny
  counts as matching): a forbid is ``scope && (erred || conditions)``, a permit
  ``scope && !erred && conditions``; every access is guarded with ``has``.

The decision and the deciding statements (Cedar's diagnostics reasons) must agree for every
request; two planted bugs (Allow beats Deny; case-sensitive actions) must be caught.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from fnmatch import fnmatchcase

import cedarpy
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from aimass.access import catalog, evaluate
from aimass.access.catalog import ACTIONS
from aimass.access.evaluate import PolicySet
from aimass.access.policy import IDENTITY, RESOURCE, compile_policy

REQUESTS_PER_EXAMPLE = 50
EXAMPLES = 210  # x 50 = 10,500 requests
PROJECTS, KINDS, NAMES = (
    ("nlp", "cv", "Nlp"),
    ("model", "dataset", "service"),
    ("reviews", "reviews:3", "news:12", "Reviews"),
)
RESOURCES = tuple(f"aimass:project/{p}/{k}/{n}" for p in PROJECTS for k in KINDS for n in NAMES)
USERS = {"alice": ("nlp-team",), "bob": ("cv-team", "nlp-team"), "carol": ()}
PRINCIPAL_ARNS = sorted(
    {f"aimass:user/{u}" for u in USERS}
    | {f"aimass:group/{g}" for gs in USERS.values() for g in gs}
    | {"aimass:key/k1"}
)
STAGES = ("production", "staging", "prod-eu", "Production")
# context key -> (Cedar field, type)
KEYS = {
    "aimass:ModelStage": ("stage", "string"),
    "aimass:KeyTag/team": ("team", "string"),
    "aimass:BatchSize": ("batch", "number"),
    "aimass:SourceIp": ("ip", "ip"),
    "aimass:SecureTransport": ("secure", "bool"),
    "aimass:CurrentTime": ("time", "date"),
}
OPERATORS = {
    "string": ["StringEquals", "StringNotEquals", "StringLike", "StringNotLike"],
    "number": [
        "NumericEquals",
        "NumericNotEquals",
        "NumericLessThan",
        "NumericLessThanEquals",
        "NumericGreaterThan",
        "NumericGreaterThanEquals",
    ],
    "ip": ["IpAddress", "NotIpAddress"],
    "bool": ["Bool"],
    "date": ["DateLessThan", "DateGreaterThan", "DateLessThanEquals", "DateGreaterThanEquals"],
}
CIDRS = ("10.0.0.0/8", "10.1.0.0/16", "192.168.1.0/24", "0.0.0.0/0", "172.16.5.4/32")
IPS = ("10.1.2.3", "10.200.0.1", "192.168.1.77", "172.16.5.4", "8.8.8.8")
EPOCHS = (1_700_000_000, 1_750_000_000, 1_800_000_000)


# ------------------------------------------------------------------ strategies
@st.composite
def case_flip(draw, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.swapcase() if f else c for c, f in zip(text, flips))


@st.composite
def wildcarded(draw, text: str, question: bool = True) -> str:
    """``text`` with a random run replaced by ``*`` and, maybe, one character by ``?``."""
    chars = list(text)
    if question and draw(st.booleans()) and chars:
        chars[draw(st.integers(0, len(chars) - 1))] = "?"
    if draw(st.booleans()):
        i = draw(st.integers(0, len(chars)))
        j = draw(st.integers(i, len(chars)))
        chars[i:j] = ["*"]
    return "".join(chars)


@st.composite
def action_pattern(draw) -> str:
    kind = draw(st.sampled_from(["exact", "exact", "wild", "service*", "star"]))
    action = draw(st.sampled_from(ACTIONS))
    if kind == "star":
        return "*"
    if kind == "service*":
        return draw(case_flip(action.split(":")[0])) + ":*"
    service, verb = action.split(":")
    verb = draw(wildcarded(verb)) if kind == "wild" else verb
    return f"{draw(case_flip(service))}:{draw(case_flip(verb))}"


@st.composite
def resource_pattern(draw) -> str:
    project, kind, name = (
        draw(st.sampled_from(PROJECTS)),
        draw(st.sampled_from(KINDS)),
        draw(st.sampled_from(NAMES)),
    )
    shape = draw(st.sampled_from(["exact", "name", "project*", "kind*", "star", "question"]))
    if shape == "star":
        return "*"
    if shape == "project*":
        return f"aimass:project/{project}/*"
    if shape == "kind*":
        return f"aimass:project/{draw(st.sampled_from([project, '*']))}/{kind}/*"
    if shape == "name":
        name = draw(wildcarded(draw(case_flip(name)), question=False))
    if shape == "question":
        name = draw(wildcarded(name, question=True))
    return f"aimass:project/{project}/{kind}/{name}"


@st.composite
def condition_values(draw, kind: str) -> list:
    n = draw(st.integers(1, 3))
    if kind == "string":
        return [draw(st.sampled_from(STAGES + ("prod*", "*eu", "sta*"))) for _ in range(n)]
    if kind == "number":
        return [draw(st.integers(0, 8)) for _ in range(n)]
    if kind == "ip":
        return [draw(st.sampled_from(CIDRS)) for _ in range(n)]
    if kind == "bool":
        return [draw(st.sampled_from(["true", "false"]))]
    return [iso(draw(st.sampled_from(EPOCHS))) for _ in range(n)]


@st.composite
def condition(draw) -> dict:
    out: dict = {}
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(KEYS)))
        kind = KEYS[key][1]
        if draw(st.integers(0, 9)) == 0:
            out.setdefault("Null", {})[key] = draw(st.sampled_from(["true", "false"]))
            continue
        operator = draw(st.sampled_from(OPERATORS[kind]))
        values = draw(condition_values(kind))
        if "Like" not in operator and kind == "string":
            values = [v for v in values if "*" not in v] or ["production"]
        out.setdefault(operator, {})[draw(case_flip(key))] = values if len(values) > 1 else values[0]
    return out


@st.composite
def statement(draw, index: int, kind: str) -> dict:
    out: dict = {"Effect": draw(st.sampled_from(["Allow", "Allow", "Deny"]))}
    if draw(st.integers(0, 4)):
        out["Sid"] = f"S{index}"
    patterns = draw(st.lists(action_pattern(), min_size=1, max_size=3))
    out["NotAction" if draw(st.integers(0, 4)) == 0 else "Action"] = (
        patterns if len(patterns) > 1 else patterns[0]
    )
    resources = draw(st.lists(resource_pattern(), min_size=1, max_size=3))
    out["NotResource" if draw(st.integers(0, 5)) == 0 else "Resource"] = resources
    if draw(st.booleans()):
        out["Condition"] = draw(condition())
    if kind == RESOURCE:
        who = draw(
            st.sampled_from(
                ["*", "aimass:user/alice", "aimass:group/nlp-*", "aimass:user/?ob", "aimass:key/k1"]
            )
        )
        out["Principal"] = "*" if who == "*" else {"AIMASS": [who]}
    return out


@st.composite
def policy_set(draw) -> list[tuple[str, str, dict]]:
    policies = []
    for p in range(draw(st.integers(1, 5))):
        kind = RESOURCE if draw(st.integers(0, 3)) == 0 else IDENTITY
        statements = [draw(statement(i, kind)) for i in range(draw(st.integers(1, 4)))]
        document = {"Statement": statements if len(statements) > 1 or draw(st.booleans()) else statements[0]}
        policies.append((f"P{p}", kind, document))
    return policies


def random_context(rng) -> dict:
    """A request context: each key missing, valid, or (typed keys) of the wrong type."""
    out = {}
    for key, (_, kind) in KEYS.items():
        state = rng.choice(["missing", "valid", "valid", "bad"] if kind != "string" else ["missing", "valid"])
        if state == "bad":
            out[key] = "not-a-value"
        elif state == "valid":
            out[key] = {
                "string": lambda: rng.choice(STAGES),
                "number": lambda: rng.randint(0, 8),
                "ip": lambda: rng.choice(IPS),
                "bool": lambda: rng.random() < 0.5,
                "date": lambda: iso(rng.choice(EPOCHS) + rng.choice([-1, 0, 1])),
            }[kind]()
    return out


def random_requests(rng, n: int = REQUESTS_PER_EXAMPLE) -> list[tuple]:
    """(action in a random case, resource, principal ARNs, context) x n. Requests come from a
    Random seeded by a number hypothesis draws (far cheaper than a draw per field); policies are shrunk."""
    out = []
    for _ in range(n):
        user = rng.choice(sorted(USERS))
        principals = [f"aimass:user/{user}", *(f"aimass:group/{g}" for g in USERS[user])]
        if rng.random() < 0.5:
            principals.append("aimass:key/k1")
        action = "".join(c.swapcase() if rng.random() < 0.3 else c for c in rng.choice(ACTIONS))
        out.append((action, rng.choice(RESOURCES), tuple(principals), random_context(rng)))
    return out


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ translation to Cedar
def q(text: str) -> str:
    return json.dumps(text)


def expand_actions(patterns) -> list[str]:
    return [a for a in ACTIONS if any(fnmatchcase(a.lower(), p.lower()) for p in patterns)]


def one_resource(pattern: str) -> str:
    if "?" not in pattern:
        return f"context.arn like {q(pattern)}"
    matches = [r for r in RESOURCES if fnmatchcase(r, pattern)]
    return f"[{', '.join(q(r) for r in matches)}].contains(context.arn)"


def one_value(operator: str, field: str, value) -> str:
    base = (
        operator.replace("Not", "", 1)
        if operator.startswith(("StringNot", "NumericNot", "NotIp"))
        else operator
    )
    base = {"StringNotLike": "StringLike"}.get(base, base)
    ref = f"context.{field}"
    if base == "StringEquals":
        return f"{ref} == {q(value)}"
    if base == "StringLike":
        return f"{ref} like {q(value)}"
    if base.startswith("Numeric"):
        op = {
            "Equals": "==",
            "LessThan": "<",
            "LessThanEquals": "<=",
            "GreaterThan": ">",
            "GreaterThanEquals": ">=",
        }
        return f"{ref} {op[base[len('Numeric') :]]} {int(value)}"
    if base.startswith("Date"):
        op = {"LessThan": "<", "LessThanEquals": "<=", "GreaterThan": ">", "GreaterThanEquals": ">="}
        epoch = int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
        return f"{ref} {op[base[len('Date') :]]} {epoch}"
    if base == "IpAddress":
        return f"{ref}.isInRange(ip({q(value)}))"
    if base == "Bool":
        return f"{ref} == {value}"
    raise AssertionError(operator)


def translate_condition(block: dict) -> tuple[list[str], list[str]]:
    """([condition that must hold], [what makes a condition err]) for one Condition block."""
    holds, errs = [], []
    for operator, tests in block.items():
        for key, values in tests.items():
            field, kind = KEYS[next(k for k in KEYS if k.lower() == key.lower())]
            if operator == "Null":
                missing = f"!(context has {field} || context has {field}_bad)"
                holds.append(missing if values == "true" else f"!{missing}")
                continue
            values = values if isinstance(values, list) else [values]
            any_value = " || ".join(f"({one_value(operator, field, v)})" for v in values)
            negated = operator.startswith(("StringNot", "NumericNot", "NotIp", "DateNot"))
            holds.append(f"(context has {field} && {'!' if negated else ''}({any_value}))")
            if kind != "string":
                errs.append(f"context has {field}_bad")
    return holds, errs


def translate(policies) -> tuple[str, list[tuple[str, str]]]:
    """Cedar policy text, and for each Cedar policy (policy0, policy1, ...) its (policy, Sid)."""
    texts, ids = [], []
    for name, kind, document in policies:
        raw = document["Statement"]
        for i, s in enumerate(raw if isinstance(raw, list) else [raw]):
            scope = []
            actions = s.get("Action", s.get("NotAction"))
            listed = expand_actions(actions if isinstance(actions, list) else [actions])
            in_actions = (
                f"[{', '.join(f'Action::{q(a)}' for a in listed)}].contains(action)" if listed else "false"
            )
            scope.append(in_actions if "Action" in s else f"!({in_actions})")
            resources = s.get("Resource", s.get("NotResource"))
            any_resource = " || ".join(f"({one_resource(r)})" for r in resources)
            scope.append(f"({any_resource})" if "Resource" in s else f"!({any_resource})")
            if kind == RESOURCE and s["Principal"] != "*":
                names = [
                    p for p in PRINCIPAL_ARNS if any(fnmatchcase(p, w) for w in s["Principal"]["AIMASS"])
                ]
                scope.append(f"context.principals.containsAny([{', '.join(q(p) for p in names)}])")
            holds, errs = translate_condition(s.get("Condition", {}))
            erred = " || ".join(errs) or "false"
            body = " && ".join(holds) or "true"
            where = " && ".join(scope)
            if s["Effect"] == "Deny":  # an erring condition makes a Deny match
                texts.append(
                    f"forbid(principal, action, resource) when {{ {where} && (({erred}) || ({body})) }};"
                )
            else:  # ... and an Allow not grant
                texts.append(
                    f"permit(principal, action, resource) when {{ {where} && !({erred}) && ({body}) }};"
                )
            ids.append((name, s.get("Sid") or f"Statement[{i}]"))
    return "\n".join(texts), ids


def cedar_context(arn: str, principals, ctx: dict) -> dict:
    out = {"arn": arn, "principals": list(principals)}
    for key, value in ctx.items():
        field, kind = KEYS[key]
        if value == "not-a-value":
            out[f"{field}_bad"] = True
        elif kind == "ip":
            out[field] = {"__extn": {"fn": "ip", "arg": value}}
        elif kind == "date":
            out[field] = int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
        else:
            out[field] = value
    return out


# ------------------------------------------------------------------ the comparison
def compare(policies, requests, outcomes: dict | None = None) -> list[str]:
    """Mismatches between aimass and Cedar on ``requests`` under ``policies``; ``outcomes`` counts
    decisions, requests with missing context keys and with evaluation errors."""
    engine = PolicySet(compile_policy(name, doc, kind) for name, kind, doc in policies)
    text, ids = translate(policies)
    batch = [
        {
            "principal": 'User::"u"',
            "action": f"Action::{q(catalog.canonical(action))}",
            "resource": 'R::"r"',
            "context": cedar_context(arn, principals, ctx),
        }
        for action, arn, principals, ctx in requests
    ]
    answers = cedarpy.is_authorized_batch(batch, text, [])
    mismatches = []
    for (action, arn, principals, ctx), answer in zip(requests, answers):
        assert not answer.diagnostics.errors, (answer.diagnostics.errors, text)
        reasons = sorted(ids[int(r.removeprefix("policy"))] for r in answer.diagnostics.reasons)
        if answer.decision == cedarpy.Decision.Allow:
            expected = "allowed"
        else:
            expected = "explicitDeny" if reasons else "implicitDeny"
        got = engine.evaluate(action, arn, principals, ctx)
        matched = sorted((r.policy, r.sid) for r in got.matched)
        if outcomes is not None:
            for outcome in (got.decision, "missing" * bool(got.missing_context), "error" * bool(got.errors)):
                if outcome:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if (got.decision, matched) != (expected, reasons):
            mismatches.append(
                f"{action} {arn} {principals} {ctx}: "
                f"aimass {got.decision} {matched}, Cedar {expected} {reasons}"
            )
        listed = engine.allowed_many(action, RESOURCES, principals, ctx)  # the list pages' path
        if (arn in listed) != (expected == "allowed"):
            listed_text = f"list path {arn in listed}, Cedar {expected}"
            mismatches.append(f"{action} {arn} {principals} {ctx}: {listed_text}")
    return mismatches


def run_differential(examples: int, shrink: bool = True) -> dict:
    """Compare on ``examples`` random policy sets x 50 requests; returns how many requests had
    each outcome (``requests``: all of them)."""
    outcomes: dict[str, int] = {}
    phases = [Phase.explicit, Phase.generate, *([Phase.shrink] if shrink else [])]

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        phases=phases,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(policy_set(), st.integers(0, 2**32))
    def check(policies, seed):
        requests = random_requests(random.Random(seed))
        outcomes["requests"] = outcomes.get("requests", 0) + len(requests)
        mismatches = compare(policies, requests, outcomes)
        assert not mismatches, "\n".join(mismatches[:5]) + "\n" + json.dumps(policies, indent=1)

    check()
    return outcomes


def test_aimass_agrees_with_cedar_on_10000_random_requests():
    outcomes = run_differential(EXAMPLES)
    assert outcomes["requests"] >= 10_000
    # worth something only if every outcome occurs often
    for outcome in ("allowed", "explicitDeny", "implicitDeny", "missing", "error"):
        assert outcomes.get(outcome, 0) >= 500, outcomes


def test_a_planted_bug_allow_beats_deny_is_caught(monkeypatch):
    real = PolicySet.evaluate

    def allow_beats_deny(self, *args, **kwargs):
        d = real(self, *args, **kwargs)
        if d.decision == evaluate.EXPLICIT_DENY and d.overridden:
            d.decision, d.matched, d.overridden = evaluate.ALLOWED, d.overridden, []
        return d

    monkeypatch.setattr(PolicySet, "evaluate", allow_beats_deny)
    with pytest.raises(AssertionError, match="aimass allowed"):
        run_differential(60, shrink=False)


def test_a_planted_bug_case_sensitive_actions_is_caught(monkeypatch):
    monkeypatch.setattr(
        catalog, "expand", lambda p: frozenset(a for a in ACTIONS if fnmatchcase(a, p)) or {ACTIONS[0]}
    )
    with pytest.raises(AssertionError, match="Cedar"):
        run_differential(60, shrink=False)
