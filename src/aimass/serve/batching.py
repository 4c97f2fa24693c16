"""Dynamic batching: concurrent requests to one model share a forward pass.

A request that finds the model idle runs at once. Requests that arrive while a batch
is running wait in a queue; when the model is free they are taken together,
up to ``max_batch_size`` items, waiting at most ``max_wait_ms`` for more when the
queue shows load. The handler's ``predict`` sees one list of items and returns one
row per item, so it is the same function with batching on or off.

Load is shed by deadline, not by a count: a request joins the queue only when the model,
at the speed it has measured (:class:`Throughput`), should finish the work ahead of it and
the request's own inputs within ``HEADROOM`` (half) of the request's deadline. Otherwise it
is refused at once (429) with a ``Retry-After`` of the time the backlog needs to drain, and
never queued. The other half is for what the prediction leaves out: the event loop, HTTP,
and the load a burst itself puts on the machine, which slows the model just when the queue
fills. A request admitted but not started in time (its pass, at the speed measured then,
would end past its deadline) is shed then, also 429, answered at once: nothing ran. 504 is for
a forward pass that ended too late; the pass still runs to its end and is metered (``charge``).
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aimass.errors import DeadlineExceeded, TooManyRequests, Unavailable

HEADROOM = 0.5  # a request is queued when the model's predicted time fits this share of its deadline


@dataclass(frozen=True)
class BatchSettings:
    """Per-model serving settings.

    Attributes:
        max_batch_size: Most inputs per forward pass.
        max_wait_ms: Longest wait to fill a batch when the queue shows load.
        max_queue: A memory bound only: requests waiting or running per model (default 1,024);
            one more is refused (429) whatever its deadline. Load is shed by deadline well
            before that: a request is queued only when the model is predicted to answer it
            within half its ``timeout_s`` (``HEADROOM``), so a burst the model can answer in
            time is served whole.
        timeout_s: Each request's deadline: decoding its inputs, then queueing and the forward
            pass, each get this long; past it the answer is 504, and queued work past it never
            runs. A request the model is not predicted to answer within ``HEADROOM`` (half) of
            it is refused with 429 before it queues.
        backend: ``auto`` (ONNX when the task exports it), ``torch``, ``onnx`` or ``onnx-int8``.
        workers: ``process``: ONNX forward passes in a child process; ``thread``: in the server.
        decode_threads: Threads that decode inputs for tasks whose decoding is real work
            (images), per model; 0: one per core the server may use. A flood of uploads waits
            for these threads (and gets 504 at its deadline) instead of taking every thread.
    """

    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 1024  # requests waiting or running: a memory bound; load is shed by deadline
    timeout_s: float = 30.0
    backend: str = "auto"  # auto (ONNX when the task exports it), torch, onnx, onnx-int8
    workers: str = "process"  # ONNX forward passes in a child process ("thread": in the server)
    decode_threads: int = 0  # 0: one per core


class Throughput:
    """How long the model takes for ``n`` inputs, learned from the batches it runs.

    A forward pass of ``n`` inputs is modelled as ``overhead + n * per_item`` seconds, each part an
    exponentially weighted average that each pass moves by what it can show about that part:

    - ``overhead`` follows what a pass took beyond its inputs' predicted cost, with weight
      ``1/n`` of the pass's: it is learned from small passes. A run of one-input passes (light
      load) reads as per-pass overhead, not as a slow model; a pass of 100 long texts moves it a
      hundredth as much, since its time says how costly those inputs were, and the overhead is
      multiplied by every batch a burst needs. One pass can raise it to at most twice what it was
      plus 10 ms (``MOST_STEP_S``), so one stall of the machine cannot make an idle model
      refuse small requests.
    - ``per_item`` follows what a pass took per input beyond the overhead, with weight
      ``(n - 1)/n`` of the pass's (a one-input pass cannot tell the two apart), and is capped by
      each pass's ``seconds / n``: a cost that long texts showed is dropped as soon as shorter ones
      run faster.

    A pass slower than predicted weighs ``slower`` (half) at once, since admitting on a stale, fast
    estimate turns a burst into 504s; a faster one weighs ``decay``. The first pass weighs all
    (the prior, ``prior_items_per_s`` and no overhead, is only a guess).

    >>> speed = Throughput()
    >>> for n, seconds in [(1, 0.006), (32, 0.050)] * 20:
    ...     speed.observe(n, seconds)
    >>> round(speed.seconds(64, max_batch=32), 2)  # two full batches
    0.1
    >>> speed.observe(100, 11.6)  # one request of 100 long texts
    >>> speed.seconds(1, max_batch=32) < 0.2  # a short text is still predicted fast
    True
    """

    MOST_STEP_S = 0.010  # one pass may raise the overhead to at most twice itself plus this

    def __init__(self, prior_items_per_s: float = 500.0, decay: float = 0.1, slower: float = 0.5):
        self.decay, self.slower = decay, slower
        self.overhead, self.per_item = 0.0, 1.0 / prior_items_per_s
        self.passes = 0

    def observe(self, n: int, seconds: float) -> None:
        """Add one batch of ``n`` inputs that took ``seconds``."""
        if n <= 0:
            return
        # slower than predicted: believe it at once (a burst loading the cores); faster: gradually
        weight = self.slower if seconds > self.overhead + n * self.per_item else self.decay
        most = 2 * self.overhead + self.MOST_STEP_S
        if not self.passes:  # the first pass replaces the prior, which was only a guess
            weight, most = 1.0, math.inf
        self.passes += 1
        fixed = max(0.0, seconds - n * self.per_item)  # what this pass shows of the overhead
        each = max(0.0, (seconds - self.overhead) / n)  # and of the cost of one input
        self.overhead = min(self.overhead + weight / n * (fixed - self.overhead), most)
        self.per_item += weight * (n - 1) / n * (each - self.per_item)
        self.per_item = min(self.per_item, seconds / n)

    def assuming(self, n: int, seconds: float) -> Throughput:
        """A copy that has also seen a pass of ``n`` inputs take ``seconds`` (a pass still running)."""
        other = copy.copy(self)
        other.observe(n, seconds)
        return other

    def seconds(self, items: int, max_batch: int) -> float:
        """Predicted seconds to run ``items`` inputs in batches of at most ``max_batch``."""
        if items <= 0:
            return 0.0
        return math.ceil(items / max_batch) * self.overhead + items * self.per_item


class Retired(Unavailable):
    """The version was swapped out between routing and queueing; the caller routes again."""


@dataclass
class _Job:
    items: list
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    deadline: float = math.inf  # perf_counter past which its answer is a 504: it does not start then
    queued: bool = True  # counted in Batcher.waiting_items (until it runs or is dropped)
    dropped: bool = False  # given up, or past its deadline when the model was free: never runs
    started: bool = False  # its forward pass has begun
    queued_behind: bool = False  # admitted behind other work (a busy model), not to an idle one
    finished: float | None = None  # when its forward pass ended (perf_counter)
    charge: Callable[[int, float], None] | None = None  # told (inputs, seconds) when its pass ended


class Batcher:
    """Queue + model thread for one deployed model version.

    ``run(items) -> rows`` executes in a thread of its own, which also collects the batches,
    so forward passes of one model never overlap (no oversubscription of a small machine's
    cores) and follow each other at the model's speed even while the event loop is saturated
    (say, refusing a burst). A request's deadline is judged by when its forward pass ended, not
    by when a busy event loop got round to noticing.
    ``observe(batch_size, seconds)`` is called after each batch (for metrics), in that thread.
    ``speed`` (:class:`Throughput`) learns from every batch and decides admission.
    """

    def __init__(self, run: Callable[[list], Sequence], settings: BatchSettings, observe=None):
        self.run = run
        self.settings = settings
        self.observe = observe
        self.pending = 0  # requests queued, running, or not yet handed their answer
        self.waiting_items = 0  # inputs admitted and not yet running
        self.speed = Throughput()
        self._running = 0  # inputs in the forward pass now running
        self._began, self._planned = 0.0, 0.0  # when that pass began, and its predicted seconds
        self._lock = threading.Lock()  # the counters above, shared by the event loop and the model thread
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # None: stop
        self._carry: _Job | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        threads = settings.decode_threads or len(os.sched_getaffinity(0))
        self._decoders = ThreadPoolExecutor(threads, thread_name_prefix="aimass-decode")
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._serve, name="aimass-model", daemon=True)
        self._thread.start()

    async def submit(
        self, items: list, timeout_s: float | None = None, charge: Callable[[int, float], None] | None = None
    ) -> Sequence:
        """The rows for ``items``; 429 when the model cannot answer them in time, 504 past the deadline."""
        rows, _ = await self.submit_metered(items, timeout_s, charge)
        return rows

    async def submit_metered(
        self, items: list, timeout_s: float | None = None, charge: Callable[[int, float], None] | None = None
    ) -> tuple[Sequence, float]:
        """Like :meth:`submit`, plus this request's share of the batch's compute seconds.

        ``timeout_s``: the seconds this request has left (e.g. after decoding its inputs), at most
        the service's ``timeout_s`` (the default). ``charge(inputs, seconds)`` is called once, on the
        event loop, when a forward pass that ran these inputs ends without an error, with their
        share of its compute seconds: also when the request was answered 504 meanwhile (the pass
        ran on), so what the model did for a caller is metered whatever the caller saw."""
        if self._closed or self._loop is None:
            raise Retired("This model version is shutting down.", hint="Retry; another version serves.")
        timeout = self.settings.timeout_s if timeout_s is None else min(timeout_s, self.settings.timeout_s)
        if timeout <= 0:
            raise _late("The request", self.settings.timeout_s)
        with self._lock:
            self._admit(len(items), timeout)
            job = _Job(list(items), self._loop.create_future(), charge=charge)
            job.deadline, job.queued_behind = (
                job.enqueued + timeout,
                bool(self.waiting_items or self._running),
            )
            self.waiting_items += len(job.items)
        self.pending += 1
        self._jobs.put(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            if job.finished is not None and job.finished - job.enqueued <= timeout:
                return await job.future  # answered in time; the event loop was late to notice
            if job.future.done() and not job.started:  # shed by the model thread as its deadline passed
                return await job.future
            job.future.cancel()  # nobody waits for it now: an answer that comes later is dropped
            if self._drop(job):
                raise _late("The prediction", timeout) from None
            raise self._shed(timeout) from None
        except asyncio.CancelledError:  # the request's task was cancelled (a shutdown past its grace)
            job.future.cancel()
            self._drop(job)  # not started: it never runs
            raise
        finally:
            self.pending -= 1  # counted until the caller has its answer (what drain waits for)

    def _admit(self, n: int, timeout: float) -> None:
        """Refuse (429) ``n`` inputs the model is predicted to answer only after ``timeout``
        seconds, or one request past ``max_queue``. An idle model takes anything."""
        wait, drain = self._wait(n)
        if self.pending >= self.settings.max_queue:
            reason = f"its queue is full ({self.pending} requests, at most {self.settings.max_queue})"
        elif wait <= HEADROOM * timeout or not (self.waiting_items or self._running):
            return
        else:
            reason = f"answering this request would take about {wait:.2f}s of its {timeout:g}s deadline"
        raise TooManyRequests(
            f"The model is busy: {reason}.",
            retry_after=float(max(1, math.ceil(drain))),
            hint="Retry after the Retry-After seconds (the time the queue needs to drain), "
            "or raise the service's timeout_s.",
        )

    def _wait(self, n: int) -> tuple[float, float]:
        """Predicted seconds until ``n`` more inputs are answered, and until the queue has drained:
        what is left of the pass now running, then the queue at the measured speed. Behind a
        queue (a burst), the new inputs' own batch is counted full: later requests will fill it.
        A pass running past its prediction is a live reading that the machine is slower now (a
        burst loading the cores, say): the queue is predicted as if it had ended just now."""
        batch, waiting, speed, busy = self.settings.max_batch_size, self.waiting_items, self.speed, 0.0
        if self._running:
            ran = time.perf_counter() - self._began
            busy = max(0.0, self._planned - ran)
            speed = speed.assuming(self._running, ran) if ran > self._planned else speed
        ahead = math.ceil((waiting + n) / batch) * batch if waiting else n
        return busy + speed.seconds(ahead, batch), busy + speed.seconds(waiting, batch)

    def _drop(self, job: _Job) -> bool:
        """The request gave up on ``job``: if it has not started, it never runs. Whether it had."""
        with self._lock:
            job.dropped = not job.started
            self._unqueue(job)
            return job.started

    def _shed(self, timeout: float) -> TooManyRequests:
        """A request admitted but never started within its deadline (the model ran slower than
        predicted, as under a burst that loads the cores): load shed late, not a failed
        prediction. Nothing ran, so a retry is safe: 429 with the backlog's drain time."""
        with self._lock:
            drain = self._wait(0)[1]
        return _busy(timeout, drain)

    def _unqueue(self, job: _Job) -> None:
        """``job`` runs now, or never: its inputs no longer count as waiting (call under the lock)."""
        if job.queued:
            job.queued = False
            self.waiting_items -= len(job.items)

    async def decode(self, fn: Callable, *args):
        """``fn(*args)`` (e.g. the handler's ``decode_request``) on this model's decode threads,
        off the event loop, within ``timeout_s`` (504 past it). Work still waiting for a thread
        at the deadline never runs; a flood of uploads queues here instead of taking every thread
        of the server."""
        work = asyncio.get_running_loop().run_in_executor(self._decoders, fn, *args)
        try:
            return await asyncio.wait_for(work, self.settings.timeout_s)
        except TimeoutError:
            raise _late("Decoding the inputs", self.settings.timeout_s) from None

    # ------------------------------------------------------------ the model thread
    def _serve(self) -> None:
        while (batch := self._collect()) is not None:
            jobs = self._begin(batch)
            if jobs and not self._run(jobs):
                return

    def _collect(self) -> list[_Job] | None:
        """The next batch: what is waiting now, plus (under load) what arrives within max_wait_ms;
        None once the batcher is closed."""
        first = self._carry or self._jobs.get()
        self._carry = None
        if first is None:
            return None
        batch, size = [first], len(first.items)
        loaded = not self._jobs.empty()
        deadline = time.perf_counter() + self.settings.max_wait_ms / 1000
        while size < self.settings.max_batch_size:
            left = deadline - time.perf_counter()
            try:
                job = self._jobs.get(loaded and left > 0, left if loaded and left > 0 else None)
            except queue.Empty:
                break
            if job is None:  # closed: run what was taken, then stop
                self._jobs.put(None)
                break
            if size + len(job.items) > self.settings.max_batch_size:
                self._carry = job
                break
            batch.append(job)
            size += len(job.items)
        return batch

    def _begin(self, batch: list[_Job]) -> list[_Job]:
        """The jobs of ``batch`` still wanted, now counted as running. Dropped here (they never
        run; the request is answered 429 as shed load at once, not when its deadline passes)
        even if the busy event loop has not answered them yet: jobs past their deadline, and
        jobs queued behind other work whose pass, at the speed measured now, would end past
        their deadline (the model slowed after they were admitted). A job that found the model
        idle runs whatever the prediction."""
        now, most = time.perf_counter(), self.settings.max_batch_size
        with self._lock:
            planned = now + self.speed.seconds(sum(len(j.items) for j in batch), most)
            shed = []
            for job in batch:
                self._unqueue(job)
                late = now > job.deadline or (job.queued_behind and planned > job.deadline)
                if late and not job.dropped:  # (a job its request gave up on is answered already)
                    shed.append(job)
                job.dropped = job.dropped or late
            jobs = [j for j in batch if not j.dropped]
            for job in jobs:
                job.started = True
            n = sum(len(j.items) for j in jobs)
            self._running = n
            self._began, self._planned = now, self.speed.seconds(n, most)
            drain = self._wait(0)[1] if shed else 0.0  # the Retry-After of the jobs shed
        self._refuse(shed, drain)
        return jobs

    def _refuse(self, jobs: list[_Job], drain: float) -> None:
        """Answer ``jobs`` (shed at :meth:`_begin`) 429 now, with ``drain`` as Retry-After."""
        try:
            for job in jobs:
                error = _busy(job.deadline - job.enqueued, drain)
                self._loop.call_soon_threadsafe(_fail, job, error)
        except RuntimeError:  # the event loop has closed: nobody waits for them
            pass

    def _run(self, jobs: list[_Job]) -> bool:
        """One forward pass; the answers go to the event loop. False once that loop is gone."""
        items = [item for job in jobs for item in job.items]
        began = time.perf_counter()
        try:
            outcome = self.run(items)
        except Exception as exc:  # each waiting request gets the error
            outcome = exc
        ended = time.perf_counter()
        with self._lock:
            self._running = 0
            if not isinstance(outcome, Exception):
                self.speed.observe(len(items), ended - began)
        for job in jobs:
            job.finished = ended
        if self.observe is not None and not isinstance(outcome, Exception):
            self.observe(len(items), ended - began)
        try:
            self._loop.call_soon_threadsafe(_deliver, jobs, outcome, ended - began)
        except RuntimeError:  # the event loop has closed
            return False
        return True

    async def drain(self, timeout: float) -> bool:
        """Stop taking requests and wait (up to ``timeout``) for the queued ones to finish."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.pending == 0

    def close(self) -> None:
        """Stop taking requests; the model thread runs what is queued and still wanted, then ends."""
        self._closed = True
        self._jobs.put(None)
        self._decoders.shutdown(wait=False, cancel_futures=True)

    def stop(self, timeout: float) -> bool:
        """:meth:`close`, then wait up to ``timeout`` seconds for the model thread to end (blocks:
        call it off the event loop). Whether it ended: one still in a forward pass ends with it."""
        self.close()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))
        return self._thread is None or not self._thread.is_alive()


def _deliver(jobs: list[_Job], outcome, seconds: float) -> None:
    """On the event loop: each job's rows and its share of the compute seconds, or the error.
    Each job's ``charge`` is told its share even if its request gave up (504) meanwhile."""
    if isinstance(outcome, Exception):
        for job in jobs:
            _fail(job, outcome)
        return
    total, start = sum(len(job.items) for job in jobs), 0
    for job in jobs:
        end, share = start + len(job.items), seconds * len(job.items) / total
        if job.charge is not None:
            job.charge(len(job.items), share)
        if not job.future.done():
            job.future.set_result((outcome[start:end], share))
        start = end


def _fail(job: _Job, error: Exception) -> None:
    """On the event loop: ``job``'s request gets ``error``, unless it has its answer already."""
    if not job.future.done():
        job.future.set_exception(error)


def _busy(timeout: float, drain: float) -> TooManyRequests:
    """The 429 for a request shed before it started: nothing ran, a retry after ``drain`` is safe."""
    return TooManyRequests(
        f"The model is busy: it could not start this request within its {timeout:g}s deadline.",
        retry_after=float(max(1, math.ceil(drain))),
        hint="Retry after the Retry-After seconds (nothing ran), or raise the service's timeout_s.",
    )


def _late(what: str, timeout: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"{what} took longer than {timeout:g}s.",
        hint="Send fewer or smaller inputs per request, or raise the service's timeout_s.",
    )
