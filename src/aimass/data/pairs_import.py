"""Import conversations for text generation: chat JSONL, prompt/completion JSONL, source/target CSV/TSV.

Every example becomes a list of chat messages (``[{"role", "content"}, ...]`` ending in an
assistant turn). Accepted inputs:

- **chat JSONL** (OpenAI's fine-tuning format): ``{"messages": [{"role": "system"|"user"|"assistant",
  "content": "..."}, ...]}``, one conversation a line; with function calling too: a ``developer``
  role, content as text parts, an assistant's ``tool_calls`` (content null or empty), ``tool``
  messages with their results and the row's ``tools``. Such a row becomes the plain turns the
  server builds from the same conversation (:mod:`aimass.llm.tool_text`: the tools in the system
  message, calls as ``<tool_call>`` blocks, results as ``<tool_response>`` user turns), so a model
  is trained on the text it is served with; a last assistant turn that only calls is learned as is;
- **prompt/completion JSONL**: ``{"prompt": "...", "completion": "..."}`` (``source``/``target`` and
  ``input``/``output`` too);
- **CSV/TSV** with ``source`` and ``target`` columns (``prompt``/``completion`` and
  ``input``/``output`` are accepted too).

Each bad line is rejected with ``file:line`` and the reason (unknown role, no assistant turn, empty
content, over the context length with its token count, malformed JSON ...), listed in the dataset's
``rejects.jsonl`` as for classification data. The manifest holds token statistics per split.

>>> conversation_of({"prompt": "Hi", "completion": "Hello"})[0]
[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]
>>> conversation_of({"messages": [{"role": "robot", "content": "x"}]})[1]
"unknown role 'robot' in messages[0] (use system, developer, user, assistant or tool)"
>>> call = {"function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
>>> said = {"role": "assistant", "content": None, "tool_calls": [call]}
>>> conversation_of({"messages": [{"role": "user", "content": "Paris?"}, said]})[0][1]["content"]
'<tool_call>\\n{"name": "weather", "arguments": {"city": "Paris"}}\\n</tool_call>'
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from itertools import islice
from pathlib import Path

from aimass.data.dataset import Dataset, HeldOut
from aimass.data.language import detect_language
from aimass.data.read import loads_json, make_reject, read_source
from aimass.data.storage import (
    ID_LENGTH,
    compute_digest,
    existing,
    import_entry,
    record_import,
    save_dataset,
    utc_now,
)
from aimass.data.validate import sort_rejects
from aimass.errors import DataError
from aimass.llm import tool_text
from aimass.llm.backbone import get_llm_backbone, load_tokenizer

FORMAT_VERSION = 1
ROLES = ("system", "developer", "user", "assistant", "tool")  # the roles the chat route takes
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a function tool's name, as the chat route takes it
PAIR_COLUMNS = (("source", "target"), ("prompt", "completion"), ("input", "output"))


def pair_columns(columns: list[str]) -> tuple[str, str] | None:
    lower = {c.strip().lower(): c for c in columns}
    for src, tgt in PAIR_COLUMNS:
        if src in lower and tgt in lower:
            return lower[src], lower[tgt]
    return None


SNIFF_LINES = 20  # a JSONL file's kind is read from its first lines that are objects


def looks_like_pairs(path: Path) -> bool:
    """Whether ``path`` is generation data: a JSONL file whose first object has ``messages`` or a
    pair of fields (source/target, prompt/completion, input/output), or a CSV/TSV whose header has
    such columns."""
    path = Path(path)
    if not path.is_file():
        return False
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:  # Excel's "CSV UTF-8" has a BOM
            lines = list(islice((line for line in fh if line.strip()), SNIFF_LINES))
    except OSError:
        return False
    first = lines[0] if lines else ""
    if suffix in (".jsonl", ".ndjson"):  # the first of the first lines that is a JSON object decides
        for line in lines:  # (one broken or empty first line is that line's reject, not the file's kind)
            try:
                obj = loads_json(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj:  # the same column pairs as a CSV's
                return "messages" in obj or pair_columns(list(obj)) is not None
        return False
    if suffix in (".csv", ".tsv", ".txt"):
        sep = "\t" if suffix == ".tsv" or ("\t" in first and "," not in first) else ","
        return pair_columns([c.strip().strip('"') for c in first.strip().split(sep)]) is not None
    return False


def conversation_of(
    fields: dict, cols: tuple[str, str] | None = None
) -> tuple[list[dict] | None, str | None]:
    """(messages, None) or (None, reason). ``cols``: a table's source and target columns (None: a
    JSONL row, read by its ``messages`` or else by its pair of fields)."""
    if cols is not None or "messages" not in fields:
        return _pair(fields, cols or pair_columns(list(fields)) or ("prompt", "completion"))
    raw = fields["messages"]
    if not isinstance(raw, list) or not raw:
        return None, "'messages' must be a non-empty list of {role, content} objects"
    tools, reason = _tools(fields.get("tools"))
    if reason:
        return None, reason
    names = {t["function"]["name"] for t in tools} if tools else None
    out, calling = [], False  # calling: the message before was a call or a call's result
    for i, message in enumerate(raw):
        turn, reason = _turn(i, message, calling, names)
        if reason:
            return None, reason
        out.append(turn)
        calling = message["role"] == "tool" or bool(message.get("tool_calls"))
    reason = _ending([m["role"] for m in raw])
    if reason:
        return None, reason
    return (tool_text.render(out, tools) if tools else out), None


def _pair(fields: dict, cols: tuple[str, str]) -> tuple[list[dict] | None, str | None]:
    """A prompt and its completion (or a source and its target) as a user and an assistant turn."""
    src, tgt = cols
    prompt, completion = fields.get(src), fields.get(tgt)
    for name, value in ((src, prompt), (tgt, completion)):
        if value is None:
            return None, f"no '{name}' field"
        if not isinstance(value, str):
            return None, f"'{name}' is {type(value).__name__}, not text"
        if not value.strip():
            return None, f"empty content in '{name}'"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], None


def _ending(roles: list[str]) -> str | None:
    """Why a conversation with these roles teaches nothing, if it does not: it needs a user turn,
    then an assistant turn last (an answer or a call)."""
    if "assistant" not in roles:
        return "no assistant turn (nothing to learn from)"
    if roles[-1] != "assistant":  # said, not dropped: the user may have meant an answer there
        return (
            f"the conversation ends with a {roles[-1]} turn (messages[{len(roles) - 1}]) after the last "
            "assistant answer: nothing would learn from it; remove the turn or add its answer"
        )
    if "user" not in roles[:-1]:
        return "no user turn before the last assistant answer (nothing it answers)"
    return None


def _turn(i: int, message, calling: bool, names: set[str] | None) -> tuple[dict | None, str | None]:
    """messages[i] as the plain turn the chat route makes of it (:func:`aimass.llm.tool_text.turn`),
    or why it is malformed. ``calling``: a ``tool`` result may follow; ``names``: the row's tools."""
    if not isinstance(message, dict):
        return None, f"messages[{i}] is not an object"
    role = message.get("role")
    if role not in ROLES:
        return (
            None,
            f"unknown role {role!r} in messages[{i}] (use system, developer, user, assistant or tool)",
        )
    if role == "tool" and not calling:
        return None, (
            f"messages[{i}] (tool) has no call before it: a tool result follows an assistant message "
            "with tool_calls (or another result)"
        )
    calls, reason = _calls(i, role, message.get("tool_calls"), names)
    if reason:
        return None, reason
    text, reason = _text(i, role, message.get("content"), said=bool(calls) or role == "tool")
    if reason:
        return None, reason
    return tool_text.turn(role, text, calls), None


def _text(i: int, role: str, content, said: bool) -> tuple[str, str | None]:
    """(the content's text, None), text parts joined, or ("", why it is not text). ``said``: the
    message is a call or a tool's result, so its text may be empty or null."""
    if content is None and said:
        return "", None
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                return "", f"messages[{i}].content[{j}] is not a text part ({{'type': 'text', 'text': ...}})"
        content = tool_text.content_text(content)
    if not isinstance(content, str):
        calls = " and no tool_calls" if role == "assistant" else ""
        return "", f"messages[{i}] ({role}) has no text content{calls}"
    if not content.strip() and not said:
        return "", f"empty content in messages[{i}] ({role})"
    return content, None


def _calls(i: int, role: str, raw, names: set[str] | None) -> tuple[list[dict], str | None]:
    """An assistant's ``tool_calls`` (each a function's name and its arguments as a JSON object in a
    string, as OpenAI writes them), or why they are malformed. ``names``: the row's tools, if any."""
    if raw is None:
        return [], None
    if role != "assistant":
        return [], f"messages[{i}].tool_calls on a {role} message (only an assistant calls tools)"
    if not isinstance(raw, list):
        return [], f"messages[{i}].tool_calls must be a list of calls"
    calls = []
    for j, call in enumerate(raw):
        where = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            return (
                [],
                f"{where} must be {{'type': 'function', 'function': {{'name': ..., 'arguments': ...}}}}",
            )
        name, arguments = function.get("name"), function.get("arguments", "{}")
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            return [], f"{where}.function has no name (1 to 64 characters)"
        if names is not None and name not in names:
            return (
                [],
                f"{where}.function.name {name!r} is not one of the row's tools ({', '.join(sorted(names))})",
            )
        if not isinstance(arguments, str):
            return [], f"{where}.function.arguments is {type(arguments).__name__}, not a string of JSON"
        try:
            parsed = json.loads(arguments or "{}")
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            return [], f"{where}.function.arguments is not a JSON object: {arguments[:40]!r}"
        calls.append({"type": "function", "function": {"name": name, "arguments": arguments}})
    return calls, None


def _tools(raw) -> tuple[list[dict], str | None]:
    """A row's ``tools`` (OpenAI's function tools) as the system message lists them, or why not."""
    if raw is None:
        return [], None
    if not isinstance(raw, list):
        return [], "'tools' must be a list of {'type': 'function', 'function': {'name': ...}} objects"
    tools = []
    for k, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            return [], f"tools[{k}] must be {{'type': 'function', 'function': {{'name': ...}}}}"
        if not isinstance(function.get("name"), str) or not TOOL_NAME.match(function["name"]):
            return [], f"tools[{k}].function.name must be 1 to 64 letters, digits, _ or -"
        description, parameters = function.get("description"), function.get("parameters", {})
        if description is not None and not isinstance(description, str):
            return [], f"tools[{k}].function.description is {type(description).__name__}, not text"
        if not isinstance(parameters, dict):
            return [], f"tools[{k}].function.parameters must be a JSON Schema object"
        if not isinstance(function.get("strict", False), bool | None):
            return [], f"tools[{k}].function.strict must be true or false"
        tools.append(tool_text.tool_entry(function))
    return tools, None


def ignored_fields(fields: dict) -> set[str]:
    """Fields of a conversation's messages that training does not read (OpenAI's ``weight``,
    ``name`` ...): reported in the dataset's warnings, never silently dropped."""
    raw = fields.get("messages")
    if not isinstance(raw, list):
        return set()
    read = {"role", "content", "tool_calls", "tool_call_id"}  # an id pairs a result with its call: in order
    return {k for m in raw if isinstance(m, dict) for k in m} - read


def count_tokens(tokenizer, messages: list[dict]) -> tuple[int, int]:
    """(prompt tokens, completion tokens): everything before the last assistant answer, and it."""
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)
    prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    completion = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
    return len(prompt), len(completion) + 1  # + the end-of-turn token


def _stats(values: list[int]) -> dict:
    if not values:
        return {"total": 0}
    values = sorted(values)
    return {
        "total": sum(values),
        "mean": round(sum(values) / len(values), 1),
        "p50": values[len(values) // 2],
        "p95": values[min(len(values) - 1, int(0.95 * len(values)))],
        "max": values[-1],
    }


def random_splits(n: int, seed: int, valid_frac: float, test_frac: float) -> list[str]:
    """Each of ``n`` rows' split, drawn at random (none held out under 10 rows)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test = round(n * test_frac) if n >= 10 else 0
    n_valid = round(n * valid_frac) if n >= 10 else 0
    out = ["train"] * n
    for rank, i in enumerate(order):
        out[i] = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
    return out


def read_held_out(path: str | Path) -> HeldOut:
    """Every usable conversation of a chat or prompt/completion JSONL file or a source/target
    CSV/TSV as held-out data (``evaluate --data``), read as :func:`import_pairs` reads it but not
    stored: no split, no least number of rows, repeats and over-long ones kept (scored as given).
    Rows an import would reject as invalid are left out, in its ``rejects``.

    Returns:
        ``(conversations, answers)``: each whole, and its last answer.

    Raises:
        DataError: No row of ``path`` is a usable conversation.
    """
    table = read_source(Path(path))
    cols = _columns(table, Path(path))
    convs, rejects = [], list(table.malformed)
    for record in table.records:
        messages, reason = conversation_of(record.fields, cols)
        if reason:
            rejects.append(make_reject(record.file, record.line, reason, record.raw, "invalid example"))
        else:
            convs.append(messages)
    if not convs:
        shown = "; ".join(f"{r['file']}:{r['line']}: {r['reason']}" for r in rejects[:3])
        raise DataError(
            f"No usable conversations ({len(rejects)} rejected, e.g. {shown}).",
            where=str(path),
            hint="Each line needs a user prompt and a non-empty assistant answer.",
        )
    return HeldOut(convs, [c[-1]["content"] for c in convs], rejects)


def _columns(table, path: Path, text_col: str | None = None, label_col: str | None = None):
    """A table's prompt and answer columns (``text_col``/``label_col`` when both are given), None for
    JSONL (each line names its fields); a DataError when a table has none."""
    if table.info["format"] == "jsonl":
        return None
    cols = (text_col, label_col) if text_col and label_col else pair_columns(table.columns)
    if cols is None:
        raise DataError(
            f"no source/target columns among {table.columns}",
            where=str(path),
            hint="Name the columns source and target (or prompt and completion).",
        )
    return cols


def import_pairs(
    path: str | Path,
    *,
    name: str | None = None,
    seed: int = 0,
    valid_frac: float = 0.1,
    test_frac: float = 0.2,
    min_rows: int = 10,
    backbone: str = "smollm2-135m",
    max_tokens: int | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
) -> Dataset:
    """Read, check, split and store generation data under ``AIMASS_HOME/datasets/<id>/``.

    Args:
        path: A chat or prompt/completion JSONL file, or a CSV/TSV with source/target columns.
        name: Name to load it by (default: the file name without extension).
        seed, valid_frac, test_frac: The random split.
        min_rows: Fewest good examples accepted.
        backbone: Whose tokenizer counts tokens (``smollm2-135m``, ``hf:ORG/NAME`` or a folder).
        max_tokens: Longest example (prompt + answer) kept; default: the backbone's context length.
        text_col, label_col: CSV/TSV only: the source and target columns (detected when None).

    Raises:
        DataError: Fewer than ``min_rows`` good examples (the message counts the rejects by reason).
    """
    path = Path(path)
    spec = get_llm_backbone(backbone)
    limit = max_tokens or spec.context_length
    tokenizer = load_tokenizer(spec)
    table = read_source(path)
    info = table.info
    cols = _columns(table, path, text_col, label_col)
    rows, rejects, ignored = [], list(table.malformed), Counter()
    seen: dict[str, object] = {}  # a conversation (white space aside) -> the record it was first in
    for record in table.records:
        messages, reason = conversation_of(record.fields, cols)
        kind = "invalid example"
        if messages is not None:
            key = json.dumps([[m["role"], " ".join(m["content"].split())] for m in messages])
            first = seen.setdefault(key, record)
            if first is not record:  # a copy could land in test and score what it trained on
                where = f"line {first.line}" if first.file == record.file else first.source
                reason, kind = f"duplicate of {where}", "duplicate"
        if messages is not None and not reason:
            n_prompt, n_completion = count_tokens(tokenizer, messages)
            if n_prompt + n_completion > limit:
                reason = (
                    f"over the context length: {n_prompt + n_completion} tokens "
                    f"({n_prompt} prompt + {n_completion} answer); the limit is {limit}"
                )
                kind = "too long"
        if reason:
            rejects.append(make_reject(record.file, record.line, reason, record.raw, kind))
            continue
        ignored.update(ignored_fields(record.fields))
        rows.append({"messages": messages, "tokens": [n_prompt, n_completion], "source": record.source})
    rejects = sort_rejects(rejects)
    by_reason: dict[str, int] = {}
    for r in rejects:
        by_reason[r["kind"]] = by_reason.get(r["kind"], 0) + 1
    if len(rows) < min_rows:
        shown = "; ".join(f"{r['file']}:{r['line']}: {r['reason']}" for r in rejects[:3])
        raise DataError(
            f"only {len(rows)} usable example(s), at least {min_rows} needed"
            + (f"; {len(rejects)} rejected, e.g. {shown}" if rejects else ""),
            where=str(path),
            hint="Each line needs a user prompt and a non-empty assistant answer.",
        )
    for row, split in zip(rows, random_splits(len(rows), seed, valid_frac, test_frac), strict=True):
        row["split"] = split
    settings = {"kind": "chat", "seed": seed, "valid_frac": valid_frac, "test_frac": test_frac}
    lines = [json.dumps({"messages": r["messages"], "split": r["split"]}, ensure_ascii=False) for r in rows]
    digest = compute_digest(lines, settings)
    stored = existing(digest[:ID_LENGTH])
    if stored is not None:  # the same examples and split: stored once, this import noted
        return record_import(stored, name or path.stem, {**info, "rejects_by_reason": by_reason}, rejects)
    manifest = chat_manifest(digest, name or path.stem, rows, rejects, info, cols, by_reason, backbone, limit)
    manifest["language"] = detect_language([m["content"] for r in rows for m in r["messages"]])
    manifest["warnings"] += language_warnings(spec, manifest["language"])
    if ignored:
        fields = ", ".join(f"{k} ({n} message list(s))" for k, n in sorted(ignored.items()))
        manifest["warnings"].append(
            f"message fields not read by training: {fields}; every assistant answer's content is learned "
            "from as it is (a weight of 0 does not skip an answer)"
        )
    manifest["split_settings"] = settings
    return save_dataset(lines, rows, rejects, manifest)


def chat_manifest(digest, name, rows, rejects, info, cols, by_reason, backbone, limit) -> dict:
    splits = ("train", "valid", "test")
    by_split = {s: sum(r["split"] == s for r in rows) for s in splits}
    tokens = {
        s: {
            "prompt": _stats([r["tokens"][0] for r in rows if r["split"] == s]),
            "completion": _stats([r["tokens"][1] for r in rows if r["split"] == s]),
        }
        for s in splits
        if by_split[s]
    }
    now = utc_now()
    return {
        "format_version": FORMAT_VERSION,
        "kind": "chat",
        "id": digest[:ID_LENGTH],
        "digest": digest,
        "name": name,
        "created": now,
        "source": str(Path(info["file"]).resolve()),
        "source_sha256": info["sha256"],
        "format": "csv/tsv source-target" if cols else "jsonl chat",
        "encoding": info["encoding"],
        "encodings": info.get("encodings", {}),
        "language": "en",
        "columns": {"text": cols[0] if cols else "messages", "label": cols[1] if cols else "", "split": None},
        "counts": {
            "total": len(rows),
            "by_split": {s: n for s, n in by_split.items() if n},
            "by_class": {},
            "by_split_class": {},
        },
        "tokens": {"tokenizer": backbone, "limit": limit, "by_split": tokens},
        "rejects": len(rejects),
        "rejects_by_reason": by_reason,
        "warnings": [],
        "imports": [import_entry(name, {**info, "rejects_by_reason": by_reason}, now)],
    }


def language_warnings(spec, language: str) -> list[str]:
    """Why a backbone may not suit conversations in ``language`` (its ``languages`` say), if so."""
    if not spec.languages or language in spec.languages:
        return []
    names = {"zh": "Chinese", "en": "English"}
    return [
        f"The conversations are {names.get(language, language)}, but {spec.name} answers in "
        f"{' and '.join(names.get(x, x) for x in spec.languages)} only: a fine-tune on them will answer "
        "poorly. With a network, train a multilingual model instead: aimass train --task text-generation "
        "--backbone hf:Qwen/Qwen2.5-0.5B-Instruct --data NAME."
    ]


def conversations(dataset: Dataset, split: str | None = None) -> list[list[dict]]:
    """The conversations (lists of messages) of one split of a chat dataset."""
    return [row["messages"] for row in dataset.rows(split)]
