"""OpenAI's Responses API (``POST /v1/responses``, the ``openai`` client's ``client.responses``) as a
plug-in over chat completions: the request is rewritten into a chat request, decoded by the same
:class:`~aimass.serve.openai_routes.Generation` (batching, constraints, tools, metering), and the
answer (or its stream) is rewritten into a Response (or Response events).

- ``input``: a string, or a list of messages (``role`` + text or ``input_text`` parts) and of the
  items a tool loop sends back (``function_call``, ``function_call_output``); ``instructions`` is
  the system message. ``text.format`` is ``response_format`` (``text``, ``json_object``,
  ``json_schema``), ``tools`` are function tools, ``tool_choice`` as in chat, and one
  ``file_search`` tool grounds the answer in vector stores (:mod:`aimass.serve.openai_file_search`).
- Nothing is stored: ``store`` is accepted and answered ``false``, ``previous_response_id`` is a
  400 (send the whole conversation in ``input``, as a stateless client does).
- Streamed: ``response.created``, ``response.in_progress``, then per output item ``added``, its text
  deltas (or its call's arguments) and ``done``, then ``response.completed`` with the usage.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Literal

from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aimass.serve import openai_file_search as file_search
from aimass.serve.openai_errors import bad_param, parse_body
from aimass.serve.openai_requests import DEFAULT_MAX_TOKENS, MAX_TOKENS_CAP, drop_nulls


class Format(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Format | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:  # null: the default, as OpenAI takes it
        return drop_nulls(data)

    model: str
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    text: TextConfig | None = None
    stream: bool = False
    previous_response_id: str | None = None
    parallel_tool_calls: bool | None = None
    include: list[str] | None = Field(None, max_length=16)
    metadata: dict[str, str] | None = Field(None, max_length=16)  # echoed in the answer, as OpenAI
    top_logprobs: int | None = Field(None, ge=0, le=20)


def chat_body(req: ResponsesRequest) -> dict:
    """The chat completions request a Responses request means (400 naming what has no equivalent)."""
    if req.previous_response_id:
        raise bad_param(
            "previous_response_id",
            "Responses are not stored here: send the whole conversation in 'input'.",
            "unsupported_parameter",
        )
    if req.top_logprobs:
        raise bad_param("top_logprobs", "top_logprobs is not supported here.", "unsupported_parameter")
    messages = [{"role": "system", "content": req.instructions}] if req.instructions else []
    items = [{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    messages += [_message(item, i) for i, item in enumerate(items)]
    body: dict[str, Any] = {
        "model": req.model,
        "messages": messages,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stream": req.stream,
    }
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    if req.max_output_tokens:
        body["max_tokens"] = req.max_output_tokens
    # a file_search tool runs on every request (openai_file_search): it is not the model's to call
    functions = [(i, t) for i, t in enumerate(req.tools or []) if t.get("type") != file_search.TYPE]
    if functions:
        body["tools"] = [_tool(t, i) for i, t in functions]
        if isinstance(req.tool_choice, dict):
            body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.get("name")}}
        elif req.tool_choice:
            body["tool_choice"] = req.tool_choice
    if req.text and req.text.format:
        body["response_format"] = _format(req.text.format)
    return body


def _message(item: dict, i: int) -> dict:
    kind = item.get("type", "message")
    if kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function"}
        call["function"] = {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        return {"role": "tool", "tool_call_id": item.get("call_id"), "content": text}
    if kind != "message" or "role" not in item:
        raise bad_param(
            f"input[{i}]",
            f"input[{i}] is a {kind!r} item; send messages, function_call and function_call_output items.",
            "unsupported_parameter",
        )
    content = item.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind not in ("input_text", "output_text", "text"):
                raise bad_param(f"input[{i}].content", f"Only text parts are supported; got {kind!r}.")
            texts.append(str(part.get("text", "")))
        content = "".join(texts)
    return {"role": item["role"], "content": content}


def _tool(tool: dict, i: int) -> dict:
    if tool.get("type") != "function":
        raise bad_param(
            f"tools[{i}]",
            f"Only function and file_search tools are supported; got {tool.get('type')!r}.",
            "unsupported_parameter",
        )
    keep = ("name", "description", "parameters", "strict")
    return {"type": "function", "function": {k: tool[k] for k in keep if tool.get(k) is not None}}


def _format(fmt: Format) -> dict:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    schema = fmt.model_dump(by_alias=True, exclude={"type"}, exclude_none=True)
    return {"type": "json_schema", "json_schema": schema}


# ------------------------------------------------------------------ answers
def response(req: ResponsesRequest, answer: dict, grounding: tuple | None = None) -> dict:
    """A chat completion, as a Response (after the ``file_search_call`` item of ``grounding``,
    ``(item, passages used)``, and with their files cited)."""
    choice = answer["choices"][0]
    status = "incomplete" if choice["finish_reason"] == "length" else "completed"  # as the stream's
    items = _items(choice["message"].get("content"), choice["message"].get("tool_calls") or [], status)
    if grounding is not None:
        _cite(items, grounding[1])
        items.insert(0, grounding[0])
    usage = answer["usage"]
    ident = "resp_" + uuid.uuid4().hex[:24]
    return _shell(req, ident, answer["created"], answer["model"], items, choice["finish_reason"], usage)


def _items(text: str | None, calls: list[dict], status: str = "completed") -> list[dict]:
    items = [_text_item(text, status)] if text or (text is not None and not calls) else []
    return items + [_call_item(call, "completed") for call in calls]


def _cite(items: list[dict], used: list[dict]) -> None:
    """Cite the files of the passages ``used`` in the message item's text."""
    for item in items:
        if item["type"] == "message" and item["content"]:
            part = item["content"][0]
            part["annotations"] = file_search.citations(used, part["text"])


def _text_item(text: str, status: str) -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part] if text is not None else [],
    }


def _call_item(call: dict, status: str) -> dict:
    return {
        "id": "fc_" + uuid.uuid4().hex[:24],
        "type": "function_call",
        "call_id": call["id"],
        "name": call["function"]["name"],
        "arguments": call["function"]["arguments"],
        "status": status,
    }


def _shell(req: ResponsesRequest, ident: str, created: int, model: str, items: list, reason, usage) -> dict:
    incomplete = reason == "length"
    return {
        "id": ident,
        "object": "response",
        "created_at": created,
        "status": "in_progress" if reason is None else "incomplete" if incomplete else "completed",
        "model": model,
        "output": items,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tools": req.tools or [],
        "tool_choice": req.tool_choice or "auto",
        "parallel_tool_calls": True,
        "text": req.text.model_dump(by_alias=True, exclude_none=True)
        if req.text
        else {"format": {"type": "text"}},
        "store": False,
        "previous_response_id": None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "metadata": req.metadata or {},
        "usage": _usage(usage) if usage else None,
    }


def _usage(usage: dict) -> dict:
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


class _Events:
    """Chat completion chunks in, Response events out (``event:`` + ``data:`` lines)."""

    def __init__(self, req: ResponsesRequest, grounding: tuple | None = None):
        self.req, self.sequence, self.items, self.ident = req, 0, [], "resp_" + uuid.uuid4().hex[:24]
        self.grounding = grounding
        self.text: dict | None = None  # the message item being streamed
        self.calls: dict[int, dict] = {}  # the function-call items whose arguments are still streaming
        self.model, self.created, self.reason, self.usage = req.model, int(time.time()), None, None
        self.broken = False

    def event(self, kind: str, **fields) -> str:
        body = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"

    def shell(self) -> dict:
        return _shell(self.req, self.ident, self.created, self.model, self.items, self.reason, self.usage)

    def start(self) -> list[str]:
        out = [
            self.event("response.created", response=self.shell()),
            self.event("response.in_progress", response=self.shell()),
        ]
        if self.grounding is None:
            return out
        item = self.grounding[0]  # the search is done before the first token
        self.items.append(item)
        out.append(
            self.event("response.output_item.added", output_index=0, item={**item, "status": "in_progress"})
        )
        for step in ("in_progress", "searching", "completed"):
            out.append(self.event(f"response.file_search_call.{step}", output_index=0, item_id=item["id"]))
        return [*out, self.event("response.output_item.done", output_index=0, item=item)]

    def chunk(self, data: dict) -> list[str]:
        out = []
        self.model, self.created = data.get("model", self.model), data.get("created", self.created)
        if data.get("usage"):
            self.usage = data["usage"]
        for part in data.get("choices", []):
            delta = part.get("delta") or {}
            if delta.get("content"):
                out += self._text(delta["content"])
            for call in delta.get("tool_calls") or []:
                out += self._call(call)
            if part.get("finish_reason"):
                self.reason = part["finish_reason"]
                out += self._close_text() + self._close_calls()
        return out

    def _text(self, text: str) -> list[str]:
        out = []
        if self.text is None:
            self.text = _text_item("", "in_progress")
            self.items.append(self.text)
            item = {**self.text, "content": []}
            out.append(self.event("response.output_item.added", output_index=len(self.items) - 1, item=item))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(self._on_text("response.content_part.added", part=part))
        self.text["content"][0]["text"] += text
        return [*out, self._on_text("response.output_text.delta", delta=text, logprobs=[])]

    def _on_text(self, kind: str, **fields) -> str:
        """An event about the one text part of the message item."""
        at = self.items.index(self.text)
        return self.event(kind, item_id=self.text["id"], output_index=at, content_index=0, **fields)

    def _close_text(self) -> list[str]:
        if self.text is None or self.text["status"] != "in_progress":
            return []
        self.text["status"] = "completed" if self.reason != "length" else "incomplete"
        part = self.text["content"][0]
        if self.grounding is not None:
            part["annotations"] = file_search.citations(self.grounding[1], part["text"])
        return [
            self._on_text("response.output_text.done", text=part["text"], logprobs=[]),
            self._on_text("response.content_part.done", part=part),
            self.event("response.output_item.done", output_index=self.items.index(self.text), item=self.text),
        ]

    def _call(self, call: dict) -> list[str]:
        """A call's first delta (its id and name) opens a function-call item; later deltas of the
        same ``index`` add to its arguments (a forced call streams them as they are generated)."""
        if call.get("id") is None and call.get("index") in self.calls:
            item = self.calls[call["index"]]
            piece = call["function"].get("arguments") or ""
            item["arguments"] += piece
            at = self.items.index(item)
            delta = "response.function_call_arguments.delta"
            return [self.event(delta, item_id=item["id"], output_index=at, delta=piece)] if piece else []
        out = self._close_text() + self._close_calls()
        item = _call_item({"id": call.get("id"), "function": call["function"]}, "in_progress")
        self.items.append(item)
        self.calls[call.get("index", 0)] = item
        at, arguments = len(self.items) - 1, item["arguments"]
        out.append(self.event("response.output_item.added", output_index=at, item={**item, "arguments": ""}))
        if arguments:
            out.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=at,
                    delta=arguments,
                )
            )
        return out

    def _close_calls(self) -> list[str]:
        out = []
        for item in self.calls.values():
            at = self.items.index(item)
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=at,
                    arguments=item["arguments"],
                    name=item["name"],
                )
            )
            item["status"] = "completed"
            out.append(self.event("response.output_item.done", output_index=at, item=item))
        self.calls.clear()
        return out

    def end(self) -> list[str]:
        if self.broken:
            return []
        kind = "response.incomplete" if self.reason == "length" else "response.completed"
        return [self.event(kind, response=self.shell())]

    def failed(self, error: dict) -> list[str]:
        self.broken = True
        failed = {
            **self.shell(),
            "status": "failed",
            "error": {"code": "server_error", "message": error.get("message", "")},
        }
        return [self.event("response.failed", response=failed)]


def stream(
    req: ResponsesRequest, chat: StreamingResponse, grounding: tuple | None = None
) -> StreamingResponse:
    """The chat completion stream ``chat``, as Response events."""
    source = chat.body_iterator
    events = _Events(req, grounding)

    async def body():
        try:
            for line in events.start():
                yield line
            async for raw in source:
                text = raw.decode() if isinstance(raw, bytes) else raw
                for line in text.splitlines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    for out in events.failed(data["error"]) if "error" in data else events.chunk(data):
                        yield out
            for line in events.end():
                yield line
        finally:
            await source.aclose()  # a client that went away frees the model at the next token

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def answer(generation, caller, body: bytes, search: file_search.Search | None = None):
    """``POST /v1/responses``: a Response, or its events for ``stream: true``. ``search(store id,
    query, options)`` serves a ``file_search`` tool (:mod:`aimass.serve.openai_file_search`)."""
    req = parse_body(ResponsesRequest, body)
    chat, grounding = chat_body(req), None
    tool = file_search.tool_of(req.tools)
    if tool is not None:
        if search is None:
            raise bad_param("tools", "file_search is not served here.", "unsupported_parameter")
        query = file_search.query_of(chat["messages"])
        found = await file_search.retrieve(tool, query, search)
        limit = chat.get("max_tokens") or DEFAULT_MAX_TOKENS
        room, tokens = await asyncio.to_thread(generation.room, req.model, chat["messages"], limit)
        chat["messages"], used = file_search.grounded(chat["messages"], found, room, tokens)
        grounding = (file_search.call_item(query, used, file_search.INCLUDE in (req.include or [])), used)
    answer = await generation.chat(caller, json.dumps(chat).encode())
    return stream(req, answer, grounding) if req.stream else response(req, answer, grounding)
