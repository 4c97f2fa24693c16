"""OpenAI chat messages as the plain ``{role, content}`` turns a chat template takes, tool calling included.

Tools are written the way Hermes and Qwen models take them (what vLLM's ``hermes`` parser reads): the
tools go into the system message as ``<tools>`` JSON with :data:`INSTRUCTIONS`, an assistant's
``tool_calls`` as ``<tool_call>`` blocks after its text, a ``tool`` message's result as a user turn
holding ``<tool_response>``; a ``developer`` message is a system turn and text parts are joined.

The server (:mod:`aimass.serve.openai_requests`, :mod:`aimass.serve.openai_tools`) and the
fine-tuning import (:mod:`aimass.data.pairs_import`) both write conversations through these
functions, so a fine-tune trains on the very text it is later served with. Plain dicts in, plain
dicts out: the callers check their own input (a 400 for a request, a reject for a data line).

>>> call = {"function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
>>> turn("assistant", "", [call])["content"]
'<tool_call>\\n{"name": "weather", "arguments": {"city": "Paris"}}\\n</tool_call>'
>>> turn("tool", content_text([{"type": "text", "text": "18 C"}]))
{'role': 'user', 'content': '<tool_response>\\n18 C\\n</tool_response>'}
>>> turn("developer", "Be brief.")
{'role': 'system', 'content': 'Be brief.'}
"""

from __future__ import annotations

import json
from typing import Any

INSTRUCTIONS = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""
NO_PARAMETERS = {"type": "object", "properties": {}}  # a function tool's parameters when none are given


def tool_entry(function: dict) -> dict:
    """A function tool as the system message lists it: ``{"type": "function", "function": {...}}``
    with its ``name``, ``description``, ``parameters`` and ``strict`` in that order, those that are
    None left out (the server's ``Tool`` model dumped without None), parameters defaulting to none.

    >>> tool_entry({"parameters": None, "name": "now", "x": 1})
    {'type': 'function', 'function': {'name': 'now', 'parameters': {'type': 'object', 'properties': {}}}}
    """
    parameters = function.get("parameters")
    fields = {
        "name": function.get("name"),
        "description": function.get("description"),
        "parameters": dict(NO_PARAMETERS) if parameters is None else parameters,
        "strict": function.get("strict"),
    }
    return {"type": "function", "function": {k: v for k, v in fields.items() if v is not None}}


def render(messages: list[dict], tools: list[dict]) -> list[dict]:
    """The turns with the tools (:func:`tool_entry` dicts) described in the system message, which is
    the first turn's (a new one first if there is none)."""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    text = INSTRUCTIONS.format(tools=listed)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def call_text(calls: list[dict]) -> str:
    """An assistant message's ``tool_calls``, written as the model writes them (arguments that are
    not JSON are kept as the string they are)."""
    blocks = []
    for call in calls:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (ValueError, TypeError):
            arguments = function.get("arguments")
        body = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
        blocks.append(f"<tool_call>\n{body}\n</tool_call>")
    return "\n".join(blocks)


def response_text(content: str) -> str:
    """A ``tool`` message's result, as the user turn that hands it back."""
    return f"<tool_response>\n{content}\n</tool_response>"


def content_text(content: str | list[dict[str, Any]] | None) -> str:
    """A message's ``content`` as one text: None is empty, text parts are joined.

    Raises:
        ValueError: A part that is not text (its message says which type it is).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise ValueError(f"Only text content parts are supported; got {part.get('type')!r}.")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def turn(role: str, text: str, calls: list[dict] | None = None) -> dict:
    """One message as the chat template takes it: a ``tool`` result becomes a user turn, an
    assistant's ``calls`` follow its text as ``<tool_call>`` blocks, ``developer`` is ``system``."""
    if role == "tool":
        return {"role": "user", "content": response_text(text)}
    if calls:
        text = "\n".join(filter(None, [text, call_text(calls)]))
    return {"role": "system" if role == "developer" else role, "content": text}
