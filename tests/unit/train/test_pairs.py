"""The contrastive pair stage that few-shot text training starts with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aimass.backbones import get_backbone
from aimass.tasks.text_classification import TextClassification, TextClassifier


def test_few_shot_runs_pairs_then_head_and_pulls_classes_together():
    texts, labels = TextClassification.sample_data(per_class=4)  # 20 real BBC openings: few-shot
    # no time budget: on a loaded machine the budget would plan fewer than the 12 pair steps asked for
    model = TextClassifier(
        backbone="minilm-l6", max_length=64, pair_steps=12, pair_mix=1.0, epochs_top=0, time_budget=None
    )
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


def test_pair_mix_returns_the_rest_of_the_change_to_the_pretrained_weights():
    texts, labels = TextClassification.sample_data(per_class=3)
    settings = {"backbone": "minilm-l6", "max_length": 32, "pair_steps": 3, "epochs_top": 0, "seed": 0}
    tuned = TextClassifier(pair_mix=1.0, **settings).fit((texts, labels), progress=False)
    mixed = TextClassifier(**settings).fit((texts, labels), progress=False)
    share = mixed.get_params()["pair_mix"]
    assert 0 < share < 1  # the default keeps part of the change, not all of it
    pretrained = get_backbone("minilm-l6").load()[1].state_dict()
    after, half = tuned.net_.encoder.state_dict(), mixed.net_.encoder.state_dict()
    moved = [k for k in after if after[k].is_floating_point() and not torch.equal(after[k], pretrained[k])]
    assert moved, "the pair stage changed no weight"
    for k in moved:
        torch.testing.assert_close(
            half[k], pretrained[k] + share * (after[k] - pretrained[k]), atol=1e-6, rtol=1e-5
        )


def test_length_sorted_chunks_train_the_same_weights_as_one_padded_batch():
    from aimass.backbones.text_net import TextNet, embed
    from aimass.train.stages import Features, fit_pairs

    texts, labels = TextClassification.sample_data(per_class=2)
    texts = [t[: 20 + 40 * i] for i, t in enumerate(texts)]  # lengths that differ a lot
    y = torch.tensor([sorted(set(labels)).index(label) for label in labels])
    runs = []
    for chunk in (len(texts), 3):
        torch.manual_seed(0)
        tokenizer, encoder = get_backbone("minilm-l6").load()
        encoder.eval()
        for module in encoder.modules():  # dropout draws depend on the batch shape: off here
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        net = TextNet(encoder, torch.nn.Identity())
        cache = embed(encoder, tokenizer, texts, max_length=64, keep_layer=net.n_layers - 2)
        train = Features(cache["pooled"], y, cache["hidden"], cache["mask"])
        result = fit_pairs(net, train, n_top=2, steps=3, seed=0, chunk=chunk)
        runs.append(([h["loss"] for h in result.history], train.pooled))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-4)
    torch.testing.assert_close(runs[0][1], runs[1][1], atol=1e-4, rtol=1e-3)


def test_the_pair_stage_replans_when_its_steps_run_slower_than_the_timed_ones():
    import time

    from aimass.backbones.text_net import TextNet, embed
    from aimass.train.stages import Features, fit_pairs

    texts, labels = TextClassification.sample_data(per_class=2)
    y = torch.tensor([sorted(set(labels)).index(label) for label in labels])
    tokenizer, encoder = get_backbone("minilm-l6").load()
    net = TextNet(encoder, torch.nn.Identity())
    cache = embed(encoder, tokenizer, texts, max_length=32, keep_layer=net.n_layers - 2)
    train = Features(cache["pooled"], y, cache["hidden"], cache["mask"])
    fast, calls = net.pooled_from, []

    def slower_after_the_timing(*args):  # one call per step (one chunk): the 2 timed passes are fast
        calls.append(1)
        if len(calls) > 2:
            time.sleep(0.3)
        return fast(*args)

    net.pooled_from = slower_after_the_timing
    deadline = time.monotonic() + 4.0
    result = fit_pairs(net, train, n_top=2, steps=500, seed=0, chunk=len(texts), deadline=deadline)
    overrun = time.monotonic() - deadline
    # planned from the fast passes the steps would take minutes (500 x 0.3 s); re-planned they end near
    # the deadline. The slack is wide on purpose: on a loaded machine a step alone can take seconds
    assert 1 <= len(result.history) <= 14 and overrun < 10.0, (len(result.history), overrun)
