"""Threads for generation requests, apart from the event loop's default executor.

A generation holds a thread until its last token (waiting on the shared decode loop, or decoding
itself with ``AIMASS_LLM_BATCHING=0``). On asyncio's default executor (``min(32, cores + 4)``
threads: 6 on 2 cores) six open streams capped the continuous batch at six rows and held up every
other threaded call of the server: dataset pages, jobs, the metering flush, deployments. Here
generations get threads of their own, at most ``AIMASS_LLM_MAX_REQUESTS`` (default 64) in flight;
one more is refused with 429 and ``Retry-After`` (the openai client retries it) until one ends.

>>> slots = Slots(2)
>>> slots.in_flight, slots.limit
(0, 2)
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from aimass.errors import ConfigError, TooManyRequests

DEFAULT_LIMIT = 64


def configured_limit() -> int:
    """``AIMASS_LLM_MAX_REQUESTS``: generations in flight at most (decoding and waiting for a row)."""
    value = os.environ.get("AIMASS_LLM_MAX_REQUESTS", str(DEFAULT_LIMIT))
    if not value.strip().isdigit() or int(value) < 1:
        raise ConfigError(
            f"AIMASS_LLM_MAX_REQUESTS={value!r} is not a positive whole number.",
            hint=f"Set it to the most generation requests in flight at once (default {DEFAULT_LIMIT}).",
        )
    return int(value)


class Slots:
    """At most ``limit`` generations running at once, each on a thread of this pool."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(limit, thread_name_prefix="aimass-llm")

    def start(self, work) -> asyncio.Future:
        """Run ``work()`` on a thread of its own now; the slot is free again when it returns.
        Raises :class:`TooManyRequests` (429) when ``limit`` generations are in flight."""
        return self.start_all([work])[0]

    def start_all(self, works: list) -> list[asyncio.Future]:
        """Run each of ``works`` on a thread of its own now, or none of them: 429 when fewer than
        ``len(works)`` slots are free (a legacy completion's several prompts)."""
        with self._lock:
            if self.in_flight + len(works) > self.limit:
                raise TooManyRequests(
                    f"{self.limit} generation requests are in flight, the most this server takes"
                    + (f"; this request needs {len(works)} at once." if len(works) > 1 else "."),
                    hint="Retry after a second, or raise AIMASS_LLM_MAX_REQUESTS.",
                    retry_after=1.0,
                )
            self.in_flight += len(works)
        loop = asyncio.get_running_loop()
        futures = []
        for done, work in enumerate(works):
            try:
                futures.append(loop.run_in_executor(self._pool, self._run, work))
            except BaseException:
                with self._lock:
                    self.in_flight -= len(works) - done
                raise
        return futures

    def _run(self, work):
        try:
            return work()
        finally:
            with self._lock:
                self.in_flight -= 1
