"""What every console page shares: templates, the signed-in caller, CSRF, relative links, errors.

Links and redirects are relative to the page (``../jobs``), never absolute, so the console works
behind a reverse proxy under any path prefix. A page without a session redirects to sign-in; an
:class:`~aimass.errors.AimassError` becomes an HTML page (or an htmx fragment) with the same
status and the same message and hint as the REST answer.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from aimass.access import directory
from aimass.errors import AimassError, NotFoundError, PermissionDenied
from aimass.serve.access_guard import twin_scope
from aimass.serve.auth import Caller, Guard, require
from aimass.serve.console.sessions import COOKIE, Session, Sessions

log = logging.getLogger("aimass.serve")
PREFIX = "/console"
HERE = Path(__file__).parent
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
PAGE_SIZE = 25
NAV = {  # template -> the navigation entry it belongs to
    "start.html": "start",
    "report.html": "start",
    "jobs.html": "jobs",
    "job.html": "jobs",
    "models.html": "models",
    "model.html": "models",
    "compare.html": "models",
    "services.html": "services",
    "service.html": "services",
    "datasets.html": "datasets",
    "dataset.html": "datasets",
    "keys.html": "keys",
    "webhooks.html": "webhooks",
    "stores.html": "stores",
    "store.html": "stores",
    "served.html": "try",
    "try.html": "try",
    "playground.html": "playground",
}


# scripts only from the console's own files (no inline script, no eval: a string that slipped past
# the templates' escaping still runs nothing); styles may be inline (bar widths, chart swatches)
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class SignInNeeded(Exception):
    """No valid session: the page answers a redirect to sign-in."""


@dataclass
class Ctx:
    """The signed-in caller of one request."""

    session: Session
    caller: Caller
    client: tuple | None = None
    scheme: str = "http"
    request_id: str = ""

    def can(self, scope: str) -> bool:
        """What the page offers (links, buttons); the server decides by :meth:`Console.authorize`."""
        return scope in self.caller.scopes

    def need(self, scope: str) -> None:
        require(self.caller, scope, why="this console action needs")

    def scope(self, method: str, path: str, body: dict | None = None) -> dict:
        """The ASGI scope the REST twin ``method path`` would have, as the access guard reads it."""
        return twin_scope(method, path, self.client, self.scheme, self.request_id, body)


def rest(template: str, *parts: str) -> str:
    """A REST path with each ``{}`` filled by one path segment, quoted (so it stays one segment).
    A part that could not be one segment of a real route (empty, ``/``, ``..``) names nothing: 404,
    before any rule is looked for.

    >>> rest("/v1/vector_stores/{}/files/{}", "vs_1", "file-2")
    '/v1/vector_stores/vs_1/files/file-2'
    >>> rest("/v1/vector_stores/{}/files/{}", "vs_1", "a/b")
    Traceback (most recent call last):
    ...
    aimass.errors.NotFoundError: Nothing is named 'a/b'...
    """
    for part in map(str, parts):
        if part in ("", ".", "..") or "/" in part:
            raise NotFoundError(
                f"Nothing is named {part[:200]!r}.", hint="The console's lists show what there is."
            )
    return template.format(*(quote(str(p), safe=":@") for p in parts))


def root(request: Request) -> str:
    """The relative path from this page to the console's root, e.g. ``../`` from ``/console/jobs/x``."""
    rest = request.url.path[len(PREFIX) + 1 :] if request.url.path.startswith(PREFIX + "/") else ""
    return "../" * rest.count("/") or "./"


class Console:
    """The console's state: the key guard, the sessions and the page renderer."""

    def __init__(self, guard: Guard):
        self.guard, self.sessions = guard, Sessions()

    # ------------------------------------------------------------ who
    def ctx(self, request: Request, *, spend: bool = True) -> Ctx:
        """The signed-in caller; :class:`SignInNeeded` without a session or once the key is revoked.
        Each request spends one of the key's rate limit as a REST request does (429 past it);
        ``spend=False`` where the page spends it by deciding its REST twin itself."""
        session_id = request.cookies.get(COOKIE)
        session = self.sessions.get(session_id)
        if session is None:
            raise SignInNeeded
        caller = self.guard.identify(f"Bearer {session.key}")
        if caller is None:  # revoked since sign-in
            self.sessions.close(session_id)
            raise SignInNeeded
        request.state.key_id = caller.key_id
        if spend:
            self.guard.spend(caller)
        client = tuple(request.client) if request.client else None
        state = request.scope.get("state") or {}
        where = caller.at({"client": client, "scheme": request.url.scheme})  # what conditions read
        return Ctx(session, where, client, request.url.scheme, str(state.get("request_id", "")))

    def authorize(
        self, ctx: Ctx, method: str, path: str, body: dict | None = None, scope: str = "manage"
    ) -> None:
        """Decide a console action exactly as its REST twin ``method path`` is decided: by the access
        policies (same rule, same audit row, same 403 naming the denying statement, or 404 for what
        the caller may not even read); by the key's ``scope`` only without an access guard. A path
        no rule names is refused (every REST route has a rule: such a path names nothing)."""
        request = ctx.scope(method, path, body)
        policy = self.guard.policy
        found = policy.rule(request) if policy is not None else None
        if policy is None:
            ctx.need(scope)
        elif found is None:
            raise NotFoundError(
                f"Nothing is at {path[:200]!r}.", hint="The console's lists show what there is."
            )
        else:
            policy.authorize(ctx.caller, request, found, source="console")

    def may(self, ctx: Ctx, method: str, path: str, body: dict | None = None, scope: str = "manage") -> bool:
        """Whether to offer an action (a button, a form): whether :meth:`authorize` would allow its
        REST twin ``method path``, decided without an audit row. The action is decided again."""
        request = ctx.scope(method, path, body)
        policy = self.guard.policy
        if policy is None:
            return ctx.can(scope)
        found = policy.rule(request)
        return found is not None and policy.allows(ctx.caller, request, found)

    def projects(self, ctx: Ctx, method: str, path: str, body: dict) -> list[str]:
        """The projects a form offers (``default`` first): those where :meth:`may` allows the REST
        twin ``method path`` with ``body`` plus ``"project"``. The submit is decided again."""
        names = [p["name"] for p in directory.list_projects()]
        names = [directory.DEFAULT_PROJECT] + [n for n in names if n != directory.DEFAULT_PROJECT]
        return [n for n in names if self.may(ctx, method, path, {**body, "project": n})]

    def visible(self, ctx: Ctx, kind: str, names) -> set[str]:
        """Which of ``names`` the caller may read: what a list shows."""
        names = set(names)
        return names if self.guard.policy is None else self.guard.policy.visible(ctx.caller, kind, names)

    def lister(self, ctx: Ctx):
        """What a paged list shows the caller, for the page functions: (kind, names) -> the names
        it may read; None (all) without an access guard."""
        return None if self.guard.policy is None else functools.partial(self.guard.policy.visible, ctx.caller)

    def readable(self, ctx: Ctx, kind: str, name: str) -> None:
        """404, like a missing one, unless the caller may read ``name``."""
        if name not in self.visible(ctx, kind, [name]):
            raise NotFoundError(f"No {kind} '{name}'.", hint="The console's lists show what you may use.")

    async def form(self, request: Request, ctx: Ctx, *, max_files: int = 0, max_fields: int = 64):
        """The POSTed form, after its CSRF token is checked (403 when missing or wrong)."""
        form = await request.form(max_files=max_files, max_fields=max_fields)
        token = form.get("csrf") or request.headers.get("x-csrf-token")
        if not ctx.session.valid_csrf(token if isinstance(token, str) else None):
            raise PermissionDenied(
                "The form's CSRF token is missing or wrong.",
                hint="Reload the page and send the form again (tokens change at each sign-in).",
            )
        return form

    # ------------------------------------------------------------ what
    def page(
        self, request: Request, template: str, ctx: Ctx | None, status: int = 200, **values
    ) -> HTMLResponse:
        notes = ctx.session.notes if ctx else {}
        html = TEMPLATES.get_template(template).render(
            root=root(request),
            ctx=ctx,
            csrf=ctx.session.csrf if ctx else values.pop("csrf", ""),
            flash=notes.pop("flash", None),
            nav=NAV.get(template, ""),
            **values,
        )
        headers = {
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": PAGE_POLICY,
        }
        return HTMLResponse(html, status_code=status, headers=headers)

    def redirect(
        self, request: Request, to: str, flash: str | None = None, ctx: Ctx | None = None
    ) -> Response:
        """303 to ``to`` (relative to the console's root), with a one-time message."""
        if flash and ctx is not None:
            ctx.session.notes["flash"] = flash
        if request.headers.get("hx-request"):  # htmx follows this with a full page load
            return Response(status_code=204, headers={"HX-Redirect": root(request) + to})
        return RedirectResponse(root(request) + to, status_code=303)


class ConsoleRoute(APIRoute):
    """Console routes answer HTML: sign-in redirects and error pages instead of JSON."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                return RedirectResponse(root(request) + "signin", status_code=303)
            except AimassError as exc:
                return error_page(request, exc)

        return route


def error_page(request: Request, exc: AimassError) -> HTMLResponse:
    status = exc.http_status if exc.http_status != 500 else 500
    message = exc.message if status != 500 else "Something went wrong on the server; its log has the details."
    if status == 500:
        log.exception("console error", exc_info=exc)
    template = "error_fragment.html" if request.headers.get("hx-request") else "error.html"
    html = TEMPLATES.get_template(template).render(
        root=root(request), ctx=None, csrf="", status=status, message=message, hint=exc.hint, code=exc.code
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def pages(total: int, offset: int, limit: int = PAGE_SIZE) -> dict:
    """Pager values for a template: previous/next offsets (None at an end) and the range shown."""
    return {
        "total": total,
        "first": min(total, offset + 1),
        "last": min(total, offset + limit),
        "prev": max(0, offset - limit) if offset > 0 else None,
        "next": offset + limit if offset + limit < total else None,
    }
