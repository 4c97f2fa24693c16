"""Who is asking, which policies apply, and a cached decision with its audit record.

A caller is a :class:`Principal`: an API key acts by its scopes (as managed policies, narrowed to
its project if it is bound to one) plus the policies attached to the key; a key bound to a user
acts as that user (the user's and its groups' policies, plus the key's). Resource policies come
from the resource's project and from the resource itself (its ARN, or its model without version).

:class:`Authorizer` caches principals, policy sets and decisions that consulted no condition, and
drops them all when ``AIMASS_HOME/access.changes`` changes (any write through
:mod:`aimass.access.directory`, from any process), so a policy change applies from the next request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from aimass import paths
from aimass.access import directory
from aimass.access.evaluate import ALLOWED, Decision, PolicySet
from aimass.access.managed import SCOPE_POLICIES
from aimass.access.policy import check_arn

log = logging.getLogger("aimass.access")
ADMIN_KEY = "admin"


@dataclass(frozen=True)
class Principal:
    name: str  # for messages: "user alice (key 1a2b3c4d)", "key 1a2b3c4d", "admin"
    arns: tuple  # aimass:user/U, aimass:group/G..., aimass:key/K
    policies: tuple  # ((policy name, project to narrow a managed policy to or None), ...)
    key_id: str | None = None
    user: str | None = None
    project: str | None = None
    tags: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def of_user(
        cls, user: str, key_id: str | None = None, extra: tuple = (), tags: dict | None = None
    ) -> Principal:
        groups = directory.groups_of(user)
        names = directory.attached("user", user) + [p for g in groups for p in directory.attached("group", g)]
        arns = (f"aimass:user/{user}", *(f"aimass:group/{g}" for g in groups))
        arns += (f"aimass:key/{key_id}",) if key_id else ()
        label = f"user {user}" + (f" (key {key_id})" if key_id else "")
        policies = tuple(dict.fromkeys((n, None) for n in [*names, *extra]))
        return cls(label, arns, policies, key_id, user, None, tags or {})

    @classmethod
    def of_key(cls, key_id: str, scopes: tuple) -> Principal:
        """A key: its user's policies if bound to one, else its scopes' managed policies."""
        if key_id == ADMIN_KEY:  # the admin token: everything (docs/access.md), whatever its scopes
            return cls(key_id, (f"aimass:key/{key_id}",), (("Admin", None),), key_id)
        if key_id == "anonymous":
            return cls(
                key_id, (f"aimass:key/{key_id}",), tuple((SCOPE_POLICIES[s], None) for s in scopes), key_id
            )
        binding = directory.key_binding(key_id)
        own = tuple(directory.attached("key", key_id))
        if binding["user"]:
            return cls.of_user(binding["user"], key_id, own, binding["tags"])
        project = binding["project"]
        names = [(SCOPE_POLICIES[s], project) for s in scopes if s in SCOPE_POLICIES] + [
            (n, None) for n in own
        ]
        return cls(
            f"key {key_id}",
            (f"aimass:key/{key_id}",),
            tuple(dict.fromkeys(names)),
            key_id,
            None,
            project,
            binding["tags"],
        )

    def context(self) -> dict:
        out = {f"aimass:KeyTag/{k}": v for k, v in self.tags.items()}
        if self.user:
            out["aimass:Username"] = self.user
        if self.key_id:
            out["aimass:KeyId"] = self.key_id
        if self.project:
            out["aimass:KeyProject"] = self.project
        return out


def resource_policies(resource: str, attached=directory.attached) -> tuple:
    """Names of the resource policies on ``resource``'s project, on the ARN, and on its model (no
    version). ``attached(target_type, target)``: the policies on a target (a database read by
    default; :meth:`Authorizer.decide_many` passes maps read once)."""
    parts = resource.split("/")
    names = list(attached("project", parts[1])) if len(parts) > 1 and parts[0] == "aimass:project" else []
    names += attached("resource", resource)
    if ":" in parts[-1] and len(parts) == 4:
        names += attached("resource", resource.rsplit(":", 1)[0])
    return tuple(dict.fromkeys(names))


def build(principal: Principal, resource_names: tuple) -> PolicySet:
    policies = [directory.compiled(name, project) for name, project in principal.policies]
    policies += [directory.compiled(name) for name in resource_names]
    return PolicySet(p for p in policies if p is not None)


def policy_set(principal: Principal, resource: str) -> PolicySet:
    """The policies that decide ``principal`` on ``resource`` (uncached: for the simulator)."""
    return build(principal, resource_policies(resource))


def simulate(
    action: str, resource: str, *, user: str | None = None, key: str | None = None, scopes=(), context=None
) -> dict:
    """The simulator's full answer for ``user`` (or API key ``key`` acting with ``scopes``) doing
    ``action`` on ``resource``: decision, deciding statements, near-misses, missing context keys.

    Raises:
        NotFoundError: no such user. ConfigError/PolicyError: unknown action, bad ARN.
    """
    check_arn(resource, "resource")
    if user is not None:
        directory.show_user(user)
        principal = Principal.of_user(user)
    else:
        principal = Principal.of_key(key or "anonymous", tuple(scopes))
    context = {**principal.context(), **(context or {})}
    decision = policy_set(principal, resource).evaluate(action, resource, principal.arns, context)
    return {"principal": principal.name, **decision.to_dict()}


class Authorizer:
    """Decisions for API keys, with caches that follow ``access.changes``.

    ``cache_s``: how long a decision that consulted no condition (so depends only on key, action and
    resource) is reused.
    """

    def __init__(self, cache_s: float = 5.0, cache_size: int = 8192):
        self._cache_s, self._cache_size = cache_s, cache_size
        self._lock = threading.Lock()
        self._changes = paths.home() / directory.CHANGES
        self._seen = _mark(self._changes)
        self._principals: dict = {}
        self._resources: dict = {}
        self._sets: dict = {}
        self._decisions: dict = {}
        self._memo: dict = {}

    def memo(self, key, compute):
        """``compute()``, remembered until the next access change (e.g. which project owns a model)."""
        self._fresh()
        if key not in self._memo:
            if len(self._memo) >= self._cache_size:
                self._memo.clear()
            self._memo[key] = compute()
        return self._memo[key]

    def principal(self, key_id: str, scopes: tuple) -> Principal:
        self._fresh()
        cache_key = (key_id, scopes)
        found = self._principals.get(cache_key)
        if found is None:
            found = self._principals[cache_key] = Principal.of_key(key_id, scopes)
        return found

    def decide(self, principal: Principal, action: str, resource: str, context: dict) -> Decision:
        """The decision (cached when it consulted no condition)."""
        self._fresh()
        cache_key = (principal.key_id, principal.policies, action, resource)
        hit = self._decisions.get(cache_key)
        if hit is not None and time.monotonic() - hit[0] < self._cache_s:
            return hit[1]
        names = self._resources.get(resource)
        if names is None:
            names = self._resources[resource] = resource_policies(resource)
        policies = self._sets.get((principal.policies, names))
        if policies is None:
            policies = self._sets[(principal.policies, names)] = build(principal, names)
        decision = policies.evaluate(action, resource, principal.arns, {**principal.context(), **context})
        if not decision.conditional:
            with self._lock:
                if len(self._decisions) >= self._cache_size:
                    self._decisions.clear()
                self._decisions[cache_key] = (time.monotonic(), decision)
        return decision

    def allowed_many(self, principal: Principal, action: str, resources, context: dict) -> set[str]:
        """Which of ``resources`` ``principal`` may ``action`` (a list page): the attachments are
        read once for all of them, and resources under the same policies are judged together."""
        self._fresh()
        maps = self.memo(
            ("attachments",),
            lambda: {kind: directory.attachments(kind) for kind in ("project", "resource")},
        )

        def attached(target_type: str, target: str) -> list[str]:
            return maps[target_type].get(target, [])

        groups: dict[tuple, list[str]] = {}
        for resource in resources:
            names = self._resources.get(resource)
            if names is None:
                names = self._resources[resource] = resource_policies(resource, attached)
            groups.setdefault(names, []).append(resource)
        context = {**principal.context(), **context}
        out: set[str] = set()
        for names, members in groups.items():
            policies = self._sets.get((principal.policies, names))
            if policies is None:
                policies = self._sets[(principal.policies, names)] = build(principal, names)
            out |= policies.allowed_many(action, members, principal.arns, context)
        return out

    def _fresh(self) -> None:
        mark = _mark(self._changes)
        if mark != self._seen or mark is _UNKNOWN:
            with self._lock:
                for cache in (self._principals, self._resources, self._sets, self._decisions, self._memo):
                    cache.clear()
                self._seen = mark


_UNKNOWN = object()


def _mark(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return _UNKNOWN
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def allowed(decision: Decision) -> bool:
    return decision.decision == ALLOWED
