"""The console's Documents page: vector stores made from uploaded documents, their files as they
are embedded, and a search box. REST twins: ``/v1/files`` (purpose ``assistants``) and
``/v1/vector_stores`` (:mod:`aimass.serve.vector_store_routes`), decided the same way."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Request

from aimass import paths
from aimass.access import directory
from aimass.data.uploads import store_upload
from aimass.errors import ConfigError
from aimass.retrieval import files, stores
from aimass.retrieval.filters import check_attributes
from aimass.serve import batch_files
from aimass.serve.console.core import Console, rest
from aimass.serve.console.store_sharing import pull_offer, push_offer
from aimass.serve.vector_store_routes import metered_search

MAX_FILES = 16  # documents in one form


def add_documents(router: APIRouter, console: Console) -> None:
    @router.get("/stores")
    async def store_list(request: Request):
        ctx = console.ctx(request)
        console.authorize(ctx, "GET", "/v1/vector_stores")
        found = await asyncio.to_thread(stores.listed)
        shown = await asyncio.to_thread(console.visible, ctx, "vector_store", [s["id"] for s in found])
        projects = await asyncio.to_thread(console.projects, ctx, "POST", "/v1/vector_stores", {})
        rows = [s for s in found if s["id"] in shown]
        offer = await asyncio.to_thread(pull_offer, console, ctx)
        return console.page(
            request, "stores.html", ctx, stores=rows, projects=projects, most=MAX_FILES, **offer
        )

    @router.post("/stores")
    async def create(request: Request):
        ctx = console.ctx(request)
        if not await asyncio.to_thread(console.projects, ctx, "POST", "/v1/files", {}):
            console.authorize(ctx, "POST", "/v1/files")  # before a file is read: the 403 it gets
        form = await console.form(request, ctx, max_files=MAX_FILES)
        project = str(form.get("project") or directory.DEFAULT_PROJECT)
        console.authorize(ctx, "POST", "/v1/files", {"project": project})  # ?project=, as over REST
        console.authorize(ctx, "POST", "/v1/vector_stores", {"project": project})
        uploads = _uploads(form)
        await _within_quota(request, ctx)
        ids = await _keep_all(uploads, project)
        name, key_id = str(form.get("name") or ""), ctx.caller.key_id  # a restart resumes its files as it
        made = await asyncio.to_thread(partial(stores.create, name, ids, added_by=key_id))
        if project != directory.DEFAULT_PROJECT:
            await asyncio.to_thread(directory.assign, "vector_store", made["id"], project)
        for file_id in ids:
            request.app.state.vector_stores.submit(made["id"], file_id, ctx.caller.key_id)
        said = f"Store {made['id']} made of {len(ids)} documents: they are embedded in the background."
        return console.redirect(request, f"stores/{made['id']}", said, ctx)

    @router.get("/stores/{store_id}")
    async def store_page(request: Request, store_id: str, q: str = ""):
        ctx = console.ctx(request)
        console.authorize(ctx, "GET", rest("/v1/vector_stores/{}", store_id))
        found = await asyncio.to_thread(stores.get, store_id)
        listed = await asyncio.to_thread(stores.listed_files, store_id)
        names = {f["id"]: await asyncio.to_thread(_filename, f["id"]) for f in listed}
        hits = None
        if q.strip():
            console.authorize(ctx, "POST", rest("/v1/vector_stores/{}/search", store_id))
            meter, options = request.app.state.meter, {"max_num_results": 5}  # metered as its REST twin
            result = await metered_search(meter, ctx.caller, store_id, q[:2000], options, shaped=False)
            hits = result["data"]
        project = await asyncio.to_thread(directory.project_of, "vector_store", store_id)
        may_change = console.may(ctx, "POST", rest("/v1/vector_stores/{}", store_id))
        may_add = may_change and console.may(ctx, "POST", "/v1/files", {"project": project})
        shown = {"files": listed, "names": names, "q": q, "hits": hits}
        shown |= {"may_add": may_add, "may_change": may_change}
        shown["push_stores"] = await asyncio.to_thread(push_offer, console, ctx, store_id, project)
        return console.page(request, "store.html", ctx, store=found, most=MAX_FILES, **shown)

    @router.post("/stores/{store_id}/files")
    async def add(request: Request, store_id: str):
        """More documents into a store, each decided as ``POST /v1/vector_stores/{id}/files``."""
        ctx = console.ctx(request)
        console.authorize(ctx, "POST", rest("/v1/vector_stores/{}", store_id))  # the store's Update
        project = await asyncio.to_thread(directory.project_of, "vector_store", store_id)
        console.authorize(ctx, "POST", "/v1/files", {"project": project})  # before a file is read
        form = await console.form(request, ctx, max_files=MAX_FILES)
        uploads = _uploads(form)
        await _within_quota(request, ctx)
        ids = await _keep_all(uploads, project)
        twin = rest("/v1/vector_stores/{}/files", store_id)
        try:
            for file_id in ids:  # the twin also reads the file: dataset:Read in the store's project
                console.authorize(ctx, "POST", twin, {"file_id": file_id})
                adding = partial(stores.add_file, store_id, file_id, added_by=ctx.caller.key_id)
                await asyncio.to_thread(adding)
        except Exception:
            await asyncio.to_thread(_discard, ids)
            raise
        for file_id in ids:
            request.app.state.vector_stores.submit(store_id, file_id, ctx.caller.key_id)
        said = f"{len(ids)} more documents in store {store_id}: they are embedded in the background."
        return console.redirect(request, f"stores/{store_id}", said, ctx)

    @router.post("/stores/{store_id}/files/remove")
    async def remove_file(request: Request, store_id: str):
        """A document out of the store (the upload stays), as ``DELETE .../files/{file_id}``."""
        ctx = console.ctx(request)
        file_id = str((await console.form(request, ctx)).get("file_id") or "")
        console.authorize(ctx, "DELETE", rest("/v1/vector_stores/{}/files/{}", store_id, file_id))
        await asyncio.to_thread(stores.remove_file, store_id, file_id)
        said = f"{await asyncio.to_thread(_filename, file_id)} is no longer in store {store_id}."
        return console.redirect(request, f"stores/{store_id}", said, ctx)

    @router.post("/stores/{store_id}/files/attributes")
    async def label(request: Request, store_id: str):
        """A document's attributes (what search filters read), replaced as
        ``POST /v1/vector_stores/{id}/files/{file_id}`` replaces them."""
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        file_id = str(form.get("file_id") or "")
        console.authorize(ctx, "POST", rest("/v1/vector_stores/{}/files/{}", store_id, file_id))
        attributes = parse_attributes(str(form.get("attributes") or ""))
        await asyncio.to_thread(stores.set_attributes, store_id, file_id, attributes)
        shown = ", ".join(f"{k} = {v!r}" for k, v in attributes.items()) or "none"
        said = f"{await asyncio.to_thread(_filename, file_id)} now has the attributes: {shown}."
        return console.redirect(request, f"stores/{store_id}", said, ctx)

    @router.post("/stores/{store_id}/delete")
    async def delete(request: Request, store_id: str):
        ctx = console.ctx(request)
        await console.form(request, ctx)
        console.authorize(ctx, "DELETE", rest("/v1/vector_stores/{}", store_id))
        await asyncio.to_thread(stores.remove, store_id)
        return console.redirect(request, "stores", f"Vector store {store_id} deleted.", ctx)


_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")


def parse_attributes(text: str) -> dict:
    r"""``name = value`` lines (blank lines skipped) as a file's attributes: ``true``/``false`` are
    booleans, numbers are numbers, a value in quotes stays text, anything else is text.

    >>> parse_attributes('lang = zh\nyear = 2024\n\nfinal = true\ncode = "0042"')
    {'lang': 'zh', 'year': 2024, 'final': True, 'code': '0042'}
    """
    found: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not name or name in found:
            why = f"names {name!r} a second time" if name in found else "is not name = value"
            raise ConfigError(
                f"Line {n} of the attributes {why}: {line.strip()[:80]!r}.",
                where=f"attributes, line {n}",
                hint="Write one attribute a line, each name once, e.g. year = 2024 or lang = zh.",
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            found[name] = value[1:-1]
        elif value in ("true", "false"):
            found[name] = value == "true"
        elif _NUMBER.fullmatch(value):
            found[name] = json.loads(value)
        else:
            found[name] = value
    return check_attributes(found)


def _uploads(form) -> list:
    uploads = [f for f in form.getlist("documents") if hasattr(f, "read") and getattr(f, "filename", "")]
    if not uploads:
        raise ConfigError("Choose one or more documents.", hint="PDF, DOCX, HTML, Markdown or text files.")
    return uploads


async def _within_quota(request: Request, ctx) -> None:
    """429 when the signed-in key has used its quota (embedding is metered work), as over REST."""
    (await request.app.state.meter.admit(ctx.caller.key_id, 1)).release()


def _keep(source, filename: str, project: str) -> str:
    """An uploaded document kept (as ``POST /v1/files`` keeps it); its file id."""
    stored = store_upload(source, filename, project)
    try:
        if stored["archive"]:
            raise ConfigError(f"{filename} is an archive.", hint="Upload the documents themselves.")
        found = files.store(Path(stored["path"]), stored["file"])
    finally:
        shutil.rmtree(paths.home() / "uploads" / stored["upload"], ignore_errors=True)
    if project != directory.DEFAULT_PROJECT:
        directory.assign("dataset", found["id"], project)
    return found["id"]


async def _keep_all(uploads: list, project: str) -> list[str]:
    """Every upload kept, or none: a refused document takes the ones kept before it away."""
    ids = []
    try:
        for upload in uploads:
            ids.append(await asyncio.to_thread(_keep, upload.file, upload.filename, project))
    except Exception:
        await asyncio.to_thread(_discard, ids)
        raise
    return ids


def _discard(file_ids: list[str]) -> None:
    """Uploads taken away as ``DELETE /v1/files/{id}`` takes a document (out of any store too)."""
    for file_id in file_ids:  # gone first: then no store can add it (as DELETE /v1/files does)
        batch_files.delete(file_id, [])
        stores.forget_file(file_id)


def _filename(file_id: str) -> str:
    try:
        return files.info(file_id)["filename"]
    except Exception:  # noqa: BLE001 — a deleted upload: its id stands for it
        return file_id
