"""The Learner: event order and counts, freeze/unfreeze, one-cycle rates, early stopping,
cancelling, time-budget planning and resuming from a checkpoint."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from aimass.errors import ConfigError
from aimass.train.callbacks import (
    BestKeeper,
    Checkpoint,
    EarlyStopping,
    History,
    MixedPrecision,
    TimeBudget,
    WeightAverage,
)
from aimass.train.learner import (
    EVENTS,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelTrainException,
    Learner,
)


class Body(nn.Module):
    """A backbone of three blocks, found by the backbone table as ``stages``."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1)) for _ in range(3)])

    def forward(self, x):
        for stage in self.stages:
            x = torch.relu(stage(x))
        return x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.head = Body(), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.encoder(x))


def batches(n_batches: int = 3, size: int = 8):
    """Two separable blobs; each epoch's batches are the same for a given epoch."""

    def data(epoch: int):
        gen = torch.Generator().manual_seed(epoch)
        for _ in range(n_batches):
            y = torch.randint(0, 2, (size,), generator=gen)
            yield torch.randn(size, 4, generator=gen) + 2 * y[:, None].float(), y

    return data  # no len: the learner counts an epoch's batches


def learner(validate=None, n_batches: int = 3, **kwargs) -> Learner:
    torch.manual_seed(0)
    return Learner(Net(), batches(n_batches), validate, **kwargs)


class Recorder:
    """Records every event, with the epoch."""

    def __init__(self):
        self.events: list[str] = []
        for event in EVENTS:
            setattr(self, event, lambda learn, event=event: self.events.append(event))


def test_events_fire_in_order_with_counts():
    rec = Recorder()
    learn = learner(lambda: {"macro_f1": 0.5}).unfreeze(1)
    learn.fit(2, 1e-3, callbacks=[rec])
    step = ["before_batch", "after_pred", "after_loss", "after_backward", "after_step", "after_batch"]
    epoch = ["before_epoch", "before_train", *step * 3, "after_train"]
    epoch += ["before_validate", "after_validate", "after_epoch"]
    assert rec.events == ["before_fit", *epoch * 2, "after_fit"]
    assert rec.events.count("after_step") == 6 and learn.step == 6 and learn.epoch == 1
    assert learn.metrics == {"macro_f1": 0.5}


def test_freeze_and_unfreeze_n_set_requires_grad_from_the_top():
    learn = learner()

    def trains():
        return [all(p.requires_grad for p in s.parameters()) for s in learn.model.encoder.stages]

    learn.freeze()
    assert trains() == [False, False, False] and learn.n_unfrozen == 0
    assert all(p.requires_grad for p in learn.model.head.parameters())
    learn.unfreeze(1)
    assert trains() == [False, False, True]
    learn.unfreeze(2)
    assert trains() == [False, True, True] and learn.n_unfrozen == 2
    learn.unfreeze()
    assert trains() == [True, True, True] and learn.n_unfrozen == 3
    assert learn.unfreeze(10).n_unfrozen == 3
    assert trains() == [True, True, True]


class WithStem(Net):
    """A body with a part outside its blocks, as embeddings are."""

    def __init__(self):
        super().__init__()
        self.encoder.stem = nn.Linear(4, 4)

    def forward(self, x):
        return super().forward(self.encoder.stem(x))


def test_unfreeze_all_trains_the_whole_body_below_the_blocks_rates():
    torch.manual_seed(0)
    learn = Learner(WithStem(), batches(), None).freeze()
    stem = learn.model.encoder.stem
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    groups = learn.param_groups((1e-3, 1e-2), decay=0.5)
    assert [g["lr"] for g in groups] == [1e-2, 1e-3, 5e-4, 2.5e-4, 1.25e-4]  # the stem last
    assert groups[-1]["params"] == list(stem.parameters())
    before = stem.weight.detach().clone()
    learn.fit(1, (1e-3, 1e-2))
    assert not torch.equal(before, stem.weight)
    learn.unfreeze(3)  # every block, but only the blocks
    assert not stem.weight.requires_grad and len(learn.param_groups(1e-3)) == 4


def test_param_groups_give_discriminative_rates():
    learn = learner().unfreeze(2)
    groups = learn.param_groups((1e-4, 1e-3), decay=0.5)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4, 5e-5]
    assert all(a is b for a, b in zip(groups[0]["params"], learn.model.head.parameters(), strict=True))
    top = learn.model.encoder.stages[2].parameters()
    assert all(a is b for a, b in zip(groups[1]["params"], top, strict=True))
    frozen = learner().freeze().param_groups(slice(1e-4, 1e-3))
    assert [g["lr"] for g in frozen] == [1e-3]


class Rates:
    def __init__(self):
        self.lrs: list[list[float]] = []
        self.betas: list[float] = []

    def before_batch(self, learn):
        self.lrs.append([g["lr"] for g in learn.optimizer.param_groups])
        self.betas.append(learn.optimizer.param_groups[0]["betas"][0])


def test_fit_one_cycle_rates_follow_one_cycle():
    rates, (body, head) = Rates(), (1e-4, 1e-2)
    learn = learner(n_batches=5).unfreeze(1)
    learn.fit_one_cycle(4, (body, head), pct_start=0.25, callbacks=[rates])
    total, peak = 20, 4  # the warm-up ends at step pct_start * total - 1
    heads = [lrs[0] for lrs in rates.lrs]
    assert len(heads) == total
    assert heads[0] == pytest.approx(head / 25)
    assert heads[peak] == pytest.approx(head) and max(heads) == pytest.approx(head)
    assert all(a < b for a, b in zip(heads[:peak], heads[1 : peak + 1], strict=True))
    assert all(a > b for a, b in zip(heads[peak:], heads[peak + 1 :], strict=False))
    for i in range(peak, total):  # cosine annealing from the peak towards head / 25 / 1e4
        pct = (i - peak) / (total - 1 - peak)
        floor = head / 25 / 1e4
        assert heads[i] == pytest.approx(floor + (head - floor) * (1 + math.cos(math.pi * pct)) / 2)
    assert all(lrs[1] / lrs[0] == pytest.approx(body / head) for lrs in rates.lrs)  # ratios hold
    assert rates.betas[0] == pytest.approx(0.95) and rates.betas[peak] == pytest.approx(0.85)
    assert learn.scheduler.last_epoch == total


class PeakRates:
    def __init__(self):
        self.peaks: list[list[float]] = []

    def before_fit(self, learn):
        self.peaks.append([0.0] * len(learn.optimizer.param_groups))

    def before_batch(self, learn):
        rates = [g["lr"] for g in learn.optimizer.param_groups]
        self.peaks[-1] = [max(a, b) for a, b in zip(self.peaks[-1], rates, strict=True)]


def test_lr_sets_the_rates_of_a_given_optimizer_keeping_their_ratios():
    torch.manual_seed(0)
    net, peaks = Net(), PeakRates()
    optimizer = torch.optim.AdamW(
        [{"params": net.head.parameters(), "lr": 0.1}, {"params": net.encoder.parameters(), "lr": 0.01}]
    )
    learn = Learner(net, batches(n_batches=4), optimizer=optimizer, callbacks=[peaks])
    learn.fit_one_cycle(2, lr_max=1e-3)
    learn.fit_one_cycle(2, lr_max=1e-3)  # not from where the first cycle annealed to
    learn.fit(1, lr=5e-2)
    assert peaks.peaks == [pytest.approx([1e-3, 1e-4])] * 2 + [pytest.approx([5e-2, 5e-3])]
    learn.fit(1)  # no lr: the rates stay as they are
    assert peaks.peaks[-1] == pytest.approx([5e-2, 5e-3])
    plain = Learner(net, batches(), optimizer=torch.optim.SGD(net.parameters(), lr=0.1)).unfreeze(1)
    with pytest.raises(ConfigError, match="2 parameter groups.*optimizer has 1"):
        plain.fit(1, (1e-3, 1e-2))


def test_early_stopping_stops_when_the_score_stops_improving():
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    history = History()
    learn = learner(lambda: {"macro_f1": next(scores)})
    learn.fit(6, callbacks=[history, EarlyStopping(patience=2)])
    assert [row["macro_f1"] for row in history.rows] == [0.5, 0.7, 0.6, 0.65]
    assert learn.epoch == 3 and learn.step == 12


class Canceller:
    """Raises ``exc`` at ``event`` once the learner reaches ``(epoch, step)``, and records."""

    def __init__(self, event, exc, epoch=0, step=None):
        self.event, self.exc, self.at, self.events, self.done = event, exc, (epoch, step), [], False
        for name in [
            *EVENTS,
            "after_cancel_batch",
            "after_cancel_train",
            "after_cancel_epoch",
            "after_cancel_fit",
        ]:
            setattr(self, name, lambda learn, name=name: self.fire(learn, name))

    def fire(self, learn, name):
        self.events.append(name)
        epoch, step = self.at
        reached = learn.epoch == epoch and (step is None or learn.step == step)
        if name == self.event and reached and not self.done:
            self.done = True
            raise self.exc()


def test_a_callback_cancels_a_batch_and_no_step_is_taken():
    cancel = Canceller("after_loss", CancelBatchException, step=1)  # the second batch
    learn = learner().unfreeze()
    before = [p.detach().clone() for p in learn.model.parameters()]
    learn.fit(1, callbacks=[cancel])
    assert cancel.events.count("after_cancel_batch") == 1
    assert cancel.events.count("after_step") == 2 and cancel.events.count("after_batch") == 3
    assert cancel.events.count("after_backward") == 2 and learn.step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, learn.model.parameters(), strict=True))


def test_cancel_train_skips_the_rest_of_the_steps_and_still_validates():
    cancel = Canceller("after_batch", CancelTrainException, step=1)
    learn = learner(lambda: {"macro_f1": 1.0})
    learn.fit(2, callbacks=[cancel])
    assert cancel.events.count("after_cancel_train") == 1
    assert learn.step == 1 + 3  # epoch 0 stopped after its first step, epoch 1 ran whole
    assert cancel.events.count("after_validate") == 2


def test_a_callback_cancels_an_epoch_without_validation():
    cancel = Canceller("before_validate", CancelEpochException, epoch=0)
    seen = []
    learn = learner(lambda: seen.append(1) or {"macro_f1": 1.0})
    learn.fit(2, callbacks=[cancel])
    assert seen == [1]  # only epoch 1 validated
    assert cancel.events.count("after_cancel_epoch") == 1 and cancel.events.count("after_epoch") == 2
    assert learn.epoch == 1 and learn.step == 6


def test_a_cancel_ends_every_level_it_leaves_innermost_first():
    for exc, event, ended in [
        (CancelFitException, "after_loss", ["after_batch", "after_train", "after_epoch", "after_cancel_fit"]),
        (CancelFitException, "after_validate", ["after_epoch", "after_cancel_fit", "after_fit"]),
        (
            CancelEpochException,
            "after_loss",
            ["after_batch", "after_train", "after_cancel_epoch", "after_epoch"],
        ),
    ]:
        cancel, history = Canceller(event, exc), History()  # at its first firing
        learner(lambda: {"macro_f1": 0.5}).fit(2, callbacks=[cancel, history])
        after = cancel.events[cancel.events.index(event) + 1 :]
        assert after[: len(ended)] == ended, (exc, event)
        assert len(history.rows) == (1 if exc is CancelFitException else 2)


def test_cancel_fit_ends_the_fit_and_after_fit_still_fires():
    cancel = Canceller("before_epoch", CancelFitException, epoch=1)
    learn = learner()
    learn.fit(5, callbacks=[cancel])
    assert learn.step == 3 and learn.epoch == 1
    assert cancel.events[-2:] == ["after_cancel_fit", "after_fit"]


def test_time_budget_plans_the_epochs_and_one_cycle_spans_them():
    learn = learner().unfreeze(1)
    budget = TimeBudget(time.monotonic() + 10.0, epoch_seconds=3.0)  # 2 epochs of 3 s (+15%) fit in 10 s
    learn.fit_one_cycle(8, 1e-3, callbacks=[budget])
    assert budget.planned == 2 and learn.n_epoch == 2 and learn.epoch == 1
    assert learn.scheduler.total_steps == 2 * 3
    nothing = learner()
    nothing.fit_one_cycle(8, callbacks=[TimeBudget(time.monotonic() + 1.0, epoch_seconds=5.0)])
    assert nothing.n_epoch == 0 and nothing.step == 0


class KillAfter:
    """Stands in for SIGKILL: the fit ends right after epoch ``epoch`` is checkpointed."""

    def __init__(self, epoch):
        self.epoch = epoch

    def after_epoch(self, learn):
        if learn.epoch == self.epoch:
            raise CancelFitException()


def run(folder, epochs=4, resume=False, kill=None):
    """A one-cycle fit with dropout (RNG), a weight average and per-epoch checkpoints."""
    learn = learner(lambda: {"macro_f1": 0.5}).unfreeze(2)
    history = History()
    callbacks = [history, WeightAverage(4)]
    callbacks += [Checkpoint(folder, extra={"epochs": epochs}, resume=resume)]
    callbacks += [KillAfter(kill)] if kill is not None else []
    learn.fit_one_cycle(epochs, (1e-3, 1e-2), callbacks=callbacks)
    return learn, history


def test_checkpoint_resume_gives_identical_weights(tmp_path):
    whole, whole_history = run(tmp_path / "whole")
    killed, _ = run(tmp_path / "killed", kill=1)
    assert killed.epoch == 1
    resumed, resumed_history = run(tmp_path / "killed", resume=True)
    assert resumed.step == whole.step == 12
    assert [row["epoch"] for row in resumed_history.rows] == [2, 3]
    assert resumed_history.rows == whole_history.rows[2:]  # the same training losses
    for (name, a), b in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert resumed.scheduler.state_dict()["last_epoch"] == whole.scheduler.state_dict()["last_epoch"]


def test_mixed_precision_runs_training_forwards_in_bfloat16_and_keeps_float32_weights():
    seen = []

    class Probe:
        def after_pred(self, learn):
            seen.append((torch.is_autocast_enabled("cpu"), learn.pred.dtype))

    def validate():
        seen.append(("validate", torch.is_autocast_enabled("cpu")))
        return {"loss": 0.0}

    learn = learner(validate)
    plain = learn.forward
    before = [p.detach().clone() for p in learn.model.parameters()]
    learn.fit(2, 1e-2, callbacks=[MixedPrecision(), Probe()])
    assert learn.forward is plain  # restored after the fit
    # each training forward ran in autocast (the pred cast back to float32); validation did not
    steps = [s for s in seen if s[0] != "validate"]
    assert len(steps) == 6 and all(s == (False, torch.float32) for s in steps)
    assert ("validate", False) in seen and math.isfinite(learn.loss)
    params = list(learn.model.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))


def test_mixed_precision_forward_is_autocast_bfloat16():
    inside = []

    def forward(model, x):
        inside.append(torch.is_autocast_enabled("cpu"))
        out = model(x)
        inside.append(out.dtype)
        return out

    learn = learner(forward=forward)
    learn.fit(1, 1e-2, callbacks=[MixedPrecision()])
    assert inside[:2] == [True, torch.bfloat16] and not torch.is_autocast_enabled("cpu")


def test_gradual_unfreezing_judges_each_stage_on_its_own():
    scores = iter([0.5, 0.6, 0.6, 0.6, 0.55, 0.58, 0.7, 0.8, 0.9])
    history = History()
    learn = learner(lambda: {"macro_f1": next(scores)}, callbacks=[EarlyStopping(patience=2), history])
    learn.unfreeze(1).fit(4, 1e-2)
    learn.unfreeze(2).fit(5, 1e-3)
    assert [row["epoch"] for row in history.rows] == [0, 1, 2, 3, 0, 1, 2, 3, 4]


def test_an_error_in_one_before_fit_surfaces_named_not_hidden_by_other_after_fits():
    class Broken:
        def before_fit(self, learn):
            raise ValueError("bad config")

    for callback in (MixedPrecision(), WeightAverage(10, keep=True), BestKeeper()):
        learn = learner()
        plain = learn.forward
        with pytest.raises(ValueError, match="bad config") as raised:
            learn.fit(1, callbacks=[Broken(), callback])
        assert raised.value.__notes__ == ["raised by Broken.before_fit"]
        assert learn.forward is plain
