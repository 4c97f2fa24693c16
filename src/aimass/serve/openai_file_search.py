"""The Responses API's ``file_search`` tool: answers grounded in a vector store's passages (RAG).

``tools: [{"type": "file_search", "vector_store_ids": [...]}]`` makes ``POST /v1/responses``
search those stores (:mod:`aimass.retrieval.search`, with the tool's ``max_num_results``,
``filters`` and ``ranking_options``) for the conversation's last user message, and hand the best
passages to the model in a system message, numbered, before it answers. The search runs on every
request that carries the tool: a small model cannot be trusted to decide when to call it, and a
question asked with documents attached is a question about them.

Passages go in best first while they fit the model's context (its tokens, less the conversation and
``max_output_tokens``); what did not fit is left out, never cut. The response's output starts with
a ``file_search_call`` item (its ``results`` when ``include`` asks for
``file_search_call.results``), and the answer's text carries a ``file_citation`` for each file its
passages came from. Searching a store is decided as ``POST /v1/vector_stores/{id}/search``
(``vector_store:Search``), and its query tokens are metered as such.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aimass.serve.openai_errors import bad_param

TYPE = "file_search"
DEFAULT_RESULTS = 5
MAX_STORES = 4
STORE_ID = re.compile(r"vs_[0-9a-f]{1,64}")  # what :func:`aimass.retrieval.stores.create` names a store
INCLUDE = "file_search_call.results"
PROMPT = (
    "Answer the user's question from the numbered passages of their documents below. If the passages "
    "do not hold the answer, say that the documents do not say.\n\n"
)
Search = Callable[[str, str, dict], Awaitable[dict]]  # (store id, query, options) -> a results page


def tool_of(tools: list[dict] | None) -> dict | None:
    """The request's ``file_search`` tool, checked (400 naming the field), or None."""
    found = [(i, t) for i, t in enumerate(tools or []) if isinstance(t, dict) and t.get("type") == TYPE]
    if not found:
        return None
    if len(found) > 1:
        raise bad_param(f"tools[{found[1][0]}]", "Send one file_search tool (it may name several stores).")
    i, tool = found[0]
    ids = tool.get("vector_store_ids")
    names = isinstance(ids, list) and all(isinstance(v, str) for v in ids)
    if not names or not 1 <= len(ids) <= MAX_STORES:
        raise bad_param(
            f"tools[{i}].vector_store_ids", f"vector_store_ids: name 1 to {MAX_STORES} stores by id."
        )
    if bad := next((v for v in ids if not STORE_ID.fullmatch(v)), None):
        raise bad_param(  # checked before a store is decided on: a "/" would name another route
            f"tools[{i}].vector_store_ids",
            f"{bad[:80]!r} is not a vector store id (vs_ and hex digits, as POST /v1/vector_stores gives).",
        )
    count = tool.get("max_num_results", DEFAULT_RESULTS)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 50:
        raise bad_param(f"tools[{i}].max_num_results", "file_search's max_num_results is 1 to 50.")
    return tool


def query_of(messages: list[dict]) -> str:
    """The text of the conversation's last user message (what is searched for)."""
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str) and content.strip():
            return content
    raise bad_param("input", "file_search needs a user message to search for; send one in 'input'.")


async def retrieve(tool: dict, query: str, search: Search) -> list[dict]:
    """The best results over the tool's stores, by score (ties: the order of the stores)."""
    options = {k: tool[k] for k in ("filters", "ranking_options") if tool.get(k) is not None}
    count = tool.get("max_num_results", DEFAULT_RESULTS)
    found = []
    for store_id in dict.fromkeys(tool["vector_store_ids"]):
        page = await search(store_id, query, {**options, "max_num_results": count})
        found += [{**hit, "vector_store_id": store_id} for hit in page["data"]]
    return sorted(found, key=lambda hit: -hit["score"])[:count]


def grounded(messages: list[dict], results: list[dict], room: int, tokens: Callable[[str], int]) -> tuple:
    """(messages with a system message of the passages that fit in ``room`` tokens, those passages).
    The passages' message goes after the instructions (a system message first) and before the
    conversation."""
    used, text = [], PROMPT
    for hit in results:
        block = f"[{len(used) + 1}] {hit['filename']}\n{_text(hit)}\n\n"
        if tokens(text + block) > room:
            continue
        used.append(hit)
        text += block
    if not used:
        text += "(No passage of the documents matched the question.)\n"
    at = 1 if messages and messages[0].get("role") == "system" else 0
    return [*messages[:at], {"role": "system", "content": text.rstrip()}, *messages[at:]], used


def call_item(query: str, results: list[dict], include: bool) -> dict:
    """The ``file_search_call`` output item."""
    shown = [
        {
            "file_id": hit["file_id"],
            "filename": hit["filename"],
            "score": hit["score"],
            "text": _text(hit),
            "attributes": hit.get("attributes") or {},
            "vector_store_id": hit["vector_store_id"],
        }
        for hit in results
    ]
    return {
        "id": "fs_" + uuid.uuid4().hex[:24],
        "type": "file_search_call",
        "status": "completed",
        "queries": [query],
        "results": shown if include else None,
    }


def citations(results: list[dict], text: str) -> list[dict[str, Any]]:
    """A ``file_citation`` for each file the passages came from, at the end of the answer."""
    files = dict.fromkeys((hit["file_id"], hit["filename"]) for hit in results)
    return [
        {"type": "file_citation", "file_id": file_id, "filename": name, "index": len(text)}
        for file_id, name in files
    ]


def _text(hit: dict) -> str:
    return "".join(part.get("text", "") for part in hit.get("content", []))
