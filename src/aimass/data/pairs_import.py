"""Import conversations for text generation: chat JSONL, prompt/completion JSONL, source/target CSV/TSV.

Every example becomes a list of chat messages (``[{"role", "content"}, ...]`` ending in an
assistant turn). Accepted inputs:

- **chat JSONL** (OpenAI's fine-tuning format): ``{"messages": [{"role": "system"|"user"|"assistant",
  "content": "..."}, ...]}``, one conversation a line;
- **prompt/completion JSONL**: ``{"prompt": "...", "completion": "..."}``;
- **CSV/TSV** with ``source`` and ``target`` columns (``prompt``/``completion`` and
  ``input``/``output`` are accepted too).

Each bad line is rejected with ``file:line`` and the reason (unknown role, no assistant turn, empty
content, over the context length with its token count, malformed JSON ...), listed in the dataset's
``rejects.jsonl`` as for classification data. The manifest holds token statistics per split.

>>> _messages({"prompt": "Hi", "completion": "Hello"})[0]
[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]
>>> _messages({"messages": [{"role": "robot", "content": "x"}]})[1]
"unknown role 'robot' in messages[0] (use system, user or assistant)"
"""

from __future__ import annotations

import json
import random
from collections import Counter
from itertools import islice
from pathlib import Path

from aimass.data.dataset import Dataset
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
from aimass.llm.backbone import get_llm_backbone, load_tokenizer

FORMAT_VERSION = 1
ROLES = ("system", "user", "assistant")
PAIR_COLUMNS = (("source", "target"), ("prompt", "completion"), ("input", "output"))


def _pair_columns(columns: list[str]) -> tuple[str, str] | None:
    lower = {c.strip().lower(): c for c in columns}
    for src, tgt in PAIR_COLUMNS:
        if src in lower and tgt in lower:
            return lower[src], lower[tgt]
    return None


SNIFF_LINES = 20  # a JSONL file's kind is read from its first lines that are objects


def looks_like_pairs(path: Path) -> bool:
    """Whether ``path`` is generation data: a JSONL file whose first object has ``messages`` or
    ``prompt``+``completion``, or a CSV/TSV whose header has source/target columns."""
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
            if isinstance(obj, dict) and obj:
                return "messages" in obj or {"prompt", "completion"} <= set(obj)
        return False
    if suffix in (".csv", ".tsv", ".txt"):
        sep = "\t" if suffix == ".tsv" or ("\t" in first and "," not in first) else ","
        return _pair_columns([c.strip().strip('"') for c in first.strip().split(sep)]) is not None
    return False


def _messages(fields: dict, cols: tuple[str, str] | None = None) -> tuple[list[dict] | None, str | None]:
    """(messages, None) or (None, reason)."""
    if cols is not None or "messages" not in fields:
        src, tgt = cols or ("prompt", "completion")
        prompt, completion = fields.get(src), fields.get(tgt)
        for name, value in ((src, prompt), (tgt, completion)):
            if value is None:
                return None, f"no '{name}' field"
            if not isinstance(value, str):
                return None, f"'{name}' is {type(value).__name__}, not text"
            if not value.strip():
                return None, f"empty content in '{name}'"
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], None
    raw = fields["messages"]
    if not isinstance(raw, list) or not raw:
        return None, "'messages' must be a non-empty list of {role, content} objects"
    out = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            return None, f"messages[{i}] is not an object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return None, f"unknown role {role!r} in messages[{i}] (use system, user or assistant)"
        if not isinstance(content, str):
            return None, f"messages[{i}] ({role}) has no text content"
        if not content.strip():
            return None, f"empty content in messages[{i}] ({role})"
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        return None, "no assistant turn (nothing to learn from)"
    if out[-1]["role"] != "assistant":  # said, not dropped: the user may have meant an answer there
        return None, (
            f"the conversation ends with a {out[-1]['role']} turn (messages[{len(out) - 1}]) after the last "
            "assistant answer: nothing would learn from it; remove the turn or add its answer"
        )
    if not any(m["role"] == "user" for m in out[:-1]):
        return None, "no user turn before the last assistant answer (nothing it answers)"
    return out, None


def ignored_fields(fields: dict) -> set[str]:
    """Fields of a conversation's messages that training does not read (OpenAI's ``weight``,
    ``name``, ``tool_calls`` ...): reported in the dataset's warnings, never silently dropped."""
    raw = fields.get("messages")
    if not isinstance(raw, list):
        return set()
    return {k for m in raw if isinstance(m, dict) for k in m} - {"role", "content"}


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
    cols = None
    if info["format"] != "jsonl":
        cols = (text_col, label_col) if text_col and label_col else _pair_columns(table.columns)
        if cols is None:
            raise DataError(
                f"no source/target columns among {table.columns}",
                where=str(path),
                hint="Name the columns source and target (or prompt and completion).",
            )
    rows, rejects, ignored = [], list(table.malformed), Counter()
    seen: dict[str, object] = {}  # a conversation (white space aside) -> the record it was first in
    for record in table.records:
        messages, reason = _messages(record.fields, cols)
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
