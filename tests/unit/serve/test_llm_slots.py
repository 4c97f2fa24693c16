"""Generation slots: their own threads, a bound on generations in flight, a clear 429 past it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aimass.errors import ConfigError, TooManyRequests
from aimass.serve.llm_slots import Slots, configured_limit


def test_a_slot_frees_when_its_work_ends_and_the_next_one_is_refused_until_then():
    async def scenario():
        slots, gate = Slots(2), threading.Event()
        first = slots.start(gate.wait)
        second = slots.start(lambda: threading.current_thread().name)
        assert (await second).startswith("aimass-llm")
        third = slots.start(gate.wait)
        with pytest.raises(TooManyRequests) as refused:
            slots.start(lambda: None)
        assert refused.value.http_status == 429 and refused.value.retry_after == 1.0
        assert slots.in_flight == 2
        gate.set()
        await asyncio.gather(first, third)
        assert slots.in_flight == 0
        assert await slots.start(lambda: 7) == 7

    asyncio.run(scenario())


def test_work_that_fails_frees_its_slot_and_raises_to_the_caller():
    async def scenario():
        slots = Slots(1)
        with pytest.raises(ZeroDivisionError):
            await slots.start(lambda: 1 / 0)
        assert slots.in_flight == 0

    asyncio.run(scenario())


def test_more_generations_than_asyncio_s_default_pool_run_at_once():
    """Twelve waits in flight together (asyncio's default pool has cores + 4 threads)."""

    async def scenario():
        slots, barrier = Slots(12), threading.Barrier(12, timeout=10)
        await asyncio.gather(*(slots.start(barrier.wait) for _ in range(12)))

    asyncio.run(scenario())


@pytest.mark.parametrize("value", ["0", "-3", "lots", ""])
def test_a_bad_limit_is_a_config_error_with_a_hint(monkeypatch, value):
    monkeypatch.setenv("AIMASS_LLM_MAX_REQUESTS", value)
    with pytest.raises(ConfigError, match="AIMASS_LLM_MAX_REQUESTS") as bad:
        configured_limit()
    assert "default 64" in bad.value.hint


def test_the_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("AIMASS_LLM_MAX_REQUESTS", raising=False)
    assert configured_limit() == 64
    monkeypatch.setenv("AIMASS_LLM_MAX_REQUESTS", "3")
    assert configured_limit() == 3
