"""Policy documents: parse, validate (errors name the JSON path) and compile.

A document has the IAM shape::

    {"Version": "2026-01-01",
     "Statement": [{"Sid": "ReadNlp", "Effect": "Allow",
                    "Action": ["model:Read", "model:Predict"],
                    "Resource": "aimass:project/nlp/*",
                    "Condition": {"IpAddress": {"aimass:SourceIp": "10.0.0.0/8"}}}]}

``Action``/``NotAction`` patterns (``*``, ``?``; any case) are expanded over the action catalog
here, once; ``Resource``/``NotResource`` and ``Principal`` patterns are case-sensitive and compiled
into one matcher each. Identity policies (attached to users, groups, keys) have no ``Principal``;
resource policies (attached to a project or one resource) must have one.

>>> p = compile_policy("ro", {"Statement": {"Effect": "Allow", "Action": "MODEL:read", "Resource": "*"}})
>>> sorted(p.statements[0].actions)
['model:Read']
>>> bad = {"Statement": [{"Effect": "Allow", "Action": "model:Fly", "Resource": "*"}]}
>>> compile_policy("bad", bad)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
aimass.access.policy.PolicyError: Statement[0].Action: unknown action 'model:Fly'.
Hint: Actions of 'model': model:Predict, model:List, model:Read, model:Deploy, ..., model:Export.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from aimass.access import catalog
from aimass.access.conditions import OPERATORS, Operator
from aimass.access.patterns import compile_any
from aimass.errors import ConfigError

IDENTITY, RESOURCE = "identity", "resource"
STATEMENT_KEYS = ("Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition", "Principal")
MAX_STATEMENTS = 200


class PolicyError(ConfigError):
    """A policy document is invalid; ``where`` is the JSON path of the fault."""

    code = "invalid_policy"


@dataclass(frozen=True)
class Condition:
    operator: Operator
    key: str  # as written
    lkey: str  # lower case: context keys are matched ignoring case
    values: tuple

    @property
    def label(self) -> str:
        return f"{self.operator.name} {self.key}"


@dataclass(frozen=True, eq=False)
class Statement:
    """One compiled statement. ``actions``: the catalog actions it applies to (NotAction inverted)."""

    policy: str
    index: int
    sid: str
    deny: bool
    actions: frozenset
    resources: tuple
    resource_negated: bool
    match_resource: Callable[[str], object]
    principals: tuple | None  # None: identity policy
    match_principal: Callable[[str], object] | None
    conditions: tuple = ()

    @property
    def effect(self) -> str:
        return "Deny" if self.deny else "Allow"

    @property
    def ref(self) -> str:
        """The Sid, or ``Statement[i]`` when the statement has none."""
        return self.sid or f"Statement[{self.index}]"


@dataclass(frozen=True)
class Policy:
    name: str
    kind: str
    statements: tuple
    document: dict = field(repr=False)


def compile_policy(name: str, document: dict | str, kind: str = IDENTITY) -> Policy:
    """Validate ``document`` and compile it; :class:`PolicyError` names the JSON path of a fault."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"not JSON: {exc}", where="$", hint="A policy is a JSON object.") from None
    if not isinstance(document, dict):
        raise PolicyError("a policy is a JSON object with a 'Statement'.", where="$")
    if unknown := sorted(set(document) - {"Version", "Statement", "Id"}):
        raise PolicyError(f"unknown key '{unknown[0]}'.", where="$", hint="Use Version and Statement.")
    raw = document.get("Statement")
    if raw is None:
        raise PolicyError("missing 'Statement'.", where="$", hint="Add a list of statements.")
    listed = isinstance(raw, list)
    items = raw if listed else [raw]
    if not items or len(items) > MAX_STATEMENTS:
        raise PolicyError(f"needs 1 to {MAX_STATEMENTS} statements.", where="Statement")
    statements, sids = [], set()
    for i, item in enumerate(items):
        path = f"Statement[{i}]" if listed else "Statement"
        statement = _statement(name, i, item, path, kind)
        if statement.sid and statement.sid in sids:
            raise PolicyError(f"Sid '{statement.sid}' is used twice.", where=f"{path}.Sid")
        sids.add(statement.sid)
        statements.append(statement)
    return Policy(name, kind, tuple(statements), document)


def _statement(policy: str, index: int, item, path: str, kind: str) -> Statement:
    if not isinstance(item, dict):
        raise PolicyError("a statement is a JSON object.", where=path)
    if unknown := [k for k in item if k not in STATEMENT_KEYS]:
        raise PolicyError(
            f"unknown key '{unknown[0]}'.", where=path, hint=f"Use {', '.join(STATEMENT_KEYS)}."
        )
    sid = item.get("Sid", "")
    if not isinstance(sid, str):
        raise PolicyError("Sid must be a string.", where=f"{path}.Sid")
    effect = item.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"Effect must be 'Allow' or 'Deny'; got {effect!r}.", where=f"{path}.Effect")
    action_key = _one_of(item, "Action", "NotAction", path)
    resource_key = _one_of(item, "Resource", "NotResource", path)
    actions = frozenset().union(
        *(_actions(p, f"{path}.{action_key}") for p in _strings(item[action_key], f"{path}.{action_key}"))
    )
    if action_key == "NotAction":
        actions = frozenset(catalog.ACTIONS) - actions
    resources = tuple(_strings(item[resource_key], f"{path}.{resource_key}"))
    for pattern in resources:
        check_arn(pattern, f"{path}.{resource_key}")
    principals = _principal(item.get("Principal"), f"{path}.Principal", kind)
    return Statement(
        policy=policy,
        index=index,
        sid=sid,
        deny=effect == "Deny",
        actions=actions,
        resources=resources,
        resource_negated=resource_key == "NotResource",
        match_resource=compile_any(resources),
        principals=principals,
        match_principal=None if principals is None else compile_any(principals),
        conditions=_conditions(item.get("Condition"), f"{path}.Condition"),
    )


def _one_of(item: dict, key: str, negated: str, path: str) -> str:
    if (key in item) == (negated in item):
        raise PolicyError(f"needs exactly one of '{key}' and '{negated}'.", where=path)
    return key if key in item else negated


def _strings(value, path: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise PolicyError("must be a non-empty string or a list of them.", where=path)
    return values


def _actions(pattern: str, path: str) -> frozenset:
    service = pattern.split(":", 1)[0] if ":" in pattern else None
    if pattern != "*" and service is None:
        raise PolicyError(f"unknown action '{pattern}'.", where=path, hint="Actions read service:Verb.")
    wild = service is None or "*" in service or "?" in service
    if not wild and service.lower() not in catalog.SERVICES:
        known = ", ".join(sorted(catalog.SERVICES))
        raise PolicyError(f"unknown action '{pattern}'.", where=path, hint=f"Services: {known}.")
    matched = catalog.expand(pattern)
    if not matched:
        family = [a for a in catalog.ACTIONS if a.lower().startswith(f"{(service or '').lower()}:")]
        hint = f"Actions of '{service}': {', '.join(family)}." if family else "See `aimass policy actions`."
        raise PolicyError(f"unknown action '{pattern}'.", where=path, hint=hint)
    return matched


def check_arn(pattern: str, path: str) -> None:
    """An ARN (pattern) reads ``*`` or ``aimass:<kind>/...``; a kind spelled without wildcards must exist."""
    if pattern == "*":
        return
    hint = "e.g. aimass:project/nlp/model/reviews:3, aimass:project/nlp/*, aimass:user/alice"
    if not pattern.startswith("aimass:"):
        raise PolicyError(f"bad ARN '{pattern}': it must start with 'aimass:'.", where=path, hint=hint)
    parts = pattern[len("aimass:") :].split("/")
    if any(not p for p in parts):
        raise PolicyError(f"bad ARN '{pattern}': empty segment.", where=path, hint=hint)
    top = parts[0]
    wild = lambda s: "*" in s or "?" in s  # noqa: E731
    if not wild(top) and top not in catalog.TOP_KINDS:
        raise PolicyError(f"bad ARN '{pattern}': unknown kind '{top}'.", where=path, hint=hint)
    if top == "project" and len(parts) >= 3 and not wild(parts[2]) and parts[2] not in catalog.PROJECT_KINDS:
        kinds = ", ".join(sorted(catalog.PROJECT_KINDS))
        raise PolicyError(
            f"bad ARN '{pattern}': unknown kind '{parts[2]}'.", where=path, hint=f"Use {kinds}."
        )


def _principal(value, path: str, kind: str) -> tuple | None:
    if kind == IDENTITY:
        if value is not None:
            raise PolicyError(
                "an identity policy has no Principal (it applies to whoever it is attached to).",
                where=path,
                hint="Drop Principal, or attach the policy to a project or resource.",
            )
        return None
    if value is None:
        raise PolicyError(
            "a resource policy statement needs a Principal.", where=path, hint='"Principal": "*"'
        )
    if value == "*":
        return ("*",)
    if not (isinstance(value, dict) and list(value) == ["AIMASS"]):
        raise PolicyError('Principal is "*" or {"AIMASS": [ARN, ...]}.', where=path)
    arns = tuple(_strings(value["AIMASS"], f"{path}.AIMASS"))
    for arn in arns:
        if arn != "*" and not arn.startswith(("aimass:user/", "aimass:group/", "aimass:key/")):
            raise PolicyError(
                f"bad principal '{arn}'.",
                where=f"{path}.AIMASS",
                hint="aimass:user/U, aimass:group/G or aimass:key/ID",
            )
    return arns


def _conditions(value, path: str) -> tuple:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise PolicyError("Condition maps operators to {key: values}.", where=path)
    out = []
    for name, tests in value.items():
        where = f"{path}.{name}"
        operator = OPERATORS.get(name)
        if operator is None:
            raise PolicyError("unknown operator.", where=where, hint=f"Operators: {', '.join(OPERATORS)}.")
        if not isinstance(tests, dict) or not tests:
            raise PolicyError("an operator maps context keys to values.", where=where)
        for key, values in tests.items():
            if not catalog.known_context_key(key):
                known = ", ".join([*catalog.CONTEXT_KEYS, "aimass:KeyTag/<tag>"])
                raise PolicyError(
                    f"unknown context key '{key}'.", where=f"{where}.{key}", hint=f"Keys: {known}."
                )
            listed = values if isinstance(values, list) else [values]
            if not listed or any(isinstance(v, dict | list) or v is None for v in listed):
                raise PolicyError(
                    "values are a string, number or bool, or a list of them.", where=f"{where}.{key}"
                )
            try:
                parsed = operator.parse(listed)
            except ValueError as exc:
                raise PolicyError(f"bad value: {exc}.", where=f"{where}.{key}") from None
            out.append(Condition(operator, key, key.lower(), parsed))
    return tuple(out)
