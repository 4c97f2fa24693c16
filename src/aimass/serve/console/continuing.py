"""The model page's "Continue training on new data": a ``train`` job with ``from`` (the version)
and ``data`` (a stored dataset of the same kind), queued as ``POST /v1/jobs`` would queue it, in the
model's project. The child version replays a sample of the parent's training rows; the job's page
shows what it kept on the parent's test split and what it learned on the new one
(:func:`aimass.workflow.train_model` with ``continue_from``).
"""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import APIRouter, Request

from aimass import jobs
from aimass.access import directory
from aimass.errors import ConfigError
from aimass.serve.console.core import Console, Ctx, rest
from aimass.serve.jobs_routes import job_guard, may_run, own_job
from aimass.store import browse
from aimass.tasks import get_task
from aimass.workflow import REPLAY

OFFERED = 100  # newest datasets of the kind offered to continue on


def continue_offer(console: Console, ctx: Ctx, info: dict) -> dict:
    """The datasets the model page offers to continue ``info``'s version on (id -> label), newest
    first: those of its task's kind the caller may read, when the task can continue and the caller
    may queue the job; none otherwise."""
    spec = get_task(info["task"])
    if not callable(getattr(spec.estimator, "fit_from", None)) or info.get("files_missing"):
        return {"continue_on": {}, "replay": REPLAY}
    if not console.may(ctx, "POST", "/v1/jobs", _body(info["ref"], {})):
        return {"continue_on": {}, "replay": REPLAY}
    rows, _ = browse.datasets(OFFERED, 0, browse.keeping(console.lister(ctx), "dataset"))
    kind = spec.data_kind
    offered = {
        r.id: f"{r.name} ({r.id}, {(r.summary or {}).get('rows', '?')} rows)"
        for r in rows
        if (r.summary or {}).get("kind", "text") == kind
    }
    return {"continue_on": offered, "replay": REPLAY}


def _body(ref: str, params: dict) -> dict:
    """``POST /v1/jobs`` of the continued fit, in the model's project (the child is its version)."""
    project = directory.project_of("model", ref)
    return {"kind": "train", "params": {"from": ref, **params}, "project": project}


def add_continuing(router: APIRouter, console: Console) -> None:
    @router.post("/models/{ref}/continue")
    async def continue_training(request: Request, ref: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        data = str(form.get("data") or "").strip()
        if not data:
            raise ConfigError(
                "Choose the dataset to continue on.", hint="Import the new rows on the Start page."
            )
        params = {"data": data, "replay": _replay(form.get("replay"))}
        # read first: a refusal decided in the version's project would name the project
        await asyncio.to_thread(console.authorize, ctx, "GET", rest("/v1/versions/{}", ref))
        body = await asyncio.to_thread(_body, ref, params)
        await asyncio.to_thread(console.authorize, ctx, "POST", "/v1/jobs", body)
        may_run(ctx.caller, jobs.get_kind("train"), console.guard.policy is not None)
        guard = job_guard(console.lister(ctx), partial(console.authorize, ctx))  # version and data readable
        job = await asyncio.to_thread(jobs.submit, "train", body["params"], guard=guard)
        await asyncio.to_thread(own_job, job, body["project"])
        note = f"Continuing {ref} on {data}: the new version replays up to {params['replay']} rows per class."
        return console.redirect(request, f"jobs/{job['id']}", note, ctx)


def _replay(value) -> int:
    text = str(value or "").strip()
    if not text:
        return REPLAY
    if not text.isdigit() or int(text) > 100_000:
        raise ConfigError(
            f"Rows replayed per class must be a whole number from 0 to 100000; got {text[:20]!r}.",
            hint=f"e.g. {REPLAY} (0: the new rows only).",
        )
    return int(text)
