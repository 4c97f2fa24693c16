"""``aimass webhooks``: endpoints sent a signed POST when a job starts, pauses or ends."""

from __future__ import annotations

from typing import Annotated

import typer

from aimass.cli.shell import JsonFlag, command, emit, out, table

webhooks_app = typer.Typer(
    help="Webhook endpoints: a signed POST to your URL when a job starts, pauses or ends.",
    no_args_is_help=True,
)
EVENT_HELP = (
    "An event type (repeatable): job.started|paused|succeeded|failed|cancelled, batch.*, fine_tuning.job.*."
)


def attach(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("create")
@command
def create(
    url: Annotated[str, typer.Argument(help="Where events are POSTed (http or https).")],
    event: Annotated[list[str], typer.Option(help=EVENT_HELP)],
    name: Annotated[str, typer.Option(help="A label for it.")] = "",
    as_json: JsonFlag = False,
):
    """A new endpoint; its signing secret is printed once (receivers check signatures with it)."""
    from aimass.jobs import webhooks

    made = webhooks.create(name, url, list(event), "admin")
    emit(
        made,
        as_json,
        lambda m: out.print(
            f"Webhook endpoint [bold]{m['id']}[/] sends {', '.join(m['event_types'])} to {m['url']}.\n"
            f"Signing secret (store it now; it is not shown again):\n{m['signing_secret']}"
        ),
    )


@webhooks_app.command("list")
@command
def list_endpoints(as_json: JsonFlag = False):
    """Every endpoint: id, name, URL, event types (never the secret)."""
    from aimass.jobs import webhooks

    emit(
        webhooks.list_endpoints(),
        as_json,
        lambda rows: out.print(table(rows, ["id", "name", "url", "event_types"])),
    )


@webhooks_app.command("deliveries")
@command
def deliveries(
    webhook_id: str, limit: Annotated[int, typer.Option(min=1, max=500)] = 20, as_json: JsonFlag = False
):
    """An endpoint's latest deliveries: event, status, attempts, the last answer or error."""
    from aimass.jobs import webhooks

    columns = ["event_id", "type", "status", "attempts", "last_status", "last_error"]
    emit(webhooks.deliveries(webhook_id, limit), as_json, lambda rows: out.print(table(rows, columns)))


@webhooks_app.command("test")
@command
def test(
    webhook_id: str,
    event: Annotated[str, typer.Option(help="The event type of the sample.")] = "job.succeeded",
    as_json: JsonFlag = False,
):
    """Send a sample event now and show the endpoint's status code."""
    from aimass.jobs import webhooks

    emit(webhooks.test(webhook_id, event), as_json)


@webhooks_app.command("rotate")
@command
def rotate(
    webhook_id: str,
    keep_old: Annotated[bool, typer.Option(help="The old secret signs too, for 24 hours.")] = False,
    as_json: JsonFlag = False,
):
    """A new signing secret (printed once)."""
    from aimass.jobs import webhooks

    emit(webhooks.rotate(webhook_id, keep_old), as_json)


@webhooks_app.command("delete")
@command
def delete(webhook_id: str, as_json: JsonFlag = False):
    """Delete an endpoint; nothing more is sent to it."""
    from aimass.jobs import webhooks

    emit(webhooks.remove(webhook_id), as_json)
