"""Commands that run or talk to a server: serve, deploy, undeploy, services.

Each is a thin shell over the REST API (:mod:`aimass.client`) or :func:`aimass.serve.app.run`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from aimass.cli.shell import JsonFlag, command, emit, err, out, table
from aimass.errors import ConfigError

services_app = typer.Typer(help="Inspect the services of a running server.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys (stored hashed).", no_args_is_help=True)
ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: AIMASS_SERVER or http://127.0.0.1:8000).")
]


def attach(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(deploy)
    app.command()(undeploy)
    app.add_typer(services_app, name="services")
    app.add_typer(keys_app, name="keys")
    app.command()(usage)


@command
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps it local.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on (1-65535).")] = 8000,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME[:VERSION|@ALIAS] to deploy at start (default: every model's production or latest)."
        ),
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="Most inputs per forward pass.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="Longest wait to fill a batch under load.")] = 2.0,
    max_queue: Annotated[
        int,
        typer.Option(
            help="Most requests waiting or running per model (a memory bound; load is shed by deadline)."
        ),
    ] = 1024,
    timeout: Annotated[float, typer.Option(help="Seconds per request before 504.")] = 30.0,
    grace: Annotated[float, typer.Option(help="Seconds to finish in-flight requests on SIGTERM.")] = 30.0,
    backend: Annotated[
        str, typer.Option(help="auto (ONNX Runtime when the task exports), torch, onnx or onnx-int8.")
    ] = "auto",
    open_predict: Annotated[
        bool, typer.Option(help="Let prediction through without an API key (management still needs one).")
    ] = False,
    engine: Annotated[
        str, typer.Option(help="builtin, or ray: the same handlers on Ray Serve (pip install 'aimass[ray]').")
    ] = "builtin",
    jobs: Annotated[
        int, typer.Option(help="Run queued jobs (/v1/jobs, /v1/auto), this many at a time; 0: don't.")
    ] = 1,
    llm_quant: Annotated[
        str | None,
        typer.Option(
            help="Language models' base weights: none (fp32), int8 (faster decode, slightly "
            "different answers) or int4 (an ONNX Runtime graph of the model's own 4-bit blocks, built "
            "once, the fastest; its fine-tunes run on that one graph as LoRA inputs; env AIMASS_LLM_QUANT)."
        ),
    ] = None,
):
    """Serve registered models over REST (FastAPI + uvicorn) with dynamic batching."""
    from aimass.serve.app import create_app, run
    from aimass.serve.batching import BatchSettings

    if llm_quant is not None:
        import os

        from aimass.llm.hub import quant_setting

        os.environ["AIMASS_LLM_QUANT"] = llm_quant
        quant_setting()  # a clear error now, not when the first language model loads

    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]Warning:[/] binding to {host} exposes the server beyond this machine.")
    settings = BatchSettings(max_batch_size, max_wait_ms, max_queue, timeout, backend)
    if engine == "ray":
        from aimass.serve import ray_engine

        err.print("[yellow]Ray Serve:[/] API keys, metering and the events log belong to the builtin engine.")
        ray_engine.run(model or [], host, port, settings)
        return
    if engine != "builtin":
        raise ConfigError(f"Unknown engine '{engine}'.", hint="Use builtin or ray.")
    app = create_app(
        model or None,
        settings,
        grace_s=grace,
        open_predict=open_predict,
        job_runner=jobs,
        load_in_background=True,  # listen at once: /livez answers while the models load
    )
    run(app, host=host, port=port, grace_s=grace)


@command
def deploy(
    model: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
    service: Annotated[str | None, typer.Option(help="Service name (default: the model's name).")] = None,
    weight: Annotated[
        int | None, typer.Option(help="Percent of the service's traffic (canary); default: all of it.")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="torch, onnx or onnx-int8 (default: server's).")] = None,
    server: ServerOpt = None,
    as_json: JsonFlag = False,
):
    """Load and warm a version on a running server, then move traffic to it."""
    from aimass import client

    settings = {"backend": backend} if backend else None
    body = {"model": model, "service": service, "weight": weight, "settings": settings}
    emit(client.call("POST", "/v1/services", json=body, server=server), as_json, _show_service)


@command
def undeploy(
    service: Annotated[str, typer.Argument(help="Service name")],
    server: ServerOpt = None,
    as_json: JsonFlag = False,
):
    """Finish queued requests, then stop serving a service."""
    from aimass import client

    emit(client.call("DELETE", f"/v1/services/{service}", server=server), as_json)


@services_app.command("list")
@command
def services_list(server: ServerOpt = None, as_json: JsonFlag = False):
    """Every service with the versions behind it and their traffic share."""
    from aimass import client

    body = client.call("GET", "/v1/services", server=server)
    rows = [
        {
            "service": s["name"],
            "state": s["state"],
            "version": v["ref"],
            "weight": v["weight"],
            "queue": v["queue"],
        }
        for s in body["services"]
        for v in s["versions"]
    ]
    emit(body, as_json, lambda _: out.print(table(rows, ["service", "state", "version", "weight", "queue"])))


@services_app.command("show")
@command
def services_show(name: str, server: ServerOpt = None, as_json: JsonFlag = False):
    """One service: versions, weights, settings and load/warm times."""
    from aimass import client

    emit(client.call("GET", f"/v1/services/{name}", server=server), as_json, _show_service)


@services_app.command("events")
@command
def services_events(
    name: str,
    limit: int = 50,
    server: ServerOpt = None,
    as_json: JsonFlag = False,
):
    """The service's events: created, loading, warmed, ready, failed (cause and fix), swapped, ..."""
    from aimass import client

    body = client.call("GET", f"/v1/services/{name}/events", params={"limit": limit}, server=server)
    emit(body, as_json, lambda b: out.print(table(b["events"], ["time", "kind", "ref", "message", "hint"])))


def _show_service(info: dict) -> None:
    out.print(f"[bold]{info['name']}[/] ({info['state']})")
    rows = [{**v, "accuracy": v["metrics"].get("accuracy")} for v in info["versions"]]
    out.print(table(rows, ["ref", "weight", "backend", "accuracy", "load_s", "warm_s", "queue"]))
    if "on_restart" in info:
        out.print(f"After a restart, {info['name']} serves: {info['on_restart']}")


QUOTA_HELP = "Metered items per quota period: predictions, or prompt and completion tokens (default: none)."


@keys_app.command("create")
@command
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key, e.g. the team or app using it.")] = "",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="predict, manage and/or jobs:code (repeatable). jobs:code uploads and runs code on "
            "the server as its user; manage does not include it."
        ),
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(help="Requests per second allowed, 0.001 to 1000000 (default: none).")
    ] = None,
    quota: Annotated[int | None, typer.Option(help=QUOTA_HELP)] = None,
    quota_period: Annotated[str | None, typer.Option(help="day or month (UTC; default month).")] = None,
    as_json: JsonFlag = False,
):
    """A new API key. It is printed once; only its hash is stored."""
    from aimass.serve import auth

    record, key = auth.create_key(
        name, scope or ["predict"], rate_limit, quota=quota, quota_period=quota_period
    )
    info = {**record.to_dict(), "key": key}
    emit(
        info,
        as_json,
        lambda i: out.print(
            f"Key [bold]{i['id']}[/] ({', '.join(i['scopes'])}) created. "
            "Store it now; it is not shown again:\n"
            f"{key}\nUse it as: curl -H 'Authorization: Bearer {key}' ..."
        ),
    )


@keys_app.command("update")
@command
def keys_update(
    key_id: str,
    rate_limit: Annotated[str | None, typer.Option(help="Requests per second, or 'none'.")] = None,
    quota: Annotated[str | None, typer.Option(help=QUOTA_HELP + " 'none' removes it.")] = None,
    quota_period: Annotated[str | None, typer.Option(help="day or month (UTC).")] = None,
    as_json: JsonFlag = False,
):
    """Change a key's rate limit or quota (servers apply it within seconds)."""
    from aimass.serve import auth

    changes = {}
    if rate_limit is not None:
        changes["rate_limit"] = (
            None if rate_limit.lower() == "none" else _number(rate_limit, float, "--rate-limit")
        )
    if quota is not None:
        changes["quota"] = None if quota.lower() == "none" else _number(quota, int, "--quota")
    if quota_period is not None:
        changes["quota_period"] = quota_period
    if not changes:
        raise ConfigError("Nothing to change.", hint="Give --rate-limit, --quota and/or --quota-period.")
    emit(auth.update_key(key_id, **changes), as_json)


def _number(text: str, kind, option: str):
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(
            f"{option} must be a number or 'none'; got {text[:40]!r}.", hint=f"e.g. {option} 100000"
        ) from None


@keys_app.command("list")
@command
def keys_list(as_json: JsonFlag = False):
    """Every key: id, name, scopes, rate limit, quota and what it used this period, created,
    revoked (never the secret)."""
    from aimass.serve import auth

    columns = [
        "id",
        "name",
        "scopes",
        "rate_limit",
        "quota",
        "quota_period",
        "quota_used",
        "created",
        "revoked",
    ]
    emit(auth.list_keys(), as_json, lambda rows: out.print(table(rows, columns)))


@keys_app.command("revoke")
@command
def keys_revoke(key_id: str, as_json: JsonFlag = False):
    """Revoke a key (servers on this AIMASS_HOME refuse it from their next request)."""
    from aimass.serve import auth

    emit(auth.revoke_key(key_id), as_json)


@command
def usage(
    key: Annotated[str | None, typer.Option(help="Only this key id.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this date/time (ISO, UTC), e.g. 2026-11-22.")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Ask this running server, which first writes what it has tallied "
            "(without it the database is read and a live server's last ~2 s may not be in yet).",
        ),
    ] = None,
    as_json: JsonFlag = False,
):
    """Requests, items and compute milliseconds per key and model."""
    if server:
        from aimass import client

        params = {k: v for k, v in (("key", key), ("since", since)) if v}
        rows = client.call("GET", "/v1/usage", params=params, server=server)["usage"]
    else:
        from aimass.serve import metering

        rows = metering.usage(key, since)
    emit(
        rows,
        as_json,
        lambda rows: out.print(
            table(rows, ["key", "model", "requests", "items", "compute_ms", "first", "last"], title="Usage")
        ),
    )
