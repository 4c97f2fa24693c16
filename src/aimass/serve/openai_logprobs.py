"""Token log-probabilities in OpenAI's two shapes, from :class:`aimass.llm.decode.TokenLogprob`.

Chat completions: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal"}``.
Legacy completions: ``{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}``,
the offsets counted from the start of the prompt, as OpenAI does. A token that is not whole UTF-8
(half of a character) is written ``bytes:\\xNN..``; its ``bytes`` are the real ones.
"""

from __future__ import annotations

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


def legacy(tokens: Tokens, entries, prompt_chars: int) -> dict:
    """``choices[].logprobs`` of a legacy completion (or of one streamed chunk)."""
    return {
        "tokens": [tokens.text(e.token) for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{tokens.text(t): lp for t, lp in e.top} for e in entries],
        "text_offset": [prompt_chars + e.offset for e in entries],
    }
