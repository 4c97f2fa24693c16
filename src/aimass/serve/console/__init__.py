"""The web console at ``/console``: server-rendered pages (Jinja2) and a vendored htmx for the live
parts, served by ``aimass serve`` in the same process. No JavaScript build step, no CDN.

Sign in once with an API key or the admin token; pages then offer what that key's scopes allow,
and the server decides every page and action by the access policies exactly as the REST twin's
(:meth:`~aimass.serve.console.core.Console.authorize`: same rule, 403/404 and audit row). Each
page calls the functions its REST twin calls (``/v1/jobs``, ``/v1/versions``, ``/v1/services``,
``/v1/datasets``, ``/v1/keys``); the playground calls what ``/v1/chat/completions`` calls.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from aimass.serve.auth import Guard
from aimass.serve.console.core import HERE, PREFIX, Console, ConsoleRoute
from aimass.serve.console.documents import add_documents
from aimass.serve.console.hooks import add_webhooks
from aimass.serve.console.manage import add_manage
from aimass.serve.console.playground import add_playground
from aimass.serve.console.store_sharing import add_store_sharing
from aimass.serve.console.wizard import add_wizard
from aimass.serve.engine import Engine
from aimass.serve.metering import Meter
from aimass.serve.openai_routes import Generation
from aimass.serve.predict import Predictor

UPLOAD_PATH = PREFIX + "/start/upload"
TRY_PATH_PREFIX = PREFIX + "/try/"


def is_upload(path: str) -> bool:
    """Whether ``path`` takes a data file: the wizard's upload or a model page's file to label."""
    return path == UPLOAD_PATH or path.startswith(PREFIX + "/models/") and path.endswith("/score")


__all__ = ["TRY_PATH_PREFIX", "UPLOAD_PATH", "add_console", "is_upload"]


def add_console(
    app: FastAPI, engine: Engine, guard: Guard, predictor: Predictor, meter: Meter, generation: Generation
) -> Console:
    """Mount the console's pages under ``/console`` and its static files under ``/console/static``."""
    console = Console(guard)
    router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
    add_wizard(router, console, engine, predictor)
    add_manage(router, console, engine, meter)
    add_webhooks(router, console)
    add_store_sharing(router, console)  # before the documents' /stores/{id} routes
    add_documents(router, console)
    add_playground(router, console, engine, generation)
    app.include_router(router)
    app.mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.get(PREFIX, include_in_schema=False)
    async def console_root(request: Request):
        return RedirectResponse("console/", status_code=307)

    return console
