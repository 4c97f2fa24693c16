"""Vector stores through the operator's named S3 stores, from the console: a store's page pushes
it (a ``store-push`` job in the store's project), the Documents page pulls one (a ``store-pull``
job in the project chosen), each queued as ``POST /v1/jobs`` would queue it (:func:`queue_job`,
which the models page's pull of a version uses too).
"""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import APIRouter, Request

from aimass import jobs, sharing
from aimass.access import directory
from aimass.serve.console.core import Console, Ctx, rest
from aimass.serve.jobs_routes import job_guard, may_run, need_project, need_room, own_job


def push_offer(console: Console, ctx: Ctx, store_id: str, project: str) -> list[str]:
    """The named stores a store's page offers to push it to (none when the caller may not)."""
    body = {"kind": "store-push", "params": {"vector_store": store_id}, "project": project}
    return sorted(sharing.stores()) if sharing.stores() and console.may(ctx, "POST", "/v1/jobs", body) else []


def pull_offer(console: Console, ctx: Ctx, kind: str = "store-pull") -> dict:
    """The named stores and the projects a page offers to pull into with a job of ``kind``
    (the Documents page a vector store, the models page a version: ``pull``); none without a
    named store."""
    named = sorted(sharing.stores())
    body = {"kind": kind, "params": {}}
    return {
        "pull_stores": named,
        "pull_projects": console.projects(ctx, "POST", "/v1/jobs", body) if named else [],
    }


def add_store_sharing(router: APIRouter, console: Console) -> None:
    @router.post("/stores/pull")
    async def pull(request: Request):
        return await pull_from_form(console, request, "store-pull", "vector store ")

    @router.post("/stores/{store_id}/push")
    async def push(request: Request, store_id: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        params = {"vector_store": store_id, "store": str(form.get("store") or "")}
        # read first: a refusal decided in the store's project would name the project
        await asyncio.to_thread(console.authorize, ctx, "GET", rest("/v1/vector_stores/{}", store_id))
        project = await asyncio.to_thread(directory.project_of, "vector_store", store_id)
        job = await queue_job(console, ctx, "store-push", params, project)
        return console.redirect(
            request, f"jobs/{job['id']}", f"Pushing {store_id} to {params['store']}.", ctx
        )


async def pull_from_form(console: Console, request: Request, kind: str, what: str = ""):
    """A pull form (store, remote, name, project) queued as a job of ``kind``; its page next."""
    ctx = console.ctx(request)
    form = await console.form(request, ctx)
    params = {"store": str(form.get("store") or ""), "remote": str(form.get("remote") or "").strip()}
    if str(form.get("name") or "").strip():
        params["name"] = str(form.get("name")).strip()
    project = str(form.get("project") or directory.DEFAULT_PROJECT)
    job = await queue_job(console, ctx, kind, params, project)
    return console.redirect(request, f"jobs/{job['id']}", f"Pulling {what}{params['remote']}.", ctx)


async def queue_job(console: Console, ctx: Ctx, kind: str, params: dict, project: str) -> dict:
    """Decide and queue the job as ``POST /v1/jobs`` would: the caller's rights in ``project``,
    only the operator's named stores, only a vector store the caller may read."""
    body = {"kind": kind, "params": params, "project": project}
    await asyncio.to_thread(console.authorize, ctx, "POST", "/v1/jobs", body)
    may_run(ctx.caller, jobs.get_kind(kind), console.guard.policy is not None)
    await asyncio.to_thread(need_project, project)
    await asyncio.to_thread(need_room, project)
    guard = job_guard(console.lister(ctx), partial(console.authorize, ctx))
    job = await asyncio.to_thread(jobs.submit, kind, params, guard=guard)
    return await asyncio.to_thread(own_job, job, project)
