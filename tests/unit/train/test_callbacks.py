"""Callbacks of the training loop: best weights, early stop, time budget, history, checkpoints."""

from __future__ import annotations

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
    TimeBudget,
    WeightAverage,
    restore,
    trainable_state,
)
from aimass.train.loop import Loop

N_BATCHES = 4


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def batches(epoch: int):
    """Deterministic data: the same epoch always gives the same batches."""
    gen = torch.Generator().manual_seed(1000 + epoch)
    for _ in range(N_BATCHES):
        x = torch.randn(8, 3, generator=gen)
        yield x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def scripted(scores, key="macro_f1"):
    """A validate function that returns preset numbers, one per epoch."""
    it = iter(scores)
    return lambda: {key: next(it)}


class EpochRecorder:
    def __init__(self):
        self.epochs: list[int] = []
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def after_epoch(self, loop) -> None:
        self.epochs.append(loop.epoch)
        self.weights[loop.epoch] = trainable_state(loop.model)


def sgd_loop(model, validate, callbacks, lr=0.1) -> Loop:
    return Loop(model, batches, validate, torch.optim.SGD(model.parameters(), lr), callbacks=callbacks)


def states_equal(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


# -- WeightAverage ------------------------------------------------------------------------------------


class StepRecorder:
    def __init__(self):
        self.states: list[dict[str, torch.Tensor]] = []

    def after_batch(self, loop) -> None:
        self.states.append(trainable_state(loop.model))


def test_weight_average_is_the_moving_average_of_every_step_and_becomes_the_model():
    model, steps, seen = make_model(), StepRecorder(), []
    expected = trainable_state(model)
    average = WeightAverage(steps=4, keep=True)
    validate = lambda: seen.append(trainable_state(model)) or {}  # noqa: E731
    sgd_loop(model, validate, [steps, average]).fit(2)
    for state in steps.states:  # decay 1 - 1/4 over the raw weights after each step
        expected = {k: 0.75 * v + 0.25 * state[k] for k, v in expected.items()}
    assert len(steps.states) == 2 * N_BATCHES
    assert states_equal(trainable_state(model), expected, atol=1e-6)
    # validation saw the average of that moment, not the raw weights
    assert not states_equal(seen[0], steps.states[N_BATCHES - 1], atol=1e-4)


def test_training_goes_on_from_the_raw_weights_and_the_keeper_keeps_the_best_average():
    plain, averaged = make_model(), make_model()
    sgd_loop(plain, lambda: {}, []).fit(2)
    keeper, recorder = BestKeeper(), EpochRecorder()
    sgd_loop(averaged, scripted([0.9, 0.1]), [keeper, WeightAverage(steps=4), recorder]).fit(2)
    # the raw trajectory is that of a loop without averaging (the recorder runs after the swap back)
    assert states_equal(recorder.weights[1], trainable_state(plain), atol=1e-6)
    # and the model ends on epoch 0's averaged weights, which differ from its raw ones
    assert keeper.epoch == 0 and states_equal(trainable_state(averaged), keeper.state)
    assert not states_equal(keeper.state, recorder.weights[0], atol=1e-4)


# -- BestKeeper ---------------------------------------------------------------------------------------


def test_best_keeper_restores_weights_of_best_epoch():
    model, keeper, rec = make_model(), BestKeeper("macro_f1"), EpochRecorder()
    sgd_loop(model, scripted([0.5, 0.9, 0.6]), [keeper, rec]).fit(3)
    assert rec.epochs == [0, 1, 2]
    assert keeper.epoch == 1 and keeper.best == 0.9
    # the weights moved between epochs, so restoring epoch 1 is observable
    assert not states_equal(rec.weights[1], rec.weights[2])
    assert states_equal(trainable_state(model), rec.weights[1])


def test_a_monitor_validation_does_not_report_is_a_config_error_naming_what_it_reports():
    for callback in (BestKeeper("acuracy"), EarlyStopping("acuracy")):
        rec = EpochRecorder()
        validate = lambda: {"accuracy": 0.5, "loss": 0.7}  # noqa: E731
        with pytest.raises(ConfigError, match="'acuracy'.*reports: accuracy, loss"):
            sgd_loop(make_model(), validate, [callback, rec]).fit(3)
        assert rec.epochs == []  # at the first epoch's end


def test_a_loss_is_better_lower_and_mode_says_which_way_otherwise():
    losses = [0.9, 0.7, 0.5, 0.4, 0.3]
    keeper, stopper, rec = BestKeeper("loss"), EarlyStopping("loss", patience=1), EpochRecorder()
    sgd_loop(make_model(), scripted(losses, key="loss"), [keeper, stopper, rec]).fit(5)
    assert rec.epochs == [0, 1, 2, 3, 4]  # a falling loss is improving: no early stop
    assert keeper.epoch == 4 and keeper.best == 0.3 and stopper.best == 0.3
    # mode= overrides the name: an error rate that should go down, a "loss" score that should go up
    errors = BestKeeper("error_rate", mode="min")
    sgd_loop(make_model(), scripted([0.3, 0.1, 0.2], key="error_rate"), [errors]).fit(3)
    assert errors.epoch == 1
    gains = EarlyStopping("loss_gain", patience=1, mode="max")
    sgd_loop(make_model(), scripted([0.1, 0.2, 0.1, 0.3], key="loss_gain"), [gains, rec]).fit(4)
    assert gains.best == 0.2 and rec.epochs[5:] == [0, 1, 2]
    with pytest.raises(ConfigError, match="mode"):
        EarlyStopping(mode="lowest")


def test_best_keeper_keeps_only_trainable_parameters():
    model = make_model()
    model[0].weight.requires_grad_(False)
    keeper = BestKeeper()
    sgd_loop(model, scripted([0.1]), [keeper]).fit(1)
    assert set(keeper.state) == {"0.bias", "2.weight", "2.bias"}


# -- EarlyStopping ------------------------------------------------------------------------------------


def test_early_stopping_after_patience_non_improving_epochs():
    rec = EpochRecorder()
    scores = scripted([0.5, 0.6, 0.6, 0.55, 0.6, 0.9, 0.9])
    loop = sgd_loop(make_model(), scores, [EarlyStopping(patience=3), rec])
    loop.fit(7)
    # best at epoch 1; epochs 2, 3, 4 do not improve -> stop after epoch 4
    assert rec.epochs == [0, 1, 2, 3, 4]
    assert loop.stop


def test_early_stopping_counter_resets_on_improvement_and_respects_min_delta():
    rec = EpochRecorder()
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    # 0.505 is not an improvement over 0.5 by more than min_delta; 0.7 is and resets the wait
    loop = sgd_loop(make_model(), scripted([0.5, 0.505, 0.7, 0.7, 0.7, 0.9]), [stopper, rec])
    loop.fit(6)
    assert rec.epochs == [0, 1, 2, 3, 4]
    assert stopper.best == 0.7


def test_callbacks_start_over_in_each_fit_unless_restored():
    stopper, keeper = EarlyStopping(patience=2), BestKeeper()
    budget, rec = TimeBudget(time.monotonic() + 3600), EpochRecorder()
    loop = sgd_loop(make_model(), scripted([0.5, 0.6, 0.6, 0.6, 0.5, 0.55, 0.56, 0.57, 0.3]), [])
    loop.callbacks += [stopper, keeper, budget, rec]
    loop.fit(4)
    assert rec.epochs == [0, 1, 2, 3] and stopper.wait == 2 and keeper.best == 0.6
    budget.started -= 7200  # the last epoch "began" two hours ago: says nothing about the next fit
    loop.fit(4)  # gradual unfreezing: the next stage is judged on its own
    assert rec.epochs[4:] == [0, 1, 2, 3] and keeper.epoch == 3 and keeper.best == 0.57
    stopper.load_state_dict({"best": 0.9, "wait": 1})  # as a checkpoint restores it
    loop.fit(1)
    assert loop.stop and stopper.wait == 2


def test_early_stopping_runs_all_epochs_while_improving():
    rec = EpochRecorder()
    sgd_loop(make_model(), scripted([0.1, 0.2, 0.3, 0.4]), [EarlyStopping(patience=1), rec]).fit(4)
    assert rec.epochs == [0, 1, 2, 3]


# -- TimeBudget ---------------------------------------------------------------------------------------


def test_time_budget_stops_when_deadline_has_passed():
    rec, history = EpochRecorder(), History()
    expired = TimeBudget(time.monotonic() - 1.0)
    loop = sgd_loop(make_model(), lambda: {"macro_f1": 0.0}, [expired, rec, history])
    loop.fit(5)
    assert rec.epochs == [0]
    assert loop.step == 1
    assert len(history.rows) == 1


def test_time_budget_far_deadline_does_not_stop():
    rec = EpochRecorder()
    sgd_loop(make_model(), lambda: {}, [TimeBudget(time.monotonic() + 3600), rec]).fit(3)
    assert rec.epochs == [0, 1, 2]


def test_time_budget_skips_epoch_that_would_overrun():
    budget, rec = TimeBudget(deadline=0.0), EpochRecorder()

    class FakeSlowEpochs:
        """Deadline an hour away, but pretend epoch 0 took an hour: epoch 1 cannot finish in time."""

        def before_fit(self, loop):
            budget.deadline = time.monotonic() + 3600

        def after_epoch(self, loop):
            budget.started -= 3600

    loop = sgd_loop(make_model(), lambda: {}, [FakeSlowEpochs(), budget, rec])
    loop.fit(3)
    assert rec.epochs == [0]
    assert loop.step == N_BATCHES  # not a single batch of epoch 1 ran


# -- History ------------------------------------------------------------------------------------------


def test_history_records_one_row_per_epoch_with_train_loss():
    history = History()
    loop = sgd_loop(make_model(), scripted([0.5, 0.7, 0.8]), [history])
    losses: list[float] = []

    class Losses:
        def after_batch(self, lp):
            losses.append(lp.loss)

    loop.callbacks.append(Losses())
    loop.fit(3)
    assert [row["epoch"] for row in history.rows] == [0, 1, 2]
    assert [row["macro_f1"] for row in history.rows] == [0.5, 0.7, 0.8]
    for epoch, row in enumerate(history.rows):
        expected = sum(losses[epoch * N_BATCHES : (epoch + 1) * N_BATCHES]) / N_BATCHES
        assert row["train_loss"] == round(expected, 5)
        assert row["train_loss"] > 0


# -- Checkpoint + restore -----------------------------------------------------------------------------

EPOCHS = 4


def adamw_loop(callbacks=()) -> Loop:
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=EPOCHS * N_BATCHES)
    counter = iter(range(100))
    return Loop(
        model,
        batches,
        lambda: {"macro_f1": [0.5, 0.9, 0.6, 0.7][next(counter) % 4]},
        optimizer,
        scheduler,
        callbacks=callbacks,
    )


def test_checkpoint_files_are_safetensors_and_json(tmp_path):
    folder = tmp_path / "ckpt"
    adamw_loop([Checkpoint(folder)]).fit(2)
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["checkpoint.json", "checkpoint.safetensors"]
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))
    assert not list(tmp_path.rglob("*.tmp"))


def test_restore_without_checkpoint_returns_none(tmp_path):
    assert restore(tmp_path / "missing", adamw_loop()) is None


def test_checkpoint_restore_round_trip(tmp_path):
    folder = tmp_path / "ckpt"
    keeper = BestKeeper()
    first = adamw_loop([keeper, Checkpoint(folder, keeper=keeper)])
    first.fit(2)

    fresh_keeper = BestKeeper()
    second = adamw_loop()
    assert not states_equal(trainable_state(first.model), trainable_state(second.model))
    next_epoch = restore(folder, second, keeper=fresh_keeper)

    assert next_epoch == 2
    assert second.step == first.step == 2 * N_BATCHES
    assert states_equal(trainable_state(second.model), trainable_state(first.model))
    old, new = first.optimizer.state_dict(), second.optimizer.state_dict()
    assert old["state"].keys() == new["state"].keys()
    for pid in old["state"]:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(old["state"][pid][key], new["state"][pid][key]), (pid, key)
    for group_old, group_new in zip(old["param_groups"], new["param_groups"], strict=True):
        assert group_new["lr"] == group_old["lr"]
        assert tuple(group_new["betas"]) == tuple(group_old["betas"])
    assert second.scheduler.last_epoch == first.scheduler.last_epoch == 2 * N_BATCHES
    assert second.scheduler.get_last_lr() == first.scheduler.get_last_lr()
    assert fresh_keeper.best == keeper.best == 0.9 and fresh_keeper.epoch == keeper.epoch == 1
    assert states_equal(fresh_keeper.state, keeper.state)


def test_resumed_training_matches_uninterrupted_training(tmp_path):
    straight = adamw_loop()
    straight.fit(EPOCHS)

    folder = tmp_path / "ckpt"
    adamw_loop([Checkpoint(folder)]).fit(2)  # "interrupted" after epoch 1
    resumed = adamw_loop([Checkpoint(folder)])
    start = restore(folder, resumed)
    assert start == 2
    resumed.fit(EPOCHS, start_epoch=start)

    assert resumed.step == straight.step == EPOCHS * N_BATCHES
    assert resumed.scheduler.last_epoch == straight.scheduler.last_epoch
    a, b = trainable_state(straight.model), trainable_state(resumed.model)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key


def test_a_resumed_run_goes_on_with_the_checkpointed_weight_average(tmp_path):
    straight_average = WeightAverage(steps=4, keep=True)
    straight = adamw_loop([straight_average])
    straight.fit(EPOCHS)

    folder = tmp_path / "ckpt"
    adamw_loop([WeightAverage(steps=4, keep=True), Checkpoint(folder)]).fit(2)  # "interrupted"
    average = WeightAverage(steps=4, keep=True)
    resumed = adamw_loop([average, Checkpoint(folder)])
    start = restore(folder, resumed)
    assert start == 2 and average.shadow  # the average came back with the checkpoint
    resumed.fit(EPOCHS, start_epoch=start)
    assert states_equal(trainable_state(resumed.model), trainable_state(straight.model), atol=1e-6)
