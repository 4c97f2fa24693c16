"""Who may do what: users, groups, projects, IAM-style policies where an explicit Deny wins.

The engine (:mod:`.catalog`, :mod:`.patterns`, :mod:`.conditions`, :mod:`.policy`,
:mod:`.evaluate`) is pure Python with no I/O; :mod:`.tables` and :mod:`.directory` keep users,
groups, projects, policies, attachments and the audit log in SQLite and answer "which policies
apply to this caller". See docs/access.md.
"""

from aimass.access.evaluate import ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY, Decision, PolicySet
from aimass.access.policy import Policy, PolicyError, compile_policy

__all__ = [
    "ALLOWED",
    "EXPLICIT_DENY",
    "IMPLICIT_DENY",
    "Decision",
    "Policy",
    "PolicyError",
    "PolicySet",
    "compile_policy",
]
