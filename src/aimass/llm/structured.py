"""Constrained decoding for ``response_format: {"type": "json_schema"}`` (OpenAI's Structured
Outputs): the answer is one JSON value that the request's JSON Schema accepts; and for vLLM's
``guided_json``, ``guided_regex`` and ``guided_choice`` (the text matches a regular expression, or is
one of a list of strings).

The schema is compiled by llguidance (the grammar engine vLLM and llama.cpp use too) into a
matcher over the model's tokenizer; before each token :meth:`SchemaConstraint.allowed` is the
matcher's token mask (about a millisecond for SmolLM2's 49,152 tokens), and the end-of-text tokens
are allowed only once the value is complete (then they are the only choice). Separators are compact
(``", "`` and ``": "``) and no other whitespace is allowed between tokens, so a small model cannot
spend its tokens on blank lines. Unlike JSON mode (:mod:`aimass.llm.json_mode`), an answer cut by
``max_tokens`` is not closed: its ``finish_reason`` is ``length`` and the text is a prefix, as
OpenAI's.

A schema is checked before any work (400 naming what llguidance could not compile): at most
:data:`MAX_SCHEMA_BYTES` of JSON, within llguidance's default parser limits (grammar size, lexer
states and per-step work), so a hostile schema costs bounded time. Its first token mask is computed
then too (the slowest one: a counted repetition's lexer states are built there), in the request's
thread rather than on the decode loop every stream shares.
"""

from __future__ import annotations

import json
import threading
import weakref

import llguidance
import llguidance.hf
import llguidance.torch
import torch

from aimass.errors import ConfigError

MAX_SCHEMA_BYTES = 64 * 1024
COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_BITS = torch.arange(32, dtype=torch.int32)
_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def grammar(schema: dict) -> str:
    """The llguidance grammar of a JSON Schema (not yet checked against a tokenizer)."""
    if not isinstance(schema, dict):
        raise ConfigError(f"A JSON Schema is an object; got {type(schema).__name__}.")
    text = json.dumps(schema)
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise ConfigError(
            f"The JSON Schema is {len(text.encode()):,} bytes; at most {MAX_SCHEMA_BYTES:,} are accepted.",
            hint="Describe fewer fields, or use $defs to share repeated parts.",
        )
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(text, overrides=COMPACT)
    except ValueError as exc:
        raise ConfigError(f"The JSON Schema cannot be read: {exc}") from None


def _lltokenizer(tokenizer, eos: frozenset[int]) -> llguidance.LLTokenizer:
    """llguidance's view of ``tokenizer`` (built once per tokenizer, ~0.3 s)."""
    with _lock:
        known = _tokenizers.get(tokenizer)
        if known is None or known[0] != eos:
            known = (eos, llguidance.hf.from_tokenizer(tokenizer, eos_token=sorted(eos)))
            _tokenizers[tokenizer] = known
        return known[1]


def json_schema(tokenizer, eos: set[int], schema: dict):
    """A factory of :class:`SchemaConstraint` for ``SamplingParams.constraint`` (one per choice).

    Raises:
        ConfigError: the schema is too large, or llguidance cannot compile it (its message).
    """
    hint = (
        "Structured outputs take objects, arrays, strings (enum, const, pattern, format), numbers, "
        "booleans, null, anyOf/oneOf and $ref."
    )
    return _factory(tokenizer, eos, grammar(schema), "The JSON Schema", hint)


def regex(tokenizer, eos: set[int], pattern: str):
    """As :func:`json_schema`, for text that matches ``pattern`` whole (vLLM's ``guided_regex``)."""
    if len(pattern.encode()) > MAX_SCHEMA_BYTES:
        raise ConfigError(f"The regular expression is over {MAX_SCHEMA_BYTES:,} bytes.")
    compiled = llguidance.LLMatcher.grammar_from_regex(pattern)
    return _factory(
        tokenizer, eos, compiled, "The regular expression", "Use Rust regex syntax: \\d, [a-z]+, (a|b)."
    )


def choice(tokenizer, eos: set[int], options: list[str]):
    """As :func:`json_schema`, for exactly one of ``options`` (vLLM's ``guided_choice``)."""
    if not options or sum(len(o.encode()) for o in options) > MAX_SCHEMA_BYTES:
        raise ConfigError(f"Give 1 to 256 choices, at most {MAX_SCHEMA_BYTES:,} bytes in all.")
    compiled = llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(o) for o in options))
    return _factory(tokenizer, eos, compiled, "The choices", None)


def _factory(tokenizer, eos: set[int], compiled: str, what: str, hint: str | None):
    lltok = _lltokenizer(tokenizer, frozenset(eos))
    problem = llguidance.LLMatcher.validate_grammar(compiled, lltok)
    first = None if problem else llguidance.LLMatcher(lltok, compiled, log_level=0)
    if first is not None and first.is_error():
        problem = first.get_error()
    if first is not None and not problem:  # the first mask now, in the request's thread, on a copy:
        # it warms what every choice's copy shares (``(a{1000}){1000}``: 0.7 s, not on the decode loop)
        warm = first.deep_copy()
        llguidance.torch.fill_next_token_bitmask(
            warm, llguidance.torch.allocate_token_bitmask(1, lltok.vocab_size), 0
        )
        if warm.is_error():  # past llguidance's limits on its first step: a 400 now
            problem = warm.get_error()
    if problem:
        raise ConfigError(f"{what} cannot be followed: {problem.strip()}", hint=hint)
    ends = torch.tensor(sorted(eos), dtype=torch.long)
    return lambda: SchemaConstraint(first.deep_copy(), lltok.vocab_size, ends)


class SchemaConstraint:
    """One choice's matcher: which tokens may come next, and what was picked."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, ends: torch.Tensor):
        self.matcher, self.vocab_size, self.ends = matcher, vocab_size, ends[ends < vocab_size]
        self.mask = llguidance.torch.allocate_token_bitmask(1, vocab_size)

    def allowed(self, left: int) -> torch.Tensor:
        """A boolean mask over the vocabulary (``left``, the tokens left, is not used: see the module)."""
        if self.matcher.is_stopped():  # complete (or, never expected, in error): only the end
            allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
            allowed[self.ends] = True
            return allowed
        llguidance.torch.fill_next_token_bitmask(self.matcher, self.mask, 0)
        bits = (self.mask[0, :, None] >> _BITS) & 1
        allowed = bits.flatten()[: self.vocab_size].bool()
        if bool(allowed[self.ends].any()):  # any end means all of them
            allowed[self.ends] = True
        return allowed

    def advance(self, token: int) -> None:
        self.matcher.consume_token(token)

    @property
    def complete(self) -> bool:
        return self.matcher.is_accepting()
