"""How many top blocks stage 2 fine-tunes when ``unfreeze="auto"``: the time budget decides."""

from __future__ import annotations

import pytest

from aimass.backbones import get_backbone
from aimass.encoders import Head, TextNet, block_seconds
from aimass.train import stages


@pytest.fixture(scope="module")
def net():
    _, encoder = get_backbone("minilm-l6").load()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return TextNet(encoder, Head(encoder.config.hidden_size, 3))


def test_block_timing_is_positive_and_leaves_the_encoder_frozen(net):
    forward, both = block_seconds(net, batch_size=8, length=32)
    assert 0 < forward < both
    assert not any(p.requires_grad or p.grad is not None for p in net.encoder.parameters())


def test_the_budget_decides_between_two_and_four_blocks(net):
    plan = dict(n_train=2000, n_embed=2300, length=64, batch_size=16)
    assert stages.plan_unfreeze(net, **plan, seconds=None) == 4  # no limit: the larger choice
    assert stages.plan_unfreeze(net, **plan, seconds=5.0) == 2  # no room for 3 epochs of 4 blocks
    assert stages.plan_unfreeze(net, **plan, seconds=1e6) == 4
    _, both = block_seconds(net, 16, 64)
    epochs_of_four = 3 * 4 * both * (2000 / 16)
    assert stages.plan_unfreeze(net, **plan, seconds=0.5 * epochs_of_four) == 2
    assert stages.plan_unfreeze(net, **plan, seconds=None, choices=(2,)) == 2  # nothing larger


def test_the_largest_choice_that_fits_the_budget_and_the_encoder_wins(net):
    plan = dict(n_train=2000, n_embed=2300, length=64, batch_size=16)
    assert stages.plan_unfreeze(net, **plan, seconds=None, choices=(4, 8)) == 4  # MiniLM has 6 blocks
    assert stages.plan_unfreeze(net, **plan, seconds=None, choices=(3, 6)) == 6
    forward, both = block_seconds(net, 16, 64)
    embed = net.n_layers * forward * 2300 / 16
    epoch = both * (2000 / 16)
    between = embed + 1.15 * 3 * 4.5 * epoch  # room for 3 epochs of 3 blocks, not of 6
    assert stages.plan_unfreeze(net, **plan, seconds=between, choices=(3, 6)) == 3


def test_a_resumed_run_trains_the_blocks_its_checkpoint_planned(tmp_path):
    import json

    from aimass.tasks.text_classification import TextClassification, TextClassifier

    texts, labels = TextClassification.sample_data(per_class=30)  # 150 real BBC openings: not few-shot
    (tmp_path / "checkpoint").mkdir()
    meta = {"stage": "top", "epochs": 0, "unfreeze": 1}  # a plan of 1 block, no epoch left to run
    (tmp_path / "checkpoint" / "checkpoint.json").write_text(json.dumps(meta))
    model = TextClassifier(backbone="minilm-l6", max_length=32, time_budget=None, seed=0)
    model.fit((texts, labels), run_dir=tmp_path, resume=True, progress=False)
    assert model.unfrozen_ == 1 and not model.few_shot_
    fresh = TextClassifier(backbone="minilm-l6", max_length=32, time_budget=None, epochs_top=0, seed=0)
    assert fresh.fit((texts, labels), progress=False).unfrozen_ == 4  # no budget limit: 4 blocks
