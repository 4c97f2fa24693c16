"""The TF-IDF branch of the standalone text scripts, and how a row of probabilities becomes an
answer: one source, written into each exported ``predict.py`` by ``aimass export`` (see
:func:`aimass.standalone.script`)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

WORD = re.compile(r"(?u)\b\w\w+\b")  # words of two or more characters
SPACES = re.compile(r"\s\s+")


class Tfidf:
    """The model's TF-IDF branch: the l2-normalised ``(1 + log count) * idf`` of the text's word or
    character n-grams (lower-cased), times the branch's weights; added to the network's logits."""

    def __init__(self, folder: Path, weight: np.ndarray | None = None):
        meta = json.loads((folder / "lexical.json").read_text(encoding="utf-8"))
        self.analyzer = meta["settings"]["analyzer"]
        self.low, self.high = meta["settings"]["ngram_range"]
        self.vocabulary = meta["vocabulary"]
        self.idf = np.load(folder / "lexical_idf.npy", allow_pickle=False).astype(np.float64)
        if weight is None:  # the ONNX export keeps the branch's weights beside it
            weight = np.load(folder / "lexical_weight.npy", allow_pickle=False)
        self.weight = weight

    def grams(self, text: str):
        text = text.lower()
        if self.analyzer == "word":
            units, glue = WORD.findall(text), " "
        else:  # characters, with runs of white space read as one space
            units, glue = SPACES.sub(" ", text), ""
        for n in range(self.low, self.high + 1):
            for i in range(len(units) - n + 1):
                yield glue.join(units[i : i + n])

    def scores(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.weight.shape[0]), dtype=np.float32)
        for row, text in enumerate(texts):
            counts = Counter(self.vocabulary[g] for g in self.grams(text) if g in self.vocabulary)
            if not counts:
                continue
            index = np.fromiter(counts, dtype=np.int64, count=len(counts))
            values = (1.0 + np.log([counts[i] for i in index])) * self.idf[index]
            out[row] = self.weight[:, index] @ (values / np.linalg.norm(values))
        return out
