"""REST routes for users, groups, projects, policies, the simulator and the audit log: thin shells
over :mod:`aimass.access` (the same functions the CLI calls). Each route's action and resource are
in :data:`aimass.serve.access_guard.RULES`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field

from aimass.access import audit, directory, escalation
from aimass.access.authorizer import Principal, simulate
from aimass.serve.access_guard import BODY_KEY
from aimass.serve.openai_errors import FORMS


async def stash_body(request: Request) -> None:
    """Leave the body, parsed, where the access rules read it (``deploy``'s model, a job's kind).

    Whatever its ``Content-Type`` says, except a form: the routes read a JSON body under
    ``Application/JSON``, ``application/x+json`` or ``text/plain`` alike (FastAPI and the OpenAI
    routes' own parsing), so the rules must see the same fields, or a caller would choose what the
    rule is decided on by the spelling of a header (a custom job submitted as ``job:Submit``, a
    project's Deny read as ``default``). A body that is not JSON leaves nothing: its route answers
    4xx without running."""
    kind = request.headers.get("content-type", "").strip().lower()
    if request.method in ("POST", "PUT") and not kind.startswith(FORMS):
        # the route's own parsing answers 4xx (RecursionError: JSON nested thousands deep)
        with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
            request.scope.setdefault("state", {})[BODY_KEY] = json.loads(await request.body() or b"{}")


class SimulateRequest(BaseModel):
    action: str = Field(examples=["model:Deploy"])
    resource: str = Field(examples=["aimass:project/nlp/model/reviews:3"])
    user: str | None = Field(None, description="simulate this user (default: the calling key)")
    context: dict[str, str | int | float | bool] = Field(default_factory=dict)


class PolicyBody(BaseModel):
    document: dict = Field(description="the IAM-shaped document: {'Statement': [...]}")
    kind: str = Field("identity", description="identity (users, groups, keys) or resource (projects, ARNs)")
    description: str = ""


class Attachment(BaseModel):
    type: str = Field(description="user, group, key, project or resource")
    target: str


class Named(BaseModel):
    name: str
    description: str = ""


class Member(BaseModel):
    user: str


class Assignment(BaseModel):
    kind: str = Field(description="model, dataset, service or job")
    name: str


def add_access_routes(app: FastAPI, allow: Callable) -> None:
    """Add the routes; ``allow(scope)`` is the server's check (the rule table decides them)."""
    checked = [allow("manage")]

    @app.post("/v1/policies/simulate", tags=["access"])
    def simulate_route(body: SimulateRequest, caller=allow("manage")):
        """The simulator's answer: decision, deciding statements, near-misses, missing context keys."""
        key = None if body.user else caller.key_id
        return simulate(
            body.action, body.resource, user=body.user, key=key, scopes=caller.scopes, context=body.context
        )

    @app.get("/v1/policies", tags=["access"], dependencies=checked)
    def policies():
        return {"policies": directory.list_policies()}

    @app.get("/v1/policies/{name}", tags=["access"], dependencies=checked)
    def policy(name: str):
        return directory.show_policy(name)

    # a policy gives no more than its writer holds (aimass.access.escalation): checked here, where
    # the caller is known; the CLI acts as the operator, who holds everything
    def writer(caller) -> Principal:
        return Principal.of_key(caller.key_id, tuple(caller.scopes))

    def rid(request: Request) -> str:  # the escalation check's refusals are audit rows under it
        return request.scope.get("state", {}).get("request_id", "")

    @app.put("/v1/policies/{name}", tags=["access"])
    def put_policy(name: str, body: PolicyBody, request: Request, caller=allow("manage")):
        """Create or replace a policy; an invalid one is a 422 naming the JSON path of the fault, one
        that gives more than the caller holds (or drops a Deny they are under) a 403."""
        escalation.check_write(writer(caller), name, body.document, body.kind, rid(request))
        return directory.put_policy(name, body.document, body.kind, body.description)

    @app.delete("/v1/policies/{name}", tags=["access"])
    def delete_policy(name: str, request: Request, caller=allow("manage")):
        escalation.check_lift(writer(caller), name, "delete", rid(request))
        return directory.delete_policy(name)

    @app.post("/v1/policies/{name}/attachments", tags=["access"])
    def attach(name: str, body: Attachment, request: Request, caller=allow("manage")):
        escalation.check_attach(writer(caller), name, rid(request))
        return directory.attach(name, body.type, body.target)

    @app.delete("/v1/policies/{name}/attachments", tags=["access"])
    def detach(name: str, type: str, target: str, request: Request, caller=allow("manage")):
        escalation.check_lift(writer(caller), name, "detach", rid(request))
        return directory.detach(name, type, target)

    @app.get("/v1/users", tags=["access"], dependencies=checked)
    def users():
        return {"users": directory.list_users()}

    @app.post("/v1/users", tags=["access"], dependencies=checked)
    def create_user(body: Named):
        return directory.create_user(body.name)

    @app.get("/v1/users/{name}", tags=["access"], dependencies=checked)
    def user(name: str):
        return directory.show_user(name)

    @app.get("/v1/groups", tags=["access"], dependencies=checked)
    def groups():
        return {"groups": directory.list_groups()}

    @app.post("/v1/groups", tags=["access"], dependencies=checked)
    def create_group(body: Named):
        return directory.create_group(body.name)

    @app.post("/v1/groups/{name}/members", tags=["access"])
    def add_member(name: str, body: Member, request: Request, caller=allow("manage")):
        """Add a user to a group: the caller must hold what the group's policies allow (403 naming
        the first thing not held), as attaching them would need."""
        escalation.check_join(writer(caller), name, rid(request))
        return directory.add_member(name, body.user)

    @app.get("/v1/projects", tags=["access"], dependencies=checked)
    def projects():
        return {"projects": directory.list_projects()}

    @app.post("/v1/projects", tags=["access"], dependencies=checked)
    def create_project(body: Named):
        return directory.create_project(body.name, body.description)

    @app.get("/v1/projects/{name}", tags=["access"], dependencies=checked)
    def project(name: str):
        return directory.show_project(name)

    @app.post("/v1/projects/{name}/resources", tags=["access"], dependencies=checked)
    def assign(name: str, body: Assignment):
        return directory.assign(body.kind, body.name, name)

    @app.get("/v1/audit", tags=["access"], dependencies=checked)
    def audit_log(
        principal: str | None = None,
        action: str | None = None,
        decision: str | None = None,
        resource: str | None = None,
        since: str | None = None,
        limit: int = Query(100, ge=1, le=audit.MAX_ROWS),
    ):
        rows = audit.query(
            principal=principal, action=action, decision=decision, resource=resource, since=since, limit=limit
        )
        return {"audit": rows}

    @app.get("/v1/audit/{request_id}", tags=["access"], dependencies=checked)
    def explain(request_id: str):
        """Every decision logged for a request, in full (``aimass policy explain``)."""
        return audit.explain_request(request_id)
