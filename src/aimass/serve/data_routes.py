"""Data and registry over REST: uploads, datasets, model versions and their pictures.

These are the JSON twins of the web console's pages (the console calls the same functions):

- ``POST /v1/uploads`` (multipart, one file) keeps a data file or archive under
  ``AIMASS_HOME/uploads`` and answers the path to import; ``POST /v1/datasets`` imports it;
  ``GET /v1/uploads?project=P`` lists a project's uploads against its share of bytes and
  ``DELETE /v1/uploads/{id}`` frees one;
- ``GET /v1/datasets`` (paginated), ``GET /v1/datasets/{id}`` (the import report) and
  ``GET /v1/datasets/{id}/rejects`` (paginated; ``?import=N``: those of one import of it),
  ``GET /v1/datasets/{id}/issues`` (the last issues report: ``aimass data issues`` or a job of kind
  ``issues``; its CSV and pictures under ``/issues/files/{file}``) and ``POST /v1/datasets/{id}/fix``
  (a new version with that report's rows dropped or relabelled);
- ``GET /v1/versions`` (paginated, ``?name=``), ``GET /v1/versions/{ref}`` (lineage, params,
  metrics, evaluation, aliases, where it is deployed), ``GET /v1/versions/{ref}/files/{file}``
  (the evaluation pictures) and ``PUT`` / ``DELETE /v1/versions/{ref}/aliases/{alias}``;
- ``DELETE /v1/versions/{ref}`` (409 while a service serves it, or an alias points at it without
  ``?force=true``), ``GET /v1/versions/compare?a=&b=`` (two versions side by side, with what
  differs) and ``GET /v1/versions/{ref}/export?format=onnx`` (the export folder as a zip).

Each route's action and resource are in :data:`aimass.serve.access_guard.RULES` (``manage`` keys
have them all); a path in ``POST /v1/datasets`` must lie under the data roots.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from aimass import api, curation, paths
from aimass.access import directory
from aimass.data import Dataset, load_dataset
from aimass.data import uploads as data_uploads
from aimass.data.dataset import MANIFEST_FILE
from aimass.data.limits import MIB, limit
from aimass.data.storage import datasets_dir
from aimass.data.uploads import store_upload, upload_limit
from aimass.errors import NotFoundError, TooLargeError
from aimass.serve.auth import Caller
from aimass.serve.engine import Engine, persisted
from aimass.serve.jobs_routes import need_project, only_granted_paths, readable_versions
from aimass.serve.uploads import FILE_BODY, one_file
from aimass.store import browse, claims, registry

UPLOAD_PATH = "/v1/uploads"
MAX_EXPORT_BYTES = 2048 * MIB
# what evaluation writes; no SVG (a pulled version's folder could carry one, whose script would
# run in the console's origin)
PICTURES = (".png",)
INERT = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"}
Visible = Callable[[str, set[str]], set[str]]
DATASET_ID = re.compile(r"[0-9a-f]{6,64}")


class ImportRequest(BaseModel):
    path: str = Field(description="a file or folder under AIMASS_HOME/uploads or AIMASS_DATA_ROOTS")
    name: str | None = Field(None, description="the dataset's name (default: the file's)")
    project: str | None = Field(
        None, max_length=64, description="the project the dataset belongs to (default: 'default')"
    )
    valid_path: str | None = Field(
        None, description="a table of validation rows (then path holds training rows)"
    )
    test_path: str | None = Field(None, description="a table of test rows (then path holds training rows)")
    label_sep: str | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="several labels per row, one cell cut here (e.g. ';'); JSON lists need none",
    )


class FixRequest(BaseModel):
    """What to do with the rows the dataset version's last issues report flags."""

    drop: bool = Field(False, description="drop the rows flagged as label issues")
    relabel: bool = Field(False, description="give the rows flagged as label issues their suggested label")
    duplicates: bool = Field(False, description="drop the valid/test rows that near-duplicate a train row")
    rows: list[int] | None = Field(
        None, max_length=100_000, description="only these row numbers of the report (default: every one)"
    )
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="the new version's name (default: the dataset's)",
    )


def page(rows: list[dict], total: int, limit: int, offset: int, key: str) -> dict:
    return {key: rows, "total": total, "limit": limit, "offset": offset}


# ------------------------------------------------------------ the calls (REST and console)
def datasets_page(limit: int, offset: int, visible: Visible | None = None) -> dict:
    """One page of datasets; with ``visible`` (kind, names -> the names the caller may read) only
    those, and ``total`` counts only those."""
    rows, total = browse.datasets(limit, offset, browse.keeping(visible, "dataset"))
    out = [
        {
            "id": r.id,
            "name": r.name,
            "kind": (r.summary or {}).get("kind", "text"),  # text, multilabel, image, chat, ...
            "language": r.language,
            "created": r.created,
            "rows": (r.summary or {}).get("rows"),
            "rejects": (r.summary or {}).get("rejects"),
            "classes": len((r.summary or {}).get("classes") or {}),
        }
        for r in rows
    ]
    return page(out, total, *browse.clamp(limit, offset), "datasets")


def open_dataset(dataset_id: str) -> Dataset:
    """A dataset by its id straight from its folder (one manifest read), else by name or prefix."""
    if DATASET_ID.fullmatch(dataset_id) and (datasets_dir() / dataset_id / MANIFEST_FILE).is_file():
        return Dataset.open(datasets_dir() / dataset_id)
    return load_dataset(dataset_id)


def dataset_report(dataset_id: str) -> dict:
    return open_dataset(dataset_id).summary()


def issues_report(dataset_id: str) -> dict:
    return curation.stored_issues(open_dataset(dataset_id))


def issues_file(dataset_id: str, file: str) -> Path:
    """A file of the dataset's last issues report: ``issues.csv`` (every flagged row, for a
    spreadsheet) or a picture (an image dataset's grid of the flagged images, ``issues.png``);
    only a file the report lists, from its own folder."""
    ds = open_dataset(dataset_id)
    report = curation.stored_issues(ds)
    folder = curation.report_folder(ds.id)
    names = {
        Path(p).name for key, p in report.get("files", {}).items() if key == "csv" or key.startswith("png")
    }
    if file not in names or not (folder / file).is_file():
        raise NotFoundError(
            f"the issues report of dataset {ds.id} has no file {file!r}; it has {sorted(names) or 'none'}.",
            hint="issues.csv, and for an image dataset issues.png.",
        )
    return folder / file


def fix_from_report(dataset_id: str, fix: FixRequest) -> dict:
    """A new version of the dataset with its last issues report acted on (REST and the console).
    It stays in the parent's project: a name another project owns is refused (403)."""
    ds = open_dataset(dataset_id)
    report = curation.stored_issues(ds)
    project = directory.project_of("dataset", ds.name)
    options = fix.model_dump(exclude={"name"})
    with claims.checked(partial(directory.may_write, project, how="a fix")):
        child = api.fix_dataset(ds, report, name=fix.name, **options)
    if project != directory.DEFAULT_PROJECT and child.name not in directory.owners("dataset"):
        directory.assign("dataset", child.name, project)
    return {**child.summary(), "project": project}


def rejects_page(dataset_id: str, limit: int, offset: int, import_index: int | None = None) -> dict:
    """Rejected rows (line, reason, ...) of a dataset, read lazily from its rejects file; with
    ``import_index``, those of that import (``imports[i]`` of the report: an import of data stored
    already keeps its own rejects)."""
    ds = open_dataset(dataset_id)
    limit, offset = browse.clamp(limit, offset)
    total, path = _rejects_of(ds, import_index)
    rows: list[dict] = []
    if path is not None and path.exists():
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in itertools.islice(lines, offset, offset + limit):
                rows.append(json.loads(line))
    return page(rows, total, limit, offset, "rejects")


def _rejects_of(ds: Dataset, import_index: int | None) -> tuple[int, Path | None]:
    """How many rows were rejected, and the file listing them: the dataset's, or one import's."""
    if import_index is None:
        return int(ds.summary().get("rejects") or 0), ds.rejects_path
    imports = ds.imports()
    if not 0 <= import_index < len(imports):
        raise NotFoundError(
            f"dataset {ds.id} has no import {import_index}; it has {len(imports)} (0 to {len(imports) - 1})",
            hint="GET /v1/datasets/{id} lists them under imports, each with its index.",
        )
    entry = imports[import_index]
    return entry["rejects"], Path(entry["rejects_file"]) if entry["rejects_file"] else None


def import_upload(
    path: str, name: str | None, project: str | None = None, label_sep: str | None = None, **files: str | None
) -> dict:
    """Import a file under the data roots (REST and the console's upload) into ``project``
    (``default`` when None; 404 when there is none): a new dataset name joins it, and a name
    another project owns is refused before anything is written (403 naming its owner).
    ``files``: ``valid_path`` and ``test_path``, tables of validation and test rows; ``label_sep``:
    several labels per row (:mod:`aimass.data.multilabel`)."""
    project = project or directory.DEFAULT_PROJECT
    need_project(project)
    files = {k: v for k, v in files.items() if v}
    only_granted_paths({"path": path, **files})
    options = {"name": name, **files} if name else dict(files)
    if label_sep is not None:
        options["label_sep"] = label_sep
    with claims.checked(partial(directory.may_write, project, how="an import")):
        summary = api.import_dataset(path, **options).summary()
    if project != directory.DEFAULT_PROJECT and summary["name"] not in directory.owners("dataset"):
        directory.assign("dataset", summary["name"], project)
    return {**summary, "project": project}


def uploads_page(project: str) -> dict:
    """A project's uploads and the bytes they hold against its share."""
    found = data_uploads.uploads(project)
    held = sum(int(u.get("bytes") or 0) for u in found)
    return {"uploads": found, "project": project, "bytes": held, "limit": data_uploads.project_upload_limit()}


def versions_page(name: str | None, limit: int, offset: int, visible: Visible | None = None) -> dict:
    """One page of model versions (of ``name``, or all); ``visible`` as for :func:`datasets_page`."""
    keep = browse.keeping(visible, "model")
    rows, total = browse.versions(name or None, limit, offset, keep)
    out = [{k: v for k, v in r.to_dict().items() if k not in ("path", "params")} for r in rows]
    return page(out, total, *browse.clamp(limit, offset), "versions")


def version(ref: str, engine: Engine) -> dict:
    """One version: lineage, params, metrics, evaluation, its pictures, aliases and services."""
    info = api.show_model(ref)
    folder = Path(info.pop("path"))
    # a folder removed by hand leaves the record: shown as it is, saying its files are gone
    info["files_missing"] = not folder.is_dir()
    info["pictures"] = (
        [] if info["files_missing"] else sorted(p.name for p in folder.iterdir() if p.suffix in PICTURES)
    )
    info["aliases"] = sorted(a for a, v in registry.aliases(info["name"]).items() if v == info["version"])
    info["deployed_in"] = deployed_in(engine, info["ref"])
    info["parent_deleted"] = registry.deleted_on(info.get("parent"))  # lineage kept, parent gone
    info["checkpoints"] = [] if info["files_missing"] else _checkpoints(folder, info["ref"])
    return info


def delete_version(ref: str, engine: Engine, force: bool = False) -> dict:
    """Delete a version unless a service serves it (here, or in ``serving.json``: what a restart
    would serve) or, without ``force``, an alias points at it."""
    served: dict[str, list[str]] = {}
    for service in engine.services.values():
        for d in service.deployments:
            served.setdefault(d.ref, []).append(service.name)
    for name, rows in (persisted() or {}).items():
        for row in rows:
            served.setdefault(str(row.get("ref")), []).append(name)
    return api.delete_model(ref, served=served, force=force)


def _checkpoints(folder: Path, ref: str) -> list[dict]:
    """A language model's adapters kept at earlier epochs' ends (``REF:ckpt-step-N``, which answer
    by that name), with the validation scores of their steps."""
    try:
        fitted = json.loads((folder / "model.json").read_text()).get("fitted") or {}
    except (OSError, ValueError, AttributeError):
        return []
    kept = fitted.get("checkpoints_") or [] if isinstance(fitted, dict) else []
    return [
        {"model": f"{ref}:ckpt-step-{c['step']}", **c} for c in kept if isinstance(c, dict) and "step" in c
    ]


def compare(a: str, b: str, engine: Engine) -> dict:
    """Two versions side by side (see :func:`aimass.api.compare_models`), with where each is served."""
    found = api.compare_models(a, b)
    for side in ("a", "b"):
        found[side]["deployed_in"] = deployed_in(engine, found[side]["ref"])
    return found


def export_zip(ref: str, fmt: str) -> tuple[Path, str]:
    """Version ``ref`` exported as ``fmt`` (see :mod:`aimass.exporters`), zipped: (the zip, its
    download name ``NAME-vVERSION-FORMAT.zip``). Refused (413) past ``AIMASS_MAX_EXPORT_BYTES``
    (default 2 GiB) of files; the caller deletes the zip once sent."""
    record = registry.get_version(ref)
    stem = f"{record.name}-v{record.version}-{fmt}"  # a model name is [A-Za-z0-9._-]: safe as is
    work = paths.subdir("tmp") / f"export-{uuid.uuid4().hex[:12]}"
    try:
        api.export(record.ref, fmt, work / stem)
        files = sorted(p for p in (work / stem).rglob("*") if p.is_file() and not p.is_symlink())
        size, most = sum(p.stat().st_size for p in files), export_limit()
        if size > most:
            raise TooLargeError(
                f"The {fmt} export of {record.ref} is {size / MIB:.0f} MiB, over the download limit of "
                f"{most / MIB:.0f} MiB.",
                hint=f"Export on the server instead (`aimass export {record.ref} --format {fmt}`), "
                "or raise AIMASS_MAX_EXPORT_BYTES.",
            )
        packed = work / f"{stem}.zip"
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for path in files:
                zf.write(path, f"{stem}/{path.relative_to(work / stem).as_posix()}")
        shutil.rmtree(work / stem)
        return packed, f"{stem}.zip"
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def export_limit() -> int:
    """Most bytes of files an export download may hold (``AIMASS_MAX_EXPORT_BYTES``)."""
    return int(limit("AIMASS_MAX_EXPORT_BYTES", MAX_EXPORT_BYTES, None))


def zip_response(packed: Path, filename: str) -> FileResponse:
    """The zip as a download; its folder is removed once it is sent."""
    cleanup = BackgroundTask(shutil.rmtree, packed.parent, ignore_errors=True)
    return FileResponse(packed, media_type="application/zip", filename=filename, background=cleanup)


def deployed_in(engine: Engine, ref: str) -> list[str]:
    return sorted(s.name for s in engine.services.values() if any(d.ref == ref for d in s.deployments))


def picture_response(path: Path) -> FileResponse:
    """A picture as an inert PNG: never sniffed as another type, nothing in it may run or load."""
    return FileResponse(path, media_type="image/png", headers=INERT)


def picture(ref: str, file: str) -> Path:
    record = registry.get_version(ref)
    folder = Path(record.path)
    names = {p.name for p in folder.iterdir() if p.suffix in PICTURES}
    if file not in names:
        raise NotFoundError(
            f"{record.ref} has no picture {file!r}; it has {sorted(names) or 'none'}.",
            hint=f"GET /v1/versions/{record.ref} lists them under 'pictures'.",
        )
    return folder / file


def set_alias(ref: str, alias: str, force: bool = False) -> dict:
    record = registry.set_alias(ref, alias, force=force)
    return {"ref": record.ref, "alias": alias}


# ---------------------------------------------------------------- routes
def add_data_routes(app: FastAPI, engine: Engine, allow: Callable, visible: Callable) -> None:
    """Add the routes; ``allow(scope)`` is the dependency that checks the caller's key and
    ``visible(caller)`` what a list shows it (kind, names -> the names it may read)."""
    manage = [allow("manage")]

    @app.post(UPLOAD_PATH, tags=["datasets"], dependencies=manage, status_code=201, openapi_extra=UPLOAD_BODY)
    async def upload(
        request: Request,
        project: str | None = Query(
            None, max_length=64, description="the project to import it into (decides who may upload)"
        ),
    ):
        """Keep a data file or archive under AIMASS_HOME/uploads; answers the ``path`` to import."""
        await asyncio.to_thread(need_project, project)
        file = await one_upload(request)
        try:
            return await asyncio.to_thread(store_upload, file.file, file.filename, project)
        finally:
            await file.close()

    @app.get(UPLOAD_PATH, tags=["datasets"], dependencies=manage)
    async def uploads(
        project: str | None = Query(None, max_length=64, description="the project (default: 'default')"),
    ):
        """The project's kept uploads, oldest first, with the bytes they hold against its share
        (``AIMASS_MAX_PROJECT_UPLOAD_BYTES``)."""
        await asyncio.to_thread(need_project, project)
        return await asyncio.to_thread(uploads_page, project or directory.DEFAULT_PROJECT)

    @app.delete(UPLOAD_PATH + "/{upload_id}", tags=["datasets"], dependencies=manage)
    async def delete_upload(upload_id: str):
        """Delete an upload (a dataset imported from it keeps its own copy), freeing its bytes."""
        return await asyncio.to_thread(data_uploads.delete_upload, upload_id)

    @app.post("/v1/datasets", tags=["datasets"], dependencies=manage, status_code=201)
    async def import_data(body: ImportRequest):
        """Import (check, split, store) a file or folder under the data roots: the import report."""
        files = {"valid_path": body.valid_path, "test_path": body.test_path}
        return await asyncio.to_thread(
            partial(import_upload, body.path, body.name, body.project, body.label_sep, **files)
        )

    @app.get("/v1/datasets", tags=["datasets"])
    async def datasets(
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=10**9),
        caller: Caller = allow("manage"),
    ):
        """Datasets the caller may read, newest first."""
        return await asyncio.to_thread(datasets_page, limit, offset, visible(caller))

    @app.get("/v1/datasets/{dataset_id}", tags=["datasets"], dependencies=manage)
    async def dataset(dataset_id: str):
        return await asyncio.to_thread(dataset_report, dataset_id)

    @app.delete("/v1/datasets/{dataset_id}", tags=["datasets"], dependencies=manage)
    async def delete_dataset(dataset_id: str, force: bool = False):
        """Delete a dataset (by whole id or name) and the upload it came from. 409 while a job that
        has not ended names it, or while versions trained on it are registered (unless ``force``:
        they stay, their lineage saying the dataset was deleted). A later reference says when."""
        return await asyncio.to_thread(api.delete_dataset, dataset_id, force=force)

    @app.get("/v1/datasets/{dataset_id}/rejects", tags=["datasets"], dependencies=manage)
    async def rejects(
        dataset_id: str,
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=10**9),
        import_index: int | None = Query(
            None, alias="import", ge=0, le=10**6, description="one import's rejects (its index in imports)"
        ),
    ):
        """Rejected rows, with their file, line and reason: the dataset's first import's, or with
        ``?import=N`` those of its import N (an import of data stored already reports its own)."""
        return await asyncio.to_thread(rejects_page, dataset_id, limit, offset, import_index)

    @app.get("/v1/datasets/{dataset_id}/issues", tags=["datasets"], dependencies=manage)
    async def issues(dataset_id: str):
        """The last issues report of this dataset version (likely label errors, near-duplicates across
        splits, hard examples), written by `aimass data issues` or a job of kind ``issues``."""
        return await asyncio.to_thread(issues_report, dataset_id)

    @app.get("/v1/datasets/{dataset_id}/issues/files/{file}", tags=["datasets"], dependencies=manage)
    async def report_file(dataset_id: str, file: str):
        """A file of the last issues report: ``issues.csv`` (every flagged row) or an image
        dataset's ``issues.png`` (the flagged images, each titled with its label and the suggested
        one)."""
        path = await asyncio.to_thread(issues_file, dataset_id, file)
        return FileResponse(path, filename=path.name if path.suffix == ".csv" else None, headers=INERT)

    @app.post("/v1/datasets/{dataset_id}/fix", tags=["datasets"], dependencies=manage, status_code=201)
    async def fix(dataset_id: str, body: FixRequest):
        """A new version of the dataset with the rows its last issues report flags dropped or
        relabelled (all, or ``rows``); the parent stays. 404 when no report was made for it yet."""
        return await asyncio.to_thread(fix_from_report, dataset_id, body)

    @app.get("/v1/versions", tags=["models"])
    async def versions(
        name: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=10**9),
        caller: Caller = allow("manage"),
    ):
        """Registered versions the caller may read, newest first (every model, or ``name``'s)."""
        return await asyncio.to_thread(versions_page, name, limit, offset, visible(caller))

    @app.get("/v1/versions/compare", tags=["models"])
    async def compare_versions(a: str, b: str, caller: Caller = allow("manage")):
        """Two versions side by side: lineage, params, metrics, per-class F1 and size, each row
        with ``same`` (and ``delta`` = b - a for numbers). Both must be readable (404 otherwise).
        (A model named ``compare`` is reached as ``compare:N`` here.)"""
        await asyncio.to_thread(readable_versions, visible(caller), a, b)
        return await asyncio.to_thread(compare, a, b, engine)

    @app.get("/v1/versions/{ref}", tags=["models"], dependencies=manage)
    async def show_version(ref: str):
        return await asyncio.to_thread(version, ref, engine)

    @app.delete("/v1/versions/{ref}", tags=["models"], dependencies=manage)
    async def delete(ref: str, force: bool = False):
        """Delete a version: its record, its folder and (with ``force``) the aliases pointing at it.
        409 while a service serves it (undeploy first) or an alias points at it without ``force``.
        Its children keep their lineage; their parent then reads as deleted."""
        return await asyncio.to_thread(delete_version, ref, engine, force)

    @app.get(
        "/v1/versions/{ref}/export",
        tags=["models"],
        dependencies=manage,
        response_class=FileResponse,
        responses={200: {"content": {"application/zip": {}}}},
    )
    async def export(
        ref: str,
        fmt: str = Query(
            "onnx",
            alias="format",
            description="onnx or safetensors; a language model: safetensors, gguf or gguf-f16",
        ),
    ):
        """The version as a self-contained folder (``aimass export``), zipped: ``NAME-vN-FORMAT.zip``."""
        async with EXPORTS:
            packed, filename = await asyncio.to_thread(export_zip, ref, fmt)
        return zip_response(packed, filename)

    @app.get("/v1/versions/{ref}/files/{file}", tags=["models"], dependencies=manage)
    async def version_picture(ref: str, file: str):
        """An evaluation picture (confusion matrix, per-class scores, ...) as PNG."""
        return picture_response(await asyncio.to_thread(picture, ref, file))

    @app.put("/v1/versions/{ref}/aliases/{alias}", tags=["models"], dependencies=manage)
    async def alias(ref: str, alias: str, force: bool = False):
        """Point ``alias`` (e.g. ``production``) at this version."""
        return await asyncio.to_thread(set_alias, ref, alias, force)

    @app.delete("/v1/versions/{ref}/aliases/{alias}", tags=["models"], dependencies=manage)
    async def unalias(ref: str, alias: str):
        """Remove ``alias`` from the model ``ref`` names (``NAME``, or ``NAME:VERSION`` when the
        alias must name that version: a 409 if it names another)."""
        return await asyncio.to_thread(registry.remove_alias, ref, alias)


EXPORTS = asyncio.Semaphore(1)  # one export at a time: each loads the model and converts it


async def one_upload(request: Request) -> UploadFile:
    """The one data file of an upload request."""
    return await one_file(
        request,
        what="the data",
        kinds="CSV, TSV, JSONL, .zip, .tar or .tar.gz",
        example="curl -F file=@reviews.csv -H 'Authorization: Bearer KEY' .../v1/uploads",
    )


def upload_body_limit() -> int:
    """Bytes the server reads of an upload request: the file plus its multipart framing."""
    return upload_limit() + 64 * 1024


UPLOAD_BODY = FILE_BODY
