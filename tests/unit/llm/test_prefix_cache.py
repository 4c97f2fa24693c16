"""The prefix cache keeps whole prompts by fine-tune, finds the longest shared start, and stays
within its token budget."""

from __future__ import annotations

import numpy as np

from aimass.llm.prefix_cache import PrefixCache


def _kv(tokens: int, fill: float) -> np.ndarray:
    return np.full((2, 2, 1, tokens, 4), fill, np.float32)


def test_longest_prefix_of_the_same_fine_tune_wins_and_leaves_the_last_token():
    cache = PrefixCache(budget=100, minimum=3)
    cache.put(list(range(10)), None, _kv(10, 1.0))
    cache.put(list(range(6)) + [50, 51], None, _kv(8, 2.0))
    cache.put(list(range(10)), "ft:1", _kv(10, 3.0))
    reuse, kv = cache.match(list(range(8)) + [99, 98], None)
    assert reuse == 8 and kv[0, 0, 0, 0, 0] == 1.0
    reuse, kv = cache.match(list(range(10)), None)
    assert reuse == 8  # the same prompt again: all but its last two tokens
    reuse, kv = cache.match(list(range(10)) + [7, 8], "ft:1")
    assert reuse == 10 and kv[0, 0, 0, 0, 0] == 3.0  # its own KV, not the base's
    assert cache.match([5, 6, 7, 8, 9], None) == (0, None)  # nothing shared at the start
    assert cache.reused == 8 + 8 + 10
    cache.drop("ft:1")
    assert cache.match(list(range(10)) + [7, 8], "ft:1") == (0, None)


def test_oldest_prompts_leave_first_and_the_budget_holds():
    cache = PrefixCache(budget=20, minimum=2)
    for start in (0, 100, 200):
        cache.put(list(range(start, start + 8)), None, _kv(8, start))
    assert cache.tokens == 16  # the first prompt was evicted to make room for the third
    assert cache.match(list(range(0, 8)), None) == (0, None)
    assert cache.match(list(range(200, 210)), None)[0] == 8
    cache.put(list(range(300, 330)), None, _kv(30, 0))  # longer than the whole budget: not kept
    assert cache.tokens == 16
    assert PrefixCache(budget=0).match(list(range(50)), None) == (0, None)  # turned off


def test_a_bad_budget_is_a_clear_error(monkeypatch):
    import pytest

    from aimass.errors import ConfigError

    monkeypatch.setenv("AIMASS_LLM_PREFIX_CACHE", "lots")
    with pytest.raises(ConfigError, match="AIMASS_LLM_PREFIX_CACHE"):
        PrefixCache()
    monkeypatch.setenv("AIMASS_LLM_PREFIX_CACHE", "64")
    assert PrefixCache().budget == 64
