"""The files of OpenAI's Batch API: an uploaded input file (``purpose`` ``batch``), checked line
by line when it arrives, and a batch's output and error files, which are its job's. Documents
(``purpose`` ``assistants``, :mod:`aimass.retrieval.files`) share the folder and the id scheme.

An input file lives in ``AIMASS_HOME/files/<id>/`` (``input.jsonl`` and ``file.json``); its id is
``file-`` and 24 hex digits. Each line is one request, as OpenAI's::

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "headlines", "messages": [{"role": "user", "content": "..."}]}}

A line that is not JSON, lacks a field, repeats a ``custom_id``, names another ``url`` than
:data:`ENDPOINTS` or asks to ``stream`` refuses the whole upload with a 400 naming the line and
the field (nothing is kept). Access treats an input file as data: uploading it is
``dataset:Import`` into the project of the upload, reading and deleting it ``dataset:Read`` and
``dataset:Delete`` on ``aimass:project/P/dataset/<id>``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from aimass import paths
from aimass.access import directory
from aimass.errors import InUseError
from aimass.retrieval import files as documents
from aimass.serve.openai_errors import bad_param

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
MAX_REQUESTS = 50_000  # OpenAI's limit on a batch's requests
MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's limit on a batch input file
MAX_LINE_BYTES = 1024 * 1024 + 4096  # one request: a JSON route's body limit, plus its envelope
CUSTOM_ID = 256  # the longest custom_id kept
INPUT_ID = re.compile(r"file-[0-9a-f]{24}")
OUTPUT, ERRORS = "batch_output-", "batch_errors-"  # a batch's output file is OUTPUT + its job id


def is_input(file_id: str) -> bool:
    return bool(INPUT_ID.fullmatch(file_id))


def output_job(file_id: str) -> str | None:
    """The job whose output or error file ``file_id`` is, else None."""
    for prefix in (OUTPUT, ERRORS):
        if file_id.startswith(prefix):
            return file_id[len(prefix) :]
    return None


def folder(file_id: str) -> Path:
    if not is_input(file_id):
        raise documents.missing_file(file_id)
    return paths.home() / "files" / file_id


def store(upload: Path, filename: str, project: str | None) -> dict:
    """Check the uploaded JSONL at ``upload`` and keep it as a batch input file in ``project``;
    its :func:`describe`. A bad line is a 400 naming it (and nothing is kept)."""
    summary = check(upload)
    file_id = f"file-{secrets.token_hex(12)}"
    home = paths.subdir("files") / file_id
    home.mkdir()
    shutil.move(str(upload), home / "input.jsonl")
    info = {
        "id": file_id,
        "filename": filename,
        "bytes": (home / "input.jsonl").stat().st_size,
        "created_at": int(datetime.now(UTC).timestamp()),
        **summary,
    }
    (home / "file.json").write_text(json.dumps(info))
    if project and project != directory.DEFAULT_PROJECT:
        directory.assign("dataset", file_id, project)  # a file is data: its project's policies apply
    return describe(file_id)


def check(path: Path) -> dict:
    """A batch input file's summary, ``{"requests", "endpoints", "models"}``; a 400 naming the first
    bad line and field. One line's parsed body at a time (a whole file's cost ~7x its bytes)."""
    count, endpoints, models = 0, set(), set()
    for request in each(path):
        count += 1
        endpoints.add(request["url"])
        models.add(request["body"]["model"])
    if not count:
        raise bad_param("file", "The file holds no requests: one JSON object per line.", "invalid_file")
    return {"requests": count, "endpoints": sorted(endpoints), "models": sorted(models)}


def each(path: Path):
    """The requests of a batch input file, read one line at a time; a 400 naming the first bad
    line and field (raised when the reader gets there)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise bad_param("file", f"A batch input file is at most {MAX_FILE_BYTES >> 20} MiB.", "too_large")
    seen = {}
    with open(path, encoding="utf-8", errors="strict") as handle:
        try:
            number = count = 0
            while line := handle.readline(MAX_LINE_BYTES + 1):  # a long line is not read whole
                number += 1
                if len(line) > MAX_LINE_BYTES:
                    raise bad_param(
                        "file",
                        f"Line {number} is over {MAX_LINE_BYTES:,} characters: one request a line.",
                        "too_large",
                    )
                if line.strip():
                    count += 1
                    if count > MAX_REQUESTS:
                        raise bad_param(
                            "file", f"A batch holds at most {MAX_REQUESTS:,} requests.", "too_many"
                        )
                    yield _request(line, number, seen)
        except UnicodeDecodeError:
            raise bad_param("file", "The file is not UTF-8 text.", "invalid_file") from None


def _request(line: str, number: int, seen: dict) -> dict:
    where = f"Line {number}"
    try:
        request = json.loads(line)
    except ValueError as exc:
        raise bad_param("file", f"{where} is not JSON: {exc}.", "invalid_json") from None
    except RecursionError:
        raise bad_param("file", f"{where} is JSON nested too deeply.", "invalid_json") from None
    if not isinstance(request, dict):
        raise bad_param("file", f"{where} is not a JSON object.", "invalid_json")
    custom = request.get("custom_id")
    if not isinstance(custom, str) or not custom or len(custom) > CUSTOM_ID:
        raise bad_param("file", f"{where}: custom_id must be a string of 1 to {CUSTOM_ID} characters.")
    if custom in seen:
        raise bad_param("file", f"{where}: custom_id {custom!r} repeats line {seen[custom]}.", "duplicate")
    seen[custom] = number
    if request.get("method") != "POST":
        raise bad_param("file", f'{where}: method must be "POST"; got {request.get("method")!r}.')
    if request.get("url") not in ENDPOINTS:
        raise bad_param(
            "file", f"{where}: url must be one of {', '.join(ENDPOINTS)}; got {request.get('url')!r}."
        )
    body = request.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_param("file", f"{where}: body must be an object with a model.")
    if body.get("stream"):
        raise bad_param("file", f'{where}: a batch\'s answers are not streamed; drop "stream".')
    return {"custom_id": custom, "url": request["url"], "body": body}


def info(file_id: str) -> dict:
    try:
        return json.loads((folder(file_id) / "file.json").read_text())
    except FileNotFoundError:
        raise documents.missing_file(file_id) from None


def describe(file_id: str) -> dict:
    """The input file (or a document, :mod:`aimass.retrieval.files`) as OpenAI's file object."""
    found = info(file_id)
    if documents.is_document(found):
        return documents.describe(found)
    return {
        "id": file_id,
        "object": "file",
        "bytes": found["bytes"],
        "created_at": found["created_at"],
        "filename": found["filename"],
        "purpose": "batch",
        "status": "processed",
        "status_details": f"{found['requests']} requests",
    }


def is_batch_input(file_id: str) -> bool:
    """Whether ``file_id`` is a batch's input file (not a document); 404 for no file."""
    return not documents.is_document(info(file_id))


def requests_of(file_id: str):
    """The input file's requests, one at a time (checked when it was uploaded)."""
    return each(folder(file_id) / "input.jsonl")


def content(file_id: str) -> tuple[bytes, str]:
    """The file as it was sent, and its media type: a batch's requests, or a document's bytes."""
    if documents.is_document(info(file_id)):
        return documents.original(file_id), "application/octet-stream"
    return (folder(file_id) / "input.jsonl").read_bytes(), "application/jsonl"


def listed() -> list[str]:
    """Every input file's id, newest first."""
    root = paths.home() / "files"
    found = [p for p in root.glob("file-*") if is_input(p.name) and (p / "file.json").exists()]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def delete(file_id: str, in_use: list[str]) -> dict:
    """Delete the input file unless a batch that has not ended reads it (``in_use``: those)."""
    home = folder(file_id)
    info(file_id)
    if in_use:
        raise InUseError(
            f"File {file_id} is the input of batch {in_use[0]}, which has not ended.",
            hint="Cancel the batch first (POST /v1/batches/{id}/cancel), or wait for it to end.",
        )
    trash = home.with_name(f".deleted-{file_id}-{os.getpid()}")
    home.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    return {"id": file_id, "object": "file", "deleted": True}
