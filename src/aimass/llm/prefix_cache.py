"""Prompt prefix caching for the int4 runner: a prompt that starts as an earlier one did (the chat
template's system prompt, a few-shot preamble, the same prompt again for ``n`` > 1) copies that
part's keys and values instead of computing them again.

Every chat request through the default SmolLM2 template opens with the same ~25 tokens of system
prompt, so most of a short question's prefill is shared. Entries are whole prompts' KV, keyed by
fine-tune (its LoRA changes K and V) and looked up by longest common prefix, least recently used
first out, within ``AIMASS_LLM_PREFIX_CACHE`` tokens (default 1,024; 0 turns it off; ~46 KB a
token for SmolLM2-135M). Reuse is exact: a prompt fed in two chunks gives the same bits as in one
(``MatMulNBits`` quantises activations per row, and attention is causal), as long as the last chunk
has two tokens or more.

>>> cache = PrefixCache(budget=100, minimum=2)
>>> cache.put((1, 2, 3, 4), None, np.zeros((1, 2, 1, 4, 3), np.float32))
>>> cache.match([1, 2, 3, 9, 9], None)[0], cache.match([1, 2, 3, 4], None)[0], cache.match([1, 2], "ft")[0]
(3, 2, 0)
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from aimass.errors import ConfigError


def _budget() -> int:
    value = os.environ.get("AIMASS_LLM_PREFIX_CACHE", "1024")
    if not value.strip().isdigit():
        raise ConfigError(
            f"AIMASS_LLM_PREFIX_CACHE={value!r} is not a number of tokens.",
            hint="Set it to a whole number of tokens (default 1024), or 0 to turn prefix caching off.",
        )
    return int(value)


def _common(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differs = np.flatnonzero(a[:n] != b[:n])
    return int(differs[0]) if len(differs) else n


class PrefixCache:
    """Whole prompts' KV ``[layers, 2, heads, tokens, head_dim]`` by (fine-tune, tokens)."""

    def __init__(self, budget: int | None = None, minimum: int = 8):
        self.budget = _budget() if budget is None else budget
        self.minimum = minimum  # shorter shared prefixes are not worth a lookup's copy
        self.entries: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.tokens = 0
        self.reused = 0  # prompt tokens served from the cache so far

    def match(self, ids: list[int], adapter: str | None) -> tuple[int, np.ndarray | None]:
        """(tokens to reuse, the KV holding them): the longest cached prefix of ``ids``, at most
        all but its last two tokens. (The caller needs the last token's logits, and a one-token
        chunk runs ``MatMulNBits``' one-row kernel, which rounds differently from a prompt's: the
        answer must not depend on what was cached.)"""
        if not self.budget or len(ids) <= self.minimum:
            return 0, None
        want = np.asarray(ids)
        best, found = 0, None
        for key, (tokens, _) in self.entries.items():
            if key[0] == adapter:
                n = _common(tokens, want)
                if n > best:
                    best, found = n, key
        best = min(best, len(ids) - 2)
        if best < self.minimum:
            return 0, None
        self.entries.move_to_end(found)
        self.reused += best
        return best, self.entries[found][1]

    def put(self, ids, adapter: str | None, kv: np.ndarray) -> None:
        """Keep a copy of prompt ``ids``'s KV (``kv`` holds exactly its tokens)."""
        key = (adapter, tuple(ids))
        if not self.budget or len(ids) > self.budget or len(ids) <= self.minimum or key in self.entries:
            return
        self.entries[key] = (np.asarray(ids), kv.copy())
        self.tokens += len(ids)
        while self.tokens > self.budget:
            key, _ = self.entries.popitem(last=False)
            self.tokens -= len(key[1])

    def drop(self, adapter: str) -> None:
        """Forget a fine-tune's prompts (it is no longer served)."""
        for key in [k for k in self.entries if k[0] == adapter]:
            self.tokens -= len(self.entries.pop(key)[0])
