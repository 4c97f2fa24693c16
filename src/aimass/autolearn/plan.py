"""How the budget is split between the search and the phases after it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aimass.autolearn.run import _Run
from aimass.autolearn.settings import LR_STEPS, MIN_TRIALS, TRIALS_WANTED


@dataclass
class Plan:
    """Seconds given to the phases after preparation (the package docstring, step 3)."""

    evaluate_s: float  # test evaluation and registration
    compress_s: float  # the int8 child: export, evaluation and timing of parent and child
    final_s: float = 0.0  # the final fit at the estimator's full stage-2 plan
    search_s: float = 0.0
    step_s: float = 0.0
    confirm_s: float = 0.0  # the default and the winner again, on another subsample
    n_sub: int = 0
    compress_reserved: bool = True  # False: a tight budget searches first, compresses if time is left
    skip: str | None = None

    def reserved(self) -> float:
        """What the final fit must leave for the phases after it."""
        return self.evaluate_s + (self.compress_s if self.compress_reserved else 0.0)


def _reserve(run: _Run, tuner, ds, slow: float = 1.0) -> Plan:
    """The plan without a search: evaluation always, compression when it leaves the fit half the time.
    ``slow``: how much slower than calibrated this machine is running now."""
    n_test = len(ds.labels("test"))
    item = tuner.item_seconds(tuner.count_dataset(ds))
    plan = Plan(n_test * item * slow + 3.0, (tuner.compress_s + n_test * tuner.compress_item_s(item)) * slow)
    free = run.left() - run.deploy_s - run.margin_s - plan.evaluate_s
    plan.compress_reserved = free - plan.compress_s >= free / 2
    return plan


def _plan(run: _Run, tuner, ds, prepared) -> Plan:
    """Cost the final fit, evaluation and compression; the search gets what is left. On a tight
    budget the search goes before compression; with too little for a few trials it is skipped."""
    slow = _slowdown(tuner, prepared, ds)
    plan = _reserve(run, tuner, ds, slow)
    n_train, batch = len(prepared.train_features_), tuner.batch_size
    plan.step_s = step = tuner.step_seconds(tuner.count_dataset(ds)) * slow
    overhead = sum(prepared.timings_.values()) - prepared.timings_.get("embed", 0.0) + 2.0  # cache hit
    plan.final_s = tuner.final_seconds(n_train, step, overhead)
    room = run.left() - plan.final_s - plan.evaluate_s - run.deploy_s - run.margin_s
    # fewer rows than this say little about the full run (and a head on them overfits)
    floor = min(n_train, max(20 * len(prepared.classes_), 8 * batch, n_train // 10))

    def trial(rows: int) -> float:
        return tuner.trial_epochs * step * math.ceil(rows / batch) * 1.15 + 1.0

    def search(rows: int, trials: int) -> float:  # subsample, trials, then the confirmation rung
        return 2 * tuner.view_seconds(rows) + (trials + 2) * trial(rows)

    least = LR_STEPS * step + search(floor, MIN_TRIALS)
    if room - plan.compress_s >= least:
        plan.search_s = room - plan.compress_s
    elif room >= least:
        plan.search_s, plan.compress_reserved = room, False
    else:
        plan.compress_reserved = room >= plan.compress_s
        plan.skip = (
            f"the budget leaves {max(0.0, room):.0f}s after reserving ~{plan.final_s:.0f}s for the final fit "
            f"and ~{plan.evaluate_s:.0f}s for evaluation; the LR range test and {MIN_TRIALS} trials need "
            f"~{least:.0f}s"
        )
        return plan
    rows = n_train
    while rows > floor and search(rows, TRIALS_WANTED) > (plan.search_s - LR_STEPS * step) * 0.85:
        rows = int(rows * 0.9)
    plan.n_sub = min(n_train, max(floor, rows))
    plan.confirm_s = tuner.view_seconds(plan.n_sub) + 2 * trial(plan.n_sub)
    return plan


def _slowdown(tuner, prepared, ds) -> float:
    """How much slower than calibrated this machine embedded just now (1 when the cache answered)."""
    spent = prepared.timings_.get("embed", 0.0)
    expected = len(prepared.train_features_) * 1.15 * tuner.embed_seconds(tuner.count_dataset(ds))
    return 1.0 if expected < 10.0 else min(3.0, max(0.5, spent / expected))  # small data: fixed costs
