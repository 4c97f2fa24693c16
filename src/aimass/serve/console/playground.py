"""The playground: chat with a served generation model, its answer streamed as it is generated.

The page's script (``static/playground.js``, vendored with the console: no CDN, no build) posts the
OpenAI request body it shows as curl and openai-python to ``playground/chat``. That route checks the
form's CSRF token, decides the request exactly as its REST twin ``POST /v1/chat/completions`` (the
access policy's rule on the body's ``model``, the key's rate limit) and answers what that route
answers, Server-Sent Events included: both call :class:`~aimass.serve.openai_routes.Generation`.
The session cookie is never taken as an API key by the REST routes.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request

from aimass.errors import ConfigError
from aimass.serve.console.core import Console
from aimass.serve.engine import Engine
from aimass.serve.openai_routes import Generation, chat_models

CHAT_PATH = "/v1/chat/completions"


def add_playground(router: APIRouter, console: Console, engine: Engine, generation: Generation) -> None:
    @router.get("/playground")
    async def playground(request: Request, model: str = ""):
        ctx = console.ctx(request)
        models = sorted(await asyncio.to_thread(console.visible, ctx, "model", chat_models(engine)))
        chosen = model if model in models else (models[0] if models else "")
        base = str(request.base_url).rstrip("/")
        return console.page(request, "playground.html", ctx, models=models, chosen=chosen, base=base)

    @router.post("/playground/chat")
    async def chat(request: Request):
        ctx = console.ctx(request, spend=False)  # its twin's check spends the rate limit
        form = await console.form(request, ctx)
        body = str(form.get("body") or "")
        twin = ctx.scope("POST", CHAT_PATH, _json(body))  # the rule reads the body's model
        caller = console.guard.check(f"Bearer {ctx.session.key}", "predict", twin)
        return await generation.chat(caller, body.encode())


def _json(body: str) -> dict:
    try:
        payload = json.loads(body)
    except ValueError:
        raise ConfigError(
            "The playground sent a body that is not JSON.", hint="Reload the page and send again."
        ) from None
    return payload if isinstance(payload, dict) else {}
