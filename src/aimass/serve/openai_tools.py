"""Tool calling on chat completions: OpenAI's ``tools``, ``tool_choice`` and ``tool_calls``, in the
format Hermes and Qwen models use (what vLLM's ``hermes`` parser reads).

- The tools are written into the system message as ``<tools>`` JSON; the model is asked to answer a
  call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. Earlier calls (an assistant
  message's ``tool_calls``) are written back the same way, and a ``tool`` message's result as
  ``<tool_response>`` in a user turn, so a conversation round-trips. That text is written by
  :mod:`aimass.llm.tool_text`, which the fine-tuning import writes its conversations with too.
- ``tool_choice: "auto"`` (the default with tools): the model decides; each ``<tool_call>`` block of
  its answer that holds a JSON call of a known tool becomes a ``tool_calls`` entry (``finish_reason``
  ``tool_calls``), and the text before the first one stays the ``content``.
- ``"required"`` or ``{"type": "function", "function": {"name": ...}}``: decoding is constrained
  (:mod:`aimass.llm.structured`) to one call, of any tool or of the named one, whose ``arguments``
  follow the tool's ``parameters`` schema. ``"none"``: the tools are not shown; a plain answer.

>>> said = 'Let me look.<tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>'
>>> calls = parse_calls(said, {"weather"})
>>> calls[0], [c["function"] for c in calls[1]]
('Let me look.', [{'name': 'weather', 'arguments': '{"city": "Paris"}'}])
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aimass.llm import tool_text
from aimass.serve.openai_errors import bad_param

CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


class Function(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: Function


def render(messages: list[dict], tools: list[Tool]) -> list[dict]:
    """The messages with the tools described in the system message (a new one first if none)."""
    return tool_text.render(messages, [t.model_dump(exclude_none=True) for t in tools])


def forced(tools: list[Tool], choice) -> dict | None:
    """The JSON Schema of the one call ``tool_choice`` forces (None: the model decides, or none)."""
    if choice in (None, "auto", "none"):
        return None
    if choice == "required":
        chosen = tools
    else:
        function = choice.get("function") if isinstance(choice, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        chosen = [t for t in tools if t.function.name == name]
        if not chosen:
            raise bad_param(
                "tool_choice",
                f"tool_choice names {name!r}, which is not in tools ({[t.function.name for t in tools]}).",
            )
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.function.name}, "arguments": t.function.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in chosen
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def parse_calls(text: str, names: set[str]) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) of an answer: each ``<tool_call>`` block (or a whole answer that is
    one JSON call) naming a known tool becomes a call; the text before the first stays content."""
    found = list(CALL.finditer(text))
    bodies = [m.group(1) for m in found] or [text.strip()]
    calls = [call for call in (read_call(body, names) for body in bodies) if call is not None]
    if not calls:
        return text, []
    before = text[: found[0].start()].strip() if found else ""
    return before or None, calls


def read_call(body: str, names: set[str]) -> dict | None:
    """A ``tool_calls`` entry from one block's JSON, or None when it is not a call of a known tool."""
    try:
        call = json.loads(body)
    except (ValueError, RecursionError):  # what a model wrote: not a call
        return None
    if not (
        isinstance(call, dict) and call.get("name") in names and isinstance(call.get("arguments", {}), dict)
    ):
        return None
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {
            "name": call["name"],
            "arguments": json.dumps(call.get("arguments", {}), ensure_ascii=False),
        },
    }


OPEN, CLOSE = "<tool_call>", "</tool_call>"
NAMED = r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"'  # a forced call's name, complete
HEAD = re.compile(NAMED + r'\s*,\s*"arguments"\s*:\s*')  # a forced call's start


class ToolStream:
    """A streamed answer that may call tools, read as it is generated (as vLLM's ``hermes`` parser
    reads one): the text before the first ``<tool_call>`` streams as ``content`` token by token,
    held back only while its end could still become the tag (or is whitespace before one); each call
    goes out whole when its block closes, with its ``index``; an answer that starts with ``{`` (a
    bare JSON call) is held to its end. What goes out adds up to :func:`parse_calls` of the whole
    answer: without a valid call, the held rest is sent as content at the end.

    ``forced``: the answer is constrained to one call (``tool_choice``), so it cannot turn out to be
    anything else: as vLLM does, the call goes out as soon as its name is known (its ``id``,
    ``name`` and empty ``arguments``), then its arguments as they are generated, the call object's
    closing brace held back (the arguments add up to the generated JSON text, not re-serialised).

    >>> reader = ToolStream({"weather"})
    >>> [reader.feed(p) for p in ("Let me", " look.<tool", '_call>{"name": "weather", ')]
    [[{'content': 'Let me'}], [{'content': ' look.'}], []]
    >>> deltas = reader.feed('"arguments": {"city": "Paris"}}</tool_call>')
    >>> deltas[0]["tool_calls"][0]["function"], reader.finish("stop")
    ({'name': 'weather', 'arguments': '{"city": "Paris"}'}, ([], 'tool_calls'))
    >>> forced = ToolStream({"weather"}, forced=True)
    >>> parts = ['{"name": "weather", "arguments": ', '{"city": "Pa', 'ris"}', "}"]
    >>> deltas = [d for p in parts for d in forced.feed(p)] + forced.finish("stop")[0]
    >>> [d["tool_calls"][0]["function"] for d in deltas][1:]
    [{'arguments': '{"city": "Pa'}, {'arguments': 'ris"'}, {'arguments': '}'}]
    """

    def __init__(self, names: set[str], forced: bool = False):
        self.names, self.forced = names, forced
        self.args_sent: int | None = None  # forced: how much of the text has gone out (after the head)
        self.args_begun = False  # forced: whether any of the arguments has gone out
        self.text = ""  # the answer so far
        self.sent = 0  # characters of it sent as content
        self.calls = 0  # calls sent
        self.mode = "text"  # text: before any tag; calls: from the first tag on; whole: held to the end
        self.scan = 0  # calls mode: where the next block starts

    def feed(self, piece: str) -> list[dict]:
        """The deltas ``piece`` releases (``{"content": ...}`` or ``{"tool_calls": [...]}``)."""
        self.text += piece
        if self.mode == "text":
            if self.sent == 0 and self.text.lstrip()[:1] == "{":
                self.mode = "whole"
            at = self.text.find(OPEN, self.sent)
            if self.mode == "whole":
                return self._forced() if self.forced else []
            if at < 0:
                return self._content(_safe_end(self.text, self.sent))
            sent = self._content(len(self.text[:at].rstrip()))
            self.mode, self.scan = "calls", at
            return sent + self._blocks(final=False)
        if self.mode == "whole":
            return self._forced() if self.forced else []
        return self._blocks(final=False) if self.mode == "calls" else []

    def finish(self, reason: str | None) -> tuple[list[dict], str | None]:
        """The deltas left when the answer ends, and its ``finish_reason``."""
        if self.mode == "whole" and self.args_sent is not None:  # a forced call, streamed
            complete = bool(parse_calls(self.text, self.names)[1])
            rest = self.text[self.args_sent :].rstrip()
            rest = rest[:-1].rstrip() if complete and rest.endswith("}") else rest  # the object's own brace
            return self._arguments(rest), "tool_calls" if complete else reason
        if self.mode == "whole":
            content, calls = parse_calls(self.text, self.names)
            if calls:
                return [{"content": content}] * bool(content) + [self._numbered(calls)], "tool_calls"
            if self.forced:  # cut before "arguments": the call with none if its name is complete
                return self._head(re.match(NAMED, self.text)), reason
            return self._content(len(self.text)), reason
        deltas = self._blocks(final=True) if self.mode == "calls" else []
        if self.calls:
            return deltas, "tool_calls"
        return deltas + self._content(len(self.text)), reason

    def _forced(self) -> list[dict]:
        """A forced call's head once its name is complete, then its arguments so far, but for
        trailing braces and whitespace (the last brace closes the call object, not the arguments)."""
        out = []
        if self.args_sent is None:
            out = self._head(HEAD.match(self.text))
            if not out:
                return []
        end = max(self.args_sent, len(self.text.rstrip(" \t\r\n}")))
        return out + self._arguments(self.text[self.args_sent : end])

    def _head(self, head: re.Match | None) -> list[dict]:
        """The call's first delta (its id, name and empty arguments) when ``head`` names one of the
        tools; the arguments start where it ends."""
        try:
            name = json.loads(f'"{head.group(1)}"') if head else None
        except ValueError:
            name = None
        if name not in self.names:
            return []
        self.args_sent = head.end()
        call = {"id": "call_" + uuid.uuid4().hex[:24], "type": "function"}
        return [self._numbered([{**call, "function": {"name": name, "arguments": ""}}])]

    def _arguments(self, piece: str) -> list[dict]:
        if not self.args_begun:  # whitespace before the arguments is not theirs
            self.args_sent += len(piece) - len(piece.lstrip())
            piece = piece.lstrip()
        if not piece:
            return []
        self.args_begun = True
        self.args_sent += len(piece)
        return [{"tool_calls": [{"index": self.calls - 1, "function": {"arguments": piece}}]}]

    def _content(self, end: int) -> list[dict]:
        if end <= self.sent:
            return []
        piece, self.sent = self.text[self.sent : end], end
        return [{"content": piece}]

    def _blocks(self, final: bool) -> list[dict]:
        out = []
        while True:
            start = self.text.find(OPEN, self.scan)
            if start < 0:
                return out
            end = self.text.find(CLOSE, start)
            if end < 0 and not final:
                return out
            body = self.text[start + len(OPEN) : end if end >= 0 else len(self.text)]
            self.scan = end + len(CLOSE) if end >= 0 else len(self.text)
            call = read_call(body.strip(), self.names)
            if call is not None:
                out.append(self._numbered([call]))

    def _numbered(self, calls: list[dict]) -> dict:
        for call in calls:
            call["index"], self.calls = self.calls, self.calls + 1
        return {"tool_calls": calls}


def answer(text: str, names: set[str], reason: str | None, forced: bool) -> dict:
    """A whole (not streamed) chat choice's ``message`` and ``finish_reason``, read as
    :class:`ToolStream` reads the stream, so that both say the same: a forced call cut by
    ``max_tokens`` is the call with the arguments generated so far (none when it was cut before
    them; no call and no content when its name was not complete), ``finish_reason`` ``length``.

    >>> said = answer('{"name": "weather", "arguments": {"ci', {"weather"}, "length", True)
    >>> said["message"]["content"], said["message"]["tool_calls"][0]["function"], said["finish_reason"]
    (None, {'name': 'weather', 'arguments': '{"ci'}, 'length')
    >>> answer('{"name": "wea', {"weather"}, "length", True)
    {'message': {'role': 'assistant', 'content': None}, 'finish_reason': 'length'}
    >>> cut = answer('{"name": "weather", "argu', {"weather"}, "length", True)
    >>> cut["message"]["tool_calls"][0]["function"], cut["finish_reason"]
    ({'name': 'weather', 'arguments': ''}, 'length')
    """
    reader = ToolStream(names, forced=forced)
    deltas = reader.feed(text)
    more, finish = reader.finish(reason)
    content, calls = "", []
    for delta in deltas + more:
        content += delta.get("content") or ""
        for call in delta.get("tool_calls") or []:
            if call["index"] < len(calls):
                calls[call["index"]]["function"]["arguments"] += call["function"]["arguments"]
            else:
                calls.append({k: v for k, v in call.items() if k != "index"})
    message = {"role": "assistant", "content": content or (None if calls or forced else "")}
    if calls:
        message["tool_calls"] = calls
    return {"message": message, "finish_reason": finish}


def _safe_end(text: str, sent: int) -> int:
    """How much of ``text`` may go out as content: all but a tail that could still start the tag,
    and but trailing whitespace (which a tag after it would strip)."""
    for keep in range(min(len(OPEN) - 1, len(text) - sent), 0, -1):
        if OPEN.startswith(text[-keep:]):
            return len(text[:-keep].rstrip())
    return len(text.rstrip())
