"""Constrained decoding for ``response_format: {"type": "json_object"}``: the answer always parses.

A small pushdown automaton reads JSON byte by byte (RFC 8259, top level an object). Before each
token the decoder asks :meth:`JsonConstraint.allowed` which tokens keep the text a valid prefix of
a JSON object *and* leave enough tokens to close it: every state knows its shortest completion
(``{"a": [1, "x`` -> ``"]}``), and a token is allowed only if the completion of the state it leads
to fits in the tokens left after it. So an answer cut by ``max_tokens`` is still closed, and the
end-of-text token is allowed only once the object is complete (then it is the only choice).
Special tokens and, outside strings, any non-JSON byte are never allowed; strings hold valid
UTF-8 (a string cannot close halfway through a character).

The allowed set of each automaton state is computed once per tokenizer and cached: tokens are
grouped by first byte, and inside a string a token of whole UTF-8 characters without ``"``, ``\\``
or control bytes is allowed without simulation, so a new state costs a few thousand token walks,
not the vocabulary.

>>> m = Machine()
>>> s = m.feed(m.start, b'{"a": [1, "x')
>>> m.closing(s)
b'"]}'
>>> m.feed(s, b'"]}') == m.done, m.feed(m.start, b'[1]')
(True, None)
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from aimass.llm.vocab import token_bytes

# automaton modes
START, VALUE, FIRST_VALUE, FIRST_KEY, KEY, COLON, AFTER, DONE = range(8)
STR, ESC, HEX, LIT = 8, 9, 10, 11
MINUS, ZERO, INT, FRAC0, FRAC, EXP0, EXPS, EXP = range(12, 20)
UTF = 20  # inside a string, within a multi-byte UTF-8 character: aux (key, bytes left, lo, hi)

WS = frozenset(b" \t\n\r")
DIGITS = frozenset(b"0123456789")
HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_STRUCTURAL = frozenset({START, VALUE, FIRST_VALUE, FIRST_KEY, KEY, COLON, AFTER})
_NUMBER_END = {ZERO, INT, FRAC, EXP}  # a number may stop here
_HEAD = {  # the shortest text that finishes the current token/member, before closing brackets
    START: b"{",
    VALUE: b"0",
    KEY: b'"":0',
    COLON: b":0",
    MINUS: b"0",
    FRAC0: b"0",
    EXP0: b"0",
    EXPS: b"0",
}

NEVER = 32767  # the closing length of a token that is not allowed (int16 tables: 100 kB a state)
CACHED_STATES = 512
State = tuple  # (mode, aux, stack): aux is the key flag of a string, (key, hex left), literal rest


class Machine:
    """The JSON automaton; states are hashable tuples, transitions memoised."""

    start: State = (START, None, ())
    done: State = (DONE, None, ())

    MEMO = 1 << 20  # transitions remembered (then the memo starts afresh)

    def __init__(self):
        self._memo: dict[tuple[State, int], State | None] = {}

    def step(self, state: State, c: int) -> State | None:
        key = (state, c)
        if key not in self._memo:
            if len(self._memo) >= self.MEMO:
                self._memo.clear()
            self._memo[key] = _step(state, c)
        return self._memo[key]

    def feed(self, state: State | None, data: bytes) -> State | None:
        for c in data:
            if state is None:
                return None
            state = self.step(state, c)
        return state

    @staticmethod
    def closing(state: State) -> bytes:
        """The shortest bytes that complete the JSON object from ``state``."""
        mode, aux, stack = state
        if mode in (STR, ESC, HEX, UTF):
            head = _string_rest(mode, aux)
        elif mode == LIT:
            head = aux
        else:
            head = _HEAD.get(mode, b"")
        tail = b"".join(b"}" if s == "o" else b"]" for s in reversed(stack))
        return head + (b"}" if mode == START else tail)


def _string_rest(mode: int, aux) -> bytes:
    """The shortest end of an open string (and of the member, for a key)."""
    key = aux[0] if mode in (HEX, UTF) else aux
    if mode == ESC:
        rest = b"n"
    elif mode == HEX:
        rest = b"0" * aux[1]
    elif mode == UTF:  # the smallest valid continuation of the character
        rest = bytes([aux[2]]) + b"\x80" * (aux[1] - 1)
    else:
        rest = b""
    return rest + b'"' + (b":0" if key else b"")


def _after(stack: tuple) -> State:
    return (AFTER, None, stack) if stack else Machine.done


def _begin_value(c: int, stack: tuple) -> State | None:
    if c == ord("{"):
        return (FIRST_KEY, None, stack + ("o",))
    if c == ord("["):
        return (FIRST_VALUE, None, stack + ("a",))
    if c == ord('"'):
        return (STR, False, stack)
    if c == ord("-"):
        return (MINUS, None, stack)
    if c == ord("0"):
        return (ZERO, None, stack)
    if c in DIGITS:
        return (INT, None, stack)
    literal = {ord("t"): b"rue", ord("f"): b"alse", ord("n"): b"ull"}.get(c)
    return (LIT, literal, stack) if literal else None


def _structural(state: State, c: int) -> State | None:
    mode, _, stack = state
    if c in WS:
        return state
    if mode == START:
        return (FIRST_KEY, None, ("o",)) if c == ord("{") else None
    if mode == FIRST_VALUE and c == ord("]"):
        return _after(stack[:-1])
    if mode in (VALUE, FIRST_VALUE):
        return _begin_value(c, stack)
    if mode == FIRST_KEY and c == ord("}"):
        return _after(stack[:-1])
    if mode in (FIRST_KEY, KEY):
        return (STR, True, stack) if c == ord('"') else None
    if mode == COLON:
        return (VALUE, None, stack) if c == ord(":") else None
    top = stack[-1]  # AFTER: a value ended inside a container
    if c == ord(","):
        return (KEY, None, stack) if top == "o" else (VALUE, None, stack)
    if (c == ord("}") and top == "o") or (c == ord("]") and top == "a"):
        return _after(stack[:-1])
    return None


def _utf8_lead(c: int) -> tuple[int, int, int] | None:
    """(bytes that follow, lowest and highest valid next byte) of a UTF-8 lead byte (RFC 3629)."""
    if 0xC2 <= c <= 0xDF:
        return 1, 0x80, 0xBF
    if 0xE0 <= c <= 0xEF:
        return 2, 0xA0 if c == 0xE0 else 0x80, 0x9F if c == 0xED else 0xBF
    if 0xF0 <= c <= 0xF4:
        return 3, 0x90 if c == 0xF0 else 0x80, 0x8F if c == 0xF4 else 0xBF
    return None


def _string(state: State, c: int) -> State | None:
    mode, aux, stack = state
    if mode == STR:
        if c == ord('"'):
            return (COLON, None, stack) if aux else _after(stack)
        if c == ord("\\"):
            return (ESC, aux, stack)
        if c >= 0x80:  # a string never ends inside a character: the text stays whole UTF-8
            lead = _utf8_lead(c)
            return (UTF, (aux, *lead), stack) if lead else None
        return None if c < 0x20 else state
    if mode == UTF:
        key, left, lo, hi = aux
        if not lo <= c <= hi:
            return None
        return (STR, key, stack) if left == 1 else (UTF, (key, left - 1, 0x80, 0xBF), stack)
    if mode == ESC:
        if c in b'"\\/bfnrt':
            return (STR, aux, stack)
        return (HEX, (aux, 4), stack) if c == ord("u") else None
    key, left = aux  # HEX
    if c not in HEXDIGITS:
        return None
    return (STR, key, stack) if left == 1 else (HEX, (key, left - 1), stack)


_NUMBER = {  # mode -> {byte class: next mode}; "end" lets a complete number stop
    MINUS: {"0": ZERO, "d": INT},
    ZERO: {".": FRAC0, "e": EXP0},
    INT: {"0": INT, "d": INT, ".": FRAC0, "e": EXP0},
    FRAC0: {"0": FRAC, "d": FRAC},
    FRAC: {"0": FRAC, "d": FRAC, "e": EXP0},
    EXP0: {"0": EXP, "d": EXP, "+": EXPS},
    EXPS: {"0": EXP, "d": EXP},
    EXP: {"0": EXP, "d": EXP},
}


def _byte_class(c: int) -> str:
    if c == ord("0"):
        return "0"
    if c in DIGITS:
        return "d"
    if c in b"eE":
        return "e"
    if c in b"+-":
        return "+"
    return chr(c) if c == ord(".") else ""


def _number(state: State, c: int) -> State | None:
    mode, _, stack = state
    nxt = _NUMBER[mode].get(_byte_class(c))
    if nxt is not None:
        return (nxt, None, stack)
    return _step(_after(stack), c) if mode in _NUMBER_END else None


def _step(state: State, c: int) -> State | None:
    mode, aux, stack = state
    if mode == DONE:
        return None
    if mode in _STRUCTURAL:
        return _structural(state, c)
    if mode in (STR, ESC, HEX, UTF):
        return _string(state, c)
    if mode == LIT:
        if c != aux[0]:
            return None
        return _after(stack) if len(aux) == 1 else (LIT, aux[1:], stack)
    return _number(state, c)


def _whole_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Vocabulary:
    """A tokenizer's token bytes, grouped for fast allowed-set computation; one per tokenizer."""

    def __init__(self, tokenizer, eos: set[int]):
        self.tokens = token_bytes(tokenizer)
        self.size = max(len(self.tokens), int(getattr(tokenizer, "vocab_size", 0) or 0))
        self.eos = sorted(eos)
        self.by_first: dict[int, list[int]] = {}
        plain = []
        for i, raw in enumerate(self.tokens):
            if not raw:
                continue
            self.by_first.setdefault(raw[0], []).append(i)
            if b'"' not in raw and b"\\" not in raw and min(raw) >= 0x20 and _whole_utf8(raw):
                plain.append(i)
        self.plain = torch.tensor(plain, dtype=torch.long)
        self.plain_set = frozenset(plain)
        self.machine = Machine()
        self.cache: OrderedDict[State, tuple[torch.Tensor, dict[int, State]]] = OrderedDict()
        self.lock = threading.Lock()

    def table(self, state: State) -> tuple[torch.Tensor, dict[int, State]]:
        """(closing length after each token, or a huge number where not allowed; the next state of
        each allowed token that changes the state)."""
        with self.lock:
            if state not in self.cache:
                self.cache[state] = self._compute(state)
                while len(self.cache) > CACHED_STATES:  # deep, rare nestings: least recently used go
                    self.cache.popitem(last=False)
            self.cache.move_to_end(state)
            return self.cache[state]

    def _compute(self, state: State) -> tuple[torch.Tensor, dict[int, State]]:
        lengths = torch.full((self.size,), NEVER, dtype=torch.int16)
        moves: dict[int, State] = {}
        if state == Machine.done:
            lengths[self.eos] = 0
            return lengths, moves
        machine, skip = self.machine, frozenset()
        if state[0] == STR:  # a plain token leaves a string state as it is
            lengths[self.plain] = min(len(machine.closing(state)), NEVER - 1)
            skip = self.plain_set
        for first, ids in self.by_first.items():
            if machine.step(state, first) is None:
                continue
            for i in ids:
                if i in skip:
                    continue
                after = machine.feed(state, self.tokens[i])
                if after is not None:
                    lengths[i] = min(len(machine.closing(after)), NEVER - 1)
                    if after != state:
                        moves[i] = after
        return lengths, moves


_VOCABS: dict[int, tuple[object, Vocabulary]] = {}
_VOCAB_LOCK = threading.Lock()


def vocabulary(tokenizer, eos: set[int]) -> Vocabulary:
    with _VOCAB_LOCK:
        entry = _VOCABS.get(id(tokenizer))
        if entry is None or entry[0] is not tokenizer:
            entry = _VOCABS[id(tokenizer)] = (tokenizer, Vocabulary(tokenizer, eos))
        return entry[1]


class JsonConstraint:
    """The per-sequence state of the automaton: the decoder's logits processor for one choice."""

    def __init__(self, vocab: Vocabulary):
        self.vocab, self.state = vocab, Machine.start

    def allowed(self, left: int) -> torch.Tensor:
        """A boolean mask over the vocabulary: tokens valid now that leave a closable text within
        ``left`` more tokens (falls back to every valid token should none fit)."""
        lengths, _ = self.vocab.table(self.state)
        mask = lengths <= max(0, left)
        if not bool(mask.any()):
            mask = lengths < NEVER
        return mask

    def advance(self, token: int) -> None:
        _, moves = self.vocab.table(self.state)
        self.state = moves.get(token, self.state)

    @property
    def complete(self) -> bool:
        return self.state == Machine.done


def json_object(tokenizer, eos: set[int]):
    """A factory of :class:`JsonConstraint` for ``SamplingParams.constraint`` (one per choice)."""
    vocab = vocabulary(tokenizer, eos)
    return lambda: JsonConstraint(vocab)
