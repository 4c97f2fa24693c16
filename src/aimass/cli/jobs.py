"""``aimass jobs ...``: a thin shell over :mod:`aimass.jobs`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from aimass.budget import seconds
from aimass.cli.compress import settings
from aimass.cli.shell import JsonFlag, command, emit, out, table
from aimass.errors import ConfigError, JobError

jobs_app = typer.Typer(
    help="Submit, watch, pause, resume, cancel and retry long-running jobs.", no_args_is_help=True
)
COLUMNS = ["id", "kind", "status", "attempt", "progress", "eta_s", "message", "created"]


def attach(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


@jobs_app.command("submit")
@command
def submit(
    args: Annotated[list[str] | None, typer.Argument(help="After --: arguments for a custom script.")] = None,
    kind: Annotated[str | None, typer.Option(help="import, train, evaluate, compress, auto, custom.")] = None,
    code_dir: Annotated[
        str | None, typer.Option(help="Custom job: the folder with your code (uploaded into AIMASS_HOME).")
    ] = None,
    code: Annotated[str | None, typer.Option(help="Custom job: the id of code uploaded before.")] = None,
    entry: Annotated[str | None, typer.Option(help="Custom job: the script, inside the code.")] = None,
    data: Annotated[str | None, typer.Option(help="Dataset id or name (custom, train).")] = None,
    name: Annotated[str | None, typer.Option(help="Model name for what the job registers.")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--set", help="A job parameter KEY=VALUE (repeatable).")
    ] = None,
    timeout: Annotated[str | None, typer.Option(help="Stop the job after this long, e.g. 30m.")] = None,
    project: Annotated[
        str | None, typer.Option(help="The project the job works in: it writes only that project's names.")
    ] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", help="A label of your own, KEY=VALUE (repeatable, up to 16)."),
    ] = None,
    foreground: Annotated[bool, typer.Option(help="Run it here and follow its log.")] = False,
    as_json: JsonFlag = False,
):
    """Check and queue a job (``aimass jobs runner`` or ``aimass serve`` runs it).

    A custom job's --code-dir is packed and uploaded (``aimass jobs upload``) first; the job runs
    that copy."""
    from aimass import jobs
    from aimass.access import directory

    kind = kind or ("custom" if code_dir or code or entry else None)
    if kind is None:
        raise JobError(
            "Say what the job does: --kind KIND, or --code-dir DIR --entry SCRIPT.py for your own script.",
            code="kind_missing",
            hint="e.g. aimass jobs submit --code-dir ./src --entry train.py --data reviews -- --epochs 3",
        )
    if code_dir:
        code = jobs.upload_code(code_dir)["code"]
        name = name or _model_name(code_dir)
    given = {"code": code, "entry": entry, "data": data, "name": name}
    params = {k: v for k, v in given.items() if v is not None} | settings(option or [])
    if kind == "custom":
        params["args"] = list(args or [])
    if project and project != directory.DEFAULT_PROJECT:
        directory.show_project(project)  # a 404 before anything queues
    job = jobs.submit(kind, params, timeout_s=seconds(timeout), metadata=labels(meta))
    if project and project != directory.DEFAULT_PROJECT:
        directory.assign("job", job["id"], project)  # before a runner can start it writing
    if foreground:
        job = jobs.run_foreground(job["id"], echo=None if as_json else _write)
    emit(job, as_json, _show)


def labels(pairs: list[str] | None) -> dict | None:
    """``["team=nlp"]`` -> ``{"team": "nlp"}`` (values stay strings)."""
    found = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--meta {pair!r} is not KEY=VALUE.", hint="For example --meta team=nlp.")
        found[key.strip()] = value
    return found or None


def _model_name(code_dir: str) -> str | None:
    """The folder's name, as the model's default name, when it is a valid one."""
    from aimass.store.registry import NAME

    folder = Path(code_dir).expanduser().resolve().name
    return folder if NAME.fullmatch(folder) else None


@jobs_app.command("upload")
@command
def upload(
    path: Annotated[str, typer.Argument(help="A folder, or a .zip / .tar / .tar.gz of one.")],
    as_json: JsonFlag = False,
):
    """Store code for custom jobs in AIMASS_HOME; prints its id (submit with --code ID)."""
    from aimass import jobs

    info = jobs.upload_code(path)
    emit(
        info,
        as_json,
        lambda i: out.print(f"code [bold]{i['code']}[/]: {i['files']} files, {i['bytes']:,} bytes"),
    )


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@jobs_app.command("list")
@command
def list_(
    status: Annotated[
        str | None, typer.Option(help="queued, running, paused, succeeded, failed, cancelled")
    ] = None,
    limit: int = 50,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Only jobs with this label, KEY=VALUE (repeatable).")
    ] = None,
    as_json: JsonFlag = False,
):
    """The latest jobs, newest first."""
    from aimass import jobs

    rows = jobs.list_jobs(status, limit, labels(meta))
    emit(rows, as_json, lambda r: out.print(table(r, COLUMNS)))


@jobs_app.command("show")
@command
def show(job_id: str, as_json: JsonFlag = False):
    """A job's state, result or error, events and the end of its log."""
    from aimass import jobs

    emit(jobs.show(job_id), as_json, _show)


def _show(job: dict) -> None:
    colours = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "paused": "magenta"}
    colour = colours.get(job["status"], "cyan")
    out.print(f"[bold]{job['id']}[/] {job['kind']}  [{colour}]{job['status']}[/]  attempt {job['attempt']}")
    if job["status"] in ("queued", "running"):
        eta = f", ETA {job['eta_s']:.0f}s" if job.get("eta_s") else ""
        out.print(f"progress {job['progress']:.0%}{eta}  {escape(job.get('message') or '')}")
    if job.get("metadata"):
        out.print("metadata: " + ", ".join(f"{k}={v}" for k, v in job["metadata"].items()), markup=False)
    if job["status"] == "running" and job.get("pause_requested"):
        out.print("pausing: it stops right after its next checkpoint")
    if job["status"] == "paused":
        out.print(f"paused: `aimass jobs resume {job['id']}` goes on from its last checkpoint")
    if job.get("result"):
        out.print({k: v for k, v in job["result"].items() if k not in ("stages", "per_class")})
    if job.get("error"):
        error = job["error"]
        out.print(f"[red]{escape(str(error.get('cause')))}[/]: {escape(str(error.get('message')))}")
        if error.get("hint"):
            out.print(f"[yellow]Hint:[/] {escape(error['hint'])}")
        if error.get("traceback"):
            out.print(error["traceback"], markup=False, highlight=False)
    if job.get("events"):
        out.print(table(job["events"], ["time", "attempt", "kind", "message"], title="events"))


@jobs_app.command("logs")
@command
def logs(
    job_id: str,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
):
    """A job's log (stdout and stderr of every attempt)."""
    from aimass import jobs

    text = jobs.logs(job_id, tail)
    _write(text + ("\n" if text and not text.endswith("\n") else ""))
    offset = len(jobs.logs(job_id).encode())
    while follow and jobs.show(job_id)["status"] in ("queued", "running", "paused"):
        time.sleep(1)
        offset = jobs._echo(job_id, offset, _write)


@jobs_app.command("cancel")
@command
def cancel(job_id: str, as_json: JsonFlag = False):
    """Cancel a queued job, or stop a running one."""
    from aimass import jobs

    emit(jobs.cancel(job_id), as_json, _show)


@jobs_app.command("pause")
@command
def pause(job_id: str, as_json: JsonFlag = False):
    """Pause a job: a running train or auto job stops right after its next checkpoint (others at
    once), a queued one is held; `aimass jobs resume` goes on from there."""
    from aimass import jobs

    emit(jobs.pause(job_id), as_json, _show)


@jobs_app.command("resume")
@command
def resume(job_id: str, as_json: JsonFlag = False):
    """Queue a paused job again: it goes on from its last checkpoint."""
    from aimass import jobs

    emit(jobs.resume(job_id), as_json, _show)


@jobs_app.command("retry")
@command
def retry(job_id: str, as_json: JsonFlag = False):
    """Queue a failed or cancelled job again (a new job with the same parameters)."""
    from aimass import jobs

    emit(jobs.retry(job_id), as_json, _show)


@jobs_app.command("runner")
@command
def runner(
    parallel: Annotated[int, typer.Option(help="Jobs that run at the same time.")] = 1,
    until_idle: Annotated[bool, typer.Option(help="Exit when no job is queued or running.")] = False,
):
    """Run queued jobs (one runner per AIMASS_HOME); Ctrl-C stops it, its workers finish."""
    from aimass import jobs

    out.print(f"job runner: up to {parallel} at a time" + (" (until idle)" if until_idle else ""))
    try:
        jobs.Runner(parallel=parallel).run(until_idle=until_idle)
    except KeyboardInterrupt:
        out.print("runner stopped; running workers finish on their own and the next runner adopts them")
