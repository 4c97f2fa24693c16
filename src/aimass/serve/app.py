"""The REST server: one FastAPI app over the serving engine.

Prediction goes through the task's handler (decode_request / predict / encode_response)
and the model's batcher; the app never branches on the task. Management routes deploy,
swap and undeploy versions at run time and read each service's events.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import queue
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

import aimass
from aimass.errors import AimassError, ConfigError, NotFoundError
from aimass.jobs.custom import upload_limit
from aimass.serve import auth, console, metering
from aimass.serve.access_guard import AccessGuard, adopt_service, twin_scope
from aimass.serve.access_routes import add_access_routes, stash_body
from aimass.serve.auth import ANONYMOUS, Caller, Guard
from aimass.serve.batches import add_batch_routes
from aimass.serve.batching import BatchSettings
from aimass.serve.data_routes import UPLOAD_PATH as DATA_UPLOAD_PATH
from aimass.serve.data_routes import add_data_routes, upload_body_limit
from aimass.serve.engine import Engine, close_share, persisted
from aimass.serve.jobs_routes import add_jobs, start_runner
from aimass.serve.metering import Meter
from aimass.serve.middleware import (
    AuthGate,
    FiniteJSONResponse,
    RequestLog,
    database_busy,
    error_body,
    error_response,
)
from aimass.serve.openai_errors import model_not_found
from aimass.serve.openai_finetune import FILES_PATH, add_fine_tuning_routes
from aimass.serve.openai_routes import add_openai_routes, openai_models
from aimass.serve.predict import PredictLane, Predictor, parse_json, read_within
from aimass.serve.settings import ServingSettings
from aimass.serve.vector_store_routes import add_vector_store_routes
from aimass.serve.webhook_routes import add_webhook_routes
from aimass.store import registry

log = logging.getLogger("aimass.serve")
HARD_BODY_BYTES = 64 * 1024 * 1024  # predict: the stream is cut here, whatever the model
MANAGE_BODY_BYTES = 1024 * 1024  # every other route takes small JSON
CODE_UPLOAD_PATH = "/v1/jobs/code"


def body_limit(path: str) -> int:
    """The most bytes the server reads of a request body to ``path`` (413 past it, on the stream).
    A model's own limit (e.g. 2 MB for texts) applies on top for prediction."""
    if path.startswith("/v1/models/"):
        return HARD_BODY_BYTES
    if path == CODE_UPLOAD_PATH:
        return upload_limit() + 64 * 1024  # the archive plus its multipart framing
    if path in (DATA_UPLOAD_PATH, FILES_PATH) or console.is_upload(path):
        return upload_body_limit()
    if path.startswith(console.TRY_PATH_PREFIX):  # the try-it box takes pictures too
        return HARD_BODY_BYTES
    return MANAGE_BODY_BYTES


def default_refs() -> list[str]:
    """Each model's ``production`` alias if it has one, else its latest version: never one the
    compression gate rejected (a model with only rejected versions and no alias is not served)."""
    latest = {record.name: record.ref for record in registry.latest_versions()}
    refs = []
    for name in sorted({record.name for record in registry.list_versions()}):
        alias = registry.aliases(name).get("production")
        ref = f"{name}:{alias}" if alias else latest.get(name)
        refs += [ref] if ref else []
    return refs


def create_app(
    refs: list[str] | None = None,
    settings: BatchSettings | None = None,
    *,
    grace_s: float = 30.0,
    open_predict: bool = False,
    job_runner: int = 0,
    load_in_background: bool = False,
) -> FastAPI:
    """Build the app; ``refs`` deploy at start-up (default: what ``AIMASS_HOME/serving.json``
    says was served last, else :func:`default_refs`) and ``/readyz``
    turns 200 when they are warm. Prediction needs a ``predict`` key unless ``open_predict``;
    management always needs a ``manage`` key or the admin token (``AIMASS_HOME/admin.token``).
    ``job_runner``: run queued jobs (``/v1/jobs``, ``/v1/auto``), that many at a time (0: leave
    them to ``aimass jobs runner``). ``load_in_background`` (``aimass serve``): start-up returns at
    once and the versions load in a task, so the server listens meanwhile (``/livez`` 200,
    ``/readyz`` 503 ``loading``) and a shutdown stops the loading; by default start-up (a test's
    client too) waits until they are loaded."""
    engine = Engine(settings)
    state = {"ready": False, "draining": False}
    guard = Guard(open_predict=open_predict, admin=auth.admin_token())
    guard.policy = AccessGuard(served=engine.answering)
    meter = Meter()

    async def flush_usage():
        while True:
            await asyncio.sleep(2)
            try:
                await asyncio.to_thread(meter.flush)
            except Exception as exc:  # kept in the tally; the next tick retries
                log.warning("usage not written yet, will retry: %s", exc)

    async def load():
        engine.loading = True
        try:
            saved = persisted() if refs is None else None
            if saved is not None:  # what the operator deployed last, with its traffic split
                await engine.restore(saved)
            for ref in [] if saved is not None else refs if refs is not None else default_refs():
                try:
                    await engine.deploy(ref)
                except AimassError as exc:  # the event log has it; the other models still serve
                    log.error("could not deploy %s: %s", ref, exc)
            state["ready"] = True
        finally:
            engine.loading = False

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = asyncio.get_running_loop().create_task(load())
        if load_in_background:
            loader.add_done_callback(_log_failure)
        else:
            await loader
        await asyncio.to_thread(app.state.vector_stores.resume)  # files a stopped server left half done
        flusher = asyncio.get_running_loop().create_task(flush_usage())
        stop_jobs = start_runner(job_runner) if job_runner else None
        yield
        if stop_jobs is not None:
            stop_jobs.set()
        state["ready"] = False
        if not loader.done():  # stopped while loading: the versions not loaded yet never are
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
        await engine.shutdown(engine.grace_left(grace_s))  # what SIGTERM's --grace has left
        app.state.vector_stores.stop()
        flusher.cancel()
        await asyncio.to_thread(meter.flush)

    app = FastAPI(
        title="aimass",
        version=aimass.__version__,
        lifespan=lifespan,
        responses=ERRORS,
        default_response_class=FiniteJSONResponse,  # a job's NaN score is null, not a 500
    )
    app.state.engine = engine
    app.state.aimass = state
    app.state.meter = meter
    predictor = Predictor(engine, meter)
    app.openapi = lambda: _errors_as_json(app)
    _add_middleware(app, engine, guard, predictor)
    _add_health(app, engine, state, guard)
    _add_predict(app, engine, guard, predictor)
    _add_management(app, engine, guard, meter)
    generation = add_openai_routes(
        app, engine, lambda scope: _allow(guard, scope), meter, partial(_twin, guard)
    )
    app.state.generation = generation  # chat and completions (its slots: generations in flight)
    add_data_routes(app, engine, lambda scope: _allow(guard, scope), partial(_may_see, guard))
    console.add_console(app, engine, guard, predictor, meter, generation)
    add_access_routes(app, lambda scope: _allow(guard, scope))
    return app


def _log_failure(loader: asyncio.Task) -> None:
    """Log what ended the start-up loading task other than its end or a shutdown's cancel
    (``/readyz`` then stays 503: the server never served what it was to)."""
    if not loader.cancelled() and loader.exception() is not None:
        log.error("loading the served versions failed", exc_info=loader.exception())


def _allow(guard: Guard, scope: str):
    """A FastAPI dependency: the caller, checked for ``scope`` (401/403/429 otherwise)."""

    async def dependency(request: Request) -> Caller:  # async: a sync dependency costs a thread hop
        await stash_body(request)  # access rules may name a resource from the body
        caller = guard.check(request.headers.get("authorization"), scope, request.scope)
        request.state.key_id = caller.key_id
        return caller

    return Depends(dependency)


def _visible(guard: Guard, caller: Caller, kind: str, names: set[str]) -> set[str]:
    """Which of ``names`` the caller may read (every one without an access guard)."""
    return names if guard.policy is None else guard.policy.visible(caller, kind, names)


def _may_see(guard: Guard, caller: Caller) -> Callable[[str, set[str]], set[str]] | None:
    """What a list shows ``caller``: (kind, names) -> the names it may read; None (all) without
    an access guard."""
    return None if guard.policy is None else partial(guard.policy.visible, caller)


def _twin(
    guard: Guard, request: Request, caller: Caller, method: str, path: str, body: dict | None = None
) -> None:
    """Decide ``method path`` (with JSON ``body``) for ``caller`` as that route would be, with this
    request's context (source IP, time) and its own audit row: what a job needs beyond being
    submitted (a push is an export, a batch's requests predictions). Without access policies the
    submit route's scope check is all there is."""
    if guard.policy is None:
        return
    scope = request.scope
    request_id = scope.get("state", {}).get("request_id", "")
    twin = twin_scope(method, path, scope.get("client"), scope.get("scheme"), request_id, body)
    found = guard.policy.rule(twin)
    if found is None:  # a path built from what the caller sent that no route has: nothing there
        raise NotFoundError(f"No route {method} {path[:200]}.", hint="Check the ids in the request.")
    guard.policy.authorize(caller, twin, found)


def _add_middleware(app: FastAPI, engine: Engine, guard: Guard, predictor: Predictor) -> None:
    app.add_middleware(PredictLane, predictor=predictor, guard=guard)  # innermost
    app.add_middleware(AuthGate, guard=guard)  # no key, no body read
    app.add_middleware(RequestLog, metrics=engine.metrics, body_limit=body_limit)  # outermost

    @app.exception_handler(AimassError)
    async def aimass_error(request: Request, exc: AimassError):
        return error_response(exc, request.state.request_id)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        hint = "GET /openapi.json (or /docs) shows what this route takes."
        return error_response(ConfigError(describe(exc.errors()), hint=hint), request.state.request_id)

    @app.exception_handler(UnicodeEncodeError)
    async def unencodable(request: Request, exc: UnicodeEncodeError):
        message = (
            f"A text field holds a lone surrogate (U+{ord(exc.object[exc.start]):04X}) that cannot be stored."
        )
        error = ConfigError(message, hint="Send valid Unicode text (no unpaired \\ud800-\\udfff escapes).")
        return error_response(error, request.state.request_id)

    @app.exception_handler(OperationalError)
    async def database(request: Request, exc: OperationalError):
        busy = database_busy(exc)
        if busy is None:
            raise exc  # the request log answers a plain 500
        return error_response(busy, request.state.request_id)

    @app.exception_handler(OverflowError)
    async def overflow(request: Request, exc: OverflowError):
        error = ConfigError(
            f"A number or date is out of range: {exc}.", hint="Send values in a normal range."
        )
        return error_response(error, request.state.request_id)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        code, hint = HTTP_CODES.get(exc.status_code, ("bad_request", "Check the request against /docs."))
        body = error_body(code, str(exc.detail), hint, request.state.request_id, exc.status_code)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


HTTP_CODES = {
    400: ("bad_request", "Send a well-formed body (JSON, or multipart with a boundary)."),
    404: ("not_found", "GET /openapi.json (or /docs) lists the routes."),
    405: ("method_not_allowed", "GET /openapi.json (or /docs) lists each route's methods."),
}


def describe(errors) -> str:
    """Pydantic/FastAPI validation errors as one line: ``where: what`` for each."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts) or "The request is invalid."


def _add_health(app: FastAPI, engine: Engine, state: dict, guard: Guard) -> None:
    @app.get("/livez", tags=["health"])
    def livez():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(request: Request):
        """Ready or not, for anyone (a load balancer's probe carries no key); the ready services'
        names only to a key, and only those it may read: a name is another project's to give."""
        if state["draining"]:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        ready = {n for n, s in engine.services.items() if s.state == "ready"}
        caller = guard.identify(request.headers.get("authorization"))
        caller = caller or (ANONYMOUS if guard.open_predict else None)  # what /v1/models would list
        seen = _visible(guard, caller, "model", ready) if caller is not None else set()
        return {"status": "ready", "services": len(ready), "models": sorted(seen)}

    @app.get("/metrics", tags=["health"], response_class=Response, dependencies=[_allow(guard, "manage")])
    def metrics():
        """Prometheus text, to a key that may read usage (``usage:Read``): its series name every
        service (``scrape_configs: authorization: {credentials: KEY}``)."""
        for name, service in engine.services.items():
            engine.metrics.queue_depth.labels(name).set(sum(d.batcher.pending for d in service.deployments))
        return Response(engine.metrics.render(), media_type="text/plain; version=0.0.4")


def _add_predict(app: FastAPI, engine: Engine, guard: Guard, predictor: Predictor) -> None:
    def listed(caller: Caller) -> tuple[list[dict], list[dict]]:
        """(aimass's entries, OpenAI's) of the models ``caller`` may read."""
        out = []
        for service in engine.services.values():
            for d in service.deployments:
                out.append({"name": service.name, "state": service.state, **d.info()})
        data = openai_models(engine)
        seen = _visible(guard, caller, "model", {m["name"] for m in out} | {m["id"] for m in data})
        return [m for m in out if m["name"] in seen], [m for m in data if m["id"] in seen]

    @app.get("/v1/models", tags=["models"])
    def models(caller: Caller = _allow(guard, "predict")):
        """Every served model the caller may read (``model:Read``) and the versions behind it."""
        out, data = listed(caller)
        return {"models": out, "object": "list", "data": data}  # aimass's and OpenAI's shape

    @app.get("/v1/models/{model_id:path}", tags=["models"])
    def model(model_id: str, request: Request, caller: Caller = _allow(guard, "predict")):
        """OpenAI's model retrieval: the entry of ``GET /v1/models`` with this id (404 otherwise)."""
        found = next((m for m in listed(caller)[1] if m["id"] == model_id), None)
        if found is not None:
            return found
        raise model_not_found(model_id)

    @app.post("/v1/models/{name}/predict", tags=["models"], openapi_extra=PREDICT_BODY)
    async def predict(name: str, request: Request, caller: Caller = _allow(guard, "predict")):
        """JSON ``{"inputs": [...]}``, or multipart/form-data with one or more ``inputs`` files.
        (JSON requests are answered by :class:`~aimass.serve.predict.PredictLane` before routing.)"""
        upload = request.headers.get("content-type", "").startswith("multipart/form-data")
        payload = await _payload(request, predictor.limit(name, upload=upload))
        answer = await predictor(name, payload, caller)
        return Response(answer, media_type="application/json")


Weight = Annotated[int, Field(ge=0, le=100, strict=True)]


class DeployRequest(BaseModel):
    model: str = Field(description="NAME, NAME:VERSION or NAME@ALIAS", examples=["reviews:3"])
    service: str | None = Field(None, description="service name (default: the model's name)")
    weight: Weight | None = Field(None, description="percent of traffic (canary); default all")
    settings: ServingSettings | None = Field(None, description="overrides of the server's settings")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, for scripts: e.g. not_found, config_error, too_many_requests")
    message: str = Field(description="what was wrong")
    hint: str | None = Field(None, description="what to send or do instead")
    request_id: str = Field(description="also in the X-Request-ID header and the server's log")
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error, authentication_error")
    param: str | None = Field(None, description="OpenAI's param: the request field at fault, if known")


class ErrorBody(BaseModel):
    """Every error answer has this shape."""

    error: ErrorDetail


def _error(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


ERRORS = {
    400: _error("The body cannot be parsed (e.g. multipart without a boundary)"),
    401: _error("No API key, or an unknown or revoked one"),
    403: _error("The key lacks the scope this route needs"),
    404: _error("No such model, version, service, job or key"),
    409: _error("In use: e.g. deleting a version a service serves or an alias points at"),
    413: _error("The body (or a decoded input) is over its limit"),
    422: _error("The request is invalid: the message names the field and the hint what to send"),
    429: _error(
        "A rate limit, the model's deadline-based admission (see Retry-After) or a key's spent "
        "quota (code insufficient_quota; Retry-After: seconds to its reset)"
    ),
    500: _error("An internal error (logged with the request id)"),
    503: _error("The service is loading, draining, failed, or its worker restarted; see Retry-After"),
    504: _error("The request took longer than the service's timeout"),
}


ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def _errors_as_json(app: FastAPI) -> dict:
    """The OpenAPI document, with every error answer as JSON (a route whose success is plain text,
    like job logs, still answers errors in the one JSON shape)."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for operations in spec["paths"].values():
            for operation in operations.values():
                for status, answer in operation.get("responses", {}).items():
                    if int(status) in ERRORS:
                        answer["content"] = {"application/json": {"schema": dict(ERROR_REF)}}
        app.openapi_schema = spec
    return app.openapi_schema


class KeyRequest(BaseModel):
    name: str = ""
    scopes: list[str] = Field(default_factory=lambda: ["predict"])
    rate_limit: float | None = Field(None, description="requests per second, 0.001 to 1,000,000")
    quota: int | None = Field(
        None, description="metered items (predictions, or tokens) per quota_period; none: no quota"
    )
    quota_period: str | None = Field(None, description="day or month (UTC); month when a quota is set")


class KeyUpdate(BaseModel):
    """Only the fields sent change; null removes a rate limit or a quota."""

    rate_limit: float | None = None
    quota: int | None = None
    quota_period: str | None = None


def _add_management(app: FastAPI, engine: Engine, guard: Guard, meter: Meter) -> None:
    manage = [_allow(guard, "manage")]

    @app.post("/v1/keys", tags=["keys"])
    def create_key(body: KeyRequest, caller: Caller = _allow(guard, "manage")):
        """A new API key; the key is in this answer only (the server keeps its hash). A key can
        grant only scopes its creator holds (a ``manage`` key cannot mint ``jobs:code``)."""
        record, key = auth.create_key(
            body.name,
            body.scopes,
            body.rate_limit,
            quota=body.quota,
            quota_period=body.quota_period,
            granted_by=caller,
        )
        return {**record.to_dict(), "key": key}

    @app.patch("/v1/keys/{key_id}", tags=["keys"])
    def update_key(key_id: str, body: KeyUpdate, caller: Caller = _allow(guard, "manage")):
        """Change a key's rate limit or quota; servers apply it within seconds. A key held to a
        quota may not change keys (nor create them)."""
        meter.flush()  # the answer's quota_used counts what this server has metered
        changes = {k: getattr(body, k) for k in body.model_fields_set}
        updated = auth.update_key(key_id, **changes, granted_by=caller)
        meter.forget(key_id)  # this server applies it from the next request (others within seconds)
        return updated

    @app.get("/v1/keys", tags=["keys"], dependencies=manage)
    def keys():
        meter.flush()
        return {"keys": auth.list_keys()}

    @app.delete("/v1/keys/{key_id}", tags=["keys"], dependencies=manage)
    def revoke(key_id: str):
        return auth.revoke_key(key_id)

    @app.get("/v1/usage", tags=["keys"], dependencies=manage)
    def usage(key: str | None = None, since: str | None = None):
        meter.flush()
        return {"usage": metering.usage(key, since)}

    @app.get("/v1/usage/series", tags=["keys"], dependencies=manage)
    def usage_series(hours: int = Query(24, ge=1, le=metering.MAX_HOURS), key: str | None = None):
        """Requests per key in each hour of the last ``hours`` (UTC, oldest first): the usage chart."""
        meter.flush()
        return metering.series(hours, key)

    @app.get("/v1/services", tags=["services"])
    def services(caller: Caller = _allow(guard, "manage")):
        """The services the caller may read (``service:Read``)."""
        found = engine.info()
        seen = _visible(guard, caller, "service", {s["name"] for s in found})
        return {"services": [s for s in found if s["name"] in seen]}

    @app.get("/v1/services/{name}", tags=["services"], dependencies=manage)
    def service(name: str):
        return engine.service(name).info()

    @app.get("/v1/services/{name}/metrics", tags=["services"], dependencies=manage)
    def service_metrics(name: str, window_s: float = Query(60, ge=1, le=3600)):
        """Live figures: requests/s, p50/p95 latency (ms) and errors over the last ``window_s``
        seconds of this server's predictions, and the queue depth now (per version in ``queued``)."""
        return engine.live(name, window_s)

    @app.get("/v1/services/{name}/events", tags=["services"], dependencies=manage)
    async def service_events(name: str, limit: int = Query(100, ge=1, le=1000)):
        return {"service": name, "events": await asyncio.to_thread(engine.events, name, limit)}

    @app.post("/v1/services", tags=["services"], dependencies=manage)
    async def deploy(body: DeployRequest):
        """Deploy a version: loaded and warmed before it takes traffic; the old one finishes its queue."""
        settings = body.settings.overrides() if body.settings else None
        await asyncio.to_thread(engine.check_room, body.model, body.service)
        done = await engine.deploy(body.model, service=body.service, weight=body.weight, settings=settings)
        name = done.get("name") or body.service or body.model.split(":")[0].split("@")[0]
        await asyncio.to_thread(adopt_service, name, body.model)
        return done

    @app.put("/v1/services/{name}/traffic", tags=["services"])
    async def traffic(
        name: str, weights: dict[str, Weight], request: Request, caller: Caller = _allow(guard, "manage")
    ):
        """Weights per deployed version, whole numbers adding up to 100, e.g.
        ``{"reviews:3": 90, "reviews:4": 10}``. A version given traffic is deployed into the
        service: each is decided as ``POST /v1/services`` of it would be (``model:Deploy`` at its
        stage, so a Deny on deploying it holds here too)."""
        for ref, weight in weights.items():
            if weight > 0:
                body = {"model": ref, "service": name}
                await asyncio.to_thread(_twin, guard, request, caller, "POST", "/v1/services", body)
        return await engine.set_traffic(name, weights)

    @app.delete("/v1/services/{name}", tags=["services"], dependencies=manage)
    async def undeploy(name: str):
        return await engine.undeploy(name)

    add_jobs(app, lambda scope: _allow(guard, scope), partial(_may_see, guard), partial(_twin, guard))
    add_fine_tuning_routes(
        app, lambda scope: _allow(guard, scope), partial(_may_see, guard), partial(_twin, guard)
    )
    add_batch_routes(app, lambda scope: _allow(guard, scope), partial(_may_see, guard), partial(_twin, guard))
    add_webhook_routes(app, lambda scope: _allow(guard, scope))
    app.state.vector_stores = add_vector_store_routes(
        app, lambda scope: _allow(guard, scope), partial(_may_see, guard), partial(_twin, guard), meter
    )


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}, "example": {"inputs": ["great value"]}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "inputs": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
        },
    }
}


async def _payload(request: Request, limit: int) -> dict:
    """The request as ``{"inputs": ...}``: parsed JSON, or the uploaded files' bytes. The body is
    read as a stream and refused (413) as soon as it passes ``limit``, chunked or not."""
    body = await read_within(request, limit)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        files = [v for _, v in form.multi_items() if hasattr(v, "read")]
        if not files:
            raise ConfigError(
                "The multipart request has no files.", hint="Upload files in the 'inputs' field."
            )
        return {"inputs": [await f.read() for f in files]}
    return parse_json(body)


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, grace_s: float = 30.0) -> None:
    """Serve ``app`` with uvicorn. On SIGTERM/SIGINT readiness turns 503 at once, in-flight
    requests finish, and the process exits within about ``grace_s`` seconds: one budget, from the
    signal on. Requests get all of it but :func:`~aimass.serve.engine.close_share`; one still
    running then is answered 503 (see :class:`~aimass.serve.predict.Predictor`), and the versions
    close in what is left."""
    import uvicorn

    listener = _log_off_the_event_loop()
    engine: Engine = app.state.engine

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.aimass["draining"] = True
            engine.stop_by(time.monotonic() + grace_s)
            super().handle_exit(sig, frame)

    requests_s = grace_s - close_share(grace_s)
    config = uvicorn.Config(
        app, host=host, port=port, access_log=False, timeout_graceful_shutdown=requests_s, log_level="info"
    )
    try:
        Server(config).run()
    finally:
        listener.stop()


def _log_off_the_event_loop():
    """Log lines go through a queue to a thread that writes them: a slow stderr never stalls
    requests. Returns the started listener."""
    lines: queue.SimpleQueue = queue.SimpleQueue()
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter("%(message)s"))
    listener = logging.handlers.QueueListener(lines, stream)
    root = logging.getLogger()
    root.handlers = [logging.handlers.QueueHandler(lines)]
    root.setLevel(logging.INFO)
    listener.start()
    return listener
