"""Continuous batching: concurrent requests on one base model share each decode step.

One thread per base model runs the loop. A new sequence is prefilled on its own and joins the
running batch at the next decode step (its KV cache left-padded to the batch's length, the
padding masked out, positions kept per sequence). A finished or cancelled sequence (a client that
disconnected mid-stream) leaves the batch at once, freeing its slot. Sequences of different
fine-tunes of one base share the batch too: each row gets its own adapter's LoRA update
(:meth:`aimass.llm.hub.Base.using_rows`); a base under peft (one being fine-tuned) keeps one batch
per adapter, taking turns step by step.

A prompt longer than :data:`PREFILL_CHUNK` tokens is prefilled a chunk at a time, one chunk between
two decode steps of the running batch (vLLM's chunked prefill): a 3,900-token prompt stalled every
stream for the 17 s its one forward pass took.

Each sequence samples from its own generator (seeded ``seed + choice index``) and matches stop
strings on its own text exactly as :func:`aimass.llm.decode.generate` does; a request decoded alone
takes the same tokens as ``model.generate`` (batched with others, padding can move the logits by
float rounding).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from aimass.llm import decode

log = logging.getLogger("aimass.serve")
MAX_BATCH = int(os.environ.get("AIMASS_LLM_MAX_BATCH", "8"))
MIXED = "*"  # the one batch of a served base, whatever the rows' adapters
PREFILL_CHUNK = int(os.environ.get("AIMASS_LLM_PREFILL_CHUNK", "256"))  # tokens; 0: a prompt at once


@dataclass
class _Seq:
    request: _Request
    generator: torch.Generator
    track: decode.Track  # its text, stop strings, constraint, logprobs and streaming
    pending: int = -1  # the token picked last, to be fed at the next step
    position: int = 0  # real tokens in the cache

    @property
    def choice(self) -> decode.Choice:
        return self.track.choice


class Cancelled(RuntimeError):
    """The request's client left before it was answered."""


@dataclass
class _Request:
    prompt_ids: list[int]
    params: decode.SamplingParams
    adapter: str | None
    on_delta: object = None
    cancelled: object = None
    done: threading.Event = field(default_factory=threading.Event)
    seqs: list[_Seq] = field(default_factory=list)
    began: float = field(default_factory=time.perf_counter)
    first: float = 0.0
    error: BaseException | None = None
    cache: object = None  # a prompt prefilled a chunk at a time: its KV cache so far
    computed: int = 0  # ... and how many of its tokens that cache holds

    def is_cancelled(self) -> bool:
        return bool(self.cancelled is not None and self.cancelled())


class _Group:
    """The running batch of one adapter: its sequences, KV cache and attention mask."""

    def __init__(self):
        self.seqs: list[_Seq] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # [B, T] 1 = real token


class Scheduler:
    """The decode loop of one base (:class:`aimass.llm.hub.Base`)."""

    chunked = True  # long prompts prefilled a chunk at a time (PREFILL_CHUNK)

    def __init__(self, base, max_batch: int = MAX_BATCH):
        self.base, self.max_batch = base, max_batch
        self.incoming: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self.waiting: list[_Request] = []
        self.groups: dict[str | None, _Group] = {}
        self.eos = decode.eos_ids(base.model, base.tokenizer)
        self.steps = 0
        self.peak = 0  # the largest batch a decode step has run
        self.mixed_steps = 0  # decode steps whose rows ran more than one adapter (or the base too)
        self.prefills = 0  # prompts prefilled (one for all ``n`` choices of a request)
        self.chunk = PREFILL_CHUNK if self.chunked else 0
        self.prefilling: list[_Request] = []  # long prompts being prefilled a chunk at a time, in turn
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"llm-batcher-{base.backbone}", daemon=True)
        self.thread.start()

    @property
    def active(self) -> int:
        """Sequences in the running batches (read from any thread)."""
        for _ in range(10):
            try:
                return sum(len(g.seqs) for g in list(self.groups.values()))
            except RuntimeError:  # the loop changed the groups meanwhile: read again
                continue
        return 0

    def submit(self, prompt_ids, params, adapter, *, on_delta=None, cancelled=None) -> decode.Generation:
        """Decode ``params.n`` choices of one prompt in the shared batch; blocks until done."""
        request = _Request(list(prompt_ids), params, adapter, on_delta, cancelled)
        self.incoming.put(request)
        self.wake.set()
        request.done.wait()
        if request.error is not None:
            raise request.error
        choices = [s.choice for s in request.seqs]
        return decode.Generation(
            choices,
            len(prompt_ids),
            sum(s.track.produced for s in request.seqs),
            request.first,
            time.perf_counter() - request.began,
        )

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        while True:
            if not self.active and not self.waiting and not self.prefilling and self.incoming.empty():
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            try:
                decode.set_threads()
                with torch.inference_mode(), self.base.lock:
                    self._admit()
                    self._prefill_chunk()
                    for adapter, group in list(self.groups.items()):
                        if group.seqs:
                            self._step(group)
                        else:
                            del self.groups[adapter]
            except Exception as exc:  # fail the requests in flight, keep the loop alive
                log.exception("decode step failed")
                for group in self.groups.values():
                    for seq in group.seqs:
                        seq.request.error = exc
                        seq.request.done.set()
                self.groups.clear()

    def _forward(self, adapter, **inputs):
        with self.base.using(adapter) as model:
            return model(**inputs, use_cache=True)

    def _admit(self) -> None:
        while not self.incoming.empty():
            self.waiting.append(self.incoming.get())
        still = []
        for request in self.waiting:
            n = max(1, request.params.n)
            taken = self.active + sum(max(1, r.params.n) for r in self.prefilling)
            if taken + n > self.max_batch and taken and not request.is_cancelled():
                still.append(request)
                continue
            if self.chunk and len(request.prompt_ids) > self.chunk and not request.is_cancelled():
                self.prefilling.append(request)  # a chunk a pass, between the batch's decode steps
                continue
            try:
                self._prefill(request)
            except Exception as exc:  # this request only: it must not stay waiting and fail again
                log.exception("prefill failed")
                self._fail(request, exc)
        self.waiting = still

    def _fail(self, request: _Request, exc: BaseException) -> None:
        """End ``request`` with ``exc``: its sequences that joined a batch leave at the next step."""
        for seq in request.seqs:
            if not seq.choice.finish_reason:
                seq.track.finish("length")
        request.error = exc
        request.done.set()

    def _prefill(self, request: _Request) -> None:
        """Prefill ``request``'s prompt once; its ``n`` choices sample from the same logits and
        join the batch sharing that KV cache (vLLM's parallel sampling), not ``n`` prefills."""
        if request.is_cancelled():  # its client left while it waited
            self._fail(request, Cancelled("the request was cancelled"))
            return
        group = self._group_of(request)
        logits, cache = self._prefill_one(request, group)
        self._start(request, group, logits, cache)

    def _group_of(self, request: _Request) -> _Group:
        return self.groups.setdefault(request.adapter if self.base.peft else MIXED, _Group())

    def _prefill_chunk(self) -> None:
        """The next chunk of the first long prompt being prefilled; once its last chunk is in, its
        choices sample their first tokens and join the batch. Its failure (or its client's leaving)
        is its own."""
        if not self.prefilling:
            return
        request = self.prefilling[0]
        try:
            if request.is_cancelled():
                raise Cancelled("the request was cancelled")
            ids, start = request.prompt_ids, request.computed
            end = min(len(ids), start + self.chunk)
            chunk = torch.tensor([ids[start:end]], dtype=torch.long)
            out = self._forward(
                request.adapter, input_ids=chunk, past_key_values=request.cache, logits_to_keep=1
            )
            request.cache, request.computed = out.past_key_values, end
            if end < len(ids):
                return
            self.prefilling.pop(0)
            cache, request.cache = request.cache, None
            self._start(request, self._group_of(request), out.logits[0, -1, :], cache)
        except Exception as exc:  # noqa: BLE001 — this request only
            if not isinstance(exc, Cancelled):
                log.exception("prefill failed")
            if request in self.prefilling:
                self.prefilling.remove(request)
            request.cache = None
            self._fail(request, exc)

    def _start(self, request: _Request, group: _Group, logits, cache) -> None:
        """A prefilled prompt: its choices pick their first tokens and join ``group``."""
        params = request.params
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.prefills += 1
        request.first = time.perf_counter() - request.began
        going = []
        for i in range(max(1, params.n)):
            track = decode.Track(i, params, self.base.tokenizer, self.eos, request.on_delta)
            seq = _Seq(request, torch.Generator().manual_seed(seed + i), track)
            seq.position = len(request.prompt_ids)
            request.seqs.append(seq)
            token = track.choose(logits, seq.generator)
            if params.max_tokens <= 0:
                self._finish(seq, "length")
            elif self._take(seq, token):
                going.append(seq)
        if going:
            self._join(group, going, cache)
        self._maybe_done(request)

    def _prefill_one(self, request: _Request, group: _Group):
        """The next-token logits [vocab] of ``request``'s prompt, and its KV cache."""
        ids = torch.tensor([request.prompt_ids], dtype=torch.long)
        out = self._forward(request.adapter, input_ids=ids, logits_to_keep=1)
        return out.logits[0, -1, :], out.past_key_values

    def _join(self, group: _Group, seqs: list[_Seq], cache) -> None:
        """Add the choices of one prefilled prompt to the batch, each a row holding a copy of its
        cache: left-pad the shorter side's cache and mask."""
        t, k = seqs[0].position, len(seqs)
        if group.cache is None or not group.seqs:
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys.repeat(k, 1, 1, 1), layer.values.repeat(k, 1, 1, 1)
            group.cache, group.mask, group.seqs = cache, torch.ones((k, t), dtype=torch.long), list(seqs)
            return
        width = group.mask.shape[1]
        pad_new, pad_old = max(0, width - t), max(0, t - width)
        for old, new in zip(group.cache.layers, cache.layers):
            keys, values = _pad_left(new.keys, pad_new), _pad_left(new.values, pad_new)
            old.keys = torch.cat([_pad_left(old.keys, pad_old), keys.expand(k, -1, -1, -1)])
            old.values = torch.cat([_pad_left(old.values, pad_old), values.expand(k, -1, -1, -1)])
        row = torch.cat([torch.zeros(pad_new, dtype=torch.long), torch.ones(t, dtype=torch.long)])
        mask = torch.cat([torch.zeros((group.mask.shape[0], pad_old), dtype=torch.long), group.mask], 1)
        group.mask = torch.cat([mask, row.expand(k, -1)])
        group.seqs.extend(seqs)

    def _step(self, group: _Group) -> None:
        keep = [
            i for i, s in enumerate(group.seqs) if not s.choice.finish_reason and not s.request.is_cancelled()
        ]
        for s in group.seqs:
            if s.request.is_cancelled() and not s.choice.finish_reason:
                self._finish(s, "length")
        if len(keep) < len(group.seqs):
            self._select(group, keep)
        if not group.seqs:
            return
        logits = self._decode(group)
        self.steps += 1
        self.peak = max(self.peak, len(group.seqs))
        alive = []
        for row, seq in enumerate(group.seqs):
            seq.position += 1
            if seq.request.error is not None:  # another choice of its request failed this step
                continue
            try:  # one request's failure (its sampling, its constraint, its client) is its own
                token = seq.track.choose(logits[row], seq.generator)
                going = self._take(seq, token)
            except Exception as exc:  # noqa: BLE001 — the batch's other requests go on
                log.exception("a request failed at its next token")
                self._fail(seq.request, exc)
                continue
            if going:
                alive.append(row)
        if len(alive) < len(group.seqs):
            self._select(group, alive)

    def _decode(self, group: _Group) -> torch.Tensor:
        """One decode step of the batch: the next-token logits [rows, vocab]."""
        ids = torch.tensor([[s.pending] for s in group.seqs], dtype=torch.long)
        positions = torch.tensor([[s.position] for s in group.seqs], dtype=torch.long)
        mask = torch.cat([group.mask, torch.ones((len(group.seqs), 1), dtype=torch.long)], 1)
        rows = [s.request.adapter for s in group.seqs]
        self.mixed_steps += len(set(rows)) > 1
        with self.base.using_rows(rows) as model:
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=group.cache,
                use_cache=True,
            )
        group.cache, group.mask = out.past_key_values, mask
        return out.logits[:, -1, :]

    def _select(self, group: _Group, rows: list[int]) -> None:
        """Keep only ``rows`` of the batch (finished ones leave) and drop all-padding columns."""
        finished = [s for i, s in enumerate(group.seqs) if i not in set(rows)]
        group.seqs = [group.seqs[i] for i in rows]
        for seq in finished:
            self._maybe_done(seq.request)
        if not rows:
            group.cache, group.mask = None, None
            return
        self._keep_rows(group, rows)

    def _keep_rows(self, group: _Group, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long)
        mask = group.mask[index]
        start = int((mask.sum(0) == 0).long().cumprod(0).sum())  # leading columns no one uses
        group.mask = mask[:, start:]
        for layer in group.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def _take(self, seq: _Seq, token: int) -> bool:
        """Process a picked token as :func:`decode.generate` does; True while the sequence goes on."""
        if seq.track.take(token):
            seq.pending = token
            return True
        self._maybe_done(seq.request)
        return False

    def _finish(self, seq: _Seq, reason: str) -> None:
        seq.track.finish(reason)
        self._maybe_done(seq.request)

    @staticmethod
    def _maybe_done(request: _Request) -> None:
        if len(request.seqs) == max(1, request.params.n) and all(
            s.choice.finish_reason for s in request.seqs
        ):
            request.done.set()


class Int4Scheduler(Scheduler):
    """The decode loop of an int4 graph (:class:`aimass.llm.int4.Runner`, ``--llm-quant int4``):
    the same admission, sampling and stop handling, on ONNX Runtime; row i of the runner's KV
    buffer is the batch's i-th sequence, decoded through its own fine-tune's LoRA inputs."""

    chunked = False  # the runner prefills a row in one pass (its prefix cache reuses what it can)

    def __init__(self, base, runner, max_batch: int = MAX_BATCH):
        self.runner = runner
        super().__init__(base, min(max_batch, runner.max_batch))

    def _prefill_one(self, request: _Request, group: _Group):
        row = len(group.seqs)  # the next free row; it joins there (or is overwritten if it ends)
        logits = self.runner.prefill(request.prompt_ids, row, request.adapter)
        return torch.from_numpy(logits), row

    def _join(self, group: _Group, seqs: list[_Seq], cache) -> None:
        """The prompt was prefilled into row ``cache``; its choices take that row and the next ones,
        each a copy of its KV."""
        t = seqs[0].position
        for j in range(1, len(seqs)):
            self.runner.kv[:, :, cache + j, :, :t] = self.runner.kv[:, :, cache, :, :t]
        group.seqs.extend(seqs)

    def _decode(self, group: _Group) -> torch.Tensor:
        import numpy as np

        ids = np.array([[s.pending] for s in group.seqs])
        rows = [s.request.adapter for s in group.seqs]
        self.mixed_steps += len(set(rows)) > 1
        return torch.from_numpy(self.runner.forward(ids, [s.position for s in group.seqs], adapters=rows))

    def _keep_rows(self, group: _Group, rows: list[int]) -> None:
        self.runner.keep(rows, [s.position for s in group.seqs])


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    if n <= 0:
        return t
    return torch.cat([t.new_zeros((t.shape[0], t.shape[1], n, t.shape[3])), t], 2)


_SCHEDULERS: dict[tuple[int, str | None], Scheduler] = {}
_LOCK = threading.Lock()


def scheduler(base, adapter: str | None = None) -> Scheduler:
    """The scheduler decoding ``adapter`` (``None``: the base alone) on ``base``, started on first
    use: the base's shared loop, every served fine-tune in one batch, on the base's int4 graph
    with ``--llm-quant int4`` (a fine-tune not on it yet: the fp32 loop) or else in fp32."""
    runner = getattr(base, "int4", None)
    on_int4 = runner is not None and (adapter is None or adapter in runner.adapters)
    key = (id(base), "int4" if on_int4 else MIXED)
    with _LOCK:
        if key not in _SCHEDULERS:
            size = MAX_BATCH if enabled() else 1  # AIMASS_LLM_BATCHING=0: one sequence at a time
            _SCHEDULERS[key] = Int4Scheduler(base, runner, size) if on_int4 else Scheduler(base, size)
        return _SCHEDULERS[key]


def totals() -> tuple[int, int]:
    """(sequences decoding, requests waiting for a slot) over every base's scheduler."""
    with _LOCK:
        schedulers = list(_SCHEDULERS.values())
    return sum(s.active for s in schedulers), sum(len(s.waiting) + s.incoming.qsize() for s in schedulers)


def enabled() -> bool:
    """Continuous batching is on unless ``AIMASS_LLM_BATCHING=0`` (then one request at a time)."""
    return os.environ.get("AIMASS_LLM_BATCHING", "1") != "0"
