"""Jobs over REST (``/v1/jobs``, ``/v1/auto``): the same calls as ``aimass jobs ...``.

Submitting answers 202 with the queued job; a job runner (the server's own, see
:func:`start_runner`, or ``aimass jobs runner``) executes it. Routes need a ``manage`` key, except
custom code: ``POST /v1/jobs/code`` (multipart, one .zip/.tar/.tar.gz, up to 64 MiB) stores it and
answers its id, and submitting or retrying a ``custom`` job that runs it needs ``jobs:code``, a scope
``manage`` does not include (the code runs on the server as the server's user).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from functools import partial
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import UploadFile

from aimass import budget as budgets
from aimass import jobs, paths, sharing
from aimass.access import directory
from aimass.autolearn.run import LEAST_BUDGET_S
from aimass.data.limits import limit
from aimass.data.uploads import missing_upload
from aimass.errors import AimassError, ConfigError, NotFoundError, PermissionDenied, TooManyRequests
from aimass.jobs.kinds import PREDICTIONS, Kind, versions_named
from aimass.jobs.logs import run_dir
from aimass.serve.auth import CODE_SCOPE, POLICY_DECIDED, Caller, require
from aimass.serve.uploads import FILE_BODY, one_file
from aimass.store import browse, registry

log = logging.getLogger("aimass.serve")


OWN_ROUTE = {"batch": "POST /v1/batches"}  # kinds whose route checks what POST /v1/jobs cannot


class JobRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    kind: str = Field(description="import, train, evaluate, compress, auto or custom")
    params: dict = Field(
        default_factory=dict,
        description="the kind's parameters, e.g. {'data': 'reviews'}; custom: {'code': ID from "
        "POST /v1/jobs/code, 'entry': 'train.py', 'data': 'reviews', 'args': ['--epochs', '3']}",
    )
    timeout_s: float | None = Field(None, gt=0, description="stop the job after this many seconds")
    project: str | None = Field(
        None, max_length=64, description="the project the job belongs to (default: 'default')"
    )
    metadata: dict[str, str] | None = Field(
        None, description="labels of your own: up to 16 pairs, keys <= 64 and values <= 512 characters"
    )

    @field_validator("params")
    @classmethod
    def _finite(cls, value: dict) -> dict:
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("params hold NaN or Infinity; send finite numbers") from None
        return value


class AutoRequest(BaseModel):
    path: str | None = Field(
        None, description="a CSV/TSV/JSONL file, or a folder/archive of images, on the server"
    )
    data: str | None = Field(None, description="instead of path: a stored dataset's id or name")
    time_budget: str = Field("10m", description="wall time for everything: '300s', '5m', '1h'; at least 10s")
    name: str | None = None
    deploy: bool = False
    project: str | None = Field(None, max_length=64, description="the project the job belongs to")

    @field_validator("time_budget")
    @classmethod
    def _budget(cls, value: str) -> str:
        """Parsed as the CLI parses ``--time-budget`` (a 422 now, not a job that fails later); below
        :data:`LEAST_BUDGET_S` no data trains. The data's own minimum is checked when the job runs."""
        try:
            seconds = budgets.seconds(value)
        except ConfigError:
            raise ValueError(f"send a duration such as '300s', '5m' or '1h', not {value!r}") from None
        if seconds < LEAST_BUDGET_S:
            raise ValueError(
                f"{value!r} is {seconds:g}s; auto needs at least {LEAST_BUDGET_S:.0f}s whatever the data "
                "(a few minutes leave time to search), e.g. '5m'"
            )
        return value


def add_jobs(app: FastAPI, allow: Callable, visible: Callable, twin: Callable) -> None:
    """Add the job routes; ``allow(scope)`` is the dependency that yields the checked
    :class:`Caller` (``scope``: one scope, or a tuple of which any one will do),
    ``visible(caller)`` what the job list shows it (kind, names -> the names it may read), and
    ``twin(request, caller, method, path)`` decides another route for this request, as that route
    would be decided (its context, its audit row): a push is also ``GET /v1/versions/{ref}/export``."""
    manage = [allow("manage")]

    @app.get("/v1/jobs", tags=["jobs"])
    async def list_jobs(
        request: Request,
        status: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=10**9),
        caller: Caller = allow("manage"),
    ):
        """Jobs the caller may read, newest first; ``total`` counts those of that status (for
        pages of ``limit``). ``metadata[KEY]=VALUE`` (repeatable): only jobs with those labels."""
        labels = metadata_filter(request)
        return await asyncio.to_thread(jobs_page, status, limit, offset, visible(caller), labels)

    code = [allow(CODE_SCOPE)]

    @app.post("/v1/jobs/code", tags=["jobs"], dependencies=code, status_code=201, openapi_extra=CODE_BODY)
    async def upload_code(request: Request):
        """Store code for custom jobs (one archive file); answers ``{"code": ID, ...}``."""
        archive = await _one_file(request)
        try:
            return await asyncio.to_thread(jobs.upload_code, archive.file)
        finally:
            await archive.close()

    @app.post("/v1/jobs", tags=["jobs"], status_code=202)
    async def submit(request: Request, body: JobRequest, caller: Caller = allow(("manage", CODE_SCOPE))):
        """Check and queue a job (in ``project``); 422 with a stable code when a check fails."""
        if body.kind in OWN_ROUTE:  # its route decides what it reads (each request's model)
            raise ConfigError(
                f"A {body.kind} job is submitted with {OWN_ROUTE[body.kind]}, not POST /v1/jobs.",
                hint=f"Use {OWN_ROUTE[body.kind]}.",
            )
        _may_run(caller, jobs.get_kind(body.kind), policy_decided(request))
        await asyncio.to_thread(need_project, body.project)
        await asyncio.to_thread(need_room, body.project)
        guard = job_guard(visible(caller), partial(twin, request, caller))
        timeout = job_timeout(body.timeout_s)
        params = dict(body.params)
        await asyncio.to_thread(readable_params, visible(caller), body.kind, params)
        if body.kind == "predict":  # its rows are predictions: metered to this key, within its quota
            meter = request.app.state.meter
            meter.forget(caller.key_id)  # read afresh: its earlier jobs metered outside this meter
            (await meter.admit(caller.key_id, 1)).release()
            params["caller"] = caller.key_id  # set here: a caller cannot bill another key
        job = await asyncio.to_thread(
            partial(jobs.submit, timeout_s=timeout, metadata=body.metadata, guard=guard),
            body.kind,
            params,
        )
        return await asyncio.to_thread(own_job, job, body.project)

    @app.post("/v1/auto", tags=["jobs"], status_code=202)
    async def auto(body: AutoRequest, caller: Caller = allow("manage")):
        """Data (``path``, or a stored dataset's id or name as ``data``) to an evaluated (optionally
        deployed) model, as an ``auto`` job (in ``project``)."""
        return await asyncio.to_thread(submit_auto, body, visible(caller))

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=manage)
    async def show(job_id: str):
        return await asyncio.to_thread(jobs.show, job_id)

    @app.get("/v1/jobs/{job_id}/logs", tags=["jobs"], dependencies=manage, response_class=PlainTextResponse)
    async def logs(job_id: str, tail: int | None = Query(None, ge=1, le=100_000)):
        return await asyncio.to_thread(jobs.logs, job_id, tail)

    @app.get("/v1/jobs/{job_id}/predictions", tags=["jobs"], dependencies=manage)
    async def predictions(job_id: str):
        """A ``predict`` job's CSV (each input row, its label, score and class probabilities)."""
        path = await asyncio.to_thread(predictions_file, job_id)
        return FileResponse(path, media_type="text/csv", filename=f"predictions-{job_id}.csv")

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], dependencies=manage)
    async def cancel(job_id: str):
        return await asyncio.to_thread(jobs.cancel, job_id)

    @app.post("/v1/jobs/{job_id}/pause", tags=["jobs"], dependencies=manage)
    async def pause(job_id: str):
        """Pause a job: a running train or auto job stops right after its next checkpoint (the
        answer says ``pause_requested`` until it has), others at once; a queued one is held."""
        return await asyncio.to_thread(jobs.pause, job_id)

    @app.post("/v1/jobs/{job_id}/resume", tags=["jobs"], dependencies=manage)
    async def resume(job_id: str):
        """Queue a paused job again; it goes on from its last checkpoint."""
        return await asyncio.to_thread(jobs.resume, job_id)

    @app.post("/v1/jobs/{job_id}/retry", tags=["jobs"], status_code=202)
    async def retry(request: Request, job_id: str, caller: Caller = allow(("manage", CODE_SCOPE))):
        """Submit a failed or cancelled job again; needs what submitting it needs."""
        _may_run(caller, await asyncio.to_thread(jobs.kind_of, job_id), policy_decided(request))
        await asyncio.to_thread(need_room, await asyncio.to_thread(directory.project_of, "job", job_id))
        guard = retry_guard(visible(caller), partial(twin, request, caller), job_id)
        job = await asyncio.to_thread(jobs.state.get, job_id)
        await asyncio.to_thread(readable_params, visible(caller), job.kind, dict(job.params or {}))
        return await asyncio.to_thread(jobs.retry, job_id, guard=guard)


def predictions_file(job_id: str):
    """The CSV of a succeeded ``predict`` job, else a 404 that says why."""
    job = jobs.show(job_id)
    if job["kind"] != "predict" or job["status"] != "succeeded":
        raise NotFoundError(
            f"Job {job_id} is a {job['status']} {job['kind']} job: it has no predictions.",
            hint="Only a succeeded predict job has them; GET /v1/jobs/{id} says where it stands.",
        )
    return run_dir(job_id) / PREDICTIONS


def submit_auto(body: AutoRequest, visible: Callable | None = None) -> dict:
    """Queue an ``auto`` job in ``body.project``: ``POST /v1/auto`` and the console's wizard (which
    decides it first as that route is decided); ``visible`` as :func:`job_guard`'s."""
    need_project(body.project)
    need_room(body.project)
    params = body.model_dump(exclude_none=True, exclude={"project"})
    job = jobs.submit("auto", params, guard=job_guard(visible), timeout_s=job_timeout(None))
    return own_job(job, body.project)


def jobs_page(
    status: str | None, limit: int, offset: int, visible: Callable | None = None, metadata: dict | None = None
) -> dict:
    """One page of jobs (the REST list and the console's); with ``visible`` (kind, names -> the
    names the caller may read) only those, and ``total`` counts only those."""
    jobs.list_jobs(status, 1)  # an unknown status is a 422 that lists the known ones
    rows, total = browse.jobs(status, limit, offset, browse.keeping(visible, "job"), metadata)
    return {"jobs": [j.to_dict() for j in rows], "total": total, "limit": limit, "offset": offset}


def cursor_page(found: list[dict], after: str | None, visible: Callable | None) -> list[dict]:
    """Of the rows ``found`` (jobs newest first, webhook endpoints), those the caller may read (``visible`` as
    :func:`job_guard`'s) that come after the job ``after``: OpenAI's lists page this way."""
    if visible is not None:
        shown = visible("job", {j["id"] for j in found})
        found = [j for j in found if j["id"] in shown]
    if after is not None:
        ids = [j["id"] for j in found]
        found = found[ids.index(after) + 1 :] if after in ids else []
    return found


def metadata_filter(request: Request) -> dict | None:
    """The ``metadata[KEY]=VALUE`` pairs of a list request's query (OpenAI's way to filter by
    metadata), or None."""
    found = {}
    for name, value in request.query_params.multi_items():
        if name.startswith("metadata[") and name.endswith("]") and len(name) > len("metadata[]"):
            found[name[len("metadata[") : -1]] = value
    return found or None


def _only_granted_paths(params: dict) -> None:
    """403 when any string in ``params`` names a server path outside the data roots
    (``AIMASS_HOME/uploads`` and ``AIMASS_DATA_ROOTS``): a key manages aimass, not the disk."""
    roots = paths.data_roots()
    for where, value in _strings(params, "params"):
        real = paths.outside_roots(value, roots)
        if real is not None:
            raise PermissionDenied(
                f"{where} names a server path outside the data folders aimass may read: {value[:200]!r}.",
                hint="Put the data under AIMASS_HOME/uploads, or have the operator add its folder to "
                "AIMASS_DATA_ROOTS; dataset names and registered backbones need no path.",
            )


only_granted_paths = _only_granted_paths


def _strings(value, where: str):
    """(location, string) for every string in a JSON value."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


def _may_run(caller: Caller, kind: Kind, decided: bool = False) -> None:
    """403 unless the caller has the scope the kind needs (``jobs:code`` for custom code).
    ``decided``: the access policies already decided this request (``job:Submit`` or
    ``job:SubmitCode``, see ``access_guard``): a key bound to a user acts by its policies, not
    its scopes."""
    if not decided:
        require(caller, kind.scope, why=f"{kind.name} jobs need")


def policy_decided(request: Request) -> bool:
    """Whether the access policies decided ``request`` (the guard marks it)."""
    return bool(getattr(request.state, POLICY_DECIDED, False))


def export_path(ref: str) -> str:
    """``GET /v1/versions/{ref}/export``: the route a push is decided as (its weights leave)."""
    return f"/v1/versions/{quote(str(ref), safe=':@')}/export"


def readable_versions(visible: Callable | None, *refs: str) -> None:
    """404, like a missing version, unless the caller may read every one of ``refs`` (the versions
    compare route's check, and a job's). Why a ref opens nothing (no such alias, a deleted
    version) is told only to a caller who may read its model: the registry's message names the
    model's aliases and dates; anyone else gets the generic one, as for a model that does not exist."""
    for ref in refs:
        try:
            name = registry.get_version(ref).ref
        except NotFoundError:
            if may_read_model(visible, ref):
                raise
            raise no_model(ref) from None
        if visible is not None and name not in visible("model", {name}):
            raise no_model(ref)


def may_read_model(visible: Callable | None, ref: str) -> bool:
    """Whether the caller may read the model ``ref`` names (its name, whatever version or alias
    follows): who may learn why a ref of it opens nothing."""
    model = registry.split_checkpoint(str(ref))[0].split(":")[0].split("@")[0]
    return visible is None or model in visible("model", {model})


def no_model(ref: str) -> NotFoundError:
    """The 404 of a version the caller may not read: the version routes' words, naming nothing else."""
    return NotFoundError(f"No model '{ref}'.", hint="GET /v1/versions lists what you may read.")


def readable_params(visible: Callable | None, kind: str, params: dict) -> None:
    """Before the kind's own check looks a job's versions up (its not-found messages name a
    model's aliases, versions and dates): a ref that opens nothing, of a model the caller may not
    read, is answered as the version routes answer it. Everything else is left to that check and
    :func:`job_guard`, in their order."""
    for ref in versions_named(kind, params):
        try:
            registry.get_version(ref)
        except NotFoundError:
            if not may_read_model(visible, ref):
                raise no_model(ref) from None
        except AimassError:  # a malformed ref: the kind's check says so
            continue


def job_guard(
    visible: Callable | None, decide: Callable[[str, str], None] | None = None
) -> Callable[[str, dict], None]:
    """What a caller's job may name (the ``guard(kind, params)`` of ``jobs.submit`` and
    ``jobs.retry``): server paths only under the data folders (403), and only versions and
    datasets the caller may read (404, like missing ones): a job must not learn from, score,
    compress or copy what its submitter cannot see. Where it may write is the job's project
    (:func:`aimass.jobs.adopt.confine`). ``decide(method, path)`` decides another route as that
    route would be: a push takes a version's weights off the server (``GET
    /v1/versions/{ref}/export``), a predict job calls the version (``POST /v1/models/{ref}/predict``),
    an issues job replaces the report the dataset's fixes act on (``POST /v1/datasets/{id}/fix``: it
    needs ``dataset:Import`` on the dataset, not only read)."""

    def guard(job_kind: str, params: dict) -> None:
        _only_granted_paths(params)
        if "store" in params:  # a key picks among the operator's stores, never a bucket of its own
            sharing.store_url(str(params["store"]), named_only=True)
        if visible is None:  # no access policies: a key's scopes decide
            return
        for kind, name in jobs.reads(job_kind, params):
            if kind == "model":
                readable_versions(visible, name)
            elif name not in visible(kind, {name}):  # a dataset, a vector store, an upload
                raise _unseen(kind, name)
        for ref in jobs.exports(job_kind, params) if decide is not None else []:
            decide("GET", export_path(ref))  # the weights leave the server
        if job_kind == "issues" and decide is not None:  # it replaces the dataset's stored report,
            decide("POST", f"/v1/datasets/{quote(str(params['data']), safe='')}/fix")  # which fixes act on
        if job_kind == "predict" and decide is not None:  # it predicts as the route would
            decide("POST", f"/v1/models/{quote(str(params['model']), safe=':@')}/predict")

    return guard


def _unseen(kind: str, name: str) -> NotFoundError:
    """The 404 of a dataset, vector store or upload a job names that its submitter may not read:
    the words of one that does not exist (an upload's, naming no project)."""
    if kind == "upload":
        return missing_upload(name)
    where = "GET /v1/vector_stores" if kind == "vector_store" else "GET /v1/datasets"
    return NotFoundError(f"No {kind.replace('_', ' ')} '{name}'.", hint=f"{where} lists what you may read.")


def retry_guard(
    visible: Callable | None, decide: Callable | None, job_id: str
) -> Callable[[str, dict], None]:
    """:func:`job_guard` for retrying ``job_id``, plus what its params decided when it was submitted:
    a push's or pull's store (``aimass:Store``) is decided as ``POST /v1/jobs`` decides it, in the
    job's project, so a retry reaches no store its caller could not have named."""
    base = job_guard(visible, decide)

    def guard(job_kind: str, params: dict) -> None:
        base(job_kind, params)
        if decide is not None and "store" in params:
            project = directory.project_of("job", job_id)
            decide("POST", "/v1/jobs", {"kind": job_kind, "params": params, "project": project})

    return guard


def need_project(name: str | None) -> None:
    """404 before anything is queued when the project does not exist."""
    if name and name != directory.DEFAULT_PROJECT:
        directory.show_project(name)


PROJECT_JOBS = "AIMASS_MAX_PROJECT_JOBS"  # jobs one project may have queued, running or paused
MAX_JOB_HOURS = "AIMASS_MAX_JOB_HOURS"  # the longest a job submitted over REST may run


def need_room(project: str | None) -> None:
    """429 before anything is queued when ``project`` already has its share of unfinished jobs
    (queued, running or paused): one key cannot queue thousands and keep every other project's
    jobs waiting (the runner also takes turns between projects: :func:`aimass.jobs.state.next_queued`)."""
    project = project or directory.DEFAULT_PROJECT
    most = int(limit(PROJECT_JOBS, 20, None))
    owners = directory.owners("job")
    held = sum(
        owners.get(job_id, directory.DEFAULT_PROJECT) == project for job_id in jobs.state.unfinished_ids()
    )
    if held >= most:
        raise TooManyRequests(
            f"Project {project!r} has {held} jobs queued, running or paused; at most {most} at once.",
            retry_after=60,
            hint=f"Wait for one to end, or cancel one (POST /v1/jobs/{{id}}/cancel); the operator sets "
            f"{PROJECT_JOBS}.",
        )


def job_timeout(asked: float | None) -> float:
    """The timeout of a job submitted over REST: what was asked, at most the operator's
    :data:`MAX_JOB_HOURS` (72 by default), which is also what a job asking none gets."""
    most = float(limit(MAX_JOB_HOURS, 72, None)) * 3600
    return min(asked, most) if asked else most


def own_job(job: dict, project: str | None) -> dict:
    """Put a new job in ``project`` (the caller was allowed to submit there)."""
    if project and project != directory.DEFAULT_PROJECT:
        directory.assign("job", job["id"], project)
    return job


may_run = _may_run


async def _one_file(request: Request) -> UploadFile:
    """The one code archive of a ``/v1/jobs/code`` request."""
    return await one_file(
        request,
        what="the code",
        kinds=".zip, .tar or .tar.gz",
        example="curl -F file=@code.zip -H 'Authorization: Bearer KEY' .../v1/jobs/code",
    )


CODE_BODY = FILE_BODY


def start_runner(parallel: int = 1) -> threading.Event | None:
    """Run queued jobs in a background thread (workers are separate processes); returns the event
    that stops it, or None when another runner already serves this AIMASS_HOME."""
    runner = jobs.Runner(parallel=parallel)
    try:
        runner.acquire()
    except AimassError as exc:
        log.info("job runner not started here: %s", exc.message)
        return None
    runner.release()
    stop = threading.Event()

    def loop():
        try:
            runner.run(stop=stop)
        except AimassError as exc:  # another runner won the lock in between
            log.info("job runner stopped: %s", exc.message)

    threading.Thread(target=loop, name="aimass-jobs", daemon=True).start()
    return stop
