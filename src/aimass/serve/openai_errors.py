"""Errors and body parsing shared by the OpenAI-compatible routes.

Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` (plus aimass's ``hint``
and ``request_id``) and OpenAI's status codes: 400 for a bad parameter where the rest of the server
answers 422, so the official ``openai`` client raises its own exception types.
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from aimass.errors import AimassError


class OpenAIError(AimassError):
    """An error answered in OpenAI's shape, with its status, type, param and code."""

    def __init__(
        self, status: int, message: str, *, type: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.http_status, self.type, self.param, self.openai_code = status, type, param, code

    @property
    def code(self) -> str:  # aimass's stable code = OpenAI's code
        return self.openai_code or self.type


def model_not_found(model_id: str) -> OpenAIError:
    """``GET /v1/models/{id}`` for an id that is not served, or that the caller may not read."""
    error = OpenAIError(
        404,
        f"The model '{model_id}' does not exist or you do not have access to it.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )
    error.hint = "GET /v1/models lists the ids."
    return error


def model_not_served(name: str) -> OpenAIError:
    """A generation route's ``model`` that nothing serves here, or that the caller may not read (no
    list of the served ones: ``GET /v1/models`` shows those the caller may use)."""
    return OpenAIError(
        404,
        f"The model '{name}' does not exist or is not served here; GET /v1/models lists the models "
        "you may use.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def list_page(found: list[dict], limit: int) -> dict:
    """OpenAI's list object: the first ``limit`` of ``found`` (what comes after the cursor)."""
    data = found[:limit]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {
        "object": "list",
        "data": data,
        "has_more": len(found) > limit,
        "first_id": first,
        "last_id": last,
    }


def bad_param(param: str | None, message: str, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, type="invalid_request_error", param=param, code=code)


FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")  # their rules read the query


async def json_body(request) -> bytes:
    """The body of a route that reads a JSON object, whatever its ``Content-Type`` says, except a
    form (415): the access rules read a form's query, not its body (an upload's body is not
    buffered for them), so a JSON body sent as a form would be decided on names the route never
    reads (a store in ``default`` while the route adds another project's file)."""
    if request.headers.get("content-type", "").strip().lower().startswith(FORMS):
        raise OpenAIError(
            415,
            "This route reads a JSON object; a form body is not read.",
            type="invalid_request_error",
            code="unsupported_media_type",
        )
    return await request.body()


SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # what a body must hold to carry one


def unpaired(value, where: str = "") -> str | None:
    """Where in a parsed JSON value a string (or key) holds a lone surrogate, which no tokenizer
    or database takes (a 500 before), else None.

    >>> unpaired({"messages": [{"content": "ok"}, {"content": "a\\ud800"}]})
    'messages[1].content'
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "body"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        here = f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else str(key))
        found = unpaired(key, here) if isinstance(key, str) else None
        if (found := found or unpaired(item, here)) is not None:
            return found
    return None


def parse_body(cls, body: bytes):
    """The request body as ``cls`` (a Pydantic model); a 400 naming the field otherwise."""
    try:
        payload = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_param(None, f"The body is not valid JSON: {exc}.", "invalid_json") from None
    except RecursionError:
        raise bad_param(None, "The body is JSON nested too deeply.", "invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_param(None, "The body must be a JSON object.", "invalid_json")
    try:
        where = unpaired(payload) if SURROGATE_ESCAPE.search(body) else None
    except RecursionError:
        raise bad_param(None, "The body is JSON nested too deeply.", "invalid_json") from None
    if where is not None:
        raise bad_param(
            where,
            f"{where} holds a lone surrogate (an unpaired \\ud800-\\udfff escape); send valid Unicode text.",
        )
    try:
        return cls.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = field_path(payload, err.get("loc", ()), err.get("type") == "missing") or None
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise bad_param(param, f"Invalid '{param}': {message}.") from None


def field_path(payload, loc: tuple, missing: bool = False) -> str:
    """The path of the body's field a validation error is about: ``loc``'s steps that lead through
    ``payload``, without the union members' tags pydantic puts between them (``n_epochs`` of
    ``int | "auto"`` fails as ``n_epochs.literal['auto']``); a ``missing`` field's name last.

    >>> field_path({"h": {"n": "x"}}, ("h", "n", "literal['auto']"))
    'h.n'
    >>> field_path({"messages": [{"role": 1}]}, ("messages", 0, "role")), field_path({}, ("model",), True)
    ('messages.0.role', 'model')
    """
    parts, node = [], payload
    for step in loc:
        if isinstance(node, dict) and isinstance(step, str) and step in node:
            parts.append(step)
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            parts.append(str(step))
            node = node[step]
    if missing and loc and (not parts or parts[-1] != str(loc[-1])):
        parts.append(str(loc[-1]))
    return ".".join(parts)
