"""``aimass users|groups|projects|policies|policy|audit ...``: thin shells over :mod:`aimass.access`.

They work on this machine's ``AIMASS_HOME`` (like ``aimass keys``); a running server applies
every change from its next request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aimass.cli.shell import JsonFlag, command, emit, out, table
from aimass.errors import ConfigError

users_app = typer.Typer(help="Users (keys bound to a user act as that user).", no_args_is_help=True)
groups_app = typer.Typer(
    help="Groups of users; policies attached to a group apply to its members.", no_args_is_help=True
)
projects_app = typer.Typer(help="Projects own models, datasets, services and jobs.", no_args_is_help=True)
policies_app = typer.Typer(
    help="IAM-style policies: create, list, show, attach, detach.", no_args_is_help=True
)
policy_app = typer.Typer(help="Simulate a request or explain a past decision.", no_args_is_help=True)


def attach(app: typer.Typer) -> None:
    for name, group in (
        ("users", users_app),
        ("groups", groups_app),
        ("projects", projects_app),
        ("policies", policies_app),
        ("policy", policy_app),
    ):
        app.add_typer(group, name=name)
    app.command("audit")(audit_list)


@users_app.command("create")
@command
def users_create(name: str, as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.create_user(name), as_json)


@users_app.command("list")
@command
def users_list(as_json: JsonFlag = False):
    from aimass.access import directory

    emit(
        directory.list_users(), as_json, lambda r: out.print(table(r, ["name", "groups", "policies", "keys"]))
    )


@users_app.command("show")
@command
def users_show(name: str, as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.show_user(name), as_json)


@users_app.command("bind-key")
@command
def users_bind_key(
    name: str,
    key_id: str,
    project: Annotated[str | None, typer.Option(help="Also bind the key to this project.")] = None,
    as_json: JsonFlag = False,
):
    """Make API key KEY_ID act as user NAME (the user's policies apply, not the key's scopes)."""
    from aimass.access import directory

    emit(directory.bind_key(key_id, user=name, project=project), as_json)


@groups_app.command("create")
@command
def groups_create(name: str, as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.create_group(name), as_json)


@groups_app.command("list")
@command
def groups_list(as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.list_groups(), as_json, lambda r: out.print(table(r, ["name", "members", "policies"])))


@groups_app.command("add")
@command
def groups_add(group: str, user: str, as_json: JsonFlag = False):
    """Add USER to GROUP."""
    from aimass.access import directory

    emit(directory.add_member(group, user), as_json)


@groups_app.command("remove")
@command
def groups_remove(group: str, user: str, as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.remove_member(group, user), as_json)


@projects_app.command("create")
@command
def projects_create(name: str, description: str = "", as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.create_project(name, description), as_json)


@projects_app.command("list")
@command
def projects_list(as_json: JsonFlag = False):
    from aimass.access import directory

    emit(
        directory.list_projects(), as_json, lambda r: out.print(table(r, ["name", "description", "created"]))
    )


@projects_app.command("show")
@command
def projects_show(name: str, as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.show_project(name), as_json)


@projects_app.command("assign")
@command
def projects_assign(project: str, kind: str, name: str, as_json: JsonFlag = False):
    """Put a model (all versions), dataset, service or job in PROJECT (others are in 'default')."""
    from aimass.access import directory

    emit(directory.assign(kind, name, project), as_json)


@policies_app.command("create")
@command
def policies_create(
    name: str,
    document: Annotated[str, typer.Argument(help="A JSON file, or the JSON itself.")],
    kind: Annotated[
        str, typer.Option(help="identity (users, groups, keys) or resource (projects, ARNs).")
    ] = "identity",
    description: str = "",
    as_json: JsonFlag = False,
):
    """Create or replace a policy (validated; an error names the JSON path, e.g. Statement[2].Action)."""
    from aimass.access import directory

    text = Path(document).read_text() if not document.lstrip().startswith("{") else document
    emit(directory.put_policy(name, text, kind, description), as_json)


@policies_app.command("list")
@command
def policies_list(as_json: JsonFlag = False):
    from aimass.access import directory

    emit(
        directory.list_policies(),
        as_json,
        lambda r: out.print(table(r, ["name", "kind", "managed", "description"])),
    )


@policies_app.command("show")
@command
def policies_show(name: str, as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.show_policy(name), as_json, lambda p: print(json.dumps(p, indent=2)))


@policies_app.command("attach")
@command
def policies_attach(name: str, target_type: str, target: str, as_json: JsonFlag = False):
    """Attach policy NAME to a user, group or key (identity) or a project or resource ARN (resource)."""
    from aimass.access import directory

    emit(directory.attach(name, target_type, target), as_json)


@policies_app.command("detach")
@command
def policies_detach(name: str, target_type: str, target: str, as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.detach(name, target_type, target), as_json)


@policies_app.command("delete")
@command
def policies_delete(name: str, as_json: JsonFlag = False):
    from aimass.access import directory

    emit(directory.delete_policy(name), as_json)


def parse_context(pairs: list[str] | None) -> dict:
    context = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(
                f"--context takes KEY=VALUE; got {pair!r}.",
                hint="e.g. --context aimass:ModelStage=production",
            )
        context[key] = value
    return context


@policy_app.command("simulate")
@command
def simulate(
    action: Annotated[str, typer.Option(help="e.g. model:Deploy")],
    resource: Annotated[str, typer.Option(help="e.g. aimass:project/nlp/model/reviews:3")],
    user: Annotated[str | None, typer.Option(help="The user to simulate.")] = None,
    key: Annotated[str | None, typer.Option(help="Or an API key id (with --scope).")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="The key's scopes (repeatable).")] = None,
    context: Annotated[list[str] | None, typer.Option(help="A context value KEY=VALUE (repeatable).")] = None,
    as_json: JsonFlag = False,
):
    """The decision, the statements that decided it per policy, near-misses and missing context keys."""
    from aimass.access.authorizer import simulate as run

    answer = run(
        action, resource, user=user, key=key, scopes=tuple(scope or ()), context=parse_context(context)
    )
    emit(answer, as_json, lambda a: print(json.dumps(a, indent=2)))


@policy_app.command("explain")
@command
def explain(request_id: str, as_json: JsonFlag = False):
    """Why a past request was decided as it was, from the audit log."""
    from aimass.access import audit

    answer = audit.explain_request(request_id)
    emit(answer, as_json, lambda a: [out.print(d["why"]) for d in a["decisions"]])


@command
def audit_list(
    principal: Annotated[str | None, typer.Option(help="e.g. alice, or a key id")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. model:Deploy")] = None,
    decision: Annotated[str | None, typer.Option(help="allowed, explicitDeny or implicitDeny")] = None,
    resource: Annotated[str | None, typer.Option(help="a part of the ARN")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, e.g. 2026-11-01")] = None,
    limit: int = 100,
    as_json: JsonFlag = False,
):
    """The audit log: management decisions and denials, newest first."""
    from aimass.access import audit

    rows = audit.query(
        principal=principal, action=action, decision=decision, resource=resource, since=since, limit=limit
    )
    columns = ["time", "request_id", "principal", "action", "resource", "decision"]
    emit(rows, as_json, lambda r: out.print(table(r, columns)))
