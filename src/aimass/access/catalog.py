"""The finite catalog of actions, resource kinds and context keys a policy may name.

Actions are ``service:Verb``; a policy's ``Action`` patterns (``*`` and ``?`` wildcards, any case)
are expanded over this catalog when the policy is compiled, so evaluation never matches an action
pattern: it looks the request's action up in an index.

>>> sorted(expand("model:?e*"))
['model:Delete', 'model:Deploy', 'model:Read']
>>> canonical("MODEL:predict")
'model:Predict'
"""

from __future__ import annotations

import re

ACTIONS: tuple[str, ...] = (
    "model:Predict",
    "model:List",
    "model:Read",
    "model:Deploy",
    "model:Delete",
    "model:Train",
    "model:Export",
    "dataset:List",
    "dataset:Read",
    "dataset:Import",
    "dataset:Delete",
    "vector_store:Create",
    "vector_store:List",
    "vector_store:Read",
    "vector_store:Search",
    "vector_store:Update",
    "vector_store:Delete",
    "service:List",
    "service:Read",
    "service:Update",
    "service:Delete",
    "job:List",
    "job:Submit",
    "job:SubmitCode",
    "job:Read",
    "job:Cancel",
    "job:Pause",
    "job:Resume",
    "key:Create",
    "key:Read",
    "key:Update",
    "key:Revoke",
    "webhook:Create",
    "webhook:Read",
    "webhook:Update",
    "webhook:Delete",
    "usage:Read",
    "policy:Read",
    "policy:Write",
    "policy:Simulate",
    "user:Create",
    "user:Read",
    "user:Update",
    "user:Delete",
    "group:Create",
    "group:Read",
    "group:Update",
    "group:Delete",
    "project:Create",
    "project:Read",
    "project:Update",
    "project:Delete",
    "audit:Read",
)
SERVICES = frozenset(a.split(":")[0] for a in ACTIONS)
_CANONICAL = {a.lower(): a for a in ACTIONS}

# ARN kinds: aimass:<top>/<name>, and inside a project aimass:project/<p>/<kind>/<name>
TOP_KINDS = frozenset({"project", "user", "group", "key", "webhook", "policy", "audit", "usage"})
PROJECT_KINDS = frozenset({"model", "dataset", "service", "job", "key", "vector_store"})

# Context keys (case-insensitive, like AWS). ``aimass:KeyTag/<k>`` is a family.
CONTEXT_KEYS = {
    "aimass:SourceIp": "ip",
    "aimass:CurrentTime": "date",
    "aimass:EpochTime": "number",
    "aimass:SecureTransport": "bool",
    "aimass:Username": "string",
    "aimass:KeyId": "string",
    "aimass:KeyProject": "string",
    "aimass:ResourceProject": "string",
    "aimass:ModelStage": "string",
    "aimass:JobKind": "string",
    "aimass:Store": "string",
    "aimass:BatchSize": "number",
}
KEY_FAMILIES = ("aimass:KeyTag/",)
_KEYS = {k.lower() for k in CONTEXT_KEYS}


def canonical(action: str) -> str | None:
    """The catalog's spelling of ``action`` (matched ignoring case), or None if it is not one."""
    return _CANONICAL.get(action.lower())


def wildcard_regex(pattern: str) -> str:
    """``*`` (any run) and ``?`` (one character) as a regular expression; the rest is literal."""
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def expand(pattern: str) -> frozenset[str]:
    """Every catalog action that ``pattern`` matches, ignoring case."""
    regex = re.compile(wildcard_regex(pattern), re.IGNORECASE | re.DOTALL)
    return frozenset(a for a in ACTIONS if regex.fullmatch(a))


def known_context_key(key: str) -> bool:
    low = key.lower()
    return low in _KEYS or any(low.startswith(f.lower()) and len(low) > len(f) for f in KEY_FAMILIES)
