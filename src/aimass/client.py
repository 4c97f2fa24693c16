"""Talking to a running aimass server from the CLI (or a script).

The server is ``--server URL``, else ``AIMASS_SERVER``, else http://127.0.0.1:8000. Requests
carry ``AIMASS_API_KEY`` if set, else (on the server's own machine) the admin token the
server keeps in ``AIMASS_HOME/admin.token``, so an operator never pastes a secret.
"""

from __future__ import annotations

import os

import httpx

from aimass import paths
from aimass.errors import AimassError, Unavailable

DEFAULT_SERVER = "http://127.0.0.1:8000"


def server_url(server: str | None = None) -> str:
    return (server or os.environ.get("AIMASS_SERVER") or DEFAULT_SERVER).rstrip("/")


def credentials() -> str | None:
    key = os.environ.get("AIMASS_API_KEY")
    if key:
        return key
    token = paths.home() / "admin.token"
    return token.read_text().strip() if token.exists() else None


class RemoteError(AimassError):
    """An error the server answered with; keeps its code, status and hint."""

    def __init__(self, status: int, code: str, message: str, hint: str | None):
        self.http_status, self.code = status, code
        super().__init__(message, hint=hint)


def call(method: str, path: str, *, server: str | None = None, timeout: float = 300.0, **kwargs):
    """One request; the JSON answer, or a :class:`RemoteError` with the server's message."""
    url = server_url(server)
    headers = kwargs.pop("headers", {})
    secret = credentials()
    if secret:
        headers.setdefault("Authorization", f"Bearer {secret}")
    try:
        response = httpx.request(method, url + path, headers=headers, timeout=timeout, **kwargs)
    except httpx.TransportError as exc:
        raise Unavailable(
            f"No aimass server answers at {url} ({type(exc).__name__}).",
            hint="Start one with `aimass serve`, or point --server / AIMASS_SERVER at it.",
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"code": "bad_response", "message": response.text[:500]}}
    if response.status_code >= 400:
        error = body.get("error") or {"message": str(body)}
        raise RemoteError(
            response.status_code, error.get("code", "error"), error.get("message", ""), error.get("hint")
        )
    return body
