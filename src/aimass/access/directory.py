"""Users, groups, projects, policies, attachments and key bindings: the Python API that the CLI
and the REST routes both call.

Every write bumps ``AIMASS_HOME/access.changes`` (one line appended), which every
:class:`~aimass.access.authorizer.Authorizer` on this home stats to drop its caches. Resources
not assigned to a project belong to the project ``default``.
"""

from __future__ import annotations

import re

from sqlalchemy import delete, select

from aimass import paths
from aimass.access import tables as t
from aimass.access.managed import MANAGED, SCOPE_ONLY, managed
from aimass.access.policy import IDENTITY, RESOURCE, PolicyError, check_arn, compile_policy
from aimass.errors import ConfigError, NotFoundError, PermissionDenied
from aimass.store.db import DatasetRecord, ModelVersionRecord, now, session

CHANGES = "access.changes"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=-]{0,99}")
TARGETS = {"user": IDENTITY, "group": IDENTITY, "key": IDENTITY, "project": RESOURCE, "resource": RESOURCE}
DEFAULT_PROJECT = "default"
RESOURCE_KINDS = ("model", "dataset", "service", "job", "vector_store")


def changed() -> None:
    """Tell every authorizer on this home that users, policies or attachments changed."""
    with open(paths.home() / CHANGES, "a") as log:
        log.write(f"{now()}\n")


def _name(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ConfigError(
            f"The {what} name {value!r} is not allowed.",
            hint="Use letters, digits and _ . @ + = - (up to 100 characters; a letter or digit first).",
        )
    return value


def _create(record_type, what: str, **fields) -> dict:
    with t.session() as s, s.begin():
        if s.get(record_type, fields["name"]) is not None:
            raise ConfigError(
                f"The {what} '{fields['name']}' exists already.", hint=f"Pick another {what} name."
            )
        s.add(record_type(**fields))
    changed()
    return {**fields, "created": now()}


def _need(s, record_type, name: str, what: str):
    record = s.get(record_type, name)
    if record is None:
        raise NotFoundError(f"No {what} '{name}'.", hint=f"`aimass {what}s list` shows them.")
    return record


# ------------------------------------------------------------------ users, groups, projects
def create_user(name: str) -> dict:
    return _create(t.UserRecord, "user", name=_name(name, "user"))


def create_group(name: str) -> dict:
    return _create(t.GroupRecord, "group", name=_name(name, "group"))


def create_project(name: str, description: str = "") -> dict:
    return _create(t.ProjectRecord, "project", name=_name(name, "project"), description=description)


def list_users() -> list[dict]:
    with t.session() as s:
        return [show_user(u.name) for u in s.scalars(select(t.UserRecord).order_by(t.UserRecord.name))]


def list_groups() -> list[dict]:
    with t.session() as s:
        return [show_group(g.name) for g in s.scalars(select(t.GroupRecord).order_by(t.GroupRecord.name))]


def list_projects() -> list[dict]:
    with t.session() as s:
        rows = s.scalars(select(t.ProjectRecord).order_by(t.ProjectRecord.name))
        return [{"name": p.name, "description": p.description, "created": p.created} for p in rows]


def show_user(name: str) -> dict:
    with t.session() as s:
        user = _need(s, t.UserRecord, name, "user")
        keys = s.scalars(select(t.KeyBindingRecord.key_id).where(t.KeyBindingRecord.user == name)).all()
    return {
        "name": user.name,
        "created": user.created,
        "groups": groups_of(name),
        "policies": attached("user", name),
        "keys": list(keys),
    }


def show_group(name: str) -> dict:
    with t.session() as s:
        group = _need(s, t.GroupRecord, name, "group")
        members = s.scalars(select(t.MembershipRecord.user).where(t.MembershipRecord.group == name)).all()
    return {
        "name": group.name,
        "created": group.created,
        "members": sorted(members),
        "policies": attached("group", name),
    }


def show_project(name: str) -> dict:
    with t.session() as s:
        project = _need(s, t.ProjectRecord, name, "project")
        owned = s.scalars(select(t.OwnerRecord).where(t.OwnerRecord.project == name)).all()
    resources = sorted(arn(o.kind, o.name, name) for o in owned)
    return {
        "name": project.name,
        "description": project.description,
        "resources": resources,
        "policies": attached("project", name),
    }


def add_member(group: str, user: str) -> dict:
    with t.session() as s, s.begin():
        _need(s, t.GroupRecord, group, "group")
        _need(s, t.UserRecord, user, "user")
        if s.get(t.MembershipRecord, (group, user)) is None:
            s.add(t.MembershipRecord(group=group, user=user))
    changed()
    return show_group(group)


def remove_member(group: str, user: str) -> dict:
    with t.session() as s, s.begin():
        s.execute(
            delete(t.MembershipRecord).where(
                t.MembershipRecord.group == group, t.MembershipRecord.user == user
            )
        )
    changed()
    return show_group(group)


def groups_of(user: str) -> list[str]:
    with t.session() as s:
        return sorted(s.scalars(select(t.MembershipRecord.group).where(t.MembershipRecord.user == user)))


# ------------------------------------------------------------------ resources and their projects
def arn(kind: str, name: str, project: str | None = None) -> str:
    """The ARN of a model (``name`` or ``name:version``), dataset, service or job.

    >>> arn("model", "reviews:3", "nlp")
    'aimass:project/nlp/model/reviews:3'
    """
    return f"aimass:project/{project or DEFAULT_PROJECT}/{kind}/{name}"


def assign(kind: str, name: str, project: str) -> dict:
    """Put a model (all its versions), dataset or service in ``project``."""
    if kind not in RESOURCE_KINDS:
        raise ConfigError(f"Unknown resource kind '{kind}'.", hint=f"Use one of {', '.join(RESOURCE_KINDS)}.")
    base = name.split(":")[0].split("@")[0]
    with t.session() as s, s.begin():
        _need(s, t.ProjectRecord, project, "project")
        s.merge(t.OwnerRecord(kind=kind, name=base, project=project))
    changed()
    return {"kind": kind, "name": base, "project": project, "arn": arn(kind, base, project)}


def project_of(kind: str, name: str) -> str:
    """The project owning a resource (``default`` when none was assigned); a model named by a
    version or an alias (``reviews:3``, ``reviews@production``) is its name's. Only a model's: a
    job id with ``:x`` after it names no job, not the job it starts with."""
    base = name.split(":")[0].split("@")[0] if kind == "model" else name
    return _assigned(kind, base) or DEFAULT_PROJECT


def _assigned(kind: str, name: str) -> str | None:
    """The project ``name`` was assigned to, or None (then it is ``default``'s)."""
    with t.session() as s:
        record = s.get(t.OwnerRecord, (kind, name))
    return record.project if record else None


def service_project(name: str) -> str:
    """A service's project: the one it was assigned to, else that of the model it is named after
    (a service started by ``aimass serve --model faces`` serves cv's ``faces``: cv's team reads,
    scales and undeploys it, and a deploy into it is decided there too)."""
    return _assigned("service", name) or project_of("model", name)


def model_project(name: str) -> str:
    """The project a request naming model ``name`` is decided in: its model's; for a name no model
    has, the service of that name's (the server answers a service's name as the service: a model
    name that only a service has must not be decided as the default project's)."""
    base = name.split(":")[0].split("@")[0]
    owner = project_of("model", base)
    if owner != DEFAULT_PROJECT or _exists("model", base):
        return owner
    return service_project(base)


def may_write(project: str, kind: str, name: str, *, how: str = "a job") -> None:
    """Raise PermissionDenied unless something acting in ``project`` (``how``: a job, an import)
    may add a version under the ``kind`` (``model`` or ``dataset``) name ``name``: one its project
    owns, or one nothing has yet. ``default`` owns the unassigned names. The refusal does not name
    the owner: a key confined to one project learns that a name is taken, not who holds it.
    A ``service`` (an ``auto`` job's deploy): one its project owns or one no project owns, as
    ``POST /v1/services`` decides a deploy (:func:`aimass.serve.access_guard.deployed_into`)."""
    if kind == "service":
        allowed = _assigned("service", name) in (None, project)
    else:
        owner = project_of(kind, name)
        # a model named like another project's service: a request for the name reaches the service
        clash = kind == "model" and _assigned("service", name) not in (None, project)
        allowed = not clash and (owner == project or owner == DEFAULT_PROJECT and not _exists(kind, name))
    if allowed:
        return
    raise PermissionDenied(
        f"{how[0].upper()}{how[1:]} in project {project!r} may not "
        f"{'deploy into' if kind == 'service' else 'add a version to'} {kind} {name!r}: "
        "the name belongs to another project.",
        hint=f"Give it another name ({kind} names are unique across projects), or do it in the project "
        "that holds it (a job submitted there, with a key that may; `aimass access projects show` "
        "lists a project's names).",
    )


def exists(kind: str, name: str) -> bool:
    """Whether any version of model (or dataset) ``name`` is registered."""
    return _exists(kind, name)


def _exists(kind: str, name: str) -> bool:
    record = {"model": ModelVersionRecord, "dataset": DatasetRecord}[kind]
    with session() as s:
        return s.scalar(select(record.name).where(record.name == name).limit(1)) is not None


# ------------------------------------------------------------------ policies
# no stored policy may carry a managed one's name, in any case: decisions read the built-in
# document under it (a stored ``JobsCodeScope`` of harmless text became the right to run code)
RESERVED = {n.lower(): n for n in (*MANAGED, *SCOPE_ONLY)}


def put_policy(name: str, document: dict | str, kind: str = IDENTITY, description: str = "") -> dict:
    """Create or replace a policy, validated first (:class:`PolicyError` names the JSON path)."""
    _name(name, "policy")
    if name.lower() in RESERVED:
        raise ConfigError(
            f"'{name}' is the name of a managed policy ('{RESERVED[name.lower()]}') and cannot be written.",
            hint="Give your policy another name.",
        )
    if kind not in (IDENTITY, RESOURCE):
        raise ConfigError(f"A policy is 'identity' or 'resource'; got {kind!r}.")
    policy = compile_policy(name, document, kind)
    with t.session() as s, s.begin():
        record = s.get(t.PolicyRecord, name)
        if record is None:
            record = t.PolicyRecord(name=name)
            s.add(record)
        elif (
            record.kind != kind
            and s.scalars(select(t.AttachmentRecord).where(t.AttachmentRecord.policy == name)).first()
        ):
            raise ConfigError(
                f"Policy '{name}' is attached as a {record.kind} policy.", hint="Detach it first."
            )
        record.kind, record.document, record.description, record.updated = (
            kind,
            policy.document,
            description,
            now(),
        )
    changed()
    return show_policy(name)


def show_policy(name: str) -> dict:
    """A policy as decisions use it: a managed one's (and a scope's built-in one's) own document,
    whatever the database holds under its name."""
    if name in MANAGED or name in SCOPE_ONLY:
        document = MANAGED.get(name) or SCOPE_ONLY[name]
        return {"name": name, "kind": IDENTITY, "managed": True, "description": "", "document": document}
    with t.session() as s:
        record = _need(s, t.PolicyRecord, name, "policie")
        info = record.to_dict()
        targets = s.scalars(select(t.AttachmentRecord).where(t.AttachmentRecord.policy == name)).all()
    return {**info, "attached": [{"type": a.target_type, "target": a.target} for a in targets]}


def list_policies() -> list[dict]:
    with t.session() as s:
        rows = s.scalars(select(t.PolicyRecord).order_by(t.PolicyRecord.name)).all()
    own = [{"name": r.name, "kind": r.kind, "managed": False, "description": r.description} for r in rows]
    return [{"name": n, "kind": IDENTITY, "managed": True, "description": ""} for n in MANAGED] + own


def delete_policy(name: str) -> dict:
    info = show_policy(name)
    if info["managed"]:
        raise ConfigError(f"'{name}' is a managed policy and cannot be deleted.")
    with t.session() as s, s.begin():
        s.execute(delete(t.AttachmentRecord).where(t.AttachmentRecord.policy == name))
        s.execute(delete(t.PolicyRecord).where(t.PolicyRecord.name == name))
    changed()
    return info


def attach(policy: str, target_type: str, target: str) -> dict:
    """Attach ``policy`` to a user, group or key (identity policies) or to a project or one resource
    ARN (resource policies)."""
    if target_type not in TARGETS:
        raise ConfigError(f"Cannot attach to '{target_type}'.", hint=f"Use one of {', '.join(TARGETS)}.")
    kind = show_policy(policy)["kind"]
    if kind != TARGETS[target_type]:
        where = "users, groups and keys" if kind == IDENTITY else "projects and resources"
        raise ConfigError(
            f"'{policy}' is a {kind} policy: it attaches to {where}.", hint="Pick another target."
        )
    _check_target(target_type, target)
    with t.session() as s, s.begin():
        found = s.scalars(
            select(t.AttachmentRecord).where(
                t.AttachmentRecord.policy == policy,
                t.AttachmentRecord.target_type == target_type,
                t.AttachmentRecord.target == target,
            )
        ).first()
        if found is None:
            s.add(t.AttachmentRecord(policy=policy, target_type=target_type, target=target))
    changed()
    return {"policy": policy, "type": target_type, "target": target}


def _check_target(target_type: str, target: str) -> None:
    records = {"user": t.UserRecord, "group": t.GroupRecord, "project": t.ProjectRecord}
    if target_type in records:
        with t.session() as s:
            _need(s, records[target_type], target, target_type)
    elif target_type == "resource":
        try:
            check_arn(target, "target")
        except PolicyError as exc:
            raise ConfigError(exc.message, hint=exc.hint) from None


def detach(policy: str, target_type: str, target: str) -> dict:
    with t.session() as s, s.begin():
        gone = s.execute(
            delete(t.AttachmentRecord).where(
                t.AttachmentRecord.policy == policy,
                t.AttachmentRecord.target_type == target_type,
                t.AttachmentRecord.target == target,
            )
        ).rowcount
    if not gone:
        raise NotFoundError(
            f"'{policy}' is not attached to {target_type} '{target}'.",
            hint="`aimass policies show` lists where it is.",
        )
    changed()
    return {"policy": policy, "type": target_type, "target": target, "detached": True}


def owners(kind: str) -> dict[str, str]:
    """Every assigned ``kind`` resource's project, in one read (what is not here is ``default``)."""
    with t.session() as s:
        rows = s.execute(select(t.OwnerRecord.name, t.OwnerRecord.project).where(t.OwnerRecord.kind == kind))
        return dict(rows.all())


def model_owners() -> dict[str, str]:
    """:func:`owners` of models as :func:`model_project` decides a name, in two reads: an assigned
    service's name that no model has is that service's project's."""
    models = owners("model")
    services = {n: p for n, p in owners("service").items() if n not in models}
    if services:
        with session() as s:
            named = set(
                s.scalars(select(ModelVersionRecord.name).where(ModelVersionRecord.name.in_(services)))
            )
        models = {**{n: p for n, p in services.items() if n not in named}, **models}
    return models


def attachments(target_type: str) -> dict[str, list[str]]:
    """target -> its policies, for every target of ``target_type``, in one read."""
    out: dict[str, list[str]] = {}
    with t.session() as s:
        rows = s.execute(
            select(t.AttachmentRecord.target, t.AttachmentRecord.policy)
            .where(t.AttachmentRecord.target_type == target_type)
            .order_by(t.AttachmentRecord.policy)
        )
        for target, policy in rows:
            out.setdefault(target, []).append(policy)
    return out


def attached(target_type: str, target: str) -> list[str]:
    with t.session() as s:
        rows = s.scalars(
            select(t.AttachmentRecord.policy).where(
                t.AttachmentRecord.target_type == target_type, t.AttachmentRecord.target == target
            )
        )
        return sorted(rows)


def compiled(name: str, project: str | None = None):
    """A stored or managed policy, compiled (``project``: narrow a managed one to it)."""
    if name in MANAGED or name in SCOPE_ONLY:
        return managed(name, project)
    with t.session() as s:
        record = s.get(t.PolicyRecord, name)
    return None if record is None else compile_policy(record.name, record.document, record.kind)


# ------------------------------------------------------------------ keys
def bind_key(
    key_id: str, user: str | None = None, project: str | None = None, tags: dict | None = None
) -> dict:
    """Make a key act as ``user`` (its scopes then no longer apply: the user's policies do), bind it
    to ``project`` (its scopes then reach only that project) and/or give it tags (``aimass:KeyTag/<k>``)."""
    with t.session() as s, s.begin():
        if user is not None:
            _need(s, t.UserRecord, user, "user")
        if project is not None:
            _need(s, t.ProjectRecord, project, "project")
        record = s.get(t.KeyBindingRecord, key_id) or t.KeyBindingRecord(key_id=key_id, tags={})
        record.user = user if user is not None else record.user
        record.project = project if project is not None else record.project
        record.tags = {**(record.tags or {}), **(tags or {})}
        s.merge(record)
        info = {"key_id": key_id, "user": record.user, "project": record.project, "tags": record.tags}
    changed()
    return info


def key_binding(key_id: str) -> dict:
    with t.session() as s:
        record = s.get(t.KeyBindingRecord, key_id)
    if record is None:
        return {"key_id": key_id, "user": None, "project": None, "tags": {}}
    return {"key_id": key_id, "user": record.user, "project": record.project, "tags": record.tags or {}}
