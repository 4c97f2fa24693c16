"""How an entity tagger reads a text, in numpy alone: one source for :mod:`aimass.tasks.sequence`
(training and serving) and the exported ``predict.py`` (inlined there by
:func:`aimass.standalone.script`).

A text is cut into *units* (:func:`units`): a run of letters or digits, one CJK character, or one
other visible character. Each unit is described by hashed lexical features (:func:`lexical`) and,
where a pretrained encoder is used, by the mean of its sub-word tokens' states
(:func:`add_to_units`, :func:`unit_means`). A linear-chain CRF's scores (:func:`emissions`) are
decoded by Viterbi, each entity scored by forward-backward (:func:`decode`).

>>> units("Li Na won in 北京.")
[(0, 2), (3, 5), (6, 9), (10, 12), (13, 14), (14, 15), (15, 16)]
>>> spans("Li Na won in 北京.", ['B-PER', 'I-PER', 'O', 'O', 'B-LOC', 'I-LOC', 'O'])
[[0, 5, 'PER'], [13, 15, 'LOC']]
"""

from __future__ import annotations

import re
import zlib

import numpy as np

CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
UNIT = re.compile(rf"[{CJK}]|[^\W{CJK}]+|[^\w\s]")
BUCKETS = 1 << 20  # hashed lexical features (crc32 of the feature's text, modulo this)
WINDOW = 2  # neighbours on each side a unit's lexical features name


def units(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` character offsets of the units of ``text``, in order."""
    return [m.span() for m in UNIT.finditer(text)]


def spans(text: str, tags: list[str], cuts: list[tuple[int, int]] | None = None) -> list[list]:
    """``[start, end, label]`` spans from one tag per unit; an ``I-`` tag after another label
    opens a span, as seqeval reads IOB."""
    out: list[list] = []
    current = None
    for (a, b), tag in zip(cuts if cuts is not None else units(text), tags, strict=True):
        if tag.startswith("I-") and current is not None and current[2] == tag[2:]:
            current[1] = b
            continue
        if current is not None:
            out.append(current)
        current = [a, b, tag[2:]] if tag[:2] in ("B-", "I-") else None
    if current is not None:
        out.append(current)
    return out


def _shape(word: str) -> str:
    return re.sub("[a-z]+", "a", re.sub("[A-Z]+", "A", re.sub(r"\d+", "0", word)))


def lexical(text: str, cuts: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
    """For each unit, the hashed ids of its lexical features: its form (lowercase), prefix,
    suffix and shape, its neighbours' forms up to :data:`WINDOW` away, and the bigrams and the
    trigram around it (how a character-level Chinese CRF and a word-level English one read)."""
    cuts = cuts if cuts is not None else units(text)
    words = [text[a:b] for a, b in cuts]
    low = ["<s>"] * WINDOW + [w.lower() for w in words] + ["</s>"] * WINDOW
    out = []
    for i, word in enumerate(words):
        j = i + WINDOW
        names = [
            "bias",
            "w=" + low[j],
            "p3=" + low[j][:3],
            "s3=" + low[j][-3:],
            "shape=" + _shape(word),
            "title=" + str(word[:1].isupper()),
            "b-=" + low[j - 1] + "|" + low[j],
            "b+=" + low[j] + "|" + low[j + 1],
            "t=" + low[j - 1] + "|" + low[j] + "|" + low[j + 1],
        ]
        names += [f"w{d:+d}=" + low[j + d] for d in range(-WINDOW, WINDOW + 1) if d]
        # unique: two names in one bucket are one attribute, as crfsuite trains them (a dict's keys)
        out.append(
            np.unique(np.array([zlib.crc32(n.encode("utf-8")) % BUCKETS for n in names], dtype=np.int64))
        )
    return out


def emissions(weights: dict, lex_ids: list[np.ndarray], dense: np.ndarray | None) -> np.ndarray:
    """The per-unit tag scores ``[n_units, n_tags]`` of one text under a CRF's ``weights``
    (``lex_ids``: its sorted hashed feature ids, ``lex`` their rows, ``dense`` the dense
    features' rows, ``transitions``)."""
    known, rows = weights["lex_ids"], weights["lex"]
    out = np.zeros((len(lex_ids), weights["transitions"].shape[0]), dtype=np.float64)
    if len(lex_ids) and len(known):  # every unit's ids looked up at once
        ids = np.concatenate(lex_ids)
        unit = np.repeat(np.arange(len(lex_ids)), [len(x) for x in lex_ids])
        at = np.minimum(np.searchsorted(known, ids), len(known) - 1)
        hit = known[at] == ids
        np.add.at(out, unit[hit], rows[at[hit]])
    if dense is not None and len(weights["dense"]):
        out += dense @ weights["dense"]
    return out


def viterbi(emissions: np.ndarray, transitions: np.ndarray) -> list[int]:
    """The best tag sequence (indices) under a linear-chain CRF's scores."""
    if not len(emissions):
        return []
    score = emissions[0].copy()
    back = []
    for row in emissions[1:]:
        total = score[:, None] + transitions
        back.append(total.argmax(axis=0))
        score = total.max(axis=0) + row
    best = [int(score.argmax())]
    for pointers in reversed(back):
        best.append(int(pointers[best[-1]]))
    return best[::-1]


def marginals(emissions: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """Each unit's probability of each tag (forward-backward in log space), ``[n_units, n_tags]``."""
    n = len(emissions)
    if not n:
        return np.zeros_like(emissions)
    alpha, beta = np.zeros_like(emissions), np.zeros_like(emissions)
    alpha[0] = emissions[0]
    for i in range(1, n):
        alpha[i] = _logsumexp(alpha[i - 1][:, None] + transitions, axis=0) + emissions[i]
    for i in range(n - 2, -1, -1):
        beta[i] = _logsumexp(transitions + (emissions[i + 1] + beta[i + 1])[None, :], axis=1)
    log_z = _logsumexp(alpha[-1], axis=0)
    return np.exp(alpha + beta - log_z)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def decode(
    text: str, scores: np.ndarray, transitions: np.ndarray, tags: list[str]
) -> tuple[list, list[float]]:
    """The ``[start, end, label]`` spans of ``text`` from its units' ``scores`` (Viterbi), and each
    span's score: the mean probability of its units' tags (forward-backward)."""
    best = viterbi(scores, transitions)
    cuts = units(text)
    found = spans(text, [tags[k] for k in best], cuts)
    if not found:
        return found, []
    chosen = marginals(scores, transitions)[np.arange(len(best)), best]
    means = [float(np.mean([chosen[i] for i, (a, _) in enumerate(cuts) if s <= a < e])) for s, e, _ in found]
    return found, means


def add_to_units(out: np.ndarray, counts: np.ndarray, cuts: np.ndarray, offsets: np.ndarray, states) -> None:
    """Add each token's state to every unit it overlaps (for the mean); ``cuts`` ``[n_units, 2]``
    and ``offsets`` ``[n_tokens, 2]`` are character spans."""
    if not len(cuts):
        return
    for (a, b), state in zip(offsets, states, strict=True):
        if b <= a:
            continue
        first = np.searchsorted(cuts[:, 1], a, side="right")
        last = np.searchsorted(cuts[:, 0], b, side="left")
        if first < last:
            out[first:last] += state
            counts[first:last] += 1


def unit_means(out: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The sums :func:`add_to_units` made as means, L2-normalised (in place)."""
    out /= np.maximum(counts, 1)[:, None]
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-9
    return out
