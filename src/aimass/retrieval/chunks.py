"""Cut a text into overlapping windows of an encoder's tokens.

A chunk is an exact slice of the text (from its first token's first character to its last token's
last), so what a search returns is what the document says, whitespace and all. Windows hold at most
``size`` tokens and start ``size - overlap`` tokens apart (OpenAI's static chunking strategy); the
last window ends at the text's end.
"""

from __future__ import annotations

AUTO = {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 200}
MIN_SIZE = 100


def strategy(requested: dict | None, most: int) -> dict:
    """The static sizes a ``chunking_strategy`` asks for (``auto``: :data:`AUTO`); ValueError,
    naming the field, for sizes outside ``[MIN_SIZE, most]`` or an overlap over half the size."""
    if not requested or requested.get("type", "auto") == "auto":
        return {
            "max_chunk_size_tokens": min(AUTO["max_chunk_size_tokens"], most),
            "chunk_overlap_tokens": min(AUTO["chunk_overlap_tokens"], most // 2),
        }
    if requested.get("type") != "static" or not isinstance(requested.get("static"), dict):
        raise ValueError('chunking_strategy: use {"type": "auto"} or {"type": "static", "static": {...}}.')
    static = requested["static"]
    size, overlap = static.get("max_chunk_size_tokens"), static.get("chunk_overlap_tokens", 0)
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_SIZE <= size <= most:
        raise ValueError(
            f"chunking_strategy.static.max_chunk_size_tokens must be a whole number from {MIN_SIZE} to "
            f"{most} (what the store's encoder reads in one window); got {size!r}."
        )
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap <= size // 2:
        raise ValueError(
            "chunking_strategy.static.chunk_overlap_tokens must be a whole number from 0 to half of "
            f"max_chunk_size_tokens ({size // 2}); got {overlap!r}."
        )
    return {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}


def split(text: str, tokenizer, size: int, overlap: int) -> list[str]:
    """The chunks of ``text``: windows of at most ``size`` of ``tokenizer``'s tokens, ``overlap``
    tokens shared by neighbours. Whitespace-only text has none."""
    if not text.strip():
        return []
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    spans = [(a, b) for a, b in spans if b > a]
    if not spans:
        return [text.strip()]
    step, found = size - overlap, []
    for start in range(0, len(spans), step):
        window = spans[start : start + size]
        found.append(text[window[0][0] : window[-1][1]])
        if start + size >= len(spans):
            break
    return found
