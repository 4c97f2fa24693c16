"""The server's outer layer, as plain ASGI (cheaper per request than Starlette's
``BaseHTTPMiddleware``): request ids, the hard body limit, JSON access logs, response counts."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.responses import JSONResponse

from aimass.errors import AimassError, TooManyRequests

log = logging.getLogger("aimass.serve")
access = logging.getLogger("aimass.access")


def error_body(code: str, message: str, hint: str | None, request_id: str) -> dict:
    return {"error": {"code": code, "message": message, "hint": hint, "request_id": request_id}}


def error_response(exc: AimassError, request_id: str) -> JSONResponse:
    """An :class:`AimassError` as its HTTP answer (internal errors stay a plain 500)."""
    status = exc.http_status if exc.http_status < 500 or exc.http_status in (503, 504) else 500
    headers = None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(round(exc.retry_after))}
    elif status == 503:
        headers = {"Retry-After": "1"}
    elif status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    body = error_body(exc.code, exc.message, exc.hint, request_id)
    return JSONResponse(body, status_code=status, headers=headers)


class RequestLog:
    """Gives every request an id (``X-Request-ID`` in, or a new one; echoed back), refuses bodies
    over ``max_body`` before routing, turns unexpected errors into a plain 500, and logs one
    JSON line per request."""

    def __init__(self, app, metrics, max_body: int):
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"")[:64].decode("latin-1") or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        status = [0]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        length = headers.get(b"content-length", b"")
        try:
            if length.isdigit() and int(length) > self.max_body:
                message = f"The request body is {int(length)} bytes; the limit is {self.max_body}."
                body = error_body(
                    "body_too_large", message, "Send fewer or smaller inputs per request.", request_id
                )
                await JSONResponse(body, status_code=413)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:  # never a traceback to the client
            log.exception("request %s failed", request_id)
            if not status[0]:
                body = error_body("internal_error", "Internal server error.", None, request_id)
                await JSONResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            self._log(scope, request_id, status[0] or 500, time.perf_counter() - began)

    def _log(self, scope, request_id: str, status: int, seconds: float) -> None:
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
            access.info(json.dumps(line))
