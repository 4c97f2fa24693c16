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

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# how a text is read and decoded lives with the exported scripts: one source for both
from aimass.standalone.units import (
    BUCKETS,
    WINDOW,
    add_to_units,
    decode,
    lexical,
    marginals,
    spans,
    unit_means,
    units,
    viterbi,
)
from aimass.standalone.units import emissions as _emissions


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
        return _emissions(self.arrays(), lex_ids, dense)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "lex_ids": self.lex_ids,
            "lex": self.lex,
            "dense": self.dense,
            "transitions": self.transitions,
        }


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


__all__ = [
    "BUCKETS",
    "WINDOW",
    "Weights",
    "add_to_units",
    "bio_tags",
    "decode",
    "lexical",
    "marginals",
    "spans",
    "train_crf",
    "unit_means",
    "units",
    "viterbi",
]
