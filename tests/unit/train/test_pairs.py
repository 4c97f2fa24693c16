"""The contrastive pair stage that few-shot text training starts with."""

from __future__ import annotations

import numpy as np

from aimass.tasks.text_classification import TextClassification, TextClassifier


def test_few_shot_runs_pairs_then_head_and_pulls_classes_together():
    texts, labels = TextClassification.sample_data(per_class=4)  # 20 real BBC openings: few-shot
    model = TextClassifier(backbone="minilm-l6", max_length=64, pair_steps=12, epochs_top=0, seed=0)
    model.fit((texts, labels), progress=False)
    pairs = model.stages_["pairs"]
    losses = [row["loss"] for row in pairs["history"]]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert "train_pairs" in model.timings_ and model.few_shot_
    frozen = TextClassifier(backbone="minilm-l6", max_length=64, pair_steps=0, epochs_top=0, seed=0)
    frozen.fit((texts, labels), progress=False)
    assert "pairs" not in frozen.stages_

    def margin(m):  # mean same-class minus mean other-class cosine similarity of the training texts
        enc = m.tokenizer_(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
        import torch

        with torch.inference_mode():
            hidden = m.net_.encoder(**enc).last_hidden_state
            pooled = m.net_.pooled_from(m.net_.n_layers, hidden, enc["attention_mask"]).numpy()
        sim = pooled @ pooled.T
        same = np.equal.outer(labels, labels) & ~np.eye(len(labels), dtype=bool)
        return sim[same].mean() - sim[~np.equal.outer(labels, labels)].mean()

    assert margin(model) > margin(frozen) + 0.05


def test_after_the_pair_stage_the_cross_entropy_stage_is_skipped_unless_asked_for():
    texts, labels = TextClassification.sample_data(per_class=3)
    model = TextClassifier(backbone="minilm-l6", max_length=32, pair_steps=2, seed=0).fit(
        (texts, labels), progress=False
    )
    assert len(model.stages_["pairs"]["history"]) == 2
    assert model.stages_["top"]["skipped"].startswith("few-shot")
    assert model.predict(texts[:2]) and len(model.stages_["top"]["history"]) == 0
