"""The predict path, shared by the documented FastAPI route and a plain-ASGI lane.

JSON requests to ``POST /v1/models/{name}/predict`` take the lane: it checks the key, reads
the body and calls :class:`Predictor` without Starlette's router, request object and
dependency solving, which are a large share of what a small request costs the server.
Multipart uploads go through the FastAPI route, which calls the same :class:`Predictor`.
"""

from __future__ import annotations

import asyncio
import json
import time

from pydantic import ValidationError

from aimass.errors import AimassError, ConfigError, TooLargeError, Unavailable
from aimass.serve.auth import Caller, Guard
from aimass.serve.batching import Retired
from aimass.serve.engine import Engine
from aimass.serve.metering import Meter
from aimass.serve.middleware import error_response


class Predictor:
    """``await predictor(name, payload, caller)`` -> the JSON answer's bytes, through the task's
    handler (decode_request / predict / encode_response) and the model's batcher."""

    def __init__(self, engine: Engine, meter: Meter):
        self.engine, self.meter = engine, meter

    def limit(self, name: str, *, upload: bool = False) -> int:
        """The largest body the model behind ``name`` accepts (404 for an unknown name); ``upload``:
        a multipart body of files (documents, photos), which a task may allow to be larger."""
        spec = self.engine.route(name).spec
        return (spec.max_upload_bytes or spec.max_body_bytes) if upload else spec.max_body_bytes

    async def __call__(self, name: str, payload: dict, caller: Caller) -> bytes:
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        # a key over its quota is not a model's error; one held to a quota holds its inputs meanwhile
        hold = await self.meter.admit(caller.key_id, len(inputs) if isinstance(inputs, list) else 1)
        began = time.perf_counter()
        try:
            return await self._answer(name, payload, caller, began)
        except asyncio.CancelledError:
            if self.engine.deadline is None:  # not a shutdown's: whoever cancelled is told
                raise
            raise _cut_off() from None  # the server's grace ran out: a JSON 503, not a cut connection
        except AimassError:
            service = name.partition(":")[0]
            if service in self.engine.services:  # not every unknown name a client sends
                self.engine.metrics.recent.observe(service, time.perf_counter() - began, error=True)
            raise
        finally:
            hold.release()

    def _charge(self, caller: Caller, deployment):
        """What meters the forward pass that ran a request's inputs, called by the batcher when the
        pass ends: once, whatever the client saw (a 504 while the pass ran on costs the model as
        much as an answer does, so it is metered too)."""
        key_id, model = caller.key_id, deployment.record.name

        def charge(items: int, seconds: float) -> None:
            self.meter.add(key_id, model, items, seconds * 1000)

        return charge

    async def _answer(self, name: str, payload: dict, caller: Caller, began: float) -> bytes:
        for attempt in range(3):  # a swap can retire the routed version before it queues the request
            deployment = self.engine.route(name)
            spec, handler = deployment.spec, deployment.handler
            try:
                if _uploads(payload):  # documents are parsed off the event loop: a PDF can take a while
                    parsed = await asyncio.to_thread(spec.request.model_validate, payload)
                else:
                    parsed = spec.request.model_validate(payload)
            except ValidationError as exc:
                example = json.dumps(spec.sample_request, ensure_ascii=False)  # JSON, not a Python repr
                raise ConfigError(_describe(exc), hint=f"Send JSON like {example}") from None
            if spec.heavy_decode:  # e.g. images: the model's decode threads, 504 late
                items = await deployment.batcher.decode(handler.decode_request, parsed)
            else:
                items = handler.decode_request(parsed)
            try:
                rows = await deployment.batcher.submit(items, charge=self._charge(caller, deployment))
                break
            except Retired:
                if attempt == 2:
                    raise
        body = handler.encode_response(rows)
        body["model"] = deployment.ref
        seconds = time.perf_counter() - began
        self.engine.metrics.latency.labels("predict", name.partition(":")[0]).observe(seconds)
        self.engine.metrics.recent.observe(name.partition(":")[0], seconds)
        return json.dumps(body, ensure_ascii=False).encode()


def _cut_off() -> Unavailable:
    return Unavailable(
        "The server shut down before this request was answered (its --grace ran out).",
        hint="Send it again: another server, or this one once restarted, answers it (nothing was returned).",
    )


def _uploads(payload: dict) -> bool:
    """True for a multipart request's payload (its inputs are the files' bytes)."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    return isinstance(inputs, list) and any(isinstance(item, bytes) for item in inputs)


async def read_within(request, limit: int) -> bytes:
    """The request's body, read as a stream and refused (413) as soon as it passes ``limit``,
    chunked or not; kept where ``request.form()`` parses it next."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    body = request._body = b"".join(chunks)
    return body


def too_large(size: int, limit: int) -> TooLargeError:
    return TooLargeError(
        f"The request body is over {limit} bytes (at least {size}), the limit for this model.",
        hint="Send fewer or smaller inputs per request.",
    )


def parse_json(body: bytes) -> dict:
    """The JSON body as a dict, or a 422 that says what to send."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise ConfigError(
            "The body is not valid JSON.",
            hint='Send {"inputs": [...]} as JSON, or upload files as multipart.',
        ) from None
    if not isinstance(payload, dict):
        raise ConfigError("The JSON body must be an object.", hint='Send {"inputs": [...]}.')
    return payload


class PredictLane:
    """ASGI middleware: answers non-multipart ``POST /v1/models/{name}/predict`` itself."""

    def __init__(self, app, predictor: Predictor, guard: Guard):
        self.app, self.predictor, self.guard = app, predictor, guard

    async def __call__(self, scope, receive, send):
        name = _predict_target(scope)
        headers = dict(scope["headers"]) if name else {}
        if not name or headers.get(b"content-type", b"").startswith(b"multipart/"):
            return await self.app(scope, receive, send)
        try:
            authorization = headers.get(b"authorization")
            header = authorization.decode("latin-1") if authorization else None
            caller = self.guard.check(header, "predict", scope)
            scope.setdefault("state", {})["key_id"] = caller.key_id
            limit = self.predictor.limit(name)
            answer = await self.predictor(name, parse_json(await _read(receive, limit)), caller)
        except AimassError as exc:
            request_id = scope.get("state", {}).get("request_id", "")
            return await error_response(exc, request_id)(scope, receive, send)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def _predict_target(scope) -> str | None:
    """The model name of a ``POST /v1/models/{name}/predict`` request, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path = scope["path"]
    if not (path.startswith("/v1/models/") and path.endswith("/predict")):
        return None
    name = path[len("/v1/models/") : -len("/predict")]
    return name if name and "/" not in name else None


async def _read(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConfigError("The client went away before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
