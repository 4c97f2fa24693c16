"""The REST server: one FastAPI app serving every registered model through its task's handler.

The app never branches on the task: it looks the task up and calls the handler's
``decode_request`` / ``predict`` / ``encode_response``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

import aimass
from aimass.errors import AimassError, ConfigError, NotFoundError, TooLargeError
from aimass.store import registry
from aimass.tasks import get_task

log = logging.getLogger("aimass.serve")
MAX_BODY_BYTES = 2 * 1024 * 1024  # per task: a spec's ``max_body_bytes`` (images need more)
HARD_BODY_BYTES = 64 * 1024 * 1024  # refused before routing, whatever the model


@dataclass
class Served:
    """A loaded model version and the lock that serialises its forward passes."""

    record: object
    spec: type
    handler: object
    lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> dict:
        r = self.record
        return {
            "name": r.name,
            "version": r.version,
            "ref": r.ref,
            "task": r.task,
            "backbone": r.backbone,
            "metrics": {k: r.metrics.get(k) for k in ("accuracy", "macro_f1")},
            "labels": getattr(self.handler.model, "classes_", None),
        }


def load_models(refs: list[str] | None = None) -> dict[str, Served]:
    """Load ``refs`` (default: the latest version of every registered model)."""
    records = [registry.get_version(r) for r in refs] if refs else registry.latest_versions()
    served = {}
    for record in records:
        spec = get_task(record.task)
        handler = spec.handler(record.path)
        handler.setup("cpu")
        served[record.name] = Served(record, spec, handler)
        log.info("loaded %s from %s", record.ref, record.path)
    return served


def _error(
    status: int, code: str, message: str, hint: str | None = None, request_id: str = ""
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "hint": hint, "request_id": request_id}}
    return JSONResponse(body, status_code=status, headers={"X-Request-ID": request_id})


def create_app(refs: list[str] | None = None) -> FastAPI:
    """Build the app; models load at start-up and ``/readyz`` turns 200 when they have."""
    state = {"models": {}, "ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["models"] = load_models(refs)
        state["ready"] = True
        yield
        state["ready"] = False

    app = FastAPI(title="aimass", version=aimass.__version__, lifespan=lifespan)
    app.state.aimass = state
    _add_middleware(app)
    _add_routes(app, state)
    return app


def _add_middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next):
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.request_id = request_id
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > HARD_BODY_BYTES:
            return _error(
                413,
                "body_too_large",
                f"The request body is {length} bytes; the limit is {HARD_BODY_BYTES}.",
                "Send fewer or smaller inputs per request.",
                request_id,
            )
        try:
            response = await call_next(request)
        except Exception:  # never a traceback to the client
            log.exception("request %s failed", request_id)
            return _error(500, "internal_error", "Internal server error.", None, request_id)
        response.headers["X-Request-ID"] = request_id
        return response

    @app.exception_handler(AimassError)
    async def aimass_error(request: Request, exc: AimassError):
        status = exc.http_status if exc.http_status < 500 else 500
        return _error(status, exc.code, exc.message, exc.hint, request.state.request_id)


def _add_routes(app: FastAPI, state: dict) -> None:
    @app.get("/livez", tags=["health"])
    def livez():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz():
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready", "models": sorted(state["models"])}

    @app.get("/v1/models", tags=["models"])
    def models():
        return {"models": [s.info() for s in state["models"].values()]}

    @app.post("/v1/models/{name}/predict", tags=["models"], openapi_extra=PREDICT_BODY)
    async def predict(name: str, request: Request):
        """JSON ``{"inputs": [...]}``, or multipart/form-data with one or more ``inputs`` files."""
        served = _find(state, name)
        payload = await _payload(request, getattr(served.spec, "max_body_bytes", MAX_BODY_BYTES))
        try:
            parsed = served.spec.request.model_validate(payload)
        except ValidationError as exc:
            raise ConfigError(_describe(exc), hint=f"Send JSON like {served.spec.sample_request}") from None
        body = await run_in_threadpool(_run, served, parsed)
        body["model"] = served.record.ref
        return body


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


def _run(served: Served, parsed) -> dict:
    inputs = served.handler.decode_request(parsed)
    with served.lock:
        output = served.handler.predict(inputs)
    return served.handler.encode_response(output)


async def _payload(request: Request, limit: int) -> dict:
    """The request as ``{"inputs": ...}``: parsed JSON, or the uploaded files' bytes."""
    body = await request.body()
    if len(body) > limit:
        raise TooLargeError(
            f"The request body is {len(body)} bytes; the limit for this model is {limit}.",
            hint="Send fewer or smaller inputs per request.",
        )
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        files = [v for _, v in form.multi_items() if hasattr(v, "read")]
        if not files:
            raise ConfigError(
                "The multipart request has no files.", hint="Upload files in the 'inputs' field."
            )
        return {"inputs": [await f.read() for f in files]}
    try:
        payload = json.loads(body)
    except ValueError:
        raise ConfigError(
            "The body is not valid JSON.",
            hint='Send {"inputs": [...]} as JSON, or upload files as multipart.',
        ) from None
    if not isinstance(payload, dict):
        raise ConfigError("The JSON body must be an object.", hint='Send {"inputs": [...]}.')
    return payload


def _find(state: dict, name: str):
    model_name = name.partition(":")[0]
    served = state["models"].get(model_name)
    if served is None or (":" in name and served.record.ref != name):
        known = ", ".join(sorted(s.record.ref for s in state["models"].values())) or "none"
        raise NotFoundError(
            f"Model '{name}' is not served here. Served: {known}.",
            hint="GET /v1/models lists them; train and register a model, then restart serve.",
        )
    return served


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
