"""``aimass serve --engine ray``: the same task handlers on Ray Serve, for users with a cluster.

Each model becomes a Ray Serve application at ``/v1/models/{name}/predict`` (the same URL and
JSON as the built-in engine). Requests are grouped by ``@serve.batch``; the handler's
``decode_request`` / ``predict`` / ``encode_response`` are the ones the built-in engine calls.
Ray ships the deployment class to its workers itself; aimass only hands it a model reference,
and each replica loads the weights (safetensors or ONNX) from the registry.

A request body is capped at the task's ``max_body_bytes``, as on the built-in engine: a
Content-Length over it, or a stream that passes it, is answered 413 in the one error shape,
and the rest of the body is never read.
"""

from __future__ import annotations

import json
import logging
import time

from aimass import paths
from aimass.errors import TooLargeError
from aimass.serve.app import default_refs
from aimass.serve.batching import BatchSettings
from aimass.serve.middleware import error_response
from aimass.serve.predict import read_within, too_large
from aimass.store import registry

log = logging.getLogger("aimass.serve")


def model_app(ref: str, settings: BatchSettings, backend: str = "torch"):
    """A bound Ray Serve application serving ``ref``."""
    from pydantic import ValidationError
    from ray import serve  # optional: aimass[ray]
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=settings.max_queue)
    class AimassModel:
        def __init__(self, ref: str, backend: str):  # runs in a Ray worker: it imports what it uses
            from aimass.store import registry
            from aimass.tasks import get_task

            record = registry.get_version(ref)
            self.ref, self.spec = record.ref, get_task(record.task)
            self.handler = self.spec.handler(record.path)
            self.handler.setup("cpu", backend)

        @serve.batch(max_batch_size=settings.max_batch_size, batch_wait_timeout_s=settings.max_wait_ms / 1000)
        async def predict_batch(self, item_lists: list[list]) -> list:
            rows = self.handler.predict([item for items in item_lists for item in items])
            out, start = [], 0
            for items in item_lists:
                out.append(rows[start : start + len(items)])
                start += len(items)
            return out

        async def __call__(self, request: Request):
            try:
                body = await read_body(request, self.spec.max_body_bytes)
            except TooLargeError as exc:
                return error_response(exc, request.headers.get("x-request-id", ""))
            try:
                parsed = self.spec.request.model_validate(json.loads(body))
            except (ValidationError, ValueError) as exc:
                hint = f"Send JSON like {self.spec.sample_request}"
                error = {"code": "config_error", "message": str(exc).splitlines()[0], "hint": hint}
                return JSONResponse({"error": error}, status_code=422)
            rows = await self.predict_batch(self.handler.decode_request(parsed))
            return {**self.handler.encode_response(rows), "model": self.ref}

    return AimassModel.bind(ref, backend)


async def read_body(request, limit: int) -> bytes:
    """A Starlette request's body, refused (413) when its Content-Length says it is over ``limit``
    bytes, or as soon as the stream passes ``limit`` (chunked, or a length that lied)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    return await read_within(request, limit)


def run(refs: list[str], host: str, port: int, settings: BatchSettings, *, block: bool = True) -> dict:
    """Start (or join) Ray, deploy each model, and serve until interrupted (unless ``block`` is off)."""
    import ray  # optional: aimass[ray]
    from ray import serve

    if not ray.is_initialized():  # a local instance; RAY_ADDRESS joins an existing cluster
        env = {"AIMASS_HOME": str(paths.home()), "TOKENIZERS_PARALLELISM": "false"}
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    serve.start(http_options={"host": host, "port": port})
    backend = "torch" if settings.backend == "auto" else settings.backend
    routes = {}
    for ref in refs or default_refs():
        name = registry.get_version(ref).name
        route = f"/v1/models/{name}/predict"
        serve.run(model_app(ref, settings, backend), name=name, route_prefix=route)
        routes[name] = f"http://{host}:{port}{route}"
        log.info("ray serve: %s at %s", ref, routes[name])
    while block:
        time.sleep(3600)
    return routes
