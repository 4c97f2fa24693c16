"""The dataset page's label issues: find them (a job of kind ``issues``, as ``POST /v1/jobs``
would queue it), see the last report, and fix the rows ticked (as ``POST /v1/datasets/{id}/fix``).

The report shown is the one ``GET /v1/datasets/{id}/issues`` returns; its tables show the first
:data:`SHOWN` rows of each kind, and a fix acts on the rows ticked or on every row flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from aimass import jobs
from aimass.access import directory
from aimass.errors import ConfigError, NotFoundError
from aimass.serve.console.core import Console, Ctx, rest
from aimass.serve.data_routes import (
    INERT,
    FixRequest,
    fix_from_report,
    issues_file,
    issues_report,
    open_dataset,
)
from aimass.serve.jobs_routes import job_guard, may_run, own_job

SHOWN = 50  # rows of each table, so a form of ticked rows stays small
ACTIONS = {"relabel": {"relabel": True}, "drop": {"drop": True}, "duplicates": {"duplicates": True}}


def issues_section(console: Console, ctx: Ctx, dataset_id: str, name: str) -> dict:
    """What the dataset page shows of label issues: the last report (None when there is none or
    the caller may not read it), and which of find and fix the caller may do."""
    report = None
    if console.may(ctx, "GET", rest("/v1/datasets/{}/issues", dataset_id)):
        with contextlib.suppress(NotFoundError):
            report = issues_report(dataset_id)
    may_write = console.may(ctx, "POST", rest("/v1/datasets/{}/fix", dataset_id))  # as the job guard asks
    return {
        "issues": report,
        "shown": SHOWN,
        "may_find": may_write and console.may(ctx, "POST", "/v1/jobs", _job_body(dataset_id, name)),
        "may_fix": report is not None and may_write,
    }


def _job_body(dataset_id: str, name: str) -> dict:
    """The ``POST /v1/jobs`` body of an issues job on the dataset, in the dataset's project."""
    project = directory.project_of("dataset", name)
    return {"kind": "issues", "params": {"data": dataset_id}, "project": project}


def add_curation(router: APIRouter, console: Console) -> None:
    @router.get("/datasets/{dataset_id}/issues/files/{file}")
    async def report_file(request: Request, dataset_id: str, file: str):
        ctx = console.ctx(request)
        twin = rest("/v1/datasets/{}/issues/files/{}", dataset_id, file)
        await asyncio.to_thread(console.authorize, ctx, "GET", twin)
        path = await asyncio.to_thread(issues_file, dataset_id, file)
        return FileResponse(path, filename=path.name if path.suffix == ".csv" else None, headers=INERT)

    @router.post("/datasets/{dataset_id}/issues")
    async def find(request: Request, dataset_id: str):
        ctx = console.ctx(request)
        await console.form(request, ctx)
        _read = partial(console.authorize, ctx, "GET", rest("/v1/datasets/{}", dataset_id))
        await asyncio.to_thread(_read)  # 404 for a dataset the caller may not read, before its project shows
        ds = await asyncio.to_thread(open_dataset, dataset_id)
        body = await asyncio.to_thread(_job_body, ds.id, ds.name)
        await asyncio.to_thread(console.authorize, ctx, "POST", "/v1/jobs", body)
        may_run(ctx.caller, jobs.get_kind("issues"), console.guard.policy is not None)
        guard = job_guard(console.lister(ctx), partial(console.authorize, ctx))  # the data must be readable
        job = await asyncio.to_thread(jobs.submit, "issues", body["params"], guard=guard)
        await asyncio.to_thread(own_job, job, body["project"])
        note = f"Looking for label issues in {ds.name}; the report shows on the dataset's page when it ends."
        return console.redirect(request, f"jobs/{job['id']}", note, ctx)

    @router.post("/datasets/{dataset_id}/fix")
    async def fix(request: Request, dataset_id: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx, max_fields=2 * SHOWN + 8)
        action = str(form.get("action") or "")
        if action not in ACTIONS:
            raise ConfigError(f"Unknown fix {action[:20]!r}.", hint="Use the page's buttons.")
        rows = None if form.get("all") else [_row(v) for v in form.getlist("row")]
        if rows == []:
            raise ConfigError("No row ticked.", hint="Tick the rows to change, or 'every row flagged'.")
        body = FixRequest(**ACTIONS[action], rows=rows)
        twin = rest("/v1/datasets/{}/fix", dataset_id)
        await asyncio.to_thread(console.authorize, ctx, "POST", twin, body.model_dump(exclude_none=True))
        child = await asyncio.to_thread(fix_from_report, dataset_id, body)
        note = f"Stored version {child['id']} of {child['name']}: {_changed(child)}; {dataset_id} is kept."
        return console.redirect(request, f"datasets/{child['id']}", note, ctx)


def _row(value) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(
            f"Row {str(value)[:20]!r} is not a row number.", hint="Use the page's boxes."
        ) from None


def _changed(child: dict) -> str:
    changes = child.get("changes") or {}
    return f"{changes.get('relabelled', 0)} relabelled, {changes.get('dropped', 0)} dropped"
