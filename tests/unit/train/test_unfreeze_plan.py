"""How many top blocks stage 2 fine-tunes when ``unfreeze="auto"``: the time budget decides."""

from __future__ import annotations

import pytest
import torch

from aimass.backbones import get_backbone
from aimass.backbones.text_net import Head, TextNet, block_seconds
from aimass.train import stages


@pytest.fixture(scope="module")
def net():
    _, encoder = get_backbone("minilm-l6").load()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return TextNet(encoder, Head(encoder.config.hidden_size, 3)).eval()


def test_block_timing_is_positive_and_leaves_the_encoder_frozen(net):
    forward, both = block_seconds(net, batch_size=8, length=32)
    assert 0 < forward < both
    assert not any(p.requires_grad or p.grad is not None for p in net.encoder.parameters())


def _plan(**extra) -> dict:
    return dict(lengths=torch.full((2000,), 64), n_embed=2300, batch_size=16, **extra)


def _epoch(net, k: int) -> float:
    stages.set_trainable(net, k)
    try:
        return stages.epoch_seconds(net, net.n_layers - k, torch.full((2000,), 64), 16, n_valid=300)
    finally:
        stages.set_trainable(net, 0)


def test_epoch_timing_moves_no_weight_and_leaves_the_rng_mode_and_grads_alone(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stages.set_trainable(net, 2)
    rng = torch.get_rng_state()
    lengths = torch.randint(8, 80, (500,), generator=torch.Generator().manual_seed(1))
    seconds = stages.epoch_seconds(net, net.n_layers - 2, lengths, 16, n_valid=100)
    stages.set_trainable(net, 0)
    assert seconds > 0
    assert torch.equal(torch.get_rng_state(), rng)  # dropout ran in train mode, the RNG is restored
    assert not net.training
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_the_budget_decides_between_two_and_four_blocks(net):
    assert stages.plan_unfreeze(net, **_plan(), seconds=None) == 4  # MiniLM has 6 blocks: 8 does not fit
    assert stages.plan_unfreeze(net, **_plan(), seconds=5.0) == 2  # no room for 3 epochs of 4 blocks
    assert stages.plan_unfreeze(net, **_plan(), seconds=1e6) == 4
    assert stages.plan_unfreeze(net, **_plan(), seconds=0.5 * 3 * _epoch(net, 4)) == 2
    assert stages.plan_unfreeze(net, **_plan(), seconds=None, choices=(2,)) == 2  # nothing larger
    assert not any(p.requires_grad for p in net.encoder.parameters())  # planning froze it again


def test_the_largest_choice_that_fits_the_budget_and_the_encoder_wins(net, monkeypatch):
    assert stages.plan_unfreeze(net, **_plan(), seconds=None, choices=(4, 8)) == 4
    assert stages.plan_unfreeze(net, **_plan(), seconds=None, choices=(3, 6)) == 6
    # The decision, not the clock: fixed costs (a block's forward 0.01 s a batch; an epoch 10 s a
    # trainable block), so the bound between 3 and 6 blocks is exact, whatever else loads the CPU.
    monkeypatch.setattr(stages, "block_seconds", lambda *_: (0.01, 0.03))
    monkeypatch.setattr(stages, "epoch_seconds", lambda net, start, *_, **__: 10.0 * (net.n_layers - start))
    embed = net.n_layers * 0.01 * 2300 / 16
    for seconds, want in (
        (1.15 * (embed + 3 * 30) + 1, 3),
        (1.15 * (embed + 3 * 60) - 1, 3),
        (1.15 * (embed + 3 * 60) + 1, 6),
    ):
        assert stages.plan_unfreeze(net, **_plan(), seconds=seconds, choices=(3, 6)) == want
    assert stages.plan_unfreeze(net, **_plan(), seconds=1.15 * (embed + 3 * 30) - 1, choices=(3, 6)) == 2


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
