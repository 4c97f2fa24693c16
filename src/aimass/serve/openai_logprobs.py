"""Token log-probabilities in OpenAI's two shapes, from :class:`aimass.llm.decode.TokenLogprob`.

Chat completions: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal"}``.
Legacy completions: ``{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}``,
the offsets counted from the start of the prompt, as OpenAI does (with ``echo``, the prompt's tokens
are listed first). A token that is not whole UTF-8
(half of a character) is written ``bytes:\\xNN..``; its ``bytes`` are the real ones.
"""

from __future__ import annotations

import codecs

from aimass.llm.vocab import token_bytes, token_text


class Tokens:
    """A tokenizer's token texts and bytes (special tokens by name)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.table = tokenizer, token_bytes(tokenizer)

    def raw(self, token: int) -> bytes:
        raw = self.table[token] if token < len(self.table) else b""
        if raw:
            return raw
        name = self.tokenizer.convert_ids_to_tokens(token)
        return str(name or "").encode("utf-8")

    def text(self, token: int) -> str:
        return token_text(self.raw(token))


def chat(tokens: Tokens, entries) -> dict:
    """``choices[].logprobs`` of a chat completion (or of one streamed chunk)."""

    def one(token: int, logprob: float) -> dict:
        return {"token": tokens.text(token), "logprob": logprob, "bytes": list(tokens.raw(token))}

    content = [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}


def legacy(tokens: Tokens, entries, prompt_chars: int, echoed=()) -> dict:
    """``choices[].logprobs`` of a legacy completion (or of one streamed chunk); with ``echo``,
    the prompt's own entries (``echoed``, :func:`aimass.llm.decode.prompt_logprobs`) come first,
    the first one's logprob and ``top_logprobs`` null."""
    every = [*echoed, *entries]
    return {
        "tokens": [tokens.text(e.token) for e in every],
        "token_logprobs": [e.logprob for e in every],
        "top_logprobs": [None if e.top is None else {tokens.text(t): lp for t, lp in e.top} for e in every],
        "text_offset": prompt_offsets(tokens, [e.token for e in echoed])
        + [prompt_chars + e.offset for e in entries],
    }


def prompt_offsets(tokens: Tokens, ids: list[int]) -> list[int]:
    """Where each of a prompt's tokens starts in its text, in characters (a token that starts
    inside a character: where that character starts).

    >>> class Table(Tokens):
    ...     def __init__(self): self.tokenizer, self.table = None, [b"a", b"\\xc3", b"\\xa9b", b"c"]
    >>> prompt_offsets(Table(), [0, 1, 2, 3])  # "a", "é" cut in two, "b", "c"
    [0, 1, 1, 3]
    """
    decoder, chars, offsets = codecs.getincrementaldecoder("utf-8")("replace"), 0, []
    for token in ids:
        offsets.append(chars)
        chars += len(decoder.decode(tokens.raw(token)))
    return offsets
