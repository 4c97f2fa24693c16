"""Managed policies: today's key scopes as policies, so existing keys keep working unchanged.

=============  ===============  ===================================================================
scope          managed policy   what it allows
=============  ===============  ===================================================================
``predict``    PredictOnly      call, list and read models
``manage``     ProjectManager   everything but custom code, users/groups/projects and policy writes
``jobs:code``  (scope only)     ``job:SubmitCode``: upload and run custom code, nothing else
(admin token)  Admin            everything
=============  ===============  ===================================================================

Custom code runs as the server's user, so no attachable managed policy but ``Admin`` allows
``job:SubmitCode``; the ``jobs:code`` scope of existing keys keeps meaning exactly that one action.
"""

from __future__ import annotations

from functools import lru_cache

from aimass.access.policy import Policy, compile_policy

MANAGED: dict[str, dict] = {
    "PredictOnly": {
        "Statement": [
            {
                "Sid": "PredictAndRead",
                "Effect": "Allow",
                "Action": ["model:Predict", "model:List", "model:Read"],
                "Resource": "*",
            }
        ]
    },
    "ProjectManager": {
        "Statement": [
            {
                "Sid": "ManageAllButCodeAndPrincipals",
                "Effect": "Allow",
                "NotAction": [
                    "job:SubmitCode",
                    "policy:Write",
                    "user:*",
                    "group:*",
                    "project:Create",
                    "project:Update",
                    "project:Delete",
                ],
                "Resource": "*",
            }
        ]
    },
    "Admin": {"Statement": [{"Sid": "Everything", "Effect": "Allow", "Action": "*", "Resource": "*"}]},
}
SCOPE_ONLY: dict[str, dict] = {
    "JobsCodeScope": {
        "Statement": [{"Sid": "RunCode", "Effect": "Allow", "Action": "job:SubmitCode", "Resource": "*"}]
    }
}
SCOPE_POLICIES = {"predict": "PredictOnly", "manage": "ProjectManager", "jobs:code": "JobsCodeScope"}


@lru_cache(maxsize=64)
def managed(name: str, project: str | None = None) -> Policy:
    """A managed policy, compiled; with ``project``, its ``*`` resources narrowed to that project
    (what a scope means for a key bound to a project)."""
    document = MANAGED.get(name) or SCOPE_ONLY[name]
    if project:
        narrowed = [f"aimass:project/{project}", f"aimass:project/{project}/*"]
        document = {"Statement": [{**s, "Resource": narrowed} for s in document["Statement"]]}
    return compile_policy(name, document)
