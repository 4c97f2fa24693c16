"""OpenAI's Batch API: a file of requests answered offline by a durable job, so a script written
for OpenAI's batches runs here unchanged::

    file = client.files.create(file=open("requests.jsonl", "rb"), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    ...  # client.batches.retrieve(batch.id).status == "completed"
    client.files.content(batch.output_file_id)  # one answer per line, matched by custom_id

A batch is a ``batch`` job (:mod:`aimass.jobs`): a runner's worker loads the models its lines name
into an engine of its own (nothing it does shows in the server's services or ``serving.json``) and
answers every line with the very code that answers ``POST`` on that route, by continuous batching,
several at a time. Each answer is appended to the job's ``output.jsonl`` (status 200) or
``errors.jsonl`` (any other, with the route's error body) as it comes, so a worker that dies, a
pause or a restart loses only the lines in flight: the next attempt answers the rest. Usage is
metered to the key that created the batch.

Statuses are OpenAI's: a queued batch is ``validating`` (its file was checked on upload),
``in_progress`` while it runs (``cancelling`` once asked to stop), then ``completed``, ``failed``
or ``cancelled`` (a cancelled batch keeps the answers it made). Access: creating a batch is
``job:Submit`` in its project, plus ``dataset:Read`` on its input file and, for each model its
lines name, the decision of the route itself (``model:Predict``); reading and cancelling it are
``job:Read`` and ``job:Cancel``; its output and error files are the job's (``job:Read``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from aimass import jobs, paths
from aimass.errors import AimassError, NotFoundError, TooManyRequests
from aimass.jobs import state
from aimass.jobs.logs import run_dir
from aimass.serve import batch_files, openai_embeddings
from aimass.serve.auth import Caller
from aimass.serve.batch_files import ERRORS, OUTPUT
from aimass.serve.engine import Engine
from aimass.serve.jobs_routes import cursor_page, may_run, need_project, need_room, own_job, policy_decided
from aimass.serve.llm_slots import configured_limit
from aimass.serve.metering import Meter
from aimass.serve.middleware import error_body
from aimass.serve.openai_errors import OpenAIError, bad_param, json_body, list_page, parse_body
from aimass.serve.openai_routes import Generation, epoch_seconds
from aimass.store import registry

PATH = "/v1/batches"
WINDOW = "24h"
CONCURRENCY = 16  # requests of a batch in flight at once (the generation slots bound the work)
FLUSH_S = 5.0  # how often a running batch writes the usage it metered
RETRIES = 30  # a request answered 429 is asked again this often, a second or so apart
STATUS = {"queued": "validating", "running": "in_progress", "paused": "in_progress"}
STATUS.update(succeeded="completed", failed="failed", cancelled="cancelled")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: str = Field(max_length=64, description="a file uploaded with purpose 'batch'")
    endpoint: str = Field(
        max_length=64, description="/v1/chat/completions, /v1/completions or /v1/embeddings"
    )
    completion_window: str = Field(WINDOW, max_length=16, description="'24h' (the only window)")
    metadata: dict[str, str] | None = Field(None, description="up to 16 pairs of your own labels")
    project: str | None = Field(None, max_length=64, description="aimass: the project the batch belongs to")


def add_batch_routes(app: FastAPI, allow, visible, twin) -> None:
    """``POST/GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``;
    ``allow``, ``visible`` and ``twin`` as :func:`aimass.serve.jobs_routes.add_jobs`'s."""
    manage = [allow("manage")]

    @app.post(PATH, tags=["openai"])
    async def create(request: Request, caller=allow("manage")):
        """A batch of the input file's requests, answered by a ``batch`` job."""
        body = parse_body(BatchRequest, await json_body(request))
        may_run(caller, jobs.get_kind("batch"), policy_decided(request))
        await asyncio.to_thread(need_project, body.project)
        await asyncio.to_thread(need_room, body.project)
        params = await asyncio.to_thread(_params, body, caller, partial(twin, request, caller))
        submit = partial(jobs.submit, metadata=body.metadata)
        job = await asyncio.to_thread(submit, "batch", params)
        await asyncio.to_thread(own_job, job, body.project)
        return await asyncio.to_thread(describe, job)

    @app.get(PATH, tags=["openai"])
    async def list_batches(
        limit: int = Query(20, ge=1, le=100),
        after: str | None = Query(None, max_length=64),
        caller=allow("manage"),
    ):
        return await asyncio.to_thread(_listed, limit, after, visible(caller))

    @app.get(PATH + "/{batch_id}", tags=["openai"], dependencies=manage)
    async def show(batch_id: str):
        return await asyncio.to_thread(lambda: describe(batch_job(batch_id)))

    @app.post(PATH + "/{batch_id}/cancel", tags=["openai"], dependencies=manage)
    async def cancel(batch_id: str):
        """Stop the batch; the answers it made stay in its output and error files."""
        await asyncio.to_thread(batch_job, batch_id)
        return await asyncio.to_thread(lambda: describe(jobs.cancel(batch_id)))


def submit_file(path: str | Path, endpoint: str | None = None, metadata: dict | None = None) -> dict:
    """Keep a local JSONL of requests as a batch input file and queue its batch (``aimass batch``:
    no key, the local user may do anything); ``endpoint`` defaults to the one its lines name."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise NotFoundError(f"No file {source}.", hint="Give a JSONL of requests, one a line.")
    copy = paths.subdir("uploads") / f".batch-{uuid.uuid4().hex[:12]}.jsonl"
    shutil.copyfile(source, copy)
    try:
        stored = batch_files.store(copy, source.name, None)
    finally:
        copy.unlink(missing_ok=True)
    found = batch_files.info(stored["id"])
    request = BatchRequest(
        input_file_id=stored["id"], endpoint=endpoint or found["endpoints"][0], metadata=metadata
    )
    params = _params(request, Caller("cli", ("predict",)), lambda *args: None)
    return jobs.submit("batch", params, metadata=metadata)


def answers(batch_id: str) -> list[dict]:
    """Every answer of an ended batch (status 200 first, then the others), as output lines."""
    folder = run_dir(batch_job(batch_id)["id"])
    lines = []
    for name in ("output.jsonl", "errors.jsonl"):
        path = folder / name
        if path.exists():
            lines += [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return lines


def _params(body: BatchRequest, caller: Caller, decide) -> dict:
    """The job's params; 400 naming the field, 404 for a file the caller may not read, the
    route's own refusal for a model it may not call."""
    if body.endpoint not in batch_files.ENDPOINTS:
        raise bad_param("endpoint", f"endpoint must be one of {', '.join(batch_files.ENDPOINTS)}.")
    if body.completion_window != WINDOW:
        raise bad_param("completion_window", f"The only completion window is {WINDOW!r}.")
    not_batch = bad_param(
        "input_file_id", f"{body.input_file_id!r} is not a file uploaded with purpose 'batch'."
    )
    if not batch_files.is_input(body.input_file_id):
        raise not_batch
    decide("GET", f"/v1/files/{body.input_file_id}")
    if not batch_files.is_batch_input(body.input_file_id):  # a document (after access: no probing)
        raise not_batch
    found = batch_files.info(body.input_file_id)
    others = [url for url in found["endpoints"] if url != body.endpoint]
    if others:
        raise bad_param("endpoint", f"The file's requests go to {others[0]}, not {body.endpoint}.")
    for model in found["models"]:
        decide("POST", body.endpoint, {"model": model})
    return {
        "input": body.input_file_id,
        "endpoint": body.endpoint,
        "completion_window": WINDOW,
        "requests": found["requests"],
        "caller": caller.key_id,
    }


def batch_job(batch_id: str) -> dict:
    """The job ``batch_id`` if it is a batch, else a 404."""
    job = state.get(batch_id).to_dict()
    if job["kind"] != "batch":
        raise NotFoundError(f"No batch '{batch_id}'.", hint=f"GET {PATH} lists them.")
    return job


def describe(job: dict) -> dict:
    """The job as OpenAI's batch object."""
    params, status = job["params"], job["status"]
    folder = run_dir(job["id"])
    completed, failed = _count(folder / "output.jsonl"), _count(folder / "errors.jsonl")
    created, error = epoch_seconds(job.get("created")), job.get("error")
    ended = epoch_seconds(job.get("finished")) if job.get("finished") else None
    return {
        "id": job["id"],
        "object": "batch",
        "endpoint": params["endpoint"],
        "errors": {"object": "list", "data": [_error(error)]} if status == "failed" and error else None,
        "input_file_id": params["input"],
        "completion_window": WINDOW,
        "status": "cancelling" if status == "running" and job.get("cancel_requested") else STATUS[status],
        "output_file_id": OUTPUT + job["id"] if completed and status in state.ENDED else None,
        "error_file_id": ERRORS + job["id"] if failed and status in state.ENDED else None,
        "created_at": created,
        "in_progress_at": epoch_seconds(job["started"]) if job.get("started") else None,
        "expires_at": created + 24 * 3600,
        "finalizing_at": ended if status == "succeeded" else None,
        "completed_at": ended if status == "succeeded" else None,
        "failed_at": ended if status == "failed" else None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": ended if status == "cancelled" else None,
        "request_counts": {"total": params["requests"], "completed": completed, "failed": failed},
        "metadata": job.get("metadata"),
    }


def _error(error: dict) -> dict:
    return {
        "code": error.get("cause") or "failed",
        "message": error.get("message", ""),
        "param": None,
        "line": None,
    }


def _listed(limit: int, after: str | None, visible) -> dict:
    found = cursor_page(
        [j.to_dict() for j in state.list_jobs(None, 10_000) if j.kind == "batch"], after, visible
    )
    return {**list_page(found, limit), "data": [describe(j) for j in found[:limit]]}


# ------------------------------------------------------------------ files
def output_file(file_id: str) -> dict:
    """A batch's output or error file as OpenAI's file object (404 until the batch has ended)."""
    path = _output_path(file_id)
    return {
        "id": file_id,
        "object": "file",
        "bytes": path.stat().st_size,
        "created_at": int(path.stat().st_mtime),
        "filename": path.name,
        "purpose": "batch_output",
        "status": "processed",
    }


def output_content(file_id: str) -> bytes:
    return _output_path(file_id).read_bytes()


def _output_path(file_id: str) -> Path:
    job = batch_job(batch_files.output_job(file_id) or "")
    name = "output.jsonl" if file_id.startswith(OUTPUT) else "errors.jsonl"
    path = run_dir(job["id"]) / name
    if job["status"] not in state.ENDED or not _count(path):
        raise NotFoundError(
            f"No file '{file_id}' (yet).", hint=f"GET {PATH}/{job['id']} names its files once it has ended."
        )
    return path


def in_use(file_id: str) -> list[str]:
    """The batches not ended yet that read the input file ``file_id``."""
    return [
        job.id
        for status in ("queued", "running", "paused")
        for job in state.list_jobs(status, 10_000)
        if job.kind == "batch" and job.params.get("input") == file_id
    ]


# -------------------------------------------------------- the job itself
def run(params: dict, ctx) -> dict:
    """The ``batch`` job: answer every request of the input file not answered yet."""
    found = batch_files.info(params["input"])  # its count and models, from the upload's check
    total = found["requests"]
    folder = Path(ctx.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    output, errors = folder / "output.jsonl", folder / "errors.jsonl"
    done = _answered(output) | _answered(errors)  # a resumed attempt answers only the rest
    # read as answered: a request's parsed body costs ~7x its line (a 200 MiB file, GBs at once)
    todo = (r for r in batch_files.requests_of(params["input"]) if r["custom_id"] not in done)
    ctx.progress(len(done) / total, f"{len(done)}/{total} requests answered")
    started = (total - len(done), found["models"])
    seconds = asyncio.run(_answer_all(todo, params, (output, errors), ctx, (total, *started)))
    counts = {"total": total, "completed": _count(output), "failed": _count(errors)}
    return {"batch": ctx.job_id, "request_counts": counts, "seconds": seconds}


async def _answer_all(todo, params: dict, files: tuple[Path, Path], ctx, sizes: tuple) -> dict:
    """Answer the requests ``todo`` yields, at most :data:`CONCURRENCY` at once, appending to the
    (output, errors) files; ``sizes``: (requests in all, left to answer, the models they name).
    The seconds spent loading the models and answering (this attempt's)."""
    total, left, models = sizes
    began = time.perf_counter()
    engine = Engine(offline=True)
    for model in models:
        await _serve(engine, model)
    loaded = time.perf_counter()
    meter = Meter()
    generation = Generation(engine, meter)
    answer = {
        "/v1/chat/completions": generation.chat,
        "/v1/completions": generation.complete,
        "/v1/embeddings": partial(openai_embeddings.answer, engine, meter),
    }[params["endpoint"]]
    caller = Caller(params.get("caller") or "batch", ("predict",))
    finished, flushed = [total - left], [time.monotonic()]
    step = max(1, total // 100)
    with open(files[0], "a", encoding="utf-8") as out, open(files[1], "a", encoding="utf-8") as err:

        async def worker() -> None:
            for request in todo:  # the workers share one reader: each takes the next line
                line, ok = await _line(answer, caller, request)
                handle = out if ok else err
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                handle.flush()
                finished[0] += 1
                if finished[0] % step == 0 or finished[0] == total:  # about 100 lines in the job's log
                    ctx.progress(finished[0] / total, f"{finished[0]}/{total} requests answered")
                if time.monotonic() - flushed[0] > FLUSH_S:  # usage shows as it goes, and a killed
                    flushed[0] = time.monotonic()  # worker loses at most these seconds' of it
                    await asyncio.to_thread(meter.flush)

        try:
            await asyncio.gather(*(worker() for _ in range(min(CONCURRENCY, configured_limit()))))
        finally:
            await asyncio.to_thread(meter.flush)
            await engine.shutdown(5.0)
    return {"load": round(loaded - began, 2), "answer": round(time.perf_counter() - loaded, 2)}


async def _serve(engine: Engine, model: str) -> None:
    """Load the registered version ``model`` names into the batch's engine (a second version of
    one service beside the first, with no traffic: it answers by its ``NAME:VERSION``). A name
    that is no registered version (a base model, a typo) is answered as the server would."""
    try:
        record = await asyncio.to_thread(registry.get_version, model)
    except AimassError:
        return
    service = registry.split_checkpoint(model)[0].split(":")[0].split("@")[0]
    weight = 0 if service in engine.services else None
    try:
        await engine.deploy(record.ref, service=service, weight=weight)
    except AimassError as exc:  # its lines answer the route's 503/404, in the error file
        print(f"[batch] {model} did not load: {exc}", flush=True)


async def _line(answer, caller: Caller, request: dict) -> tuple[dict, bool]:
    """One request's output line, and whether it succeeded (status 200). A 429 (every generation
    slot busy) is asked again, as a client would, up to :data:`RETRIES` times."""
    request_id = f"batch_req_{uuid.uuid4().hex[:24]}"
    payload = json.dumps(request["body"]).encode()
    try:
        for attempt in range(RETRIES + 1):
            try:
                body, status = await answer(caller, payload), 200
                break
            except TooManyRequests as busy:
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(busy.retry_after or 1.0)
    except OpenAIError as exc:
        status, body = exc.http_status, error_body(exc.code, exc.message, exc.hint, request_id)
        body["error"].update(type=exc.type, param=exc.param, code=exc.openai_code)
    except AimassError as exc:
        status = exc.http_status if exc.http_status < 500 or exc.http_status in (503, 504) else 500
        body = error_body(exc.code, exc.message, exc.hint, request_id, status)
    except Exception as exc:  # noqa: BLE001 — one line's failure is that line's answer
        status, body = 500, error_body("internal_error", f"{type(exc).__name__}: {exc}", None, request_id)
    response = {"status_code": status, "request_id": request_id, "body": body}
    return {
        "id": request_id,
        "custom_id": request["custom_id"],
        "response": response,
        "error": None,
    }, status == 200


def _answered(path: Path) -> set[str]:
    """The custom_ids a file of answers holds; a line cut short by a killed worker is dropped."""
    if not path.exists():
        return set()
    good, ids = 0, set()
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                ids.add(json.loads(raw)["custom_id"])
            except (ValueError, KeyError, TypeError):
                break
            if not raw.endswith(b"\n"):
                ids.discard(json.loads(raw)["custom_id"])
                break
            good += len(raw)
    if good != path.stat().st_size:
        os.truncate(path, good)
    return ids


def _count(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for raw in handle if raw.endswith(b"\n"))
    except FileNotFoundError:
        return 0
