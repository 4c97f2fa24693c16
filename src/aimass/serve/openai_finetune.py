"""OpenAI's Files and Fine-tuning APIs over aimass's datasets and train jobs, so a script written
for OpenAI fine-tunes here unchanged: ``client.files.create(file=..., purpose="fine-tune")`` then
``client.fine_tuning.jobs.create(model="smollm2-135m", training_file=file.id)``, poll
``client.fine_tuning.jobs.retrieve(job.id)`` until ``succeeded`` and chat with its
``fine_tuned_model`` (a registered fine-tune answers by name: :mod:`aimass.serve.llm_adapters`).

- A *file* is a chat dataset: the upload is imported at once (checked, split, versioned by digest;
  its bad lines are counted in ``status_details``), and its id is the dataset's id.
- A *fine-tuning job* is a ``train`` job of task ``text-generation`` (LoRA) on that dataset: its id is
  the job's; ``hyperparameters`` map to the estimator's ``epochs``, ``batch_size`` and ``lr`` (1e-3
  times ``learning_rate_multiplier``). ``"auto"`` epochs are 3 for up to 1,000 examples and 1 above
  (three passes beat one on small sets: ``bench/results/generation_epochs.json``). Its events are
  the job's log lines; ``fine_tuned_model`` is the registered version (``ft-SUFFIX:N``).
- A ``validation_file`` makes the job train on *all* of the training file and score the validation
  file (its loss and mean token accuracy at the end of each epoch, and the final evaluation);
  without one, the training file's own held-out splits are used.
- What a fit measured comes back as OpenAI's do: ``metrics`` events (step, training loss and token
  accuracy, validation scores), a ``result_files`` CSV (``step,train_loss,train_accuracy,
  valid_loss,valid_mean_token_accuracy``, read with ``client.files.content``) and checkpoints: the
  registered version with its full-validation scores, and the adapters kept at the ends of the two
  epochs before it, which answer by name (``ft-SUFFIX:N:ckpt-step-S``) as the version does.
- ``pause`` stops a running job right after its next LoRA step (a checkpoint is written there) and
  ``resume`` queues it to go on from it (:func:`aimass.jobs.pause`); ``cancel`` ends it.
- Access is the routes' own (:data:`aimass.serve.access_guard.RULES`): uploading is
  ``dataset:Import``, a job ``job:Submit``; the data a job names must be readable by its submitter;
  a result file is its job's (``job:Read``).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.formparsers import MultiPartException, MultiPartParser

from aimass import api, jobs, paths, workflow
from aimass.access import directory
from aimass.data.storage import deleted_dataset, list_datasets
from aimass.errors import ConfigError, DataError, NotFoundError, TooLargeError
from aimass.jobs import state
from aimass.jobs.logs import METRICS
from aimass.llm.backbone import get_llm_backbone
from aimass.retrieval import files as documents
from aimass.retrieval import stores
from aimass.serve import batch_files, batches
from aimass.serve.data_routes import import_upload
from aimass.serve.jobs_routes import (
    cursor_page,
    job_guard,
    may_run,
    metadata_filter,
    need_project,
    need_room,
    only_granted_paths,
    own_job,
    policy_decided,
)
from aimass.serve.openai_errors import bad_param, json_body, list_page, parse_body
from aimass.serve.openai_routes import epoch_seconds
from aimass.store import registry

FILES_PATH = "/v1/files"
JOBS_PATH = "/v1/fine_tuning/jobs"
BASE_LR = 1e-3  # the TextGenerator's default peak learning rate
SMALL_SET = 1000  # "auto" epochs: 3 passes up to this many examples, 1 above
STATUS = {"queued": "queued", "running": "running", "succeeded": "succeeded", "failed": "failed"}
STATUS["cancelled"] = "cancelled"
RESULTS = "results-"  # a job's result file is RESULTS + its id
PURPOSES = ("fine-tune", "batch", *documents.PURPOSES)
RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def result_job(file_id: str) -> str | None:
    """The job whose result file ``file_id`` is, or None for an uploaded file."""
    return file_id[len(RESULTS) :] if file_id.startswith(RESULTS) else None


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Literal["auto"] | int = Field("auto", description="passes over the data (1-50)")
    batch_size: Literal["auto"] | int = Field("auto", description="examples per step (1-256)")
    learning_rate_multiplier: Literal["auto"] | float = Field("auto", description="times 1e-3 (0-10]")


class FineTuneRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=200, description="the base: smollm2-135m, hf:ORG/NAME or a folder")
    training_file: str = Field(max_length=64, description="a file id from POST /v1/files")
    validation_file: str | None = None
    hyperparameters: Hyperparameters = Hyperparameters()
    method: dict | None = None
    suffix: str | None = Field(None, max_length=40)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    project: str | None = Field(None, max_length=64, description="aimass: the project the job belongs to")
    metadata: dict[str, str] | None = Field(None, description="up to 16 pairs of your own labels")


def add_fine_tuning_routes(app: FastAPI, allow, visible, twin) -> None:
    """The Files and Fine-tuning routes; ``allow``, ``visible`` and ``twin`` as :func:`add_jobs`'s."""
    manage = [allow("manage")]

    @app.post(FILES_PATH, tags=["openai"], dependencies=manage)
    async def create_file(
        request: Request, project: str | None = Query(None, max_length=64, description="aimass: the project")
    ):
        """A JSONL of conversations (``purpose`` ``fine-tune``), imported as a chat dataset, of
        requests (``batch``), checked line by line and kept for ``POST /v1/batches``, or a document
        (``assistants``, ``user_data``: PDF, DOCX, HTML or text) for vector stores."""
        await asyncio.to_thread(need_project, project)
        upload, purpose = await _file_and_purpose(request)
        try:
            if purpose not in PURPOSES:
                raise bad_param("purpose", f"Purpose must be one of {', '.join(PURPOSES)}; got {purpose!r}.")
            from aimass.data.uploads import store_upload

            stored = await asyncio.to_thread(store_upload, upload.file, upload.filename, project)
        finally:
            await upload.close()
        if purpose == "batch":
            return await asyncio.to_thread(_batch_file, stored, project)
        if purpose in documents.PURPOSES:
            return await asyncio.to_thread(_document, stored, project, purpose)
        report = await asyncio.to_thread(import_upload, stored["path"], None, project)
        return await asyncio.to_thread(_file, report["id"], stored["file"])

    @app.get(FILES_PATH, tags=["openai"])
    async def list_files(
        purpose: str | None = Query(None, max_length=40, description="only the files of this purpose"),
        limit: int = Query(10_000, ge=1, le=10_000),
        after: str | None = Query(None, max_length=80, description="the page after this file id"),
        order: Literal["asc", "desc"] = Query("desc", description="by created_at"),
        caller=allow("manage"),
    ):
        """The files the caller may read, newest first, paged as OpenAI's (``has_more``, ``last_id``)."""
        listing = partial(_files, visible(caller), purpose, limit, after, order)
        return await asyncio.to_thread(listing)

    @app.get(FILES_PATH + "/{file_id}", tags=["openai"], dependencies=manage)
    async def show_file(file_id: str):
        """An uploaded file, a fine-tuning job's result file (``results-JOB``) or a batch's output
        or error file."""
        job_id = result_job(file_id)
        if job_id is not None:
            return await asyncio.to_thread(_result_file, job_id)
        if batch_files.is_input(file_id):
            return await asyncio.to_thread(batch_files.describe, file_id)
        if batch_files.output_job(file_id) is not None:
            return await asyncio.to_thread(batches.output_file, file_id)
        return await asyncio.to_thread(_file, file_id)

    @app.delete(FILES_PATH + "/{file_id}", tags=["openai"], dependencies=manage)
    async def delete_file(file_id: str):
        """An uploaded file: its dataset and upload (409 while a job that has not ended reads it).
        As on OpenAI, the fine-tunes trained on it stay (their lineage says it was deleted). A
        result file goes with its job (400)."""
        if result_job(file_id) is not None or batch_files.output_job(file_id) is not None:
            raise bad_param("file_id", "A job's result or output file is its job's; it is not deleted apart.")
        if batch_files.is_input(file_id):
            gone = await asyncio.to_thread(lambda: batch_files.delete(file_id, batches.in_use(file_id)))
            # then a document leaves every store: once it is gone, no store can add it any more
            # (stores.add_file reads it again under the write lock this takes)
            await asyncio.to_thread(stores.forget_file, file_id)
            return gone
        await asyncio.to_thread(_file, file_id)  # an uploaded file (a chat dataset), else 404 / 400
        gone = await asyncio.to_thread(partial(api.delete_dataset, file_id, force=True))
        return {"id": gone["id"], "object": "file", "deleted": True}

    @app.get(FILES_PATH + "/{file_id}/content", tags=["openai"], dependencies=manage)
    async def file_content(file_id: str):
        """An uploaded file's conversations or requests as JSONL, a result file's CSV, a batch's
        answers as JSONL."""
        job_id = result_job(file_id)
        if job_id is not None:
            return Response(await asyncio.to_thread(_results_csv, job_id), media_type="text/csv")
        if batch_files.is_input(file_id):
            body, media = await asyncio.to_thread(batch_files.content, file_id)
            return Response(body, media_type=media)
        if batch_files.output_job(file_id) is not None:
            body = await asyncio.to_thread(batches.output_content, file_id)
            return Response(body, media_type="application/jsonl")
        body = await asyncio.to_thread(_conversations_jsonl, file_id)
        return Response(body, media_type="application/jsonl")

    @app.post(JOBS_PATH, tags=["openai"])
    async def create_job(request: Request, caller=allow("manage")):
        """A LoRA ``train`` job on a file, in OpenAI's fine-tuning job shape."""
        body = parse_body(FineTuneRequest, await json_body(request))
        may_run(caller, jobs.get_kind("train"), policy_decided(request))
        await asyncio.to_thread(need_project, body.project)
        await asyncio.to_thread(need_room, body.project)
        params = await asyncio.to_thread(_train_params, body, visible(caller))
        guard = job_guard(visible(caller), partial(twin, request, caller))
        job = await asyncio.to_thread(
            partial(jobs.submit, metadata=body.metadata, guard=guard), "train", params
        )
        await asyncio.to_thread(own_job, job, body.project)
        return await asyncio.to_thread(_job, job)

    @app.get(JOBS_PATH, tags=["openai"])
    async def list_jobs(
        request: Request,
        limit: int = Query(20, ge=1, le=100),
        after: str | None = Query(None, max_length=64),
        caller=allow("manage"),
    ):
        """Fine-tuning jobs, newest first; ``metadata[KEY]=VALUE``: only those with those labels."""
        labels = metadata_filter(request)
        return await asyncio.to_thread(_jobs, limit, after, visible(caller), labels)

    @app.get(JOBS_PATH + "/{job_id}", tags=["openai"], dependencies=manage)
    async def show_job(job_id: str):
        return await asyncio.to_thread(lambda: _job(_fine_tuning(job_id)))

    @app.get(JOBS_PATH + "/{job_id}/events", tags=["openai"], dependencies=manage)
    async def events(
        job_id: str, limit: int = Query(20, ge=1, le=1000), after: str | None = Query(None, max_length=80)
    ):
        """The job's events, newest first; ``after``: those older than that event (the next page)."""
        return await asyncio.to_thread(_events, job_id, limit, after)

    @app.get(JOBS_PATH + "/{job_id}/checkpoints", tags=["openai"], dependencies=manage)
    async def checkpoints(job_id: str):
        return await asyncio.to_thread(_checkpoints, job_id)

    @app.post(JOBS_PATH + "/{job_id}/cancel", tags=["openai"], dependencies=manage)
    async def cancel(job_id: str):
        await asyncio.to_thread(_fine_tuning, job_id)
        return await asyncio.to_thread(lambda: _job(jobs.cancel(job_id)))

    @app.post(JOBS_PATH + "/{job_id}/pause", tags=["openai"], dependencies=manage)
    async def pause(job_id: str):
        """Stop the job right after its next checkpoint (at once while queued): ``paused``."""
        await asyncio.to_thread(_fine_tuning, job_id)
        return await asyncio.to_thread(lambda: _job(jobs.pause(job_id)))

    @app.post(JOBS_PATH + "/{job_id}/resume", tags=["openai"], dependencies=manage)
    async def resume(job_id: str):
        """Queue a paused job again: it goes on from that checkpoint."""
        await asyncio.to_thread(_fine_tuning, job_id)
        return await asyncio.to_thread(lambda: _job(jobs.resume(job_id)))


async def _file_and_purpose(request: Request):
    """The one file and the ``purpose`` field of ``client.files.create``'s multipart body."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ConfigError("Send the file as multipart/form-data with a 'file' and a 'purpose' field.")
    parser = MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ConfigError(f"The multipart body cannot be read: {exc.message}") from None
    upload = form.get("file")
    if not hasattr(upload, "read"):
        raise bad_param("file", "The request has no file; send a JSONL of conversations as 'file'.")
    return upload, str(form.get("purpose") or "")


# ------------------------------------------------------------------ files
def _batch_file(stored: dict, project: str | None) -> dict:
    """An upload with purpose ``batch``: checked and kept as a batch input file; the upload's
    folder goes either way (a bad line keeps nothing)."""
    folder = paths.home() / "uploads" / stored["upload"]
    try:
        if stored["archive"]:
            raise bad_param("file", "A batch file is one JSONL of requests, not an archive.", "invalid_file")
        return batch_files.store(Path(stored["path"]), stored["file"], project)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _document(stored: dict, project: str | None, purpose: str) -> dict:
    """An upload with a document's purpose: its text read and kept for vector stores (400 naming
    the file when it has none); the upload's folder goes either way."""
    folder = paths.home() / "uploads" / stored["upload"]
    try:
        if stored["archive"]:
            raise bad_param("file", "Send documents one by one, not as an archive.", "invalid_file")
        try:
            found = documents.store(Path(stored["path"]), stored["file"], purpose)
        except TooLargeError:
            raise
        except (ConfigError, DataError) as exc:
            raise bad_param("file", str(exc), "invalid_file") from None
        if project and project != directory.DEFAULT_PROJECT:
            directory.assign("dataset", found["id"], project)  # a document is data: its project's policies
        return found
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _file(dataset_id: str, filename: str | None = None) -> dict:
    ds = _dataset(dataset_id)
    if ds.kind != "chat":
        raise bad_param("file_id", f"{dataset_id} is a {ds.kind} dataset, not conversations.")
    return _chat_file(ds, filename)


def _dataset(file_id: str):
    """The dataset an uploaded file is. A missing one is "No file", the 404 the access rules answer
    for a file the caller may not read (so neither tells that a file exists); a deleted one (which
    only a caller who may read it gets to) says when it was deleted."""
    try:
        return workflow.load_dataset(file_id)
    except NotFoundError:
        if deleted_dataset(file_id.strip()) is None:
            raise documents.missing_file(file_id) from None
        raise


def _chat_file(ds, filename: str | None = None) -> dict:
    """The chat dataset ``ds`` as OpenAI's file object."""
    summary = ds.summary()
    rejects = summary["rejects"]
    return {
        "id": ds.id,
        "object": "file",
        "bytes": _size(ds),
        "created_at": _created(ds),
        "filename": filename or ds.manifest.get("source", "").rsplit("/", 1)[-1],
        "purpose": "fine-tune",
        "status": "processed",
        "status_details": f"{summary['rows']} examples kept, {rejects} rejected"
        + (f" (GET /v1/datasets/{ds.id}/rejects lists them)" if rejects else ""),
    }


def _size(ds) -> int:
    return sum(p.stat().st_size for p in ds.path.iterdir() if p.is_file())


def _conversations_jsonl(dataset_id: str) -> bytes:
    """The kept conversations of an uploaded file, one ``{"messages": [...]}`` a line."""
    _file(dataset_id)  # a chat dataset, else 400
    rows = workflow.load_dataset(dataset_id).rows()
    return "".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n" for r in rows).encode()


def _result_file(job_id: str) -> dict:
    job = _succeeded(job_id)
    return {
        "id": RESULTS + job_id,
        "object": "file",
        "bytes": len(_results_csv(job_id)),
        "created_at": epoch_seconds(job.get("finished")),
        "filename": "step_metrics.csv",
        "purpose": "fine-tune-results",
        "status": "processed",
        "status_details": None,
    }


def _results_csv(job_id: str) -> bytes:
    """The fit's metrics per step: training loss and token accuracy at every step, the validation
    scores at the steps they were measured (empty elsewhere)."""
    fitted = _fitted(_succeeded(job_id)["result"]["model"])
    valid = {v["step"]: v for v in fitted.get("valid_history_") or []}
    accuracy = fitted.get("train_accuracy_") or []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for step, loss in enumerate(fitted.get("history_") or [], start=1):
        scores = valid.get(step, {})
        train_accuracy = accuracy[step - 1] if step <= len(accuracy) else ""
        row = [
            step,
            loss,
            train_accuracy,
            scores.get("valid_loss", ""),
            scores.get("valid_mean_token_accuracy", ""),
        ]
        writer.writerow(row)
    return out.getvalue().encode()


def _files(visible, purpose=None, limit=10_000, after=None, order="desc") -> dict:
    """The files the caller may read, as OpenAI lists them: those of ``purpose`` (all when None),
    by ``created_at`` (``order``; ties by id, so a cursor pages steadily), the first ``limit`` after
    the file ``after``. Only the page's chat files are described: that reads their rows."""
    # uploads only: a training file paired with its validation file is the job's, not a file
    chats = {d.id: d for d in list_datasets() if d.kind == "chat" and "parents" not in d.manifest}
    requests = batch_files.listed()  # batch input files (and documents) are data too
    if visible is not None:
        shown = visible("dataset", {*chats, *requests})
        chats, requests = {k: d for k, d in chats.items() if k in shown}, [f for f in requests if f in shown]
    found = [batch_files.describe(f) for f in requests]  # a file.json each: cheap
    found += [{"id": k, "purpose": "fine-tune", "created_at": _created(d)} for k, d in chats.items()]
    found = sorted(
        (f for f in found if purpose in (None, f["purpose"])),
        key=lambda f: (f["created_at"], f["id"]),
        reverse=order == "desc",
    )
    page = list_page(cursor_page(found, after, None), limit)
    page["data"] = [_chat_file(chats[f["id"]]) if f["id"] in chats else f for f in page["data"]]
    return page


def _created(ds) -> int:
    return epoch_seconds(ds.manifest.get("created"))


# ------------------------------------------------------------------ jobs
def _readable(ref: str, visible) -> object:
    """The stored dataset ``ref`` names, if the caller may read it (``visible`` as
    :func:`job_guard`'s); a 404 like a missing one otherwise, before its kind is looked at (which
    would tell a caller that another project's dataset exists and what it holds). A name nothing
    has, a prefix several ids share or a deleted dataset is the same 404: the lookup's own answers
    (a deletion's date, a count of matches) would tell what other projects hold."""
    missing = NotFoundError(f"No dataset '{ref}'.", hint="GET /v1/files lists the files you may use.")
    try:
        ds = workflow.load_dataset(ref)
    except NotFoundError:
        raise missing from None
    name = ref.strip() if ref.strip() in ds.names else ds.id
    if visible is not None and name not in visible("dataset", {name}):
        raise missing
    return ds


def _train_params(body: FineTuneRequest, visible=None) -> dict:
    """The ``train`` job's params from an OpenAI fine-tuning request (400 naming the field)."""
    hyper = body.hyperparameters
    if body.method is not None:
        hyper = _method_hyperparameters(body.method, hyper)
    only_granted_paths({"model": body.model})  # before the folder is looked at: no existence oracle
    try:
        get_llm_backbone(body.model)
    except Exception as exc:
        raise bad_param("model", f"Cannot fine-tune '{body.model}': {exc}") from None
    ds = _readable(body.training_file, visible)
    if ds.kind != "chat":
        raise bad_param("training_file", f"{body.training_file} holds {ds.kind} data, not conversations.")
    params = {"task": "text-generation", "data": ds.id, "backbone": body.model, "time_budget": None}
    params["name"] = registry.check_name(fine_tuned_name(body.suffix, body.model))
    examples = len(ds.rows("train"))
    if body.validation_file:
        valid = _readable(body.validation_file, visible)
        if valid.kind != "chat":
            raise bad_param(
                "validation_file", f"{body.validation_file} holds {valid.kind} data, not conversations."
            )
        params["valid_data"], examples = valid.id, len(ds.rows())  # all of the training file trains
    params["epochs"] = _pick(hyper.n_epochs, 1, 50, "n_epochs", 3 if examples <= SMALL_SET else 1)
    params["batch_size"] = _pick(hyper.batch_size, 1, 256, "batch_size", 8)
    params["lr"] = BASE_LR * _pick(hyper.learning_rate_multiplier, 1e-6, 10, "learning_rate_multiplier", 1.0)
    if body.seed is not None:
        params["seed"] = body.seed
    return params


def _method_hyperparameters(method: dict, hyper: Hyperparameters) -> Hyperparameters:
    """``hyper`` overlaid with ``method.supervised.hyperparameters`` (where OpenAI's newer clients
    send them); ``method`` is a free-form object, so a 400 names the path of what is wrong in it."""
    if method.get("type") != "supervised":
        raise bad_param("method", "Only the 'supervised' method is available (LoRA on the answers).")
    supervised = _object(method.get("supervised"), "method.supervised")
    where = "method.supervised.hyperparameters"
    inner = _object(supervised.get("hyperparameters"), where)
    try:
        return Hyperparameters.model_validate({**hyper.model_dump(), **inner})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err.get("loc") else ""
        if err["type"] == "extra_forbidden":
            known = ", ".join(Hyperparameters.model_fields)
            raise bad_param(f"{where}.{name}", f"Unknown hyperparameter '{name}'; send {known}.") from None
        why = [e["msg"] for e in exc.errors() if e["loc"][:1] == (name,)][-1]  # the number's, after "auto"'s
        message = (
            f'{name} is "auto" or {Hyperparameters.model_fields[name].description}; '
            f"got {json.dumps(inner.get(name))[:100]} ({why[:1].lower()}{why[1:]})."
        )
        raise bad_param(f"{where}.{name}", message) from None


def _object(value, where: str) -> dict:
    """``value`` when it is a JSON object ({} for none), else a 400 naming ``where``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_param(where, f"{where} must be an object; got {json.dumps(value)[:100]}.")
    return value


def _pick(value, low, high, name: str, auto):
    if value == "auto":
        return auto
    if not low <= value <= high:
        raise bad_param(f"hyperparameters.{name}", f"{name} must be {low} to {high}; got {value}.")
    return value


def fine_tuned_name(suffix: str | None, model: str) -> str:
    """The model a fine-tuning job registers: ``ft-`` and its ``suffix``, else its base model's name.

    >>> fine_tuned_name("news v2", "smollm2-135m"), fine_tuned_name(None, "hf:Qwen/Qwen2.5-0.5B")
    ('ft-news-v2', 'ft-hf-Qwen-Qwen2.5-0.5B')
    """
    return "ft-" + _slug(suffix or model)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:60] or "model"


def _succeeded(job_id: str) -> dict:
    """The fine-tuning job ``job_id`` if it succeeded (its results exist), else a 404."""
    job = _fine_tuning(job_id)
    if job["status"] != "succeeded":
        raise NotFoundError(
            f"Fine-tuning job '{job_id}' is {job['status']}: it has no results yet.",
            hint=f"GET {JOBS_PATH}/{job_id} until its status is succeeded.",
        )
    return job


def _fine_tuning(job_id: str) -> dict:
    """The job ``job_id`` if it is a fine-tuning job (a text-generation train job), else a 404."""
    job = state.get(job_id).to_dict()
    if job["kind"] != "train" or job["params"].get("task") != "text-generation":
        raise NotFoundError(f"No fine-tuning job '{job_id}'.", hint="GET /v1/fine_tuning/jobs lists them.")
    return job


def _job(job: dict) -> dict:
    params, result = job["params"], job.get("result") or {}
    status = _status(job)
    error = job.get("error") if status != "cancelled" else None  # OpenAI: a cancelled job has none
    return {
        "id": job["id"],
        "object": "fine_tuning.job",
        "created_at": epoch_seconds(job.get("created")),
        "finished_at": epoch_seconds(job.get("finished")) if job.get("finished") else None,
        "model": params.get("backbone", "smollm2-135m"),
        "fine_tuned_model": result.get("model") if job["status"] == "succeeded" else None,
        "organization_id": "aimass",
        "status": status,
        "training_file": params["data"],
        "validation_file": params.get("valid_data"),
        "hyperparameters": {
            "n_epochs": params.get("epochs"),
            "batch_size": params.get("batch_size"),
            "learning_rate_multiplier": round(params.get("lr", BASE_LR) / BASE_LR, 6),
        },
        "result_files": [RESULTS + job["id"]] if job["status"] == "succeeded" else [],
        "trained_tokens": _trained_tokens(result.get("model")) if job["status"] == "succeeded" else None,
        "error": {
            "code": error.get("code") or error.get("cause") or "failed",
            "message": error.get("message"),
            "param": None,
        }
        if error
        else None,
        "seed": params.get("seed", 0),
        # the ETA of the last heartbeat (at most a few seconds old)
        "estimated_finish": int(time.time() + job["eta_s"])
        if status == "running" and job.get("eta_s") is not None
        else None,
        "integrations": [],
        "metadata": job.get("metadata"),
        "method": {"type": "supervised"},
        "metrics": result.get("metrics"),
    }


def _status(job: dict) -> str:
    """OpenAI's status: a running job asked to cancel is ``cancelled`` at once, as OpenAI answers
    the cancel (its worker stops within a heartbeat), not ``running`` until then."""
    if job["status"] == "running" and job.get("cancel_requested"):
        return "cancelled"
    return STATUS.get(job["status"], job["status"])


def _fitted(ref: str) -> dict:
    """What the version's fit recorded (``fitted`` in its model.json: losses, stats)."""
    try:
        return json.loads((Path(registry.get_version(ref).path) / "model.json").read_text())["fitted"]
    except (OSError, KeyError, TypeError, ValueError):
        raise NotFoundError(f"The files of {ref} cannot be read.", hint="Train it again.") from None


def _trained_tokens(ref: str | None) -> int | None:
    """The tokens the fit read (prompts and answers, every pass), from the version's model.json."""
    try:
        return int(_fitted(ref)["train_stats_"]["tokens"])
    except (NotFoundError, KeyError, TypeError, ValueError):
        return None


def _checkpoints(job_id: str) -> dict:
    """The job's checkpoints, newest first: the registered version (its last step, with
    ``full_valid_*`` from its evaluation) and the adapters kept at the ends of the epochs before
    (``NAME:VERSION:ckpt-step-N``), each with the training and validation scores of its step."""
    job = _fine_tuning(job_id)
    if job["status"] != "succeeded":
        return {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}
    ref = job["result"]["model"]
    fitted, version = _fitted(ref), registry.get_version(ref)
    history, accuracy = fitted.get("history_") or [], fitted.get("train_accuracy_") or []
    valid = {v["step"]: v for v in fitted.get("valid_history_") or []}
    kept = [(c["step"], f"{ref}:ckpt-step-{c['step']}") for c in fitted.get("checkpoints_") or []]
    data = []
    for step, model in [(len(history), ref), *sorted(kept, reverse=True)]:
        metrics = {"step": step, "train_loss": history[step - 1] if 0 < step <= len(history) else None}
        metrics["train_mean_token_accuracy"] = accuracy[step - 1] if 0 < step <= len(accuracy) else None
        scores = valid.get(step, {})
        metrics.update({k: scores.get(k) for k in ("valid_loss", "valid_mean_token_accuracy")})
        if model == ref:
            metrics["full_valid_loss"] = (version.metrics or {}).get("loss")
            metrics["full_valid_mean_token_accuracy"] = (version.metrics or {}).get("mean_token_accuracy")
        data.append(
            {
                "id": f"ftckpt-{job_id}-{step}",
                "object": "fine_tuning.job.checkpoint",
                "created_at": epoch_seconds(job.get("finished")),
                "fine_tuned_model_checkpoint": model,
                "fine_tuning_job_id": job_id,
                "metrics": metrics,
                "step_number": step,
            }
        )
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"],
        "last_id": data[-1]["id"],
    }


def _jobs(limit: int, after: str | None, visible, metadata: dict | None = None) -> dict:
    mine = [j.to_dict() for j in state.list_jobs(None, 10_000, metadata)]
    mine = [j for j in mine if j["kind"] == "train" and j["params"].get("task") == "text-generation"]
    mine = cursor_page(mine, after, visible)
    page = mine[:limit]
    return {"object": "list", "data": [_job(j) for j in page], "has_more": len(mine) > limit}


def _events(job_id: str, limit: int, after: str | None = None) -> dict:
    job = _fine_tuning(job_id)
    lines = [line for line in jobs.logs(job_id).splitlines() if line.strip()]
    stamp = epoch_seconds(job.get("created"))
    data = [
        {"id": f"{job_id}-{i}", "object": "fine_tuning.job.event", **_event(line, stamp)}
        for i, line in enumerate(lines)
    ]
    data.reverse()  # newest first, as OpenAI lists them
    if after is not None:
        ids = [e["id"] for e in data]
        data = data[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": data[:limit], "has_more": len(data) > limit}


def _event(line: str, stamp: int) -> dict:
    """A log line as an event: a ``[metrics]`` line is a ``metrics`` event with its numbers and
    its own time; other lines carry ``stamp`` (the job's creation: the log has no times)."""
    if line.startswith(METRICS):
        try:
            data = json.loads(line[len(METRICS) :])
            message = f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
        except (ValueError, KeyError, TypeError):
            data = None
        if isinstance(data, dict):
            if data.get("valid_loss") is not None:
                message += f", validation loss={data['valid_loss']:.4f}"
            data.pop("stage", None)
            at = data.pop("at", None)
            created = int(at) if isinstance(at, int | float) else stamp
            return {
                "created_at": created,
                "level": "info",
                "message": message,
                "type": "metrics",
                "data": data,
            }
    level = "error" if "error" in line.lower() else "info"
    return {"created_at": stamp, "level": level, "message": line[:2000], "type": "message"}
