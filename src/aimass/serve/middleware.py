"""The server's outer layer, as plain ASGI (cheaper per request than Starlette's
``BaseHTTPMiddleware``): request ids, body limits on the byte stream, authentication before any
body is read, JSON access logs, response counts."""

from __future__ import annotations

import json
import logging
import math
import time
import uuid

from sqlalchemy.exc import OperationalError
from starlette.responses import JSONResponse

from aimass.errors import (
    AimassError,
    QuotaExceeded,
    TooLargeError,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("aimass.serve")
access = logging.getLogger("aimass.access")


# OpenAI's error ``type`` for each code, so its clients raise their own exception types
OPENAI_TYPES = {
    "unauthenticated": "authentication_error",
    "permission_denied": "permission_error",
    "not_found": "not_found_error",
    "too_many_requests": "rate_limit_error",
    "insufficient_quota": "insufficient_quota",
    "internal_error": "server_error",
    "unavailable": "server_error",
    "timeout": "server_error",
}


class FiniteJSONResponse(JSONResponse):
    """The routes' JSON: a float that is not finite (a NaN score of a few-shot fit, kept in a job's
    result) is written as ``null``, as JSON has no NaN; Starlette's refuses it, a 500 for the whole
    answer.

    >>> FiniteJSONResponse({"f1": float("nan"), "n": [1.5, float("inf")]}).body
    b'{"f1":null,"n":[1.5,null]}'
    """

    def render(self, content) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # only then walk it: the common answer pays nothing
            return super().render(_finite(content))


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def error_body(code: str, message: str, hint: str | None, request_id: str, status: int = 400) -> dict:
    """The one error shape: aimass's code, message, hint and request id, plus OpenAI's type and param
    (a code it does not list is ``server_error`` for a ``status`` of 500 up, as clients retry those).

    >>> error_body("worker_restarting", "The model restarts.", None, "r1", 503)["error"]["type"]
    'server_error'
    """
    kind = OPENAI_TYPES.get(code, "server_error" if status >= 500 else "invalid_request_error")
    return {
        "error": {
            "code": code,
            "message": message,
            "hint": hint,
            "request_id": request_id,
            "type": kind,
            "param": None,
        }
    }


def error_response(exc: AimassError, request_id: str) -> JSONResponse:
    """An :class:`AimassError` as its HTTP answer (internal errors stay a plain 500)."""
    status = exc.http_status if exc.http_status < 500 or exc.http_status in (503, 504, 507) else 500
    headers = None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(round(exc.retry_after))}
    elif isinstance(exc, QuotaExceeded):  # asking again before the reset is pointless: say so to clients
        headers = {"Retry-After": str(round(exc.retry_after)), "x-should-retry": "false"}
    elif status == 503:
        headers = {"Retry-After": "1"}
    elif status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    body = error_body(exc.code, exc.message, exc.hint, request_id, status)
    return JSONResponse(body, status_code=status, headers=headers)


class RequestLog:
    """Gives every request an id of the server's (``X-Request-ID`` out: the id the audit log and
    errors name, so no caller can file rows under another request's id); a client's own id
    (``X-Client-Request-Id`` or ``X-Request-ID`` in, as OpenAI's clients send) is echoed back as
    ``X-Client-Request-Id`` when it is printable ASCII of at most 64 characters, and logged. Caps the body
    at ``body_limit(path)`` bytes as it streams in (Content-Length or chunked: one byte over and
    the request is answered 413 and the rest is never read), turns unexpected errors into a plain
    500, and logs one JSON line per request."""

    def __init__(self, app, metrics, body_limit):
        self.app, self.metrics, self.body_limit = app, metrics, body_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = uuid.uuid4().hex[:16]
        theirs = client_request_id(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        status = [0]
        limit = self.body_limit(scope["path"])
        received, capped = [0], [False]

        async def send_own(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                ids = [(b"x-request-id", request_id.encode())]
                if theirs:
                    ids.append((b"x-client-request-id", theirs.encode()))
                message["headers"] = [*message.get("headers", []), *ids]
            await send(message)

        async def send_with_id(message):
            if not capped[0]:  # after a 413 on the stream, what the app still says is dropped
                await send_own(message)

        async def capped_receive():
            message = await receive()
            if message["type"] == "http.request" and not capped[0]:
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    capped[0] = True
                    if not status[0]:
                        await _answer(body_too_large(received[0], limit), request_id, scope, send_own)
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        length = headers.get(b"content-length", b"")
        try:
            if length.isdigit() and int(length) > limit:
                await _answer(body_too_large(int(length), limit), request_id, scope, send_own)
            else:
                await self.app(scope, capped_receive, send_with_id)
        except Exception as exc:  # never a traceback to the client
            busy = database_busy(exc)
            if busy is not None and not status[0]:  # another process holds the database: retry later
                log.warning("request %s: %s", request_id, exc)
                await error_response(busy, request_id)(scope, receive, send_own)
                return
            if not capped[0]:  # (a capped body makes the app fail on purpose: nothing to log)
                log.exception("request %s failed", request_id)
            if not status[0]:
                body = error_body("internal_error", "Internal server error.", None, request_id)
                await JSONResponse(body, status_code=500)(scope, receive, send_own)
        finally:
            self._log(scope, request_id, status[0] or 500, time.perf_counter() - began, theirs)

    def _log(self, scope, request_id: str, status: int, seconds: float, theirs: str | None = None) -> None:
        self.metrics.responses.labels(str(status)).inc()
        if access.isEnabledFor(logging.INFO):
            client = scope.get("client")
            line = {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ms": round(seconds * 1000, 2),
                "client": client[0] if client else None,
                "key": scope["state"].get("key_id"),
            }
            if theirs:
                line["client_request_id"] = theirs
            access.info(json.dumps(line))


def database_busy(exc: BaseException) -> Unavailable | None:
    """A 503 for SQLite's "database is locked" (another process held a write past the busy
    timeout): the request may be sent again in a moment, and nothing is wrong with it. None for
    any other error (a bare 500 once said the server was broken)."""
    if isinstance(exc, OperationalError) and "database is locked" in str(exc):
        return Unavailable(
            "The database is busy: another process has been writing to it for over 10 seconds.",
            hint="Send the request again in a few seconds.",
        )
    return None


def client_request_id(headers: dict) -> str | None:
    """The client's own request id, when it is printable ASCII of 1 to 64 characters.

    >>> client_request_id({b"x-request-id": b"req-42"}), client_request_id({b"x-request-id": b"a\\nb"})
    ('req-42', None)
    """
    raw = headers.get(b"x-client-request-id") or headers.get(b"x-request-id") or b""
    return raw.decode("ascii") if 0 < len(raw) <= 64 and all(32 < c < 127 for c in raw) else None


def body_too_large(size: int, limit: int) -> TooLargeError:
    return TooLargeError(
        f"The request body is over {limit} bytes (at least {size}), the limit for this route.",
        hint="Send fewer or smaller inputs per request.",
    )


async def _answer(exc: AimassError, request_id: str, scope, send) -> None:
    async def nothing():  # the answer never reads the body
        return {"type": "http.disconnect"}

    await error_response(exc, request_id)(scope, nothing, send)


KEYED_OUTSIDE_V1 = ("/tokenize", "/detokenize", "/rerank", "/v2/rerank", "/score")  # vLLM's, Cohere's


class AuthGate:
    """Refuses a ``/v1/`` (or vLLM's ``/tokenize``) request without a known key (401) before any
    of its body is read.

    Scopes, rate limits and the ``open_predict`` exception are checked again, per route, by the
    route's own dependency; this layer only makes sure that nobody without a valid key can make
    the server read (and buffer, and parse) a body. With ``open_predict`` the ``/v1/models``
    routes and the prediction routes of :attr:`OPEN_PREDICT` pass without a key (or with one that
    is unknown, such as the ``EMPTY`` an OpenAI client sends): their dependency answers for the
    anonymous caller, as for ``/v1/models/{name}/predict``."""

    OPEN_PREDICT = (  # POST routes whose dependency is ``allow("predict")``
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/rerank",
        "/v1/score",
        *KEYED_OUTSIDE_V1,
    )

    def __init__(self, app, guard):
        self.app, self.guard = app, guard

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith("/v1/") or path in KEYED_OUTSIDE_V1):
            return await self.app(scope, receive, send)
        if self.guard.open_predict and (
            path == "/v1/models"
            or path.startswith("/v1/models/")
            or (scope.get("method") == "POST" and path in self.OPEN_PREDICT)
        ):
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization")
        if self.guard.identify(header.decode("latin-1") if header else None) is None:
            exc = Unauthenticated(
                "This endpoint needs an API key." if not header else "The API key is unknown or revoked.",
                hint="Send 'Authorization: Bearer <key>'; create one with `aimass keys create`.",
            )
            return await _answer(exc, scope.get("state", {}).get("request_id", ""), scope, send)
        return await self.app(scope, receive, send)
