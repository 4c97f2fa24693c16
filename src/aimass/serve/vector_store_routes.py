"""OpenAI's vector stores over :mod:`aimass.retrieval`, so a retrieval (RAG) script written for
OpenAI runs here unchanged::

    doc = client.files.create(file=open("handbook.pdf", "rb"), purpose="assistants")
    store = client.vector_stores.create(name="handbook", file_ids=[doc.id])
    ...  # client.vector_stores.retrieve(store.id).status == "completed"
    hits = client.vector_stores.search(store.id, query="How many days of leave?")

Routes: ``/v1/vector_stores`` (create, list, retrieve, modify, delete), ``.../files`` (add, list,
retrieve, update attributes, remove, ``content``), ``.../file_batches`` (create, retrieve, cancel,
list files) and ``.../search``. Adding files answers at once with ``in_progress``; one background
thread (:class:`aimass.retrieval.worker.Worker`) chunks and embeds them, and a restarted server
finishes what was left, for the key that added it. The tokens embedded (files and queries) are
metered to the caller's key, a file's also when it is taken out (or its store deleted) while it is
embedded; a key that has used its quota cannot add files (429) until its period turns, and a file
it added is checked again before it is embedded (``failed``, ``rate_limit_exceeded``, once the
quota is used).

Access: a store is a project resource, ``aimass:project/P/vector_store/vs_...``, with its own
actions: ``vector_store:Create`` (in the body's ``project``), ``List``, ``Read`` (the store, its
files and their content), ``Update`` (modify it, add or remove files), ``Delete`` and ``Search``.
Adding a file also needs ``dataset:Read`` on the uploaded file. ``Search`` is not part of the
``predict`` scope: a store holds documents, so an application key is granted it by a policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from aimass.access import directory
from aimass.errors import ConfigError
from aimass.retrieval import files as documents
from aimass.retrieval import search as searching
from aimass.retrieval import stores
from aimass.retrieval.worker import Worker
from aimass.serve.jobs_routes import need_project
from aimass.serve.openai_errors import bad_param, json_body, list_page, parse_body

PATH = "/v1/vector_stores"


class StoreRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field("", max_length=256)
    file_ids: list[str] = Field(default_factory=list, max_length=500)
    chunking_strategy: dict | None = None
    metadata: dict | None = None
    expires_after: dict | None = None
    embedding_model: str = Field(stores.DEFAULT_MODEL, max_length=100, description="aimass: the encoder")
    project: str | None = Field(None, max_length=64, description="aimass: the project the store belongs to")


class StoreChange(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(None, max_length=256)
    metadata: dict | None = None
    expires_after: dict | None = None


class FileRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    file_id: str = Field(max_length=64)
    attributes: dict | None = None
    chunking_strategy: dict | None = None


class FileChange(BaseModel):
    model_config = ConfigDict(extra="ignore")

    attributes: dict


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    file_ids: list[str] | None = Field(None, max_length=500)
    files: list[FileRequest] | None = Field(None, max_length=500)
    attributes: dict | None = None
    chunking_strategy: dict | None = None


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str | list[str]
    filters: dict | None = None
    max_num_results: int = Field(10, ge=1, le=searching.MAX_RESULTS)
    ranking_options: dict | None = None
    rewrite_query: bool = False


@contextmanager
def openai_shape():
    """A ConfigError of :mod:`aimass.retrieval` as OpenAI's 400 naming its parameter."""
    try:
        yield
    except ConfigError as exc:
        message = f"{exc.message} {exc.hint}" if exc.hint else exc.message
        raise bad_param(exc.where, message) from None


def add_vector_store_routes(app: FastAPI, allow, visible, twin, meter) -> Worker:
    """The routes; ``allow``, ``visible`` and ``twin`` as :func:`aimass.serve.jobs_routes.add_jobs`'s.
    The worker that processes added files is returned (``resume`` it once the server is up)."""
    manage = [allow("manage")]

    def done(key_id: str | None, model: str, tokens: int, ms: float) -> None:
        if key_id:  # the encoder named when the file was started: the store may be gone by now
            meter.add(key_id, model, tokens, ms)

    worker = Worker(done, meter.admit_now)  # each file is checked against the quota before it is embedded

    async def run(work: Callable, *args, **kwargs) -> Any:
        with openai_shape():
            return await asyncio.to_thread(work, *args, **kwargs)

    async def within_quota(caller) -> None:
        """429 when the caller's key has used its quota: embedding a file is metered work too."""
        (await meter.admit(caller.key_id, 1)).release()

    def readable(request: Request, caller, file_ids: list[str]) -> None:
        for file_id in file_ids:  # adding a file reads it: decided as its own route would be
            documents.folder(file_id)  # 404 for what is no file id (a "/" would make another route)
            twin(request, caller, "GET", f"/v1/files/{file_id}")

    @app.post(PATH, tags=["vector stores"])
    async def create(request: Request, caller=allow("manage")):
        """A store, with the files of ``file_ids`` added (``in_progress`` until embedded)."""
        body = parse_body(StoreRequest, await json_body(request))
        if body.file_ids:
            await within_quota(caller)
        await asyncio.to_thread(need_project, body.project)
        await asyncio.to_thread(readable, request, caller, body.file_ids)
        found = await run(
            stores.create,
            body.name,
            body.file_ids,
            body.chunking_strategy,
            body.metadata,
            body.expires_after,
            body.embedding_model,
            caller.key_id,
        )
        if body.project and body.project != directory.DEFAULT_PROJECT:
            await asyncio.to_thread(directory.assign, "vector_store", found["id"], body.project)
        for file_id in body.file_ids:
            worker.submit(found["id"], file_id, caller.key_id)
        return found

    @app.get(PATH, tags=["vector stores"])
    async def list_stores(
        limit: int = Query(20, ge=1, le=100),
        order: Literal["asc", "desc"] = "desc",
        after: str | None = Query(None, max_length=64),
        before: str | None = Query(None, max_length=64),
        caller=allow("manage"),
    ):
        found = await run(stores.listed)
        shown = visible(caller)
        if shown is not None:
            keep = await asyncio.to_thread(shown, "vector_store", {s["id"] for s in found})
            found = [s for s in found if s["id"] in keep]
        return list_page(_page(found, order, after, before), limit)

    @app.get(PATH + "/{vector_store_id}", tags=["vector stores"], dependencies=manage)
    async def retrieve(vector_store_id: str):
        return await run(stores.get, vector_store_id)

    @app.post(PATH + "/{vector_store_id}", tags=["vector stores"], dependencies=manage)
    async def modify(vector_store_id: str, request: Request):
        """Change ``name``, ``metadata`` or ``expires_after`` (``null``: never expires)."""
        body = parse_body(StoreChange, await json_body(request))
        return await run(stores.update, vector_store_id, body.model_dump(exclude_unset=True))

    @app.delete(PATH + "/{vector_store_id}", tags=["vector stores"], dependencies=manage)
    async def delete(vector_store_id: str):
        """The store, its chunks and its files' records go; the uploaded files stay."""
        return await run(stores.remove, vector_store_id)

    @app.post(PATH + "/{vector_store_id}/files", tags=["vector stores"])
    async def add_file(vector_store_id: str, request: Request, caller=allow("manage")):
        """Add an uploaded document (``in_progress`` until embedded); adding it again re-reads it."""
        body = parse_body(FileRequest, await json_body(request))
        await within_quota(caller)
        found = await run(
            stores.add_file,
            vector_store_id,
            body.file_id,
            body.attributes,
            body.chunking_strategy,
            caller.key_id,
        )
        worker.submit(vector_store_id, body.file_id, caller.key_id)
        return found

    @app.get(PATH + "/{vector_store_id}/files", tags=["vector stores"], dependencies=manage)
    async def list_files(
        vector_store_id: str,
        limit: int = Query(20, ge=1, le=100),
        order: Literal["asc", "desc"] = "desc",
        after: str | None = Query(None, max_length=64),
        before: str | None = Query(None, max_length=64),
        filter: str | None = Query(None, max_length=16, description="a status"),
    ):
        found = await run(stores.listed_files, vector_store_id, filter)
        return list_page(_page(found, order, after, before), limit)

    @app.get(PATH + "/{vector_store_id}/files/{file_id}", tags=["vector stores"], dependencies=manage)
    async def get_file(vector_store_id: str, file_id: str):
        return await run(stores.get_file, vector_store_id, file_id)

    @app.post(PATH + "/{vector_store_id}/files/{file_id}", tags=["vector stores"], dependencies=manage)
    async def update_file(vector_store_id: str, file_id: str, request: Request):
        """Replace the file's ``attributes`` (its chunks stay as they are)."""
        body = parse_body(FileChange, await json_body(request))
        return await run(stores.set_attributes, vector_store_id, file_id, body.attributes)

    @app.delete(PATH + "/{vector_store_id}/files/{file_id}", tags=["vector stores"], dependencies=manage)
    async def remove_file(vector_store_id: str, file_id: str):
        """Take the file out of the store (the uploaded file stays: DELETE /v1/files/{id})."""
        return await run(stores.remove_file, vector_store_id, file_id)

    @app.get(PATH + "/{vector_store_id}/files/{file_id}/content", tags=["vector stores"], dependencies=manage)
    async def file_content(vector_store_id: str, file_id: str):
        """The file's text as the store holds it, one item per chunk."""
        found = await run(stores.file_content, vector_store_id, file_id)
        return {"object": "vector_store.file_content.page", "data": found["content"], **found}

    @app.post(PATH + "/{vector_store_id}/file_batches", tags=["vector stores"])
    async def create_batch(vector_store_id: str, request: Request, caller=allow("manage")):
        """Add several files at once: ``file_ids`` (sharing ``attributes`` and ``chunking_strategy``)
        or ``files`` (each its own)."""
        body = parse_body(BatchRequest, await json_body(request))
        if bool(body.file_ids) == bool(body.files):
            raise bad_param("file_ids", "Send 'file_ids' or 'files' (one of them, not empty).")
        shared = {"attributes": body.attributes, "chunking_strategy": body.chunking_strategy}
        entries = [f.model_dump() for f in body.files] if body.files else []
        entries = entries or [{"file_id": f, **shared} for f in body.file_ids or []]
        await within_quota(caller)
        await asyncio.to_thread(readable, request, caller, [e["file_id"] for e in entries])
        found = await run(stores.add_batch, vector_store_id, entries, caller.key_id)
        for entry in entries:
            worker.submit(vector_store_id, entry["file_id"], caller.key_id)
        return found

    @app.get(PATH + "/{vector_store_id}/file_batches/{batch_id}", tags=["vector stores"], dependencies=manage)
    async def get_batch(vector_store_id: str, batch_id: str):
        return await run(stores.get_batch, vector_store_id, batch_id)

    @app.post(
        PATH + "/{vector_store_id}/file_batches/{batch_id}/cancel",
        tags=["vector stores"],
        dependencies=manage,
    )
    async def cancel_batch(vector_store_id: str, batch_id: str):
        """Stop the batch's files not embedded yet (``cancelled``); those done stay."""
        return await run(stores.cancel_batch, vector_store_id, batch_id)

    @app.get(
        PATH + "/{vector_store_id}/file_batches/{batch_id}/files", tags=["vector stores"], dependencies=manage
    )
    async def batch_files(
        vector_store_id: str,
        batch_id: str,
        limit: int = Query(20, ge=1, le=100),
        order: Literal["asc", "desc"] = "desc",
        after: str | None = Query(None, max_length=64),
        before: str | None = Query(None, max_length=64),
        filter: str | None = Query(None, max_length=16, description="a status"),
    ):
        found = await run(stores.batch_files, vector_store_id, batch_id, filter)
        return list_page(_page(found, order, after, before), limit)

    @app.post(PATH + "/{vector_store_id}/search", tags=["vector stores"])
    async def search(vector_store_id: str, request: Request, caller=allow("manage")):
        """The store's best chunks for ``query``: by meaning and by words, fused (see the module)."""
        body = parse_body(SearchRequest, await json_body(request))
        if body.rewrite_query:
            raise bad_param(
                "rewrite_query",
                "Queries are searched as written here; send rewrite_query false.",
                "unsupported_value",
            )
        options = body.model_dump(include={"filters", "max_num_results", "ranking_options"})
        return await metered_search(meter, caller, vector_store_id, body.query, options)

    return worker


async def metered_search(meter, caller, store_id: str, query, options: dict, *, shaped: bool = True) -> dict:
    """:func:`aimass.retrieval.search.search` in a thread, once the caller's quota admits it; the
    query's tokens are metered to the caller's key under the store's encoder. ``shaped``: errors in
    OpenAI's shape (the console shows its own)."""
    hold, began = await meter.admit(caller.key_id, 1), time.perf_counter()
    try:
        with openai_shape() if shaped else contextlib.nullcontext():
            found = await asyncio.to_thread(searching.search, store_id, query, **options)
        ms = (time.perf_counter() - began) * 1000
        meter.add(caller.key_id, found.pop("model"), found["usage"]["total_tokens"], ms)
    finally:
        hold.release()
    return found


def _page(found: list[dict], order: str, after: str | None, before: str | None) -> list[dict]:
    """``found`` (newest first) in ``order``, after the id ``after`` and before the id ``before``."""
    found = found if order == "desc" else found[::-1]
    ids = [f["id"] for f in found]
    if after is not None:
        found = found[ids.index(after) + 1 :] if after in ids else []
    if before is not None:
        ids = [f["id"] for f in found]
        found = found[: ids.index(before)] if before in ids else found
    return found
