"""Dynamic batching: concurrent requests to one model share a forward pass.

A request that finds the model idle runs at once. Requests that arrive while a batch
is running wait in a bounded queue; when the model is free they are taken together,
up to ``max_batch_size`` items, waiting at most ``max_wait_ms`` for more when the
queue shows load. The handler's ``predict`` sees one list of items and returns one
row per item, so it is the same function with batching on or off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aimass.errors import DeadlineExceeded, TooManyRequests, Unavailable


@dataclass(frozen=True)
class BatchSettings:
    """Per-model serving settings."""

    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 64  # requests waiting for the model; one more answers 429
    timeout_s: float = 30.0
    backend: str = "auto"  # auto (ONNX when the task exports it), torch, onnx, onnx-int8
    workers: str = "process"  # ONNX forward passes in a child process ("thread": in the server)


class Retired(Unavailable):
    """The version was swapped out between routing and queueing; the caller routes again."""


@dataclass
class _Job:
    items: list
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Queue + worker task for one deployed model version.

    ``run(items) -> rows`` executes in a single thread of its own, so forward passes of
    one model never overlap (no oversubscription of a small machine's cores).
    ``observe(batch_size, seconds)`` is called after each batch (for metrics).
    """

    def __init__(self, run: Callable[[list], Sequence], settings: BatchSettings, observe=None):
        self.run = run
        self.settings = settings
        self.observe = observe
        self.pending = 0  # requests queued, running, or not yet handed their answer
        self._queue: asyncio.Queue[_Job] | None = None
        self._carry: _Job | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="aimass-model")
        self._closed = False

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, items: list) -> Sequence:
        """The rows for ``items``; 429 when the queue is full, 504 after ``timeout_s``."""
        rows, _ = await self.submit_metered(items)
        return rows

    async def submit_metered(self, items: list) -> tuple[Sequence, float]:
        """Like :meth:`submit`, plus this request's share of the batch's compute seconds."""
        if self._closed or self._queue is None:
            raise Retired("This model version is shutting down.", hint="Retry; another version serves.")
        if self.pending >= self.settings.max_queue:
            raise TooManyRequests(
                f"The model's queue is full ({self.settings.max_queue} requests waiting).",
                retry_after=max(1.0, self.settings.timeout_s / 10),
                hint="Retry after the Retry-After seconds, or send more inputs per request.",
            )
        job = _Job(list(items), asyncio.get_running_loop().create_future())
        self.pending += 1
        self._queue.put_nowait(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.settings.timeout_s)
        except TimeoutError:
            job.future.cancel()  # not yet run: the worker skips it
            raise DeadlineExceeded(
                f"The prediction took longer than {self.settings.timeout_s:g}s.",
                hint="Send fewer inputs per request, or raise the service's timeout.",
            ) from None
        finally:
            self.pending -= 1  # counted until the caller has its answer (what drain waits for)

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            live = [j for j in batch if not j.future.done()]
            if live:
                await self._run(live)

    async def _collect(self) -> list[_Job]:
        """The next batch: what is waiting now, plus (under load) what arrives within max_wait_ms."""
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.items)
        loaded = not self._queue.empty()
        deadline = time.perf_counter() + self.settings.max_wait_ms / 1000
        while size < self.settings.max_batch_size:
            if self._queue.empty():
                left = deadline - time.perf_counter()
                if not loaded or left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            if size + len(job.items) > self.settings.max_batch_size:
                self._carry = job
                break
            batch.append(job)
            size += len(job.items)
        return batch

    async def _run(self, jobs: list[_Job]) -> None:
        items = [item for job in jobs for item in job.items]
        began = time.perf_counter()
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self._executor, self.run, items)
        except Exception as exc:  # each waiting request gets the error
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        if self.observe is not None:
            self.observe(len(items), time.perf_counter() - began)
        seconds = time.perf_counter() - began
        start = 0
        for job in jobs:
            end = start + len(job.items)
            if not job.future.done():
                job.future.set_result((rows[start:end], seconds * len(job.items) / len(items)))
            start = end

    async def drain(self, timeout: float) -> bool:
        """Stop taking requests and wait (up to ``timeout``) for the queued ones to finish."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.pending == 0

    def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
