"""TF-IDF settings and vectoriser, shared by training (:mod:`aimass.lexical`) and the
torch-free ONNX runtime."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer


def settings_for(language: str) -> dict:
    """Word uni+bigrams for space-separated languages, character 1-3 grams otherwise."""
    if language == "en":
        return {"analyzer": "word", "ngram_range": [1, 2], "min_df": 2, "max_features": 50000}
    return {"analyzer": "char", "ngram_range": [1, 3], "min_df": 2, "max_features": 80000}


def vectorizer(settings: dict, vocabulary: dict | None = None) -> TfidfVectorizer:
    kwargs = dict(settings, ngram_range=tuple(settings["ngram_range"]))
    if vocabulary is not None:
        kwargs.pop("min_df", None)
        kwargs.pop("max_features", None)
    return TfidfVectorizer(sublinear_tf=True, dtype=np.float32, vocabulary=vocabulary, **kwargs)
