"""One file from a multipart request: the reader and OpenAPI body shared by the upload routes
(``POST /v1/uploads`` for data, ``POST /v1/jobs/code`` for code archives).

The server cuts each upload's stream at its route's limit (``app.body_limit``) before this reads it.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from aimass.errors import ConfigError

FILE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


async def one_file(request: Request, *, what: str, kinds: str, example: str) -> UploadFile:
    """The one file of a multipart request; a clear 422 when the body is not one.

    ``what``: the upload in words ("the data"); ``kinds``: the files accepted ("CSV, TSV, ...");
    ``example``: a curl line that works (shown in the hint)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ConfigError(f"Send {what} as multipart/form-data with one file.", hint=f"e.g. {example}")
    parser = MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ConfigError(
            f"The multipart body cannot be read: {exc.message}",
            hint=f"Upload exactly one file ({kinds}) in the field 'file', e.g. {example}",
        ) from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise ConfigError("The request has no file.", hint=f"Upload it as a file, e.g. {example}")
    return files[0]
