"""BM25 (Okapi) over words: the keyword half of a hybrid search.

Words are lower-cased runs of letters or digits; Chinese, Japanese and Korean text, written without
spaces, counts each character and each pair of neighbouring characters as a word, so a two-character
term matches without a segmenter.

>>> words("Rates rose 0.5% — 利率上调")
['rates', 'rose', '0', '5', '利', '利率', '率', '率上', '上', '上调', '调']
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

K1, B = 1.2, 0.75
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+|[^\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def words(text: str) -> list[str]:
    found = []
    for run in _WORD.findall(text.lower()):
        if _CJK.match(run):
            for i, char in enumerate(run):
                found.append(char)
                if i + 1 < len(run):
                    found.append(run[i : i + 2])
        else:
            found.append(run)
    return found


class Index:
    """BM25 over a list of texts: :meth:`scores` of a query against each, in one sparse product."""

    def __init__(self, texts: list[str]):
        from scipy import sparse  # with the first search: a server without one never loads SciPy

        vocab: dict[str, int] = {}
        rows, cols, counts, lengths = [], [], [], []
        for row, text in enumerate(texts):
            bag = Counter(words(text))
            lengths.append(sum(bag.values()))
            for word, n in bag.items():
                rows.append(row)
                cols.append(vocab.setdefault(word, len(vocab)))
                counts.append(n)
        self.vocab = vocab
        shape = (len(texts), max(len(vocab), 1))
        tf = sparse.csr_matrix((np.asarray(counts, float), (rows, cols)), shape=shape)
        length = np.asarray(lengths, float)
        norm = K1 * (1 - B + B * length / max(length.mean() if len(length) else 1.0, 1e-9))
        df = np.bincount(np.asarray(cols, int), minlength=shape[1])
        self.idf = np.log1p((len(texts) - df + 0.5) / (df + 0.5))
        weighted = tf.tocoo()
        values = weighted.data * (K1 + 1) / (weighted.data + norm[weighted.row])
        self.weights = sparse.csc_matrix((values, (weighted.row, weighted.col)), shape=shape)

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of each text for ``query`` (0 where no word matches)."""
        found = Counter(w for w in words(query) if w in self.vocab)
        if not found:
            return np.zeros(self.weights.shape[0])
        cols = [self.vocab[w] for w in found]
        coef = np.asarray([self.idf[c] * n for c, n in zip(cols, found.values(), strict=True)])
        return np.asarray(self.weights[:, cols] @ coef).ravel()

    def coverage(self, query: str) -> np.ndarray:
        """The share of the query's words each text holds, each word weighted by its IDF (a word
        no text holds weighs as a word of one text more than the rarest): 1 when every word of
        ``query`` is in the text, whatever their counts."""
        unique = list(dict.fromkeys(words(query)))
        n = self.weights.shape[0]
        known = [self.vocab[w] for w in unique if w in self.vocab]
        total = float(self.idf[known].sum()) + (len(unique) - len(known)) * np.log1p((n + 0.5) / 0.5)
        if not known or not total:
            return np.zeros(n)
        present = (self.weights[:, known] > 0).astype(float)
        return np.asarray(present @ self.idf[known]).ravel() / total
