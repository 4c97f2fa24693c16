"""A TF-IDF "wide" branch beside the encoder: stored as JSON + safetensors, never pickled.

Encoders see the first ``max_length`` tokens; the lexical branch sees the whole
text. On long documents (news articles) the two together beat either alone.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from aimass.tfidf import vectorizer

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class Lexical:
    """Fitted TF-IDF features: ``fit(texts)`` then ``transform(texts) -> torch sparse CSR``."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.vectorizer = None

    def fit(self, texts: list[str]) -> Lexical:
        self.vectorizer = vectorizer(self.settings).fit(texts)
        return self

    @property
    def size(self) -> int:
        return len(self.vectorizer.vocabulary_)

    def transform(self, texts: list[str]) -> torch.Tensor:
        return to_torch(self.vectorizer.transform(texts))

    def widen(self, texts: list[str]) -> Lexical:
        """A new branch whose vocabulary is this one's (same columns, same idf) followed by the
        terms ``texts`` add (fitted with the same settings; their idf from ``texts``): a head
        trained on this branch keeps its columns, and new columns start at zero weight.

        >>> old = Lexical({"analyzer": "word", "ngram_range": [1, 1], "min_df": 1}).fit(["red car"])
        >>> wide = old.widen(["red bike", "blue bike"])
        >>> wide.size, wide.vectorizer.vocabulary_["car"] == old.vectorizer.vocabulary_["car"]
        (4, True)
        """
        fresh = vectorizer(self.settings).fit(texts)
        vocab = {k: int(v) for k, v in self.vectorizer.vocabulary_.items()}
        added = sorted(t for t in fresh.vocabulary_ if t not in vocab)
        idf = [self.vectorizer.idf_, fresh.idf_[[fresh.vocabulary_[t] for t in added]]]
        vocab.update({t: len(vocab) + i for i, t in enumerate(added)})
        wide = Lexical(self.settings)
        wide.vectorizer = vectorizer(self.settings, vocab)
        wide.vectorizer.idf_ = np.concatenate(idf).astype(np.float64)
        return wide

    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-able metadata, tensors) for saving."""
        vocab = {k: int(v) for k, v in self.vectorizer.vocabulary_.items()}
        meta = {"settings": self.settings, "vocabulary": vocab}
        return meta, {"lexical.idf": torch.from_numpy(self.vectorizer.idf_.astype(np.float32))}

    @classmethod
    def from_state(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> Lexical:
        lex = cls(meta["settings"])
        lex.vectorizer = vectorizer(meta["settings"], meta["vocabulary"])
        lex.vectorizer.idf_ = tensors["lexical.idf"].numpy().astype(np.float64)
        return lex


def to_torch(matrix) -> torch.Tensor:
    """scipy CSR -> torch sparse CSR (float32)."""
    matrix = matrix.tocsr().astype(np.float32)
    return torch.sparse_csr_tensor(
        torch.from_numpy(matrix.indptr.astype(np.int64)),
        torch.from_numpy(matrix.indices.astype(np.int64)),
        torch.from_numpy(matrix.data),
        size=matrix.shape,
        check_invariants=False,
    )


def rows(matrix: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select rows of a sparse CSR tensor (as a new CSR tensor)."""
    return matrix.index_select(0, index) if matrix.layout == torch.strided else _csr_rows(matrix, index)


def _csr_rows(matrix: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    crow, col, val = matrix.crow_indices(), matrix.col_indices(), matrix.values()
    starts, ends = crow[index], crow[index + 1]
    lengths = ends - starts
    pieces = [torch.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist())]
    take = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
    new_crow = torch.zeros(len(index) + 1, dtype=torch.long)
    new_crow[1:] = torch.cumsum(lengths, 0)
    return torch.sparse_csr_tensor(
        new_crow, col[take], val[take], size=(len(index), matrix.shape[1]), check_invariants=False
    )
