"""OpenAI's webhook endpoints API over :mod:`aimass.jobs.webhooks`: ``/v1/webhook_endpoints``
(create, list, retrieve, update, delete, ``rotate_secret``, ``test``), ``/v1/webhook_event_types``,
and aimass's ``GET /v1/webhook_endpoints/{id}/deliveries`` (what was sent, and how it went)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from aimass.errors import ConfigError
from aimass.jobs import webhooks
from aimass.serve.jobs_routes import cursor_page
from aimass.serve.openai_errors import bad_param, json_body, list_page, parse_body

PATH = "/v1/webhook_endpoints"


class EndpointRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field("", max_length=200)
    url: str = Field(max_length=2000, description="where the events are POSTed (http or https)")
    event_types: list[str] = Field(max_length=64, description="GET /v1/webhook_event_types lists them")


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(None, max_length=200)
    url: str | None = Field(None, max_length=2000)
    event_types: list[str] | None = Field(None, max_length=64)


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    keep_old_secret_active_for_24_hours: bool = False


class TestRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_type: str = Field(max_length=64)


async def _call(function, *args, **kwargs):
    """``function`` off the event loop; a bad field is OpenAI's 400 naming it."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except ConfigError as exc:
        raise bad_param(exc.where, exc.message + (f" {exc.hint}" if exc.hint else "")) from None


def add_webhook_routes(app: FastAPI, allow) -> None:
    manage = [allow("manage")]

    @app.get("/v1/webhook_event_types", tags=["openai"], dependencies=manage)
    async def event_types():
        return {"object": "list", "data": webhooks.EVENT_TYPES}

    @app.post(PATH, tags=["openai"])
    async def create(request: Request, caller=allow("manage")):
        """A new endpoint; the answer's ``signing_secret`` is shown this once."""
        body = parse_body(EndpointRequest, await json_body(request))
        return await _call(webhooks.create, body.name, body.url, body.event_types, caller.key_id)

    # an endpoint is its creator's (their key, another key of the same user) and the operator's:
    # another caller sees none of it (webhooks.mine), whatever its policies allow on webhooks
    @app.get(PATH, tags=["openai"])
    async def list_endpoints(
        limit: int = Query(20, ge=1, le=100),
        after: str | None = Query(None, max_length=64),
        caller=allow("manage"),
    ):
        found = await asyncio.to_thread(webhooks.list_endpoints, caller.key_id)
        return list_page(cursor_page(found, after, None), limit)

    @app.get(PATH + "/{webhook_id}", tags=["openai"])
    async def show(webhook_id: str, caller=allow("manage")):
        return webhooks.view(await asyncio.to_thread(webhooks.mine, webhook_id, caller.key_id))

    @app.post(PATH + "/{webhook_id}", tags=["openai"])
    async def change(webhook_id: str, request: Request, caller=allow("manage")):
        body = parse_body(EndpointUpdate, await json_body(request))
        await asyncio.to_thread(webhooks.mine, webhook_id, caller.key_id)
        return await _call(webhooks.change, webhook_id, **body.model_dump())

    @app.delete(PATH + "/{webhook_id}", tags=["openai"])
    async def remove(webhook_id: str, caller=allow("manage")):
        await asyncio.to_thread(webhooks.mine, webhook_id, caller.key_id)
        return await asyncio.to_thread(webhooks.remove, webhook_id)

    @app.post(PATH + "/{webhook_id}/rotate_secret", tags=["openai"])
    async def rotate(webhook_id: str, request: Request, caller=allow("manage")):
        body = parse_body(RotateRequest, await json_body(request) or b"{}")
        await asyncio.to_thread(webhooks.mine, webhook_id, caller.key_id)
        return await asyncio.to_thread(webhooks.rotate, webhook_id, body.keep_old_secret_active_for_24_hours)

    @app.post(PATH + "/{webhook_id}/test", tags=["openai"])
    async def test(webhook_id: str, request: Request, caller=allow("manage")):
        """Send a sample event now; the endpoint's status code (a 422 if nothing answered)."""
        body = parse_body(TestRequest, await json_body(request))
        await asyncio.to_thread(webhooks.mine, webhook_id, caller.key_id)
        return await _call(webhooks.test, webhook_id, body.event_type)

    @app.get(PATH + "/{webhook_id}/deliveries", tags=["openai"])
    async def deliveries(webhook_id: str, limit: int = Query(50, ge=1, le=500), caller=allow("manage")):
        """aimass: the endpoint's latest deliveries, newest first (status, attempts, last answer)."""
        await asyncio.to_thread(webhooks.mine, webhook_id, caller.key_id)
        return {"object": "list", "data": await asyncio.to_thread(webhooks.deliveries, webhook_id, limit)}
