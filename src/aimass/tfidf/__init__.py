"""TF-IDF: settings and the scikit-learn vectoriser used in training, and :class:`TfidfLite`, the
same transform in plain Python + numpy for the ONNX runtime (importing scikit-learn costs a
fresh worker more than a second; an exported folder should not need it at all).

The torch side, the TF-IDF branch a text model trains beside its encoder, is
:mod:`aimass.tfidf.branch`; this module imports neither torch nor (until a vectoriser is built)
scikit-learn.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
SPACES = re.compile(r"\s\s+")


def settings_for(language: str) -> dict:
    """Word uni+bigrams for space-separated languages, character 1-3 grams otherwise."""
    if language == "en":
        return {"analyzer": "word", "ngram_range": [1, 2], "min_df": 2, "max_features": 50000}
    return {"analyzer": "char", "ngram_range": [1, 3], "min_df": 2, "max_features": 80000}


def vectorizer(settings: dict, vocabulary: dict | None = None):
    """A scikit-learn ``TfidfVectorizer`` (sublinear tf, l2 norm) for ``settings``."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    kwargs = dict(settings, ngram_range=tuple(settings["ngram_range"]))
    if vocabulary is not None:
        kwargs.pop("min_df", None)
        kwargs.pop("max_features", None)
    return TfidfVectorizer(sublinear_tf=True, dtype=np.float32, vocabulary=vocabulary, **kwargs)


def ngrams(text: str, analyzer: str, low: int, high: int) -> list[str]:
    """The n-grams scikit-learn's ``word`` / ``char`` analyzers produce (lower-cased)."""
    text = text.lower()
    if analyzer == "word":
        units, joiner = TOKEN.findall(text), " "
    else:
        units, joiner = SPACES.sub(" ", text), ""
    out = []
    for n in range(low, high + 1):
        out += [joiner.join(units[i : i + n]) for i in range(len(units) - n + 1)]
    return out


class TfidfLite:
    """``scores(texts, weight)`` = TF-IDF(texts) @ weight.T, without scikit-learn or scipy."""

    def __init__(self, settings: dict, vocabulary: dict[str, int], idf: np.ndarray):
        self.analyzer = settings["analyzer"]
        self.low, self.high = settings["ngram_range"]
        self.vocabulary, self.idf = vocabulary, idf.astype(np.float64)

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(column indices, l2-normalised sublinear tf * idf values) of one text."""
        counts = Counter(
            i
            for g in ngrams(text, self.analyzer, self.low, self.high)
            if (i := self.vocabulary.get(g)) is not None
        )
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        index = np.fromiter(counts, dtype=np.int64, count=len(counts))
        values = np.array([1.0 + math.log(counts[i]) for i in index]) * self.idf[index]
        return index, values / np.linalg.norm(values)

    def scores(self, texts: list[str], weight: np.ndarray) -> np.ndarray:
        out = np.zeros((len(texts), weight.shape[0]), dtype=np.float32)
        for r, text in enumerate(texts):
            index, values = self.row(text)
            if len(index):
                out[r] = weight[:, index] @ values
        return out
