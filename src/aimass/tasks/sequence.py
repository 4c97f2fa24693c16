"""Tagging a text's words as entities: the pieces a linear-chain CRF tagger is made of.

A text is cut into *units* (:func:`units`): a run of letters or digits, one CJK character, or one
other visible character. Every unit gets a tag in the BIO scheme (``B-PER`` opens a person,
``I-PER`` goes on with it, ``O`` is outside any entity); :func:`bio_tags` and :func:`spans` turn
character spans into tags and back. Each unit is described by hashed lexical features of itself
and its neighbours (:func:`lexical`) and, where a pretrained encoder is used, by a dense vector.

Training is python-crfsuite's L-BFGS with L1 and L2 penalties (:func:`train_crf`); its weights
are read back into arrays (:class:`Weights`) and decoded here in numpy (:func:`viterbi`,
:func:`marginals`), so a model is saved as safetensors and serves without crfsuite's model file.

>>> units("Li Na won in 北京.")
[(0, 2), (3, 5), (6, 9), (10, 12), (13, 14), (14, 15), (15, 16)]
>>> bio_tags("Li Na won in 北京.", [[0, 5, "PER"], [13, 15, "LOC"]])
['B-PER', 'I-PER', 'O', 'O', 'B-LOC', 'I-LOC', 'O']
>>> spans("Li Na won in 北京.", ['B-PER', 'I-PER', 'O', 'O', 'B-LOC', 'I-LOC', 'O'])
[[0, 5, 'PER'], [13, 15, 'LOC']]
"""

from __future__ import annotations

import re
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
UNIT = re.compile(rf"[{CJK}]|[^\W{CJK}]+|[^\w\s]")
BUCKETS = 1 << 20  # hashed lexical features (crc32 of the feature's text, modulo this)
WINDOW = 2  # neighbours on each side a unit's lexical features name


def units(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` character offsets of the units of ``text``, in order."""
    return [m.span() for m in UNIT.finditer(text)]


def bio_tags(text: str, entities: list) -> list[str]:
    """One BIO tag per unit of ``text`` from its ``[start, end, label]`` spans; a unit is inside a
    span when it starts inside it."""
    cuts = units(text)
    tags = ["O"] * len(cuts)
    for start, end, label in entities:
        inside = [i for i, (a, _) in enumerate(cuts) if start <= a < end]
        for k, i in enumerate(inside):
            tags[i] = ("B-" if k == 0 else "I-") + label
    return tags


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


@dataclass
class Weights:
    """A trained CRF in arrays: ``lex_ids`` (sorted hashed feature ids) with ``lex`` their
    weights ``[k, n_tags]``, ``dense`` the weights of the dense features ``[d, n_tags]`` (``d`` may
    be 0) and ``transitions`` ``[n_tags, n_tags]`` (from, to)."""

    tags: list[str]
    lex_ids: np.ndarray
    lex: np.ndarray
    dense: np.ndarray
    transitions: np.ndarray

    def emissions(self, lex_ids: list[np.ndarray], dense: np.ndarray | None) -> np.ndarray:
        """The per-unit tag scores ``[n_units, n_tags]`` of one text."""
        out = np.zeros((len(lex_ids), len(self.tags)), dtype=np.float64)
        if len(lex_ids) and len(self.lex_ids):  # every unit's ids looked up at once
            ids = np.concatenate(lex_ids)
            unit = np.repeat(np.arange(len(lex_ids)), [len(x) for x in lex_ids])
            at = np.minimum(np.searchsorted(self.lex_ids, ids), len(self.lex_ids) - 1)
            hit = self.lex_ids[at] == ids
            np.add.at(out, unit[hit], self.lex[at[hit]])
        if dense is not None and len(self.dense):
            out += dense @ self.dense
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "lex_ids": self.lex_ids,
            "lex": self.lex,
            "dense": self.dense,
            "transitions": self.transitions,
        }


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


def train_crf(
    sequences: list[tuple[list[np.ndarray], np.ndarray | None, list[str]]],
    *,
    c1: float,
    c2: float,
    max_iterations: int,
) -> Weights:
    """Fit a linear-chain CRF with python-crfsuite's L-BFGS on ``(lexical ids, dense features or
    None, tags)`` per text, and read its weights back into :class:`Weights`."""
    import pycrfsuite  # heavy: a C extension, needed to train only

    trainer = pycrfsuite.Trainer(verbose=False)
    dim = 0
    for lex_ids, dense, tags in sequences:
        dim = dense.shape[1] if dense is not None else 0
        items = []
        for i, ids in enumerate(lex_ids):
            item = {f"h{k}": 1.0 for k in ids.tolist()}
            if dense is not None:
                item.update({f"e{k}": float(v) for k, v in enumerate(dense[i])})
            items.append(item)
        trainer.append(pycrfsuite.ItemSequence(items), tags)
    trainer.set_params({"c1": c1, "c2": c2, "max_iterations": max_iterations})
    with tempfile.TemporaryDirectory(prefix="aimass-crf-") as tmp:
        path = str(Path(tmp) / "model.crfsuite")
        trainer.train(path)
        tagger = pycrfsuite.Tagger()
        tagger.open(path)
        info = tagger.info()
        tagger.close()
    return _weights(info, dim)


def _weights(info, dim: int) -> Weights:
    tags = sorted(info.labels, key=lambda t: (t != "O", t[2:], t[:2]))  # O, then B-/I- by label
    index = {t: i for i, t in enumerate(tags)}
    lex: dict[int, np.ndarray] = {}
    dense = np.zeros((dim, len(tags)))
    for (attr, tag), w in info.state_features.items():
        if attr.startswith("h"):
            lex.setdefault(int(attr[1:]), np.zeros(len(tags)))[index[tag]] += w
        else:
            dense[int(attr[1:]), index[tag]] += w
    transitions = np.zeros((len(tags), len(tags)))
    for (a, b), w in info.transitions.items():
        transitions[index[a], index[b]] = w
    ids = np.array(sorted(lex), dtype=np.int64)
    rows = np.array([lex[i] for i in ids]).reshape(len(ids), len(tags))
    return Weights(tags, ids, rows, dense, transitions)


__all__ = ["Weights", "bio_tags", "lexical", "marginals", "spans", "train_crf", "units", "viterbi"]
