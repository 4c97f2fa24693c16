"""Sign-in, the Start wizard and the try-it box.

Upload (or a server path under the data roots) -> the import report -> the task and backbone
detected, a time budget -> Train (an ``auto`` job on the stored dataset, decided and queued as
``POST /v1/auto`` with ``{"data": ID}``) -> live progress -> metrics -> Deploy -> try it, with the
curl and Python snippets. Each step calls what its REST twin calls.
"""

from __future__ import annotations

import asyncio
import json
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from aimass.access import directory
from aimass.autolearn import dataset_task
from aimass.backbones import default_backbone
from aimass.data.uploads import store_upload
from aimass.errors import ConfigError, PermissionDenied
from aimass.serve.console.core import Console, rest, root
from aimass.serve.console.sessions import COOKIE, LIFETIME_S, SIGNIN_COOKIE
from aimass.serve.data_routes import import_upload, open_dataset
from aimass.serve.engine import Engine
from aimass.serve.jobs_routes import AutoRequest, submit_auto
from aimass.serve.openai_routes import chat_models
from aimass.serve.predict import Predictor, read_within
from aimass.store import registry
from aimass.tasks import get_task

BUDGETS = (10, 1800, 10)  # the time budget slider: min, max, step (seconds)


def add_wizard(router: APIRouter, console: Console, engine: Engine, predictor: Predictor) -> None:
    _add_signin(router, console)
    _add_start(router, console)
    _add_try(router, console, engine, predictor)


def _cookie(response, request: Request, name: str, value: str, max_age: int) -> None:
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(
        name, value, max_age=max_age, path=None, httponly=True, samesite="strict", secure=secure
    )


def _add_signin(router: APIRouter, console: Console) -> None:
    @router.get("/signin")
    async def signin_page(request: Request):
        token = secrets.token_urlsafe(24)
        response = console.page(request, "signin.html", None, csrf=token, error=None)
        _cookie(response, request, SIGNIN_COOKIE, token, 3600)
        return response

    @router.post("/signin")
    async def signin(request: Request):
        form = await request.form(max_files=0, max_fields=8)
        token, cookie = str(form.get("csrf") or ""), request.cookies.get(SIGNIN_COOKIE) or ""
        if not (token and secrets.compare_digest(token.encode(), cookie.encode())):
            raise PermissionDenied(
                "The sign-in form's CSRF token is missing or wrong.", hint="Reload the page."
            )
        key = str(form.get("key") or "").strip()
        caller = console.guard.identify(f"Bearer {key}") if key else None
        if caller is None:
            response = console.page(
                request,
                "signin.html",
                None,
                status=401,
                csrf=token,
                error="That key is unknown or revoked. Paste the whole key (am_...) or the admin token.",
            )
            return response
        session_id = console.sessions.open(key, caller.key_id)
        response = RedirectResponse(root(request) or "./", status_code=303)
        _cookie(response, request, COOKIE, session_id, LIFETIME_S)
        response.delete_cookie(SIGNIN_COOKIE, path=None)
        return response

    @router.post("/signout")
    async def signout(request: Request):
        ctx = console.ctx(request)
        await console.form(request, ctx)
        console.sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse(root(request) + "signin", status_code=303)
        response.delete_cookie(COOKIE, path=None)
        return response


def _add_start(router: APIRouter, console: Console) -> None:
    @router.get("/")
    async def start(request: Request):
        ctx = console.ctx(request)
        if not ctx.can("manage"):
            return console.redirect(request, "try")
        # the projects the caller may import into
        projects = await asyncio.to_thread(console.projects, ctx, "POST", "/v1/datasets", {})
        return console.page(request, "start.html", ctx, projects=projects)

    @router.post("/start/upload")
    async def upload(request: Request):
        ctx = console.ctx(request)
        if not await asyncio.to_thread(console.projects, ctx, "POST", "/v1/uploads", {}):
            console.authorize(ctx, "POST", "/v1/uploads")  # before the file is read: the 403 it gets
        form = await console.form(request, ctx, max_files=1)
        file, path, name = form.get("file"), str(form.get("path") or "").strip(), form.get("name") or None
        project = str(form.get("project") or directory.DEFAULT_PROJECT)
        console.authorize(ctx, "POST", "/v1/uploads", {"project": project})
        if hasattr(file, "read") and getattr(file, "filename", ""):
            stored = await asyncio.to_thread(store_upload, file.file, file.filename, project)
            path = stored["path"]
        elif not path:
            raise ConfigError(
                "Choose a file to upload, or name a folder on the server.",
                hint="CSV, TSV, JSONL, a .zip/.tar.gz, or a path under AIMASS_HOME/uploads or "
                "AIMASS_DATA_ROOTS.",
            )
        twin = {"path": path, "name": str(name) if name else None, "project": project}
        console.authorize(ctx, "POST", "/v1/datasets", twin)
        report = await asyncio.to_thread(import_upload, path, twin["name"], project)
        return console.redirect(request, f"start/{report['id']}", ctx=ctx)

    @router.get("/start/{dataset_id}")
    async def report(request: Request, dataset_id: str):
        ctx = console.ctx(request)
        await asyncio.to_thread(console.authorize, ctx, "GET", rest("/v1/datasets/{}", dataset_id))
        ds = await asyncio.to_thread(open_dataset, dataset_id)
        summary = ds.summary()
        task, why = dataset_task(ds)  # what the auto job will find
        spec = get_task(task)
        language = summary.get("language")
        projects = await asyncio.to_thread(console.projects, ctx, "POST", "/v1/auto", {})  # to train in
        home = directory.project_of("dataset", summary["name"])  # offered first: the data's project
        projects = sorted(projects, key=lambda p: p != home)
        return console.page(
            request,
            "report.html",
            ctx,
            ds=summary,
            task=task,
            why=why,
            planned=spec.tuner is not None,
            backbone=_backbone(spec, ds, language),
            budgets=BUDGETS,
            name=registry_name(summary["name"]),
            projects=projects,
        )

    @router.post("/start/{dataset_id}/train")
    async def train(request: Request, dataset_id: str):
        """Queue ``auto`` on the stored dataset, as ``POST /v1/auto`` would (same rule, same audit
        row); the job and the model it makes belong to the chosen project."""
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        name = registry.check_name(str(form["name"])) if form.get("name") else None
        body = AutoRequest(
            data=dataset_id,
            time_budget=f"{_budget(form.get('budget'))}s",
            name=name,
            project=str(form.get("project") or directory.DEFAULT_PROJECT),
        )
        twin = body.model_dump(exclude_none=True)
        await asyncio.to_thread(console.authorize, ctx, "POST", "/v1/auto", twin)
        job = await asyncio.to_thread(submit_auto, body, console.lister(ctx))
        return console.redirect(request, f"jobs/{job['id']}?wizard=1", ctx=ctx)


def _backbone(spec, ds, language: str | None) -> str:
    """What the auto job will train: the task's tuner says (a language model's backbone is the one
    whose tokenizer counted the data), else the default encoder for the data's language."""
    tuner = spec.make_tuner() if spec.tuner is not None else None
    if tuner is not None and not tuner.searches:
        return tuner.describe_backbone(ds)[0]
    return default_backbone(language) if language else "chosen by the task"


def registry_name(name: str) -> str:
    """A model name from a dataset name (what a train job would choose), or ``model``."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in name).strip("-._")
    return cleaned[:100] or "model"


def _budget(value) -> int:
    low, high, _ = BUDGETS
    try:
        seconds = int(float(str(value)))
    except ValueError:
        seconds = -1
    if not low <= seconds <= high:
        raise ConfigError(
            f"The time budget must be {low} to {high} seconds; got {value!r}.", hint="Move the slider."
        )
    return seconds


def _add_try(router: APIRouter, console: Console, engine: Engine, predictor: Predictor) -> None:
    @router.get("/try")
    async def served(request: Request):
        ctx = console.ctx(request)
        ready = [n for n, s in engine.services.items() if s.state == "ready"]
        names = sorted(await asyncio.to_thread(console.visible, ctx, "model", ready))
        return console.page(request, "served.html", ctx, names=names)

    @router.get("/try/{name}")
    async def try_page(request: Request, name: str):
        ctx = console.ctx(request)
        await asyncio.to_thread(console.readable, ctx, "model", name)
        deployment = engine.route(name)
        base = str(request.base_url).rstrip("/")
        return console.page(
            request,
            "try.html",
            ctx,
            name=name,
            deployment=deployment.info(),
            kind=deployment.spec.data_kind,
            sample=json.dumps(deployment.spec.sample_request, ensure_ascii=False),
            base=base,
            chats=name in chat_models(engine),
        )

    @router.post("/try/{name}")
    async def try_it(request: Request, name: str):
        ctx = console.ctx(request, spend=False)  # its twin's check spends the rate limit
        twin = ctx.scope("POST", rest("/v1/models/{}/predict", name))  # the policy and rate limit, as REST
        console.guard.check(f"Bearer {ctx.session.key}", "predict", twin)
        await read_within(request, predictor.limit(name, upload=True))  # the model's limit, as REST's
        form = await console.form(request, ctx, max_files=16)
        files = [f for f in form.getlist("files") if hasattr(f, "read") and getattr(f, "filename", "")]
        if files:
            inputs = [await f.read() for f in files]
        else:
            inputs = [line.strip() for line in str(form.get("text") or "").splitlines() if line.strip()]
        if not inputs:
            raise ConfigError("Type a text (one per line) or choose a file.", hint="Then press Predict.")
        answer = json.loads(await predictor(name, {"inputs": inputs}, ctx.caller))
        shown = [f.filename for f in files] or inputs  # a picture or document by its file name
        rows = list(zip(shown, answer.get("predictions", [])))
        return console.page(request, "try_result.html", ctx, rows=rows, model=answer.get("model"))
