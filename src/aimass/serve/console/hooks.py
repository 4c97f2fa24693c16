"""The console's Webhooks page: the endpoints job events are POSTed to (create, with its signing
secret shown once; send a test event; delete) and each endpoint's latest deliveries. REST twins:
``/v1/webhook_endpoints`` (:mod:`aimass.serve.webhook_routes`)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from aimass.errors import DataError
from aimass.jobs import webhooks
from aimass.serve.console.core import Console, rest


def add_webhooks(router: APIRouter, console: Console) -> None:
    @router.get("/webhooks")
    async def endpoint_list(request: Request):
        ctx = console.ctx(request)
        console.authorize(ctx, "GET", "/v1/webhook_endpoints")
        found = await asyncio.to_thread(webhooks.list_endpoints, ctx.caller.key_id)
        for endpoint in found:  # each one's deliveries where their REST twin would be allowed
            twin = rest("/v1/webhook_endpoints/{}/deliveries", endpoint["id"])
            shown = console.may(ctx, "GET", twin)
            endpoint["deliveries"] = (
                await asyncio.to_thread(webhooks.deliveries, endpoint["id"], 5) if shown else []
            )
        secret = ctx.session.notes.pop("webhook_secret", None)
        return console.page(
            request, "webhooks.html", ctx, endpoints=found, secret=secret, types=webhooks.EVENT_TYPES
        )

    @router.post("/webhooks")
    async def create(request: Request):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        console.authorize(ctx, "POST", "/v1/webhook_endpoints")
        types = [str(t) for t in form.getlist("event_types")]
        made = await asyncio.to_thread(
            webhooks.create, str(form.get("name") or ""), str(form.get("url") or ""), types, ctx.caller.key_id
        )
        ctx.session.notes["webhook_secret"] = {"id": made["id"], "secret": made["signing_secret"]}
        return console.redirect(request, "webhooks", ctx=ctx)

    @router.post("/webhooks/{webhook_id}/test")
    async def test(request: Request, webhook_id: str):
        ctx = console.ctx(request)
        form = await console.form(request, ctx)
        console.authorize(ctx, "POST", rest("/v1/webhook_endpoints/{}/test", webhook_id))
        kind = str(form.get("event_type") or "job.succeeded")
        await asyncio.to_thread(webhooks.mine, webhook_id, ctx.caller.key_id)
        try:
            sent = await asyncio.to_thread(webhooks.test, webhook_id, kind)
            said = f"Sent a test {kind} to {webhook_id}: it answered {sent['status_code']}."
        except DataError as exc:  # nothing answered: say so on the page, as its REST twin's 422 does
            said = exc.message
        return console.redirect(request, "webhooks", said, ctx)

    @router.post("/webhooks/{webhook_id}/delete")
    async def delete(request: Request, webhook_id: str):
        ctx = console.ctx(request)
        await console.form(request, ctx)
        console.authorize(ctx, "DELETE", rest("/v1/webhook_endpoints/{}", webhook_id))
        await asyncio.to_thread(webhooks.mine, webhook_id, ctx.caller.key_id)
        await asyncio.to_thread(webhooks.remove, webhook_id)
        return console.redirect(request, "webhooks", f"Webhook endpoint {webhook_id} deleted.", ctx)
