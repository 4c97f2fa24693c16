"""The bytes of every token of a tokenizer's vocabulary, for logprobs and constrained decoding.

A byte-level BPE vocabulary (GPT-2, Llama 3, SmolLM2) stores each byte as a printable stand-in
(``Ġ`` for a space); a SentencePiece one writes ``▁`` for a space and ``<0xE4>`` for byte fallback.
:func:`token_bytes` undoes either, so a token that holds half of a UTF-8 character keeps its real
bytes (``tokenizer.decode([id])`` would give U+FFFD). Special tokens (``<|im_end|>``) have no bytes.

>>> token_text(b" hello"), token_text(b"\\xe4\\xbd")
(' hello', 'bytes:\\\\xe4\\\\xbd')
"""

from __future__ import annotations

import json
import re
import threading

_TABLES: dict[int, tuple[object, list[bytes]]] = {}
_LOCK = threading.Lock()
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in of each byte, reversed."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            ids.add(int(i))
    return ids


def _build(tokenizer) -> list[bytes]:
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    try:
        decoder_kind = json.loads(tokenizer.backend_tokenizer.to_str())["decoder"]["type"]
    except (AttributeError, KeyError, TypeError, ValueError):
        decoder_kind = ""
    special = _special_ids(tokenizer)
    table = []
    if decoder_kind == "ByteLevel":
        chars = _byte_decoder()
        for i, piece in enumerate(pieces):
            ok = piece is not None and i not in special and all(c in chars for c in piece)
            table.append(bytes(chars[c] for c in piece) if ok else b"")
        return table
    for i, piece in enumerate(pieces):
        if piece is None or i in special:
            table.append(b"")
        elif m := _BYTE_FALLBACK.match(piece):
            table.append(bytes([int(m.group(1), 16)]))
        else:
            table.append(piece.replace("\u2581", " ").encode("utf-8"))
    return table


def token_bytes(tokenizer) -> list[bytes]:
    """Each token id's bytes (``b""`` for special tokens); built once per tokenizer."""
    with _LOCK:
        entry = _TABLES.get(id(tokenizer))
        if entry is None or entry[0] is not tokenizer:
            entry = _TABLES[id(tokenizer)] = (tokenizer, _build(tokenizer))
        return entry[1]


def token_text(raw: bytes) -> str:
    """A token as OpenAI writes it: its text, or ``bytes:\\xNN..`` when it is not whole UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
