"""The batcher groups concurrent requests, bounds its queue and times requests out."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aimass.errors import DeadlineExceeded, TooManyRequests
from aimass.serve.batching import Batcher, BatchSettings


class Recorder:
    """A stand-in forward pass that records the batch sizes it was called with."""

    def __init__(self, seconds: float = 0.02):
        self.seconds, self.sizes = seconds, []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items):
        self.gate.wait()
        self.sizes.append(len(items))
        time.sleep(self.seconds)
        return [f"out:{x}" for x in items]


def run(coro):
    return asyncio.run(coro)


def test_idle_request_runs_at_once_alone():
    async def main():
        rec = Recorder(0)
        b = Batcher(rec, BatchSettings(max_wait_ms=500))
        b.start()
        began = time.perf_counter()
        out = await b.submit(["a"])
        b.close()
        return out, time.perf_counter() - began, rec.sizes

    out, seconds, sizes = run(main())
    assert out == ["out:a"] and sizes == [1]
    assert seconds < 0.4  # did not wait max_wait_ms for company


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    async def main():
        rec = Recorder(0.05)
        b = Batcher(rec, BatchSettings(max_batch_size=8, max_wait_ms=5))
        b.start()
        outs = await asyncio.gather(*[b.submit([i, i + 100]) for i in range(20)])
        b.close()
        return outs, rec.sizes

    outs, sizes = run(main())
    assert outs == [[f"out:{i}", f"out:{i + 100}"] for i in range(20)]
    assert sum(sizes) == 40 and max(sizes) <= 8
    assert len(sizes) < 20  # requests were grouped


def test_full_queue_answers_429_and_the_rest_complete():
    async def main():
        rec = Recorder(0.01)
        rec.gate.clear()
        b = Batcher(rec, BatchSettings(max_batch_size=4, max_queue=8))
        b.start()
        tasks = [asyncio.ensure_future(b.submit([i])) for i in range(30)]
        await asyncio.sleep(0.05)
        rec.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        b.close()
        return results

    results = run(main())
    ok = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, TooManyRequests)]
    assert len(ok) == 8 and len(refused) == 22 and len(ok) + len(refused) == 30
    assert refused[0].retry_after >= 1 and "queue is full" in refused[0].message


def test_timeout_is_504_and_skipped_work_is_not_run():
    async def main():
        rec = Recorder(0.3)
        b = Batcher(rec, BatchSettings(max_batch_size=1, timeout_s=0.1))
        b.start()
        results = await asyncio.gather(b.submit(["slow"]), b.submit(["late"]), return_exceptions=True)
        await asyncio.sleep(0.4)
        b.close()
        return results, rec.sizes

    results, sizes = run(main())
    assert all(isinstance(r, DeadlineExceeded) for r in results)
    assert sizes == [1]  # the second request timed out in the queue and never ran


def test_errors_reach_every_request_of_the_batch_and_the_batcher_lives_on():
    calls = []

    def flaky(items):
        calls.append(len(items))
        if len(calls) == 1:
            raise ValueError("boom")
        return items

    async def main():
        b = Batcher(flaky, BatchSettings())
        b.start()
        first = await asyncio.gather(b.submit([1]), return_exceptions=True)
        second = await b.submit([2])
        b.close()
        return first, second

    first, second = run(main())
    assert isinstance(first[0], ValueError) and second == [2]


@pytest.mark.parametrize("pending", [0, 3])
def test_drain_waits_for_queued_work(pending):
    async def main():
        rec = Recorder(0.02)
        b = Batcher(rec, BatchSettings(max_batch_size=1))
        b.start()
        tasks = [asyncio.ensure_future(b.submit([i])) for i in range(pending)]
        await asyncio.sleep(0)
        drained = await b.drain(5)
        done = [t.result() for t in tasks]
        b.close()
        return drained, done

    drained, done = run(main())
    assert drained and len(done) == pending
