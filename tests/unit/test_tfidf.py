"""TfidfLite (the runtime's TF-IDF) equals scikit-learn's on English words and Chinese characters."""

from __future__ import annotations

import numpy as np
import pytest

from aimass.tasks.text_classification import TextClassification
from aimass.tfidf import TfidfLite, settings_for, vectorizer

CHINESE = [
    "这家酒店的服务很好，房间也很干净。",
    "质量太差了  用了两天就坏了\n不推荐",
    "好",
    "还行吧，一般般。",
] * 3


@pytest.mark.parametrize("language", ["en", "zh"])
def test_lite_transform_equals_scikit_learn(language):
    texts = TextClassification.sample_data(per_class=6)[0] if language == "en" else CHINESE
    settings = {**settings_for(language), "min_df": 1}
    fitted = vectorizer(settings).fit(texts)
    lite = TfidfLite(settings, fitted.vocabulary_, fitted.idf_)
    weight = np.random.default_rng(0).normal(size=(3, len(fitted.vocabulary_))).astype(np.float32)
    unseen = ["Completely new words here!!", "", "   ", texts[0].upper()]
    for batch in (texts, unseen):
        want = fitted.transform(batch) @ weight.T
        assert np.abs(lite.scores(batch, weight) - want).max() < 1e-5
