"""The training loop: event order, stopping, learning, validation metrics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aimass.train.loop import Loop


class Recorder:
    """Records every event the loop fires, with the epoch (and step for batches)."""

    def __init__(self, stop_at_step: int | None = None):
        self.events: list[tuple] = []
        self.stop_at_step = stop_at_step
        self.metrics_seen: list[dict] = []

    def before_fit(self, loop):
        self.events.append(("before_fit",))

    def before_epoch(self, loop):
        self.events.append(("before_epoch", loop.epoch))

    def after_batch(self, loop):
        self.events.append(("after_batch", loop.epoch, loop.step))
        if self.stop_at_step is not None and loop.step >= self.stop_at_step:
            loop.stop = True

    def after_epoch(self, loop):
        self.events.append(("after_epoch", loop.epoch))
        self.metrics_seen.append(dict(loop.metrics))

    def after_fit(self, loop):
        self.events.append(("after_fit",))


def toy_batches(n_batches: int = 3, size: int = 16):
    """Two well separated Gaussian blobs, the same data for a given epoch."""

    def batches(epoch: int):
        gen = torch.Generator().manual_seed(epoch)
        for _ in range(n_batches):
            y = torch.randint(0, 2, (size,), generator=gen)
            x = torch.randn(size, 2, generator=gen) * 0.5 + (y.float() * 2 - 1).unsqueeze(1) * 2.0
            yield x, y

    return batches


def make_loop(callbacks=(), n_batches=3, validate=None, lr=0.1) -> Loop:
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    return Loop(
        model,
        toy_batches(n_batches),
        validate or (lambda: {}),
        torch.optim.SGD(model.parameters(), lr),
        callbacks=callbacks,
    )


def test_events_fire_in_order():
    rec = Recorder()
    loop = make_loop([rec], n_batches=2)
    assert loop.fit(3) is loop
    expected = [("before_fit",)]
    step = 0
    for epoch in range(3):
        expected.append(("before_epoch", epoch))
        for _ in range(2):
            step += 1
            expected.append(("after_batch", epoch, step))
        expected.append(("after_epoch", epoch))
    expected.append(("after_fit",))
    assert rec.events == expected
    assert loop.epoch == 2 and loop.step == 6


def test_every_callback_sees_every_event_in_registration_order():
    order: list[str] = []

    class Named:
        def __init__(self, name):
            self.name = name

        def after_epoch(self, loop):
            order.append(self.name)

    make_loop([Named("a"), object(), Named("b")], n_batches=1).fit(2)  # object(): no handlers at all
    assert order == ["a", "b", "a", "b"]


def test_stop_in_after_batch_ends_epoch_and_fit():
    rec = Recorder(stop_at_step=2)
    loop = make_loop([rec], n_batches=3)
    loop.fit(5)
    assert rec.events == [
        ("before_fit",),
        ("before_epoch", 0),
        ("after_batch", 0, 1),
        ("after_batch", 0, 2),
        ("after_epoch", 0),
        ("after_fit",),
    ]
    assert loop.stop and loop.step == 2


def test_stop_in_before_epoch_skips_that_epoch():
    class StopBeforeSecondEpoch:
        def before_epoch(self, loop):
            loop.stop = loop.epoch == 1

    rec = Recorder()
    loop = make_loop([StopBeforeSecondEpoch(), rec], n_batches=2)
    loop.fit(4)
    assert [e for e in rec.events if e[0] != "after_batch"] == [
        ("before_fit",),
        ("before_epoch", 0),
        ("after_epoch", 0),
        ("before_epoch", 1),
        ("after_fit",),
    ]
    assert loop.step == 2


def test_start_epoch_resumes_numbering():
    rec = Recorder()
    make_loop([rec], n_batches=1).fit(4, start_epoch=2)
    assert [e[1] for e in rec.events if e[0] == "before_epoch"] == [2, 3]


def test_tiny_linear_model_learns_separable_problem():
    losses: dict[int, list[float]] = {}

    class EpochLoss:
        def after_batch(self, loop):
            losses.setdefault(loop.epoch, []).append(loop.loss)

    loop = make_loop([EpochLoss()], n_batches=4, lr=0.2)
    loop.fit(6)
    mean = {epoch: sum(v) / len(v) for epoch, v in losses.items()}
    assert sorted(mean) == list(range(6))
    assert mean[5] < mean[0]
    assert mean[5] < 0.5 * mean[0]
    # and it classifies held-out points from the same blobs
    x, y = next(iter(toy_batches(1, 200)(99)))
    with torch.no_grad():
        accuracy = (loop.model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.95
    assert isinstance(loop.loss, float)


def test_validate_result_lands_in_metrics_before_after_epoch():
    calls = {"n": 0}
    modes: list[bool] = []
    loop_ref: list[Loop] = []

    def validate():
        calls["n"] += 1
        modes.append(loop_ref[0].model.training)
        assert not torch.is_grad_enabled()
        return {"macro_f1": 0.1 * calls["n"], "epoch_seen": loop_ref[0].epoch}

    rec = Recorder()
    loop = make_loop([rec], n_batches=1, validate=validate)
    loop_ref.append(loop)
    loop.fit(3)
    assert calls["n"] == 3
    assert modes == [False, False, False]  # validation runs in eval mode
    assert [m["epoch_seen"] for m in rec.metrics_seen] == [0, 1, 2]
    assert rec.metrics_seen[0]["macro_f1"] == 0.1
    assert loop.metrics == {"macro_f1": pytest.approx(0.3), "epoch_seen": 2}


def test_scheduler_steps_once_per_batch_and_custom_forward_and_loss():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def batches(epoch):
        for _ in range(3):
            yield (torch.ones(4, 2),), torch.zeros(4)  # a tuple input is unpacked into model(*x)

    seen = []
    loop = Loop(
        model,
        batches,
        lambda: {},
        optimizer,
        scheduler,
        forward=lambda m, x: seen.append(len(x)) or m(*x).squeeze(1),
        loss_fn=nn.functional.mse_loss,
    )
    loop.fit(2)
    assert scheduler.last_epoch == 6
    assert optimizer.param_groups[0]["lr"] == 0.1 * 0.5**6
    assert seen == [1] * 6
