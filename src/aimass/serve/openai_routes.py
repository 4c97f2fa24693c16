"""OpenAI-compatible routes on the same server, keys and metering: ``POST /v1/chat/completions``,
``POST /v1/completions``, ``POST /v1/embeddings`` (:mod:`aimass.serve.openai_embeddings`) and the
OpenAI fields of ``GET /v1/models``. ``logprobs`` come in OpenAI's shapes
(:mod:`aimass.serve.openai_logprobs`); ``response_format: json_object`` decodes under a JSON grammar
(:mod:`aimass.llm.json_mode`), ``json_schema`` under the request's JSON Schema (:mod:`aimass.llm.structured`).

A model id is a served version (``headlines:2``), a service name (``headlines``: its traffic split
picks the version) or the base model of a served fine-tune (``smollm2-135m``). Every LoRA version is
an adapter on one shared copy of its base (:mod:`aimass.llm.hub`).

Errors on these routes have OpenAI's shape and status codes (:mod:`aimass.serve.openai_errors`).

Requests decode by continuous batching (:mod:`aimass.llm.batcher`): a new request joins the running
batch at the next decode step, and a streamed request whose client disconnects leaves it at once.
``AIMASS_LLM_BATCHING=0`` decodes one request at a time instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from aimass.errors import AimassError, ConfigError, NotFoundError
from aimass.llm.hub import HUB, context_limit
from aimass.serve import openai_logprobs, openai_responses, openai_tools
from aimass.serve.llm_adapters import Adapters
from aimass.serve.llm_slots import Slots, configured_limit
from aimass.serve.middleware import error_body
from aimass.serve.openai_embeddings import add_embedding_routes, embedding_models
from aimass.serve.openai_errors import OpenAIError, bad_param, json_body, model_not_served, parse_body
from aimass.serve.openai_requests import (
    DEFAULT_MAX_TOKENS,
    ChatRequest,
    CompletionRequest,
    output_of,
    tools_of,
    unsupported,
)
from aimass.serve.rerank_routes import add_rerank_routes
from aimass.serve.tokenize_routes import add_tokenize_routes
from aimass.serve.vector_store_routes import metered_search
from aimass.store import registry

ROOM_MARGIN = 16  # tokens kept for the template of a message added to a prompt
log = logging.getLogger("aimass.serve")


def _is_generator(deployment) -> bool:
    return getattr(deployment.spec, "name", "") == "text-generation"


def openai_models(engine) -> list[dict]:
    """``GET /v1/models`` in OpenAI's shape: every served version, the bases of fine-tunes, and the
    latest version of every registered fine-tune (answered without a deployment)."""
    out, seen = [], set()
    for service in engine.services.values():
        for d in service.deployments:
            if d.ref in seen:
                continue
            seen.add(d.ref)
            created = epoch_seconds(getattr(d.record, "created", None))
            out.append(
                {
                    "id": d.ref,
                    "object": "model",
                    "created": created,
                    "owned_by": "aimass",
                    "task": d.record.task,
                }
            )
    for name in HUB.names():
        if name not in seen:
            out.append(
                {"id": name, "object": "model", "created": 0, "owned_by": "aimass", "task": "text-generation"}
            )
    for record in registry.latest_versions():  # fine-tunes answer by name without a deployment
        if record.task == "text-generation" and record.ref not in seen:
            created = epoch_seconds(record.created)
            out.append(
                {
                    "id": record.ref,
                    "object": "model",
                    "created": created,
                    "owned_by": "aimass",
                    "task": record.task,
                }
            )
    return out + embedding_models(engine)


def chat_models(engine) -> list[str]:
    """The model ids that chat (served generation versions, their services and the bases of served
    fine-tunes): what the console's playground offers, before each caller's access is applied."""
    ids = set(HUB.names())
    for service in engine.services.values():
        generators = [d for d in service.deployments if _is_generator(d)]
        ids.update(d.ref for d in generators)
        if generators and service.state == "ready":
            ids.add(service.name)
    return sorted(ids)


def epoch_seconds(stamp) -> int:
    """A stored ISO time as OpenAI's ``created_at`` (seconds since 1970; 0 when unreadable)."""
    try:
        return int(datetime.fromisoformat(str(stamp)).timestamp())
    except ValueError:
        return 0


def _batched() -> tuple[int, int]:
    """(sequences decoding, requests waiting) of the continuous batcher; (0, 0) while it is not
    loaded (no language model has decoded yet, so a server without one never imports torch)."""
    loaded = sys.modules.get("aimass.llm.batcher")
    return loaded.totals() if loaded is not None else (0, 0)


class _Target:
    """What a model id resolves to: a fine-tuned model (its adapter on the shared base) or a base alone."""

    def __init__(self, ref: str, model=None, base=None, adapters=None):
        self.ref, self.model = ref, model
        self.base = model.base_ if model is not None else base
        self.adapter = model.adapter_ if model is not None else None
        self.adapters = adapters  # a registered fine-tune answered without a deployment: held while decoding

    def check_length(self, prompt, *, raw: bool, max_tokens: int) -> int:
        """The prompt's tokens; 400 ``context_length_exceeded`` before any work when the prompt plus
        ``max_tokens`` is over the context the server allows (the model's, at most
        ``AIMASS_LLM_MAX_CONTEXT``, default 4,096): attention over a huge prompt would hold a CPU and
        its memory for minutes."""
        from aimass.llm import decode  # torch: loaded by the first language-model request

        tokenizer = self.base.tokenizer
        if raw and isinstance(prompt, list):  # token ids: each must be one of the vocabulary's
            vocab = len(tokenizer)
            wrong = next((t for t in prompt if not 0 <= t < vocab), None)
            if wrong is not None:
                raise bad_param(
                    "prompt", f"Token id {wrong} is not in this model's vocabulary (0 to {vocab - 1})."
                )
        ids = decode.text_ids(tokenizer, prompt) if raw else decode.chat_ids(tokenizer, prompt)
        if not ids:  # nothing to continue: the model cannot prefill zero tokens
            raise bad_param("prompt", "The prompt is empty: send at least one token of text.")
        limit = context_limit(self.base.model)
        if len(ids) + max_tokens > limit:
            raise bad_param(
                "prompt" if raw else "messages",
                f"This model's context is {limit} tokens; the request has {len(ids)} prompt tokens and "
                f"asks for {max_tokens} more. Shorten the prompt or lower max_tokens.",
                code="context_length_exceeded",
            )
        return len(ids)

    def constraint(self, output: tuple[str, Any] | None, param: str = "response_format.json_schema.schema"):
        """The decoding constraint asked for (:func:`~aimass.serve.openai_requests.output_of`): None,
        any JSON object (:mod:`aimass.llm.json_mode`), or a JSON Schema, a regular expression or a
        list of choices (:mod:`aimass.llm.structured`; 400 naming what cannot be compiled, before any
        work)."""
        if output is None:
            return None
        from aimass.llm import decode, json_mode

        kind, value = output
        tokenizer = self.base.tokenizer
        eos = decode.eos_ids(self.base.model, tokenizer)
        if kind == "json_object":
            return json_mode.json_object(tokenizer, eos)
        from aimass.llm import structured  # llguidance: the llm extra, as the generation models

        build = {"json": structured.json_schema, "regex": structured.regex, "choice": structured.choice}[kind]
        try:
            return build(tokenizer, eos, value)
        except ConfigError as exc:
            error = bad_param(param, exc.message)
            error.hint = exc.hint
            raise error from None

    def generate(self, prompt, *, raw: bool, on_delta=None, cancelled=None, **kwargs):
        """Decode in the shared continuous batch (or one request at a time, ``AIMASS_LLM_BATCHING=0``);
        ``kwargs``: :class:`~aimass.llm.decode.SamplingParams`, its ``constraint`` from :meth:`constraint`."""
        with self._held():
            return self._generate(prompt, raw, on_delta, cancelled, kwargs)

    def check_scoring(self) -> None:
        """400 for ``echo`` with ``logprobs`` on an int4 base (``--llm-quant int4``): its graph computes
        the logits of a prompt's last position only, and scoring the prompt in fp32 instead would
        mix two models' numbers in one answer."""
        if getattr(self.base, "int4", None) is not None:
            raise bad_param(
                "echo",
                "echo with logprobs is not supported on an int4 model: serve it without --llm-quant int4 "
                "to score prompts, or leave out logprobs.",
                "unsupported_parameter",
            )

    def score(self, prompt, top: int) -> list:
        """A legacy prompt's tokens with their logprobs and ``top`` alternatives (``echo``): one
        forward pass through the model and adapter that answer the request
        (:func:`~aimass.llm.decode.prompt_logprobs`)."""
        from aimass.llm import decode

        with self._held():
            ids = decode.text_ids(self.base.tokenizer, prompt)
            decode.set_threads()
            with self.base.using(self.adapter) as model:
                return decode.prompt_logprobs(model, ids, top)

    def _held(self):
        """A fine-tune answered without a deployment held attached while the block runs."""
        return self.adapters.lease(self.ref) if self.adapters is not None else contextlib.nullcontext()

    def _generate(self, prompt, raw: bool, on_delta, cancelled, kwargs):
        from aimass.llm import batcher, decode

        tokenizer = self.base.tokenizer
        ids = decode.text_ids(tokenizer, prompt) if raw else decode.chat_ids(tokenizer, prompt)
        params = decode.SamplingParams(**kwargs)
        if params.max_tokens == 0:  # an echoed prompt only scored: nothing to decode
            choices = [decode.Choice(i, finish_reason="length") for i in range(params.n)]
            return decode.Generation(choices, len(ids), 0)
        if batcher.enabled() or getattr(self.base, "int4", None) is not None:  # int4: always its loop
            return batcher.scheduler(self.base, self.adapter).submit(
                ids, params, self.adapter, on_delta=on_delta, cancelled=cancelled
            )
        decode.set_threads()
        with self.base.using(self.adapter) as model:
            return decode.generate(model, tokenizer, ids, params, on_delta=on_delta, cancelled=cancelled)


def _resolve(engine, name: str, adapters: Adapters | None = None) -> _Target:
    """A base model, a served generation model, or (``adapters``) a registered fine-tune that is
    not deployed, its adapter attached on first use (:mod:`aimass.serve.llm_adapters`)."""
    if name in HUB.names():
        return _Target(name, base=HUB.base(name))
    try:
        if registry.split_checkpoint(name)[1] is not None:  # an epoch's checkpoint: never deployed
            raise NotFoundError(name)
        deployment = engine.route(name)
    except NotFoundError:
        found = adapters.find(name) if adapters is not None else None
        if found is not None:
            return _Target(found[0], model=found[1], adapters=adapters)
        raise model_not_served(name) from None
    if not _is_generator(deployment):
        raise bad_param("model", f"'{name}' is a {deployment.record.task} model; it does not generate text.")
    return _Target(deployment.ref, model=deployment.handler.model)


class LLMMetrics:
    """Prometheus collectors of generation, in the server's registry: tokens, time to first token,
    decode speed, and sequences decoding / waiting for a slot in the continuous batch."""

    def __init__(self, registry):
        from prometheus_client import Counter, Gauge, Histogram

        self.tokens = Counter(
            "aimass_llm_tokens",
            "Tokens processed, by model and kind (prompt/completion).",
            ["model", "kind"],
            registry=registry,
        )
        self.ttft = Histogram(
            "aimass_llm_time_to_first_token_seconds",
            "Seconds from a request's arrival in the batcher to its first token.",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )
        self.speed = Histogram(
            "aimass_llm_decode_tokens_per_second",
            "Completion tokens per second of each request.",
            ["model"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=registry,
        )
        active = Gauge(
            "aimass_llm_active_sequences", "Sequences in the running decode batches.", registry=registry
        )
        active.set_function(lambda: _batched()[0])
        waiting = Gauge(
            "aimass_llm_waiting_requests", "Requests waiting for a batch slot.", registry=registry
        )
        waiting.set_function(lambda: _batched()[1])

    def observe(self, model: str, out) -> None:
        self.tokens.labels(model, "prompt").inc(out.prompt_tokens)
        self.tokens.labels(model, "completion").inc(out.completion_tokens)
        self.ttft.labels(model).observe(out.first_token_s)
        if out.seconds > 0:
            self.speed.labels(model).observe(out.completion_tokens / out.seconds)


class Generation:
    """Chat and completions over the served generation models: what ``POST /v1/chat/completions``
    and ``POST /v1/completions`` answer, and what the console's playground streams (one place for
    parsing, streaming, stop strings, usage, metering and the live figures).

    ``await generation.chat(caller, body)`` -> the answer (a dict, or a Server-Sent Events response
    for ``stream: true``); the caller was checked by the route (or the console) before."""

    def __init__(self, engine, meter):
        self.engine = engine
        self.meters = (meter, LLMMetrics(engine.metrics.registry))
        self.slots = Slots(configured_limit())  # generations' own threads (not the loop's 6)
        self.adapters = Adapters()  # fine-tunes answered by name without a deployment

    async def chat(self, caller, body: bytes):
        return await self._counted(body, self._chat(caller, body))

    async def complete(self, caller, body: bytes):
        return await self._counted(body, self._complete(caller, body))

    async def _chat(self, caller, body: bytes):
        req = parse_body(ChatRequest, body)
        messages = [m.turn() for m in req.messages]
        limit = req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS
        tools = tools_of(req)
        if tools is None:
            return await _answer(
                self, caller, req, [messages], limit, chat=True, output=output_of(req, messages)
            )
        schema = openai_tools.forced(tools, req.tool_choice)
        return await _answer(
            self,
            caller,
            req,
            [openai_tools.render(messages, tools)],
            limit,
            chat=True,
            output=("json", schema) if schema else None,
            tools={t.function.name for t in tools},
        )

    async def _complete(self, caller, body: bytes):
        req = parse_body(CompletionRequest, body)
        unsupported(req)
        limit = 16 if req.max_tokens is None else req.max_tokens  # 0: an echoed prompt only scored
        return await _answer(self, caller, req, req.prompts(), limit, chat=False)

    def room(self, model: str, messages: list[dict], max_tokens: int) -> tuple[int, Callable[[str], int]]:
        """(tokens left in ``model``'s context after ``messages``, ``max_tokens`` and a margin for one
        more message's template, a counter of a text's tokens): what a retrieved passage may fill."""
        from aimass.llm import decode

        target = _resolve(self.engine, model, self.adapters)
        tokenizer = target.base.tokenizer
        used = len(decode.chat_ids(tokenizer, messages))
        left = context_limit(target.base.model) - used - max_tokens - ROOM_MARGIN
        return left, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])

    async def _counted(self, body: bytes, work):
        """The answer, counted in the live figures of the service the body's ``model`` names (a
        refused request too, as a prediction's; a streamed answer when its stream ends)."""
        began = time.perf_counter()
        try:
            answer = await work
        except AimassError:
            self.engine.observe(model_named(body), time.perf_counter() - began, error=True)
            raise
        if isinstance(answer, dict):
            tokens = answer["usage"]["completion_tokens"]
            self.engine.observe(model_named(body), time.perf_counter() - began, tokens=tokens)
        return answer


def model_named(body: bytes) -> str:
    """The ``model`` a request body names, or "" (not JSON, no model)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    return str(payload.get("model") or "") if isinstance(payload, dict) else ""


def add_openai_routes(app: FastAPI, engine, allow, meter, twin=None) -> Generation:
    """Register the routes. ``allow(scope)``: the server's key check (401/403/429) as a dependency;
    ``twin(request, caller, method, path)``: decide another route for the caller (the stores a
    ``file_search`` tool names). Returns the :class:`Generation` they call (the console's
    playground calls it too)."""
    generation = Generation(engine, meter)

    async def searched(request: Request, caller, store_id: str, query: str, options: dict) -> dict:
        """A vector store searched for a ``file_search`` tool, decided as its own search route."""
        if twin is not None:
            await asyncio.to_thread(twin, request, caller, "POST", f"/v1/vector_stores/{store_id}/search")
        return await metered_search(meter, caller, store_id, query, options)

    add_embedding_routes(app, engine, allow, meter)
    add_rerank_routes(app, engine, allow, meter)
    add_tokenize_routes(app, allow, lambda name: _resolve(engine, name, generation.adapters))

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError):
        request_id = getattr(request.state, "request_id", "")
        body = error_body(exc.code, exc.message, exc.hint, request_id, exc.http_status)
        body["error"].update(type=exc.type, param=exc.param, code=exc.openai_code)
        return JSONResponse(body, status_code=exc.http_status)

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(request: Request, caller=allow("predict")):
        """OpenAI's chat completions: messages in, choices out (``stream`` for Server-Sent Events)."""
        return await unless_gone(request, generation.chat(caller, await json_body(request)))

    @app.post("/v1/responses", tags=["openai"])
    async def responses(request: Request, caller=allow("predict")):
        """OpenAI's Responses API: ``input`` (text or items) in, ``output`` items out; not stored."""
        search = partial(searched, request, caller)
        body = await json_body(request)
        return await unless_gone(request, openai_responses.answer(generation, caller, body, search))

    @app.post("/v1/completions", tags=["openai"])
    async def completions(request: Request, caller=allow("predict")):
        """OpenAI's (legacy) completions: a raw text prompt, continued without a chat template."""
        return await unless_gone(request, generation.complete(caller, await json_body(request)))

    return generation


GONE_POLL_S = 0.25  # how often a plain request looks whether its client is still there


async def unless_gone(request: Request, work):
    """``work``'s answer, or a 499 once the client has hung up: the work is cancelled then, so a
    plain (not streamed) request stops decoding at its next token instead of holding its rows of
    the shared batch for its ``max_tokens`` (vLLM's ``with_cancellation``). uvicorn does not cancel
    a handler whose client left; a stream notices by itself when it writes."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=GONE_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return Response(status_code=499)
    finally:
        task.cancel()  # the handler itself cancelled (a shutdown): the work goes with it


async def _answer(generation, caller, req, prompts, max_tokens: int, *, chat: bool, output=None, tools=None):
    """The answer (or its stream) to ``prompts`` (a chat's one list of messages; a legacy
    completion's texts or token ids, choice ``i * n + j`` being prompt ``i``'s ``j``-th, as OpenAI
    numbers them); ``output``: the constraint asked for; ``tools``: the names of the
    tools the model may call, whose calls the answer reads (:mod:`aimass.serve.openai_tools`).
    A key held to a quota holds the request's prompt and ``max_tokens`` while it runs
    (:class:`~aimass.serve.metering.Hold`): a stream releases it when its generation ends."""
    hold = await generation.meters[0].admit(caller.key_id, 0)  # grown to the prompt and max_tokens
    try:
        answer = await _answer_held(generation, caller, req, prompts, max_tokens, hold, chat, output, tools)
    except BaseException:
        hold.release()
        raise
    if not req.stream:
        hold.release()
    return answer


async def _answer_held(generation, caller, req, prompts, max_tokens: int, hold, chat: bool, output, tools):
    engine, meters, slots = generation.engine, generation.meters, generation.slots
    target = await asyncio.to_thread(_resolve, engine, req.model, generation.adapters)  # may attach

    # without max_tokens the answer may fill what the context leaves, up to the default (as vLLM);
    # only a prompt with no room for one token is a 400 then
    given = req.max_tokens is not None or getattr(req, "max_completion_tokens", None) is not None

    def lengths():  # every prompt checked before any work
        return [target.check_length(p, raw=not chat, max_tokens=max_tokens if given else 1) for p in prompts]

    counted = await asyncio.to_thread(lengths)
    echo = not chat and req.echo  # a legacy prompt sent back before its completion
    if echo and req.logprobs is not None:
        target.check_scoring()
    if not given:
        max_tokens = max(1, min(max_tokens, context_limit(target.base.model) - max(counted)))
    prompt_tokens = sum(counted)
    hold.grow(
        prompt_tokens + max_tokens * req.n * len(prompts)
    )  # 429 if the key's other requests fill its quota
    if not chat:
        output = req.guided()
    param = (
        "tools"
        if tools
        else (f"guided_{output[0]}" if req.guided() else "response_format.json_schema.schema")
    )
    constraint = await asyncio.to_thread(target.constraint, output, param)  # a bad one: 400 before any work
    kwargs = {
        "max_tokens": max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "stop": req.stops(),
        "n": req.n,
        "logprobs": req.logprob_count(),
        "constraint": constraint,
        "logit_bias": req.biases(len(target.base.tokenizer)),
        "frequency_penalty": req.frequency_penalty,
        "presence_penalty": req.presence_penalty,
    }

    def shaped():  # the vocabulary's token bytes are built once per tokenizer (~0.1 s): off the event loop
        texts = [None if chat else _prompt_text(target, p) for p in prompts]
        count = kwargs["logprobs"]
        return texts, [_logprob_shape(target, count, None if t is None else len(t)) for t in texts]

    texts, shapes = await asyncio.to_thread(shaped)
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    kind = "chat.completion" if chat else "text_completion"
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        live = (engine, req.model)  # where the request counts in the live figures
        head = (ident, created, shapes, tools)
        return _stream(target, slots, meters, caller, prompts, kwargs, head, chat, include_usage, live, hold)
    began = time.perf_counter()
    gone = threading.Event()  # set when the await ends, cancelled too (a shutdown past its grace)

    echoed = [()] * len(prompts)  # echo with logprobs: each prompt's own entries

    def work(i: int, prompt):  # metered where it ends: a client that hung up is charged what was decoded
        if echo and kwargs["logprobs"] is not None:
            echoed[i] = target.score(prompt, kwargs["logprobs"])
        out = target.generate(prompt, raw=not chat, cancelled=gone.is_set, **kwargs)
        _record(meters, caller, target.ref, out, began, requests=int(i == 0))
        return out

    with engine.metrics.recent.running(target.ref):
        try:  # every prompt decodes in the same continuous batch, on a slot of its own
            outs = await asyncio.gather(
                *slots.start_all([partial(work, i, p) for i, p in enumerate(prompts)])
            )
        finally:
            gone.set()  # decoding stops at the next token, not after max_tokens
    choices = [
        {
            "index": c.index,
            **_message(c.text, c.finish_reason, tools, forced=constraint is not None),
            "logprobs": shapes[0](c.logprobs),
        }
        if chat
        else {
            "index": i * req.n + c.index,
            "text": (texts[i] if echo else "") + c.text,
            "logprobs": shapes[i](c.logprobs, echoed[i]),
            "finish_reason": c.finish_reason,
        }
        for i, out in enumerate(outs)
        for c in out.choices
    ]
    return {
        "id": ident,
        "object": kind,
        "created": created,
        "model": target.ref,
        "system_fingerprint": None,
        "choices": choices,
        "usage": _usage(outs),
    }


def _message(text: str, reason: str | None, tools: set[str] | None, forced: bool = False) -> dict:
    """A chat choice's ``message`` and ``finish_reason``: the calls of known tools read out of the
    text (``finish_reason`` ``tool_calls``) when the model may call any. A forced call (with tools,
    a constraint is ``tool_choice``'s) is read as its stream is (:func:`openai_tools.answer`)."""
    if tools and forced:
        return openai_tools.answer(text, tools, reason, forced=True)
    content, calls = openai_tools.parse_calls(text, tools) if tools else (text, [])
    if not calls:
        return {"message": {"role": "assistant", "content": text}, "finish_reason": reason}
    message = {"role": "assistant", "content": content, "tool_calls": calls}
    return {"message": message, "finish_reason": "tool_calls"}


def _record(meters, caller, ref: str, out, began: float, requests: int = 1) -> None:
    """Metering (per key: prompt + completion tokens as items; ``requests``: 0 for a request's
    second prompt on) and the generation metrics."""
    meter, metrics = meters
    items = out.prompt_tokens + out.completion_tokens
    meter.add(caller.key_id, ref, items, (time.perf_counter() - began) * 1000, requests)
    metrics.observe(ref, out)


def _logprob_shape(target: _Target, count: int | None, prompt_chars: int | None):
    """``entries -> choices[].logprobs``: None when not asked for, else OpenAI's chat shape (or the
    legacy completions shape, whose offsets count from the prompt's start; ``echoed``: an echoed
    prompt's entries, listed first)."""
    if count is None:
        return lambda entries, echoed=(): None
    tokens = openai_logprobs.Tokens(target.base.tokenizer)
    if prompt_chars is None:
        return lambda entries: openai_logprobs.chat(tokens, entries)
    return lambda entries, echoed=(): openai_logprobs.legacy(tokens, entries, prompt_chars, echoed)


def _prompt_text(target: _Target, prompt) -> str:
    """A legacy prompt as text: what ``echo`` sends back, and where its completion's ``text_offset``
    starts (its length in characters)."""
    return prompt if isinstance(prompt, str) else target.base.tokenizer.decode(prompt)


def _usage(outs: list) -> dict:
    prompt = sum(out.prompt_tokens for out in outs)
    completion = sum(out.completion_tokens for out in outs)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _stream(target, slots, meters, caller, prompts, kwargs, head, chat, include_usage, live, hold):
    ident, created, shapes, tools = (
        head  # the answer's id and time; entries -> logprobs (per prompt); tool names
    )
    readers: dict[int, tuple[openai_tools.ToolStream, list]] = {}  # with tools: each choice's reader
    engine, name = live  # the request counts in the live figures of the service ``name`` names
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    n = kwargs["n"]
    running = [len(prompts), 0, False]  # prompts decoding, tokens decoded, whether one failed
    lock, started = threading.Lock(), time.perf_counter()

    def on_delta(first: int, index: int, text: str, reason: str | None, entries) -> None:
        try:  # ``first``: the prompt's first choice (prompt i's choice j is i * n + j)
            loop.call_soon_threadsafe(queue.put_nowait, ("delta", first + index, text, reason, entries))
        except RuntimeError:  # the loop is closed (a shutdown past its grace): stop decoding
            stop.set()

    def ended(tokens: int, failed: bool) -> None:
        """A prompt's end; the last one counts the request in the live figures and frees its hold."""
        with lock:
            running[0] -= 1
            running[1] += tokens
            running[2] = running[2] or failed
            last = running[0] == 0
        if last:
            engine.observe(name, time.perf_counter() - started, tokens=running[1], error=running[2])
            hold.release()

    def run(i: int, prompt):
        began, out = time.perf_counter(), None
        try:
            with engine.metrics.recent.running(target.ref):
                out = target.generate(
                    prompt, raw=not chat, on_delta=partial(on_delta, i * n), cancelled=stop.is_set, **kwargs
                )
            _record(meters, caller, target.ref, out, began, requests=int(i == 0))
            loop.call_soon_threadsafe(queue.put_nowait, ("done", out))
        except BaseException as exc:  # reported in the stream, never a traceback
            log.exception("generation failed for %s", target.ref)
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        finally:
            ended(out.completion_tokens if out is not None else 0, out is None)

    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict], usage=None) -> str:
        body = {
            "id": ident,
            "object": chunk_kind,
            "created": created,
            "model": target.ref,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    forced = bool(tools) and kwargs["constraint"] is not None  # tool_choice: a call, never content

    async def events():
        try:
            if chat:  # the first chunk of each choice names the role
                yield chunk(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": None if forced else ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                        for i in range(n)
                    ]
                )
            outs = []
            while True:
                item = await queue.get()
                if item[0] == "delta":
                    _, index, text, reason, entries = item
                    if tools:  # content streams as it comes; each call goes out when its block closes
                        reader, pending = readers.setdefault(
                            index, (openai_tools.ToolStream(tools, forced=forced), [])
                        )
                        pending.extend(entries or [])  # logprobs ride on the next chunk sent
                        deltas, finish = reader.feed(text), None
                        if reason is not None:
                            more, finish = reader.finish(reason)
                            deltas += more
                        for delta in deltas + ([{}] if reason is not None else []):
                            logprobs = shapes[0](pending) if pending else None
                            pending.clear()
                            last = not delta
                            yield chunk(
                                [
                                    {
                                        "index": index,
                                        "delta": delta,
                                        "logprobs": logprobs,
                                        "finish_reason": finish if last else None,
                                    }
                                ]
                            )
                        continue
                    logprobs = shapes[index // n](entries)
                    if chat:
                        delta = {"content": text} if text else {}
                        yield chunk(
                            [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}]
                        )
                    else:
                        yield chunk(
                            [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}]
                        )
                elif item[0] == "done":
                    outs.append(item[1])
                    if len(outs) < len(prompts):
                        continue
                    if include_usage:
                        yield chunk([], _usage(outs))
                    break
                else:
                    error = {"message": "The model failed while generating; the server log has the details."}
                    error.update(type="server_error", param=None, code=None)
                    yield f"data: {json.dumps({'error': error})}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            stop.set()  # a client that went away frees the model at the next token

    # started now, so a full server is a 429 before any byte is sent; a response never sent (the
    # client left first) cancels the generation when its body is collected
    slots.start_all([partial(run, i, p) for i, p in enumerate(prompts)])  # outcomes travel through the queue
    body = events()
    weakref.finalize(body, stop.set)
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
