"""Evaluation: default deny; any matching Deny wins, in any policy; else any matching Allow grants.

A :class:`PolicySet` indexes the statements of a principal's identity policies and of the
resource policies that apply by catalog action, once; a decision looks the action up and checks
only those statements (resource, principal, conditions). The answer is a :class:`Decision`, the
same object the 403 body, ``aimass policy simulate`` and the audit log are built from.

>>> from aimass.access.policy import compile_policy
>>> admin = compile_policy("Admin", {"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}})
>>> guard = compile_policy("NoProd", {"Statement": {"Sid": "NoProdDeploy", "Effect": "Deny",
...     "Action": "model:Deploy", "Resource": "*",
...     "Condition": {"StringEquals": {"aimass:ModelStage": "production"}}}})
>>> d = PolicySet([admin, guard]).evaluate("model:Deploy", "aimass:project/nlp/model/reviews:3",
...                                        context={"aimass:ModelStage": "production"})
>>> d.decision, [m.sid for m in d.matched]
('explicitDeny', ['NoProdDeploy'])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from aimass.access import catalog
from aimass.access.conditions import EvalError
from aimass.access.policy import Statement
from aimass.errors import ConfigError

ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY = "allowed", "explicitDeny", "implicitDeny"


class Ref(NamedTuple):
    """A statement as reported: its policy, its Sid (or ``Statement[i]``), its effect and policy kind."""

    policy: str
    sid: str
    effect: str
    kind: str

    @classmethod
    def of(cls, st: Statement) -> Ref:
        return cls(st.policy, st.ref, st.effect, "identity" if st.principals is None else "resource")

    def to_dict(self) -> dict:
        return self._asdict()


@dataclass
class Decision:
    """What the evaluator decided and why.

    ``matched``: the statements that decided (the matching Denies, or the matching Allows);
    ``overridden``: Allows that matched but lost to a Deny; ``near_misses``: statements whose action
    matched but whose ``failed`` part (principal, resource or condition) did not;
    ``missing_context``: context keys a condition asked for that the request did not carry;
    ``errors``: conditions that could not be evaluated (a Deny with one counts as matching).
    """

    decision: str
    action: str
    resource: str
    matched: list = field(default_factory=list)
    overridden: list = field(default_factory=list)
    near_misses: list = field(default_factory=list)
    missing_context: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    conditional: bool = False  # a condition was consulted: the answer depends on the context

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOWED

    def to_dict(self) -> dict:
        return {
            "decision": self.decision,
            "action": self.action,
            "resource": self.resource,
            "matched": [r.to_dict() for r in self.matched],
            "overridden": [r.to_dict() for r in self.overridden],
            "near_misses": [
                {**Ref.of(st).to_dict(), "failed": part, "detail": detail(st, part, d)}
                for st, part, d in self.near_misses
            ],
            "missing_context": sorted(self.missing_context),
            "errors": list(self.errors),
        }


class PolicySet:
    """The compiled identity and resource policies that apply to one principal (cache it)."""

    def __init__(self, policies: Iterable = ()):
        self.policies = tuple(policies)
        index: dict[str, list[Statement]] = {}
        for policy in self.policies:
            for st in policy.statements:
                for action in st.actions:
                    index.setdefault(action, []).append(st)
        self._index = {a: tuple(s) for a, s in index.items()}

    def statements(self, action: str) -> tuple:
        """The statements that name ``action`` (a catalog action), Allow and Deny alike."""
        return self._index.get(action, ())

    def evaluate(
        self, action: str, resource: str, principals: Iterable[str] = (), context: dict | None = None
    ) -> Decision:
        """Decide ``action`` on ``resource`` for a caller named by ``principals`` (its ARNs:
        ``aimass:user/U``, ``aimass:group/G``..., ``aimass:key/ID``) in ``context``."""
        name = catalog.canonical(action)
        if name is None:
            raise ConfigError(f"Unknown action '{action}'.", hint="`aimass policy actions` lists them.")
        statements = self._index.get(name, ())
        ctx = {k.lower(): v for k, v in context.items()} if context else {}
        principals = tuple(principals)
        allows, denies, near, missing, errors = [], [], [], [], []
        conditional = False
        for st in statements:
            if st.match_principal is not None and not any(st.match_principal(p) for p in principals):
                near.append((st, "principal", None))
                continue
            if bool(st.match_resource(resource)) == st.resource_negated:
                near.append((st, "resource", None))
                continue
            if st.conditions:
                conditional = True
                failed = _conditions(st, ctx, missing, errors)
                if failed is not None:
                    if failed == "error" and st.deny:
                        denies.append(st)
                    else:
                        near.append((st, "condition", failed))
                    continue
            (denies if st.deny else allows).append(st)
        if denies:
            decision, matched, overridden = EXPLICIT_DENY, denies, allows
        elif allows:
            decision, matched, overridden = ALLOWED, allows, []
        else:
            decision, matched, overridden = IMPLICIT_DENY, [], []
        return Decision(
            decision,
            name,
            resource,
            [Ref.of(s) for s in matched],
            [Ref.of(s) for s in overridden],
            near,
            sorted(set(missing)),
            errors,
            conditional,
        )

    def allowed_many(
        self, action: str, resources: Iterable[str], principals: Iterable[str] = (), context=None
    ) -> set[str]:
        """Which of ``resources`` :meth:`evaluate` would allow, computed for a list page: the
        principal and the conditions (which read only the context) are judged once, then each
        resource is only matched against the statements' Resource/NotResource."""
        name = catalog.canonical(action)
        if name is None:
            raise ConfigError(f"Unknown action '{action}'.", hint="`aimass policy actions` lists them.")
        ctx = {k.lower(): v for k, v in context.items()} if context else {}
        principals = tuple(principals)
        judged = []  # (statement, deny) of the statements that apply to any resource they match
        for st in self._index.get(name, ()):
            if st.match_principal is not None and not any(st.match_principal(p) for p in principals):
                continue
            failed = _conditions(st, ctx, [], []) if st.conditions else None
            if failed is None or failed == "error" and st.deny:  # an erring Deny denies
                judged.append((st, st.deny))
        out = set()
        for resource in resources:
            allow = False
            for st, deny in judged:
                if bool(st.match_resource(resource)) != st.resource_negated:
                    if deny:
                        allow = False
                        break
                    allow = True
            if allow:
                out.add(resource)
        return out


def detail(st: Statement, part: str, text: str | None) -> str:
    """What a near-miss's failed part says (built only when reported, not on every decision)."""
    if part == "principal":
        return f"Principal is {list(st.principals)}"
    if part == "resource":
        return f"{'NotResource' if st.resource_negated else 'Resource'} is {list(st.resources)}"
    return text or ""


def _conditions(st: Statement, ctx: dict, missing: list, errors: list) -> str | None:
    """None if every condition holds; else ``"error"`` (one could not be evaluated: this wins over
    a false one) or a description of the first that failed."""
    failed = None
    erred = False
    for c in st.conditions:
        present = c.lkey in ctx
        if c.operator.name == "Null":
            holds = c.operator.test(not present, c.values)
        elif not present:
            missing.append(c.key)
            failed = failed or f"{c.label}: the key is missing from the request"
            continue
        else:
            try:
                holds = c.operator.test(ctx[c.lkey], c.values)
            except EvalError as exc:
                erred = True
                errors.append({"policy": st.policy, "sid": st.ref, "condition": c.label, "error": str(exc)})
                continue
        if not holds:
            failed = failed or f"{c.label}: {ctx.get(c.lkey)!r} does not satisfy {list(c.values)!r}"
    return "error" if erred else failed


def explain(decision: Decision, who: str) -> tuple[str, str]:
    """(message, hint) for a denial: the denying Sids and policies, or the closest near-misses."""
    head = f"{who} may not {decision.action} on {decision.resource}"
    if decision.decision == EXPLICIT_DENY:
        denied = "; ".join(f"statement '{r.sid}' of policy '{r.policy}'" for r in decision.matched)
        message = f"{head}: explicitly denied by {denied}."
        if decision.overridden:
            message += (
                " A Deny wins over the Allow in "
                + ", ".join(f"'{r.policy}' ({r.sid})" for r in decision.overridden)
                + "."
            )
        return message, "An explicit Deny wins over every Allow; change or detach the denying policy."
    message = f"{head}: no statement allowed it."
    rank = {"condition": 0, "resource": 2}  # the closest first
    # not a statement written for someone else (a resource policy's Principal): the caller would
    # learn another team's policies and whom they grant; the audit row and the simulator keep them
    misses = [m for m in decision.near_misses if not m[0].deny and m[1] != "principal"]
    misses = sorted(misses, key=lambda m: rank[m[1]])[:3]
    if misses:
        message += (
            " Closest: "
            + "; ".join(
                f"statement '{st.ref}' of policy '{st.policy}' ({part} did not match: {detail(st, part, d)})"
                for st, part, d in misses
            )
            + "."
        )
    if decision.missing_context:
        message += f" Missing context: {', '.join(decision.missing_context)}."
    return (
        message,
        f"Attach a policy allowing {decision.action} on it (`aimass policy simulate` tries it).",
    )
