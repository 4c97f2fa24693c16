"""A policy grants no more than its writer holds: no escalation through policy writes.

``policy:Write`` on a team's policies and ``group:Update`` on its group let a lead run the team, but
without this check also let them write ``Allow * on *`` and attach it to their own group (or rewrite
a policy already attached to it, or detach the Deny that holds them). Kubernetes RBAC refuses the
same way: a role may only be created or bound by someone who holds what it grants.

Whoever changes what a policy gives must hold what the change gives:

- writing a policy, or attaching one: each of its Allow statements' actions on its resources;
- adding a member to a group: what every policy attached to the group allows (joining a group is
  being attached its policies);
- lifting a Deny (detaching or deleting a policy, or rewriting it without one of its Deny
  statements): each lifted Deny's actions on its resources (one may only lift a restriction on
  what one may do oneself).

"Holds" is decided without conditions: a literal ARN is decided by the evaluator, as a request
would be (identity and resource policies), and must be allowed by a decision that consulted no
condition; a pattern (``aimass:project/nlp/*``) must be contained in one of the writer's
unconditional identity Allow patterns (``*``, the same pattern, or a shorter prefix ending in
``*``), and no Deny that applies to the writer may touch it. ``NotResource`` counts as ``*``.
The check is conservative: an administrator (``Allow *`` on ``*``) passes; a writer whose rights
come with conditions is refused and told to ask one.

>>> from aimass.access.policy import compile_policy
>>> held = compile_policy("lead", {"Statement": {"Effect": "Allow", "Action": "model:*",
...                                              "Resource": "aimass:project/nlp/*"}})
>>> wants = compile_policy("new", {"Statement": {"Effect": "Allow", "Action": "model:Read",
...                                              "Resource": ["aimass:project/nlp/model/*", "*"]}})
>>> missing(PolicySet([held]), wants.statements, lambda action, arn: False)
[('model:Read', '*')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aimass.access import audit, directory
from aimass.access.authorizer import Principal, build, policy_set
from aimass.access.evaluate import IMPLICIT_DENY, Decision, PolicySet
from aimass.access.patterns import compile_any
from aimass.access.policy import Statement, compile_policy
from aimass.errors import NotFoundError, PermissionDenied

HINT = (
    "A policy can give only what its writer holds, and a Deny can be lifted only by someone who may "
    "do what it denies. Narrow the policy to what you hold, or ask an administrator to make the change."
)


def _wild(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def contains(outer: str, inner: str) -> bool:
    """True when every ARN ``inner`` matches, ``outer`` matches too (conservative: False when
    unsure).

    >>> contains("aimass:project/nlp/*", "aimass:project/nlp/model/*"), contains("aimass:project/nlp*", "*")
    (True, False)
    """
    if outer in ("*", inner):
        return True
    if not _wild(inner):
        return bool(compile_any([outer])(inner))
    head = outer[:-1]
    return outer.endswith("*") and not _wild(head) and inner.startswith(head)


def overlaps(one: str, other: str) -> bool:
    """False only when no ARN can match both patterns (their literal heads differ)."""
    if not _wild(one):
        return bool(compile_any([other])(one))
    if not _wild(other):
        return bool(compile_any([one])(other))
    a, b = _head(one), _head(other)
    return a.startswith(b) or b.startswith(a)


def _head(pattern: str) -> str:
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return pattern[:cut]


def missing(
    held: PolicySet,
    statements: Iterable[Statement],
    literal: Callable[[str, str], bool],
    arns: tuple = (),
) -> list[tuple[str, str]]:
    """The (action, resource pattern) pairs of ``statements`` the writer does not hold.

    ``held``: the writer's identity policies and every resource policy that names them;
    ``literal(action, arn)``: the writer's unconditional decision on one ARN."""
    out = []
    for st in statements:
        patterns = ("*",) if st.resource_negated else st.resources
        for action in sorted(st.actions):
            for pattern in patterns:
                ok = literal(action, pattern) if not _wild(pattern) else _covered(held, action, pattern, arns)
                if not ok:
                    out.append((action, pattern))
    return out


def _covered(held: PolicySet, action: str, pattern: str, arns: tuple) -> bool:
    allowed = False
    for st in held.statements(action):
        applies = st.match_principal is None or any(st.match_principal(a) for a in arns)
        if not applies:
            continue
        if st.deny:
            if st.resource_negated or any(overlaps(p, pattern) for p in st.resources):
                return False
        elif st.match_principal is None and not st.conditions and not st.resource_negated:
            allowed = allowed or any(contains(p, pattern) for p in st.resources)
    return allowed


def check(
    principal: Principal, policy: str, statements: list[Statement], doing: str, request_id: str = ""
) -> None:
    """Raise PermissionDenied naming the first few things ``statements`` give that ``principal``
    does not hold (``doing``: what the caller is doing, for the message); the refusal is a row of
    the audit log under ``request_id`` (an ``implicitDeny`` of the first thing not held)."""
    if not statements:
        return
    universe = [
        n for kind in ("project", "resource") for names in directory.attachments(kind).values() for n in names
    ]
    held = build(principal, tuple(dict.fromkeys(universe)))
    context = principal.context()

    def literal(action: str, arn: str) -> bool:
        decision = policy_set(principal, arn).evaluate(action, arn, principal.arns, context)
        return decision.allowed and not decision.conditional

    lacking = missing(held, statements, literal, principal.arns)
    if lacking:
        shown = ", ".join(f"{a} on {r}" for a, r in lacking[:3]) + (
            f" and {len(lacking) - 3} more" if len(lacking) > 3 else ""
        )
        message = (
            f"{principal.name} may not {doing} policy '{policy}': it gives {shown}, "
            f"which {principal.name} does not hold."
        )
        action, resource = lacking[0]
        audit.record(principal.name, Decision(IMPLICIT_DENY, action, resource), request_id, "escalation")
        raise PermissionDenied(message, hint=HINT)


def _stored(name: str):
    info = directory.show_policy(name)
    return compile_policy(name, info["document"], info["kind"])


def _allows(policy) -> list[Statement]:
    return [st for st in policy.statements if not st.deny]


def _denies(policy) -> list[Statement]:
    return [st for st in policy.statements if st.deny]


def check_write(principal: Principal, name: str, document: dict, kind: str, request_id: str = "") -> None:
    """Before ``PUT /v1/policies/{name}``: the new document's Allows, and the Denies it drops."""
    new = compile_policy(name, document, kind)
    lifted = []
    try:
        old = _stored(name)
    except NotFoundError:  # a new policy
        old = None
    if old is not None:
        kept = {_same(st) for st in _denies(new)}
        lifted = [st for st in _denies(old) if _same(st) not in kept]
    check(principal, name, _allows(new), "write", request_id)
    check(principal, name, lifted, "drop a Deny of", request_id)


def check_attach(principal: Principal, name: str, request_id: str = "") -> None:
    check(principal, name, _allows(_stored(name)), "attach", request_id)


def check_lift(principal: Principal, name: str, doing: str, request_id: str = "") -> None:
    """Before detaching or deleting ``name``: its Denies."""
    check(principal, name, _denies(_stored(name)), doing, request_id)


def check_join(principal: Principal, group: str, request_id: str = "") -> None:
    """Before adding a member to ``group``: the Allows of every policy attached to it (whoever
    joins gets them, so adding anyone, oneself included, gives them)."""
    for name in directory.attached("group", group):
        doing = f"add a member to group '{group}', which has"
        check(principal, name, _allows(_stored(name)), doing, request_id)


def _same(st: Statement) -> tuple:
    return (st.actions, st.resources, st.resource_negated, st.principals, st.conditions)
