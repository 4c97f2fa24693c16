"""The console's management pages: jobs, models, services, datasets, keys. Lists are paginated on
the server; every page reads what its REST twin answers (named in the page's footer), and every
page and action is authorized as that twin is (:meth:`Console.authorize`: the access policies, with
the same audit row and the same 403 or 404). Lists show only what the caller may read."""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from aimass import api, jobs, sharing
from aimass.access import directory
from aimass.data.uploads import store_upload
from aimass.errors import ConfigError, PermissionDenied
from aimass.exporters import FORMATS, recipes
from aimass.jobs.state import STATES
from aimass.scoring import TASKS as SCORED  # the tasks whose model page labels a file
from aimass.serve import auth, metering
from aimass.serve.access_guard import adopt_service
from aimass.serve.console.charts import usage_chart
from aimass.serve.console.continuing import add_continuing, continue_offer
from aimass.serve.console.core import PAGE_SIZE, Console, Ctx, pages, rest
from aimass.serve.console.curation import add_curation, issues_section
from aimass.serve.console.store_sharing import pull_from_form, pull_offer
from aimass.serve.data_routes import (
    EXPORTS,
    compare,
    dataset_report,
    datasets_page,
    delete_version,
    export_zip,
    picture,
    picture_response,
    readable_versions,
    rejects_page,
    set_alias,
    version,
    versions_page,
    zip_response,
)
from aimass.serve.engine import Engine
from aimass.serve.jobs_routes import job_guard, jobs_page, may_run, own_job, predictions_file, retry_guard
from aimass.serve.metering import Meter
from aimass.serve.openai_routes import chat_models
from aimass.store import browse, registry

Offset = Query(0, ge=0, le=10**9)


def add_manage(router: APIRouter, console: Console, engine: Engine, meter: Meter) -> None:
    _add_jobs(router, console)
    _add_models(router, console, engine)
    _add_services(router, console, engine)
    _add_datasets(router, console)
    add_curation(router, console)
    add_continuing(router, console)
    _add_keys(router, console, meter)


def _manager(console: Console, request: Request, method: str, path: str, body: dict | None = None) -> Ctx:
    """The signed-in caller, authorized for the REST twin ``method path`` (see :meth:`Console.authorize`)."""
    ctx = console.ctx(request)
    console.authorize(ctx, method, path, body)
    return ctx


# ------------------------------------------------------------------ jobs
def _add_jobs(router: APIRouter, console: Console) -> None:
    @router.get("/jobs")
    async def job_list(request: Request, status: str | None = None, offset: int = Offset):
        ctx = _manager(console, request, "GET", "/v1/jobs")
        status = status or None
        found = await asyncio.to_thread(jobs_page, status, PAGE_SIZE, offset, console.lister(ctx))
        return console.page(
            request,
            "jobs.html",
            ctx,
            jobs=found["jobs"],
            state=status,
            states=STATES,
            pg=pages(found["total"], offset),
        )

    @router.get("/jobs/{job_id}")
    async def job(request: Request, job_id: str, wizard: int = 0):
        """The job's page; to htmx (which polls it until the job ends) only its live part."""
        ctx = _manager(console, request, "GET", rest("/v1/jobs/{}", job_id))
        info = await asyncio.to_thread(jobs.show, job_id)
        info["log_tail"] = await asyncio.to_thread(jobs.logs, job_id, 15)
        live = bool(request.headers.get("hx-request"))
        template = "job_progress.html" if live else "job.html"
        return console.page(request, template, ctx, job=info, wizard=bool(wizard))

    @router.post("/jobs/{job_id}/cancel")
    async def cancel(request: Request, job_id: str):
        return await _job_action(request, job_id, "cancel", jobs.cancel, "Cancel requested.")

    @router.get("/jobs/{job_id}/predictions")
    async def predictions(request: Request, job_id: str):
        _manager(console, request, "GET", rest("/v1/jobs/{}/predictions", job_id))
        path = await asyncio.to_thread(predictions_file, job_id)
        return FileResponse(path, media_type="text/csv", filename=f"predictions-{job_id}.csv")

    @router.post("/jobs/{job_id}/pause")
    async def pause(request: Request, job_id: str):
        return await _job_action(request, job_id, "pause", jobs.pause, "Pause requested.")

    @router.post("/jobs/{job_id}/resume")
    async def resume(request: Request, job_id: str):
        return await _job_action(request, job_id, "resume", jobs.resume, "Resumed: queued again.")

    async def _job_action(request: Request, job_id: str, action: str, call, done: str):
        ctx = console.ctx(request)
        await console.form(request, ctx)
        console.authorize(ctx, "POST", rest("/v1/jobs/{}/" + action, job_id))
        await asyncio.to_thread(call, job_id)
        return console.redirect(request, f"jobs/{job_id}", done, ctx)

    @router.post("/jobs/{job_id}/retry")
    async def retry(request: Request, job_id: str):
        ctx = console.ctx(request)
        await console.form(request, ctx)
        await asyncio.to_thread(console.authorize, ctx, "POST", rest("/v1/jobs/{}/retry", job_id))
        may_run(ctx.caller, await asyncio.to_thread(jobs.kind_of, job_id), console.guard.policy is not None)
        guard = retry_guard(console.lister(ctx), partial(console.authorize, ctx), job_id)  # as REST's retry
        new = await asyncio.to_thread(jobs.retry, job_id, guard=guard)
        return console.redirect(request, f"jobs/{new['id']}", f"Retried as job {new['id']}.", ctx)


# ---------------------------------------------------------------- models
def _add_models(router: APIRouter, console: Console, engine: Engine) -> None:
    @router.get("/models")
    async def model_list(request: Request, name: str | None = None, offset: int = Offset):
        ctx = _manager(console, request, "GET", "/v1/versions")
        found = await asyncio.to_thread(versions_page, name, PAGE_SIZE, offset, console.lister(ctx))
        return console.page(
            request,
            "models.html",
            ctx,
            versions=found["versions"],
            name=name or "",
            pg=pages(found["total"], offset),
            **await asyncio.to_thread(pull_offer, console, ctx, "pull"),
        )

    @router.post("/models/pull")
    async def pull(request: Request):
        """Pull a pushed version from a named store into a project, as ``POST /v1/jobs`` with kind
        pull would; the new version is the job's to register (only under the project's names)."""
        return await pull_from_form(console, request, "pull")

    @router.get("/models/compare")
    async def compare_page(request: Request, a: str = "", b: str = "", v: list[str] = Query([])):
        """Two versions side by side; ``a`` and ``b``, or the two versions ticked in the list (``v``)."""
        ctx = _manager(console, request, "GET", "/v1/versions/compare")
        a, b = _two(a, b, v)
        await asyncio.to_thread(readable_versions, console.lister(ctx), a, b)
        found = await asyncio.to_thread(compare, a, b, engine)
        return console.page(request, "compare.html", ctx, c=found)

    @router.get("/models/{ref}")
    async def model(request: Request, ref: str):
        ctx = _manager(console, request, "GET", rest("/v1/versions/{}", ref))
        info = await asyncio.to_thread(version, ref, engine)
        services = sorted(await asyncio.to_thread(console.visible, ctx, "service", list(engine.services)))
        offers = await asyncio.to_thread(_offers, console, ctx, info)
        offers.update(await asyncio.to_thread(continue_offer, console, ctx, info))
        chats = ref in chat_models(engine)  # served and generates: the playground chats with it
        return console.page(request, "model.html", ctx, m=info, services=services, chats=chats, **offers)

    @router.post("/models/{ref}/delete")
    async def delete(request: Request, ref: str):
        ctx, force = await _confirmed(console, request, rest("/v1/versions/{}", ref), ref, (ref, "model"))
        done = await asyncio.to_thread(delete_version, ref, engine, force)
        note = f"Deleted {done['ref']}."
        if done["children"]:
            kept = ", ".join(done["children"])
            note += f" Its children {kept} keep their lineage; their parent reads as deleted."
        return console.redirect(request, "models", note, ctx)

    @router.post("/models/{ref}/compress")
    async def compress(request: Request, ref: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        params = {"model": ref, "method": str(form.get("method") or "")}
        if str(form.get("max_drop") or "").strip():
            params["max_drop"] = _max_drop(form.get("max_drop"))
        job = await _model_job(console, ctx, "compress", params)
        return console.redirect(
            request, f"jobs/{job['id']}", f"Compressing {ref} with {params['method']}.", ctx
        )

    @router.post("/models/{ref}/score")
    async def score(request: Request, ref: str):
        """Label an uploaded table with the version: a ``predict`` job, as ``POST /v1/uploads?project=P``
        then ``POST /v1/jobs`` (kind predict) would be decided, P the model's project, where the job
        runs and the file is kept (a user confined to P may label a file with P's model, and one
        project's rows never land in ``default``); its page offers the CSV."""
        ctx = console.ctx(request)
        # the version first: one the caller may not read is the 404 REST answers, naming no project
        await asyncio.to_thread(console.authorize, ctx, "GET", rest("/v1/versions/{}", ref))
        project = await asyncio.to_thread(directory.project_of, "model", ref)
        # before the file is read: the 403 it gets
        await asyncio.to_thread(console.authorize, ctx, "POST", "/v1/uploads", {"project": project})
        form = await console.form(request, ctx, max_files=1)
        upload = form.get("file")
        if not (hasattr(upload, "read") and getattr(upload, "filename", "")):
            raise ConfigError("Choose a file to label: CSV, TSV or JSONL.", hint="One text a row.")
        stored = await asyncio.to_thread(store_upload, upload.file, upload.filename, project)
        params = {"model": ref, "path": stored["path"]}
        if str(form.get("text_col") or "").strip():
            params["text_col"] = str(form.get("text_col")).strip()
        job = await _model_job(console, ctx, "predict", params)
        return console.redirect(request, f"jobs/{job['id']}", f"Labelling {upload.filename} with {ref}.", ctx)

    @router.post("/models/{ref}/push")
    async def push(request: Request, ref: str):
        """Push the version to a named store, as ``POST /v1/jobs`` with kind push would."""
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        params = {"model": ref, "store": str(form.get("store") or "")}
        job = await _model_job(console, ctx, "push", params)
        return console.redirect(request, f"jobs/{job['id']}", f"Pushing {ref} to {params['store']}.", ctx)

    @router.get("/models/{ref}/export")
    async def export(request: Request, ref: str, fmt: str = Query("onnx", alias="format")):
        ctx = console.ctx(request)
        await asyncio.to_thread(console.authorize, ctx, "GET", rest("/v1/versions/{}/export", ref))
        async with EXPORTS:
            packed, filename = await asyncio.to_thread(export_zip, ref, fmt)
        return zip_response(packed, filename)

    @router.get("/models/{ref}/files/{file}")
    async def model_picture(request: Request, ref: str, file: str):
        _manager(console, request, "GET", rest("/v1/versions/{}/files/{}", ref, file))
        return picture_response(await asyncio.to_thread(picture, ref, file))

    @router.post("/models/{ref}/alias")
    async def alias(request: Request, ref: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        name = str(form.get("alias") or "")
        console.authorize(ctx, "PUT", rest("/v1/versions/{}/aliases/{}", ref, name or "-"))
        done = await asyncio.to_thread(set_alias, ref, name, bool(form.get("force")))
        return console.redirect(request, f"models/{ref}", f"{done['ref']} is now @{done['alias']}.", ctx)

    @router.post("/models/{ref}/unalias")
    async def unalias(request: Request, ref: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        name = str(form.get("alias") or "")
        console.authorize(ctx, "DELETE", rest("/v1/versions/{}/aliases/{}", ref, name or "-"))
        done = await asyncio.to_thread(registry.remove_alias, ref, name)
        return console.redirect(request, f"models/{ref}", f"Removed {done['alias']}.", ctx)

    @router.post("/models/{ref}/deploy")
    async def deploy(request: Request, ref: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        service = str(form.get("service") or "").strip() or None
        weight = _weight(form.get("weight")) if form.get("weight") not in (None, "") else None
        body = {"model": ref, "service": service, "weight": weight}
        await asyncio.to_thread(console.authorize, ctx, "POST", "/v1/services", body)
        await asyncio.to_thread(engine.check_room, ref, service)
        done = await engine.deploy(ref, service=service, weight=weight)
        name = done.get("name") or service or ref.partition(":")[0]
        await asyncio.to_thread(adopt_service, name, ref)
        then = "try" if form.get("then") == "try" else "services"
        return console.redirect(request, f"{then}/{name}", f"Deployed {ref}.", ctx)


async def _model_job(console: Console, ctx: Ctx, kind: str, params: dict) -> dict:
    """Queue a job on a version from its page, decided as ``POST /v1/jobs`` is, in the model's
    project: a compression's child is a version of that model, which only a job there may write.
    The version is read first (a 404 for one the caller may not read, as REST answers): a refusal
    in its project would name the project that holds it."""
    await asyncio.to_thread(console.authorize, ctx, "GET", rest("/v1/versions/{}", params["model"]))
    project = await asyncio.to_thread(directory.project_of, "model", params["model"])
    body = {"kind": kind, "params": params, "project": project}
    await asyncio.to_thread(console.authorize, ctx, "POST", "/v1/jobs", body)
    may_run(ctx.caller, jobs.get_kind(kind), console.guard.policy is not None)  # as POST /v1/jobs
    decide = partial(console.authorize, ctx)  # a push is an export too, as POST /v1/jobs decides it
    guard = job_guard(console.lister(ctx), decide)  # readable versions, a named store, export to push
    job = await asyncio.to_thread(jobs.submit, kind, params, guard=guard)
    return await asyncio.to_thread(own_job, job, project)


def _offers(console: Console, ctx: Ctx, info: dict) -> dict:
    """What the model page offers the caller: each action only where its REST twin would be allowed."""
    ref = info["ref"]
    project = directory.project_of("model", ref)
    body = {"kind": "compress", "params": {"model": ref}, "project": project}
    methods = api.compression_methods(info["task"]) if console.may(ctx, "POST", "/v1/jobs", body) else []
    push = {"kind": "push", "params": {"model": ref}, "project": project}
    named = sorted(sharing.stores()) if console.may(ctx, "POST", "/v1/jobs", push) else []
    return {
        "stores": named if named and console.may(ctx, "GET", rest("/v1/versions/{}/export", ref)) else [],
        "may_deploy": console.may(ctx, "POST", "/v1/services", {"model": ref}),
        "may_delete": console.may(ctx, "DELETE", rest("/v1/versions/{}", ref)),
        "may_export": console.may(ctx, "GET", rest("/v1/versions/{}/export", ref)),
        "may_score": info["task"] in SCORED  # the file goes to the model's project, then the job runs
        and console.may(ctx, "POST", "/v1/uploads", {"project": project})
        and console.may(
            ctx, "POST", "/v1/jobs", {"kind": "predict", "params": {"model": ref}, "project": project}
        ),
        "methods": methods,
        "formats": {name: what for name, what in FORMATS.items() if name in recipes(info["task"])},
    }


def _two(a: str, b: str, ticked: list[str]) -> tuple[str, str]:
    """The two versions to compare: ``a`` and ``b``, else exactly two ticked in the list."""
    if a and b:
        return a, b
    if len(ticked) == 2:  # the list is newest first: compare the older (a) with the newer (b)
        older, newer = sorted(ticked, key=_version_order)
        return older, newer
    raise ConfigError(
        f"Comparing needs two versions; got {len([x for x in (a, b) if x]) or len(ticked)}.",
        hint="Tick two versions in the models list and press Compare "
        "(or open models/compare?a=NAME:1&b=NAME:2).",
    )


def _version_order(ref: str) -> tuple:
    name, _, number = ref.partition(":")
    return (name, int(number) if number.isascii() and number.isdigit() else -1, ref)


def _max_drop(value) -> float:
    try:
        drop = float(str(value).strip())
    except ValueError:
        drop = -1.0
    if not 0 <= drop <= 100:
        raise ConfigError(
            f"The accuracy drop allowed must be 0-100 points; got {str(value)[:20]!r}.", hint="e.g. 1"
        )
    return drop


def _weight(value) -> int:
    text = str(value).strip()
    if not (text.isascii() and text.isdigit() and 0 <= int(text) <= 100):
        raise ConfigError(
            f"A traffic weight must be a whole number 0-100; got {text[:20]!r}.", hint="e.g. 10"
        )
    return int(text)


# -------------------------------------------------------------- services
def _add_services(router: APIRouter, console: Console, engine: Engine) -> None:
    @router.get("/services")
    async def service_list(request: Request):
        ctx = _manager(console, request, "GET", "/v1/services")
        found = engine.info()
        seen = await asyncio.to_thread(console.visible, ctx, "service", {s["name"] for s in found})
        return console.page(request, "services.html", ctx, services=[s for s in found if s["name"] in seen])

    @router.get("/services/{name}")
    async def service(request: Request, name: str):
        """The service's page; to htmx (which polls it every 2 s) only its live figures."""
        if request.headers.get("hx-request"):
            ctx = _manager(console, request, "GET", rest("/v1/services/{}/metrics", name))
            return console.page(request, "service_live.html", ctx, live=engine.live(name), name=name)
        ctx = _manager(console, request, "GET", rest("/v1/services/{}", name))
        info = engine.service(name).info()
        live = engine.live(name) if console.may(ctx, "GET", rest("/v1/services/{}/metrics", name)) else None
        events = await asyncio.to_thread(engine.events, name, 50)
        model = info["versions"][0]["ref"].partition(":")[0] if info["versions"] else name
        deployed = {v["ref"] for v in info["versions"]}
        others = [r for r in await asyncio.to_thread(browse.deployable_versions, model) if r not in deployed]
        return console.page(request, "service.html", ctx, s=info, events=events, others=others, live=live)

    @router.post("/services/{name}/traffic")
    async def traffic(request: Request, name: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        console.authorize(ctx, "PUT", rest("/v1/services/{}/traffic", name))
        refs = [v["ref"] for v in engine.service(name).info()["versions"]]
        weights = {ref: _weight(form.get(f"w:{ref}", 0)) for ref in refs}
        for ref in [r for r, weight in weights.items() if weight > 0]:  # as the REST twin decides it
            console.authorize(ctx, "POST", "/v1/services", {"model": ref, "service": name})
        await engine.set_traffic(name, weights)
        return console.redirect(request, f"services/{name}", "Traffic split saved.", ctx)

    @router.post("/services/{name}/undeploy")
    async def undeploy(request: Request, name: str):
        ctx = console.ctx(request)
        await console.form(request, ctx)
        console.authorize(ctx, "DELETE", rest("/v1/services/{}", name))
        await engine.undeploy(name)
        return console.redirect(request, "services", f"Service {name} undeployed.", ctx)


async def _confirmed(console: Console, request: Request, path: str, key: str, what: tuple[str, str]):
    """(ctx, force) of a console delete: the REST twin's access decision, then the confirmation box
    that must name ``key``; ``what``: (the thing, the page it is deleted from)."""
    ctx = console.ctx(request)
    form = await console.form(request, ctx)
    await asyncio.to_thread(console.authorize, ctx, "DELETE", path)
    if str(form.get("confirm") or "") != key:
        raise ConfigError(
            f"Deleting {what[0]} needs the confirmation box ticked.",
            hint=f"Tick 'Yes, delete it' under Delete on the {what[1]}'s page, then press Delete.",
        )
    return ctx, bool(form.get("force"))


# -------------------------------------------------------------- datasets
def _add_datasets(router: APIRouter, console: Console) -> None:
    @router.get("/datasets")
    async def dataset_list(request: Request, offset: int = Offset):
        ctx = _manager(console, request, "GET", "/v1/datasets")
        found = await asyncio.to_thread(datasets_page, PAGE_SIZE, offset, console.lister(ctx))
        shown = found["datasets"]
        return console.page(request, "datasets.html", ctx, datasets=shown, pg=pages(found["total"], offset))

    @router.get("/datasets/{dataset_id}")
    async def dataset(request: Request, dataset_id: str, offset: int = Offset):
        ctx = _manager(console, request, "GET", rest("/v1/datasets/{}", dataset_id))
        summary = await asyncio.to_thread(dataset_report, dataset_id)
        rejects = await asyncio.to_thread(rejects_page, dataset_id, PAGE_SIZE, offset)
        may_delete = await asyncio.to_thread(console.may, ctx, "DELETE", rest("/v1/datasets/{}", dataset_id))
        issues = await asyncio.to_thread(issues_section, console, ctx, summary["id"], summary["name"])
        return console.page(
            request,
            "dataset.html",
            ctx,
            ds=summary,
            rejects=rejects["rejects"],
            pg=pages(rejects["total"], offset),
            may_delete=may_delete,
            **issues,
        )

    @router.post("/datasets/{dataset_id}/delete")
    async def delete_dataset(request: Request, dataset_id: str):
        """``DELETE /v1/datasets/{id}`` with a confirmation box (and ``force`` as a second one)."""
        what = (f"dataset {dataset_id}", "dataset")
        ctx, force = await _confirmed(console, request, rest("/v1/datasets/{}", dataset_id), dataset_id, what)
        gone = await asyncio.to_thread(partial(api.delete_dataset, dataset_id, force=force))
        note = f"Deleted dataset {gone['id']} ({', '.join(gone['names'])})."
        if gone["models"]:
            note += f" Versions trained on it keep their lineage: {', '.join(gone['models'])}."
        return console.redirect(request, "datasets", note, ctx)


# ------------------------------------------------------------------ keys
def _number(form, field: str, kind, what: str, example: str):
    """A form's number field (None when empty), or a 422 that names it."""
    text = str(form.get(field) or "").strip()
    try:
        return kind(text) if text else None
    except ValueError:
        raise ConfigError(f"{what} must be a number; got {text[:20]!r}.", hint=f"e.g. {example}") from None


def _add_keys(router: APIRouter, console: Console, meter: Meter) -> None:
    @router.get("/keys")
    async def key_list(request: Request):
        ctx = _manager(console, request, "GET", "/v1/keys")
        await asyncio.to_thread(meter.flush)
        keys = await asyncio.to_thread(auth.list_keys)
        usage, chart = [], None  # the keys without their usage when denied (the audit log has it)
        with contextlib.suppress(PermissionDenied):
            console.authorize(ctx, "GET", "/v1/usage")
            usage = await asyncio.to_thread(metering.usage, None, None)
        with contextlib.suppress(PermissionDenied):
            console.authorize(ctx, "GET", "/v1/usage/series")
            chart = usage_chart(await asyncio.to_thread(metering.series, 24))
        secret = ctx.session.notes.pop("secret", None)
        grantable = sorted(auth.grantable(ctx.caller))
        return console.page(
            request, "keys.html", ctx, keys=keys, usage=usage, chart=chart, secret=secret, grantable=grantable
        )

    @router.post("/keys")
    async def create(request: Request):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        console.authorize(ctx, "POST", "/v1/keys")
        rate_limit = _number(form, "rate_limit", float, "The rate limit", "20")
        quota = _number(form, "quota", int, "The quota", "100000")
        period = str(form.get("quota_period") or "month") if quota is not None else None
        scopes = [str(s) for s in form.getlist("scopes")]
        record, key = await asyncio.to_thread(
            partial(auth.create_key, quota=quota, quota_period=period, granted_by=ctx.caller),
            str(form.get("name") or ""),
            scopes,
            rate_limit,
        )
        ctx.session.notes["secret"] = {"id": record.id, "key": key}
        return console.redirect(request, "keys", ctx=ctx)

    @router.post("/keys/{key_id}/quota")
    async def set_quota(request: Request, key_id: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        console.authorize(ctx, "PATCH", rest("/v1/keys/{}", key_id))
        quota = _number(form, "quota", int, "The quota", "100000")
        await asyncio.to_thread(partial(auth.update_key, key_id, quota=quota, granted_by=ctx.caller))
        meter.forget(key_id)
        said = f"Key {key_id}: quota {quota:,} items." if quota else f"Key {key_id}: no quota."
        return console.redirect(request, "keys", said, ctx)

    @router.post("/keys/{key_id}/revoke")
    async def revoke(request: Request, key_id: str):
        ctx = console.ctx(request)
        await console.form(request, ctx)
        console.authorize(ctx, "DELETE", rest("/v1/keys/{}", key_id))
        await asyncio.to_thread(auth.revoke_key, key_id)
        return console.redirect(request, "keys", f"Key {key_id} revoked.", ctx)
