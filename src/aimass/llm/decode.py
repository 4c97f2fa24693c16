"""Token-by-token decoding for causal LMs: sampling, stop strings and streaming deltas.

One loop serves :meth:`TextGenerator.generate` and the OpenAI-compatible routes, so a served answer
equals ``model.generate`` for the same seed. ``n`` choices of one prompt decode as one batch (the
rows share the prompt's length, so no padding). Each choice samples from its own generator seeded
``seed + index``. Stop strings are matched on the decoded text, across token boundaries: text that
could still turn into a stop string is held back, and a stop string is never returned.

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


@dataclass
class Choice:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None


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


def text_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a raw completion prompt (no template)."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return {i for i in ids if i is not None}


def pick(logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator]) -> list[int]:
    if params.temperature <= 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits.float() / params.temperature, -1)
    out = []
    for row, gen in zip(probs, generators):
        if params.top_p < 1.0:
            sorted_p, order = row.sort(descending=True)
            keep = (sorted_p.cumsum(0) - sorted_p) < params.top_p  # always keeps the top token
            row = torch.zeros_like(row).scatter_(0, order[keep], sorted_p[keep])
        out.append(int(torch.multinomial(row, 1, generator=gen)))
    return out


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompt_ids: list[int],
    params: SamplingParams,
    *,
    on_delta: Callable[[int, str, str | None], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Generation:
    """Decode ``params.n`` choices of one prompt. ``on_delta(index, text, finish_reason)`` is called
    with each piece of text as soon as it is safe to emit (and once with the finish reason);
    ``cancelled()`` true stops the loop at the next step (a disconnected stream)."""
    began = time.perf_counter()
    n = max(1, params.n)
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    stops = StopMatcher(params.stop)
    eos = eos_ids(model, tokenizer)
    choices = [Choice(i) for i in range(n)]
    sent = [0] * n
    produced = [0] * n
    first = 0.0

    def emit(i: int, upto: int, text: str, reason: str | None) -> None:
        piece = text[sent[i] : upto]
        sent[i] = max(sent[i], upto)
        choices[i].text = text[:upto] if reason else choices[i].text
        if on_delta is not None and (piece or reason):
            on_delta(i, piece, reason)

    ids = torch.tensor([prompt_ids] * n, dtype=torch.long)
    out = model(input_ids=ids, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1, :]
    for _ in range(max(0, params.max_tokens)):
        picked = pick(logits, params, generators)
        if not first:
            first = time.perf_counter() - began
        for i, tok in enumerate(picked):
            c = choices[i]
            if c.finish_reason:
                continue
            produced[i] += 1
            if tok in eos:
                c.finish_reason = "stop"
                text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
                emit(i, final_length(stops, text), text, "stop")
                continue
            c.token_ids.append(tok)
            text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
            at, safe = stops.scan(text)
            if at is not None:
                c.finish_reason = "stop"
                emit(i, at, text, "stop")
            elif len(c.token_ids) >= params.max_tokens:
                c.finish_reason = "length"
                emit(i, len(text), text, "length")
            else:
                if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                    safe = min(safe, len(text) - 1)
                emit(i, safe, text, None)
        if all(c.finish_reason for c in choices) or (cancelled is not None and cancelled()):
            break
        step = torch.tensor(picked, dtype=torch.long)[:, None]
        out = model(input_ids=step, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :]
    for i, c in enumerate(choices):  # max_tokens 0, or cancelled
        if not c.finish_reason:
            c.finish_reason = "length"
            text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
            emit(i, final_length(stops, text), text, "length")
    return Generation(choices, len(prompt_ids), sum(produced), first, time.perf_counter() - began)


def final_length(stops: StopMatcher, text: str) -> int:
    """Where the answer ends when decoding ends: at a stop string if one is there, else at the end."""
    at, _ = stops.scan(text)
    return len(text) if at is None else at
