"""Token-by-token decoding for causal LMs: sampling, stop strings and streaming deltas.

One loop serves :meth:`TextGenerator.generate` and the OpenAI-compatible routes, so a served answer
equals ``model.generate`` for the same seed. ``n`` choices of one prompt decode as one batch (the
rows share the prompt's length, so no padding). Each choice samples from its own generator seeded
``seed + index``. Stop strings are matched on the decoded text, across token boundaries: text that
could still turn into a stop string is held back, and a stop string is never returned.

A request may ask for the log-probabilities of the picked tokens and their top alternatives
(``logprobs``): they are those of the distribution the token was drawn from,
``softmax(logits / temperature)`` (temperature 0, greedy: the model's own distribution), after
``logit_bias``, the frequency and presence penalties and a constraint's mask (JSON mode), and
before ``top_p``'s cut.

>>> m = StopMatcher(["\\n\\n", "END"])
>>> m.scan("Hello EN")   # "EN" may become "END": held back
(None, 6)
>>> m.scan("Hello END!")
(6, 6)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """What a request asks for. ``temperature`` 0 is greedy; ``seed`` None draws one at random."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: int | None = None  # None: none; k: the picked token's and the k most likely ones'
    constraint: Callable[[], object] | None = None  # a new per-choice processor (allowed/advance)
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit (OpenAI's, -100..100)
    frequency_penalty: float = 0.0  # subtracted per time a token was generated (OpenAI's, -2..2)
    presence_penalty: float = 0.0  # subtracted once from a token that was generated (-2..2)


@dataclass
class TokenLogprob:
    """A picked token, its log-probability, the ``top`` alternatives ``[(id, logprob)]`` and
    ``offset``: how many characters of the choice's text come before it. A prompt's first token
    (:func:`prompt_logprobs`) has no logprob and no ``top``: both None."""

    token: int
    logprob: float | None
    top: list[tuple[int, float]] | None
    offset: int = 0


@dataclass
class Choice:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    logprobs_sent: int = 0  # entries already handed to on_delta


@dataclass
class Generation:
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int
    first_token_s: float = 0.0
    seconds: float = 0.0


class StopMatcher:
    """Finds stop strings in growing text; says how much of it is safe to emit."""

    def __init__(self, stops):
        self.stops = [s for s in (stops or ()) if s]

    def scan(self, text: str) -> tuple[int | None, int]:
        """(index where the first stop string starts or None, how many characters are safe to emit)."""
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            return min(hits), min(hits)
        hold = 0
        for s in self.stops:  # the longest tail of ``text`` that is a proper prefix of a stop string
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return None, len(text) - hold


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (``AIMASS_LLM_THREADS``, default 1): on a busy 2-core machine one
    decode step's attention took 10-13 ms with 2 threads and microseconds with 1 (docs: MODELS.md)."""
    threads = int(threads or os.environ.get("AIMASS_LLM_THREADS") or 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of ``messages`` in the model's chat template, ready for the assistant's answer."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def text_ids(tokenizer, prompt: str | list[int]) -> list[int]:
    """Token ids of a raw completion prompt (no template); a prompt sent as token ids is its own."""
    if isinstance(prompt, list):
        return list(prompt)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return {i for i in ids if i is not None}


GREEDY_BELOW = 1e-5  # a temperature under this samples greedily, as vLLM's (1e-38 overflowed to inf)


def greedy(params: SamplingParams) -> bool:
    return params.temperature < GREEDY_BELOW


def adjusted(scores: torch.Tensor, params: SamplingParams, generated: list[int]) -> torch.Tensor:
    """``scores`` (a new tensor; never changed in place) with OpenAI's ``logit_bias`` added and its
    penalties subtracted, by each token's count in the text generated so far:
    ``logit -= count * frequency_penalty + (count > 0) * presence_penalty``.

    >>> p = SamplingParams(logit_bias={0: 5.0}, frequency_penalty=1.0, presence_penalty=0.5)
    >>> adjusted(torch.zeros(3), p, [1, 1]).tolist()
    [5.0, -2.5, 0.0]
    """
    vocab = scores.shape[-1]
    if params.logit_bias:
        bias = [(i, b) for i, b in params.logit_bias.items() if 0 <= i < vocab]
        ids = torch.tensor([i for i, _ in bias], dtype=torch.long)
        scores = scores.index_add(-1, ids, torch.tensor([b for _, b in bias], dtype=scores.dtype))
    if (params.frequency_penalty or params.presence_penalty) and generated:
        counts = torch.bincount(torch.tensor(generated, dtype=torch.long), minlength=vocab)[:vocab]
        counts = counts.to(scores.dtype)
        scores = scores - counts * params.frequency_penalty - (counts > 0) * params.presence_penalty
    return scores


def sample(scores: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token from a row of (masked) logits: the argmax at temperature 0 (or under
    :data:`GREEDY_BELOW`), else a draw from ``softmax(scores / temperature)`` cut to the ``top_p``
    nucleus."""
    if greedy(params):
        return int(scores.argmax(-1))
    row = torch.softmax(scores.float() / params.temperature, -1)
    if params.top_p < 1.0:
        sorted_p, order = row.sort(descending=True)
        keep = (sorted_p.cumsum(0) - sorted_p) < params.top_p  # always keeps the top token
        row = torch.zeros_like(row).scatter_(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(row, 1, generator=generator))


def token_logprob(scores: torch.Tensor, token: int, params: SamplingParams, offset: int) -> TokenLogprob:
    """The log-probability of ``token`` and of the ``params.logprobs`` most likely tokens under the
    distribution sampled from (``scores / temperature``; greedy: the scores as they are)."""
    scaled = scores.float() if greedy(params) else scores.float() / params.temperature
    logp = torch.log_softmax(scaled, -1)
    top = []
    if params.logprobs:
        values, ids = logp.topk(min(params.logprobs, logp.shape[-1]))
        top = [(int(i), float(v)) for v, i in zip(values, ids) if v > float("-inf")]
    return TokenLogprob(token, float(logp[token]), top, offset)


SCORE_CHUNK = 512  # prompt positions turned into log-probabilities at a time (4k x 49k floats: 0.8 GB)


@torch.inference_mode()
def prompt_logprobs(model, ids: list[int], top: int) -> list[TokenLogprob]:
    """Each of a prompt's tokens with its log-probability given the tokens before it and the ``top``
    most likely tokens there, from one forward pass over the prompt: what a legacy completion with
    ``echo`` and ``logprobs`` lists for its prompt (lm-evaluation-harness scores with it). These are
    the model's own distributions (no temperature, bias or penalty). The first token has nothing
    before it: its logprob and ``top`` are None, as OpenAI answers."""
    logits = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0]
    entries = [TokenLogprob(ids[0], None, None)]
    for start in range(0, len(ids) - 1, SCORE_CHUNK):
        end = min(start + SCORE_CHUNK, len(ids) - 1)
        logp = torch.log_softmax(logits[start:end].float(), -1)  # row i: the token after position i
        after = ids[start + 1 : end + 1]
        picked = logp.gather(1, torch.tensor(after)[:, None])[:, 0].tolist()
        values, where = logp.topk(min(top, logp.shape[-1]), -1)
        for token, logprob, vs, ws in zip(after, picked, values.tolist(), where.tolist(), strict=True):
            entries.append(TokenLogprob(token, logprob, list(zip(ws, vs, strict=True))))
    return entries


class Track:
    """One choice being decoded: picks its tokens (with its constraint and logprobs), matches stop
    strings on its text and hands safe text to ``on_delta(index, text, finish_reason, logprobs)``.
    :func:`generate` and the continuous batcher both decode through it."""

    def __init__(self, index: int, params: SamplingParams, tokenizer, eos: set[int], on_delta=None):
        self.choice, self.params, self.tokenizer, self.eos = Choice(index), params, tokenizer, eos
        self.stops = StopMatcher(params.stop)
        self.constraint = params.constraint() if params.constraint is not None else None
        self.on_delta = on_delta
        self.text, self.sent, self.produced = "", 0, 0
        self._entry: TokenLogprob | None = None

    def choose(self, logits: torch.Tensor, generator: torch.Generator) -> int:
        """Pick the next token from this choice's row of logits ``[vocab]``."""
        scores = adjusted(logits.float(), self.params, self.choice.token_ids)
        if self.constraint is not None:
            left = self.params.max_tokens - len(self.choice.token_ids) - 1
            allowed = self.constraint.allowed(left)
            if allowed.shape[0] < scores.shape[0]:  # the model's padded vocabulary rows
                allowed = torch.cat([allowed, allowed.new_zeros(scores.shape[0] - allowed.shape[0])])
            scores = scores.masked_fill(~allowed[: scores.shape[0]], float("-inf"))
        token = sample(scores, self.params, generator)
        if self.params.logprobs is not None:
            self._entry = token_logprob(scores, token, self.params, len(self.text))
        return token

    def take(self, token: int) -> bool:
        """Add a picked token; False once the choice is finished (end of text, stop, length)."""
        choice = self.choice
        self.produced += 1
        if token in self.eos:
            self.emit(final_length(self.stops, self.text), "stop")
            return False
        choice.token_ids.append(token)
        if self._entry is not None:
            choice.logprobs.append(self._entry)
        if self.constraint is not None:
            self.constraint.advance(token)
        self.text = self.tokenizer.decode(choice.token_ids, skip_special_tokens=True)
        at, safe = self.stops.scan(self.text)
        if at is not None:
            self.emit(at, "stop")
            return False
        if len(choice.token_ids) >= self.params.max_tokens:
            self.emit(len(self.text), "length")
            return False
        if self.text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            safe = min(safe, len(self.text) - 1)
        self.emit(safe, None)
        return True

    def finish(self, reason: str = "length") -> None:
        """End the choice where it is (``max_tokens`` 0, or its client went away)."""
        if not self.choice.finish_reason:
            self.emit(final_length(self.stops, self.text), reason)

    def emit(self, upto: int, reason: str | None) -> None:
        piece = self.text[self.sent : upto]
        self.sent = max(self.sent, upto)
        if reason:
            self.choice.text, self.choice.finish_reason = self.text[:upto], reason
        entries = self._release(upto, reason)
        if self.on_delta is not None and (piece or reason or entries):
            self.on_delta(self.choice.index, piece, reason, entries)

    def _release(self, upto: int, reason: str | None) -> list[TokenLogprob]:
        """The logprobs to send with text up to ``upto``: tokens that start before it. At the end,
        tokens of a stop string that was cut off are dropped from the choice."""
        entries, start = self.choice.logprobs, self.choice.logprobs_sent
        end = len(entries)
        if not (reason and upto >= len(self.text)):
            end = next((i for i in range(start, len(entries)) if entries[i].offset >= upto), end)
        if reason:
            del entries[end:]
        self.choice.logprobs_sent = end
        return entries[start:end]


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompt_ids: list[int],
    params: SamplingParams,
    *,
    on_delta: Callable[[int, str, str | None, list[TokenLogprob]], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Generation:
    """Decode ``params.n`` choices of one prompt. ``on_delta(index, text, finish_reason, logprobs)``
    is called with each piece of text as soon as it is safe to emit (and once with the finish
    reason), with the logprobs of its tokens when asked for; ``cancelled()`` true stops the loop at
    the next step (a disconnected stream)."""
    began = time.perf_counter()
    n = max(1, params.n)
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    eos = eos_ids(model, tokenizer)
    tracks = [Track(i, params, tokenizer, eos, on_delta) for i in range(n)]
    first = 0.0
    ids = torch.tensor([prompt_ids] * n, dtype=torch.long)
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)  # the last position's only
    past, logits = out.past_key_values, out.logits[:, -1, :]
    for _ in range(max(0, params.max_tokens)):
        picked = [t.choose(row, g) for t, row, g in zip(tracks, logits, generators)]
        if not first:
            first = time.perf_counter() - began
        for track, tok in zip(tracks, picked):
            if not track.choice.finish_reason:
                track.take(tok)
        if all(t.choice.finish_reason for t in tracks) or (cancelled is not None and cancelled()):
            break
        step = torch.tensor(picked, dtype=torch.long)[:, None]
        out = model(input_ids=step, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :]
    for track in tracks:  # max_tokens 0, or cancelled
        track.finish()
    choices = [t.choice for t in tracks]
    return Generation(
        choices, len(prompt_ids), sum(t.produced for t in tracks), first, time.perf_counter() - began
    )


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[list[int]], params: SamplingParams) -> list[Choice]:
    """One choice for each prompt, the prompts decoded side by side in one batch: left-padded, the
    padding masked out and positions counted per row, each row picking and ending (end of text,
    stop string, ``max_tokens``) through its own :class:`Track` as :func:`generate` does. A file's
    answers come several times faster than one prompt at a time. The same prompts always give the
    same answers; a prompt's answer can differ from decoding it alone by the float rounding of
    the padded batch (as in the continuous batcher)."""
    if not prompts:
        return []
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
    generators = [torch.Generator().manual_seed(seed) for _ in prompts]
    eos = eos_ids(model, tokenizer)
    tracks = [Track(0, params, tokenizer, eos) for _ in prompts]
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    past, logits = out.past_key_values, out.logits[:, -1, :]
    for _ in range(max(0, params.max_tokens)):
        picked = [t.choose(row, g) for t, row, g in zip(tracks, logits, generators, strict=True)]
        for track, token in zip(tracks, picked, strict=True):
            if not track.choice.finish_reason:
                track.take(token)
        if all(t.choice.finish_reason for t in tracks):
            break
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
        step = torch.tensor(picked, dtype=torch.long)[:, None]
        out = model(
            input_ids=step, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
        )
        past, logits = out.past_key_values, out.logits[:, -1, :]
    for track in tracks:
        track.finish()
    return [t.choice for t in tracks]


def final_length(stops: StopMatcher, text: str) -> int:
    """Where the answer ends when decoding ends: at a stop string if one is there, else at the end."""
    at, _ = stops.scan(text)
    return len(text) if at is None else at
