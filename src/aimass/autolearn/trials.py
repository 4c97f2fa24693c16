"""Optuna trials of stage 2 on a subsample, and how the default is kept or replaced.

optuna, torch, scikit-learn (the scores) and the training stages are imported where they are used
(see :mod:`aimass.autolearn.tuners`)."""

from __future__ import annotations

import math
import time

from aimass.autolearn.tuners import Bundle


class EpochReport:
    """Wraps stage 2's validation forward: once per epoch (after every validation row) it reports
    the validation macro-F1 to the Optuna trial and stops a trial the pruner gives up on."""

    def __init__(self, trial, forward_eval, y):
        self.trial, self.forward_eval, self.y = trial, forward_eval, y
        self.predictions, self.scores = [], []

    def __call__(self, rows):
        logits = self.forward_eval(rows)
        self.predictions.append(logits.argmax(-1))
        if sum(len(p) for p in self.predictions) >= len(self.y):
            self._epoch_done()
        return logits

    def _epoch_done(self) -> None:
        import optuna
        import torch

        from aimass.evaluation import quick_scores

        predicted = torch.cat(self.predictions).numpy()
        self.predictions = []
        score = quick_scores(self.y.numpy(), predicted)["macro_f1"]
        self.scores.append(score)
        if self.trial is None:  # a confirmation run: nothing to prune
            return
        self.trial.report(score, len(self.scores) - 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {len(self.scores)}: macro-F1 {score:.4f} below the median")


def optuna_search(bundle: Bundle, tuner, defaults: dict, lr_test: dict, deadline: float, seed: int):
    """Seeded TPE over ``lr_body`` and ``lr_head`` with median pruning; trial 0 is the default and
    trial 1 the range test's proposal. Trials stop being started when the next would not fit."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    proposal = lr_test["suggested_lr_body"] or defaults["lr_body"]
    body = (min(defaults["lr_body"], proposal) / 2, max(defaults["lr_body"], proposal) * 2)
    head = (defaults["lr_head"] / 3, defaults["lr_head"] * 3)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study.enqueue_trial(defaults, user_attrs={"origin": "default"})
    if abs(math.log(proposal / defaults["lr_body"])) > math.log(1.5):
        study.enqueue_trial({**defaults, "lr_body": proposal}, user_attrs={"origin": "lr range test"})
    trial_s = tuner.trial_epochs * lr_test["step_s"] * math.ceil(len(bundle.train) / tuner.batch_size)
    trial_s = trial_s * 1.15 + 1.0

    def objective(trial):
        params = {
            "lr_body": trial.suggest_float("lr_body", *body, log=True),
            "lr_head": trial.suggest_float("lr_head", *head, log=True),
        }
        return _trial(bundle, tuner, params, trial, deadline, seed)

    def enough_time(study_, trial_):
        if deadline - time.monotonic() < trial_s:
            study_.set_user_attr(
                "stopped", f"{deadline - time.monotonic():.0f}s left, a trial needs ~{trial_s:.0f}s"
            )
            if trial_ is not None:  # optuna refuses stop() outside optimize; the attr skips it there
                study_.stop()

    enough_time(study, None)
    if "stopped" not in study.user_attrs:
        study.optimize(objective, timeout=max(1.0, deadline - time.monotonic()), callbacks=[enough_time])
    return study


def _trial(bundle: Bundle, tuner, params: dict, trial, deadline: float, seed: int) -> float:
    import optuna

    report = EpochReport(trial, bundle.forward_eval, bundle.valid.y)
    began = time.monotonic()
    try:
        _fit_scores(bundle, tuner, params, report, deadline, seed)
    finally:
        trial.set_user_attr("seconds", round(time.monotonic() - began, 2))
        trial.set_user_attr("epoch_scores", [round(s, 4) for s in report.scores])
    if not report.scores:
        raise optuna.TrialPruned("the search's time ran out before the first epoch ended")
    return max(report.scores)


def _fit_scores(bundle: Bundle, tuner, params: dict, report: EpochReport, deadline: float, seed: int) -> list:
    """Stage 2 on the bundle's subsample with ``params`` (validation reported each epoch), then the
    bundle's weights back; the validation macro-F1 of each epoch."""
    from aimass.train import stages

    try:
        learn = stages.top_learner(
            bundle.net,
            bundle.train,
            bundle.valid,
            start=bundle.net.n_layers - bundle.n_top,
            seed=seed,
            batch_size=tuner.batch_size,
            forward=bundle.forward,
            forward_eval=report,
            head_params=bundle.head_params(),
        )
        lr = (params["lr_body"], params["lr_head"] * tuner.head_scale)
        stages.train_top(learn.unfreeze(bundle.n_top), tuner.trial_epochs, lr, deadline=deadline)
    finally:
        bundle.restore()
    return report.scores


def _pick(study, defaults: dict, n_valid: int) -> tuple[dict, dict]:
    """The default unless the best trial beats it by more than luck would: the best of ``N`` noisy
    trials of equal worth exceeds the default by about ``sigma * sqrt(2 ln N)``, where ``sigma`` is
    the standard error of the difference of two scores near the default's on ``n_valid`` items
    (and at least one item's worth). This keeps auto from trading a known-good default for luck."""
    import optuna

    ran = [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING]
    done = [t for t in ran if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in ran if t.state == optuna.trial.TrialState.PRUNED]
    default = next((t for t in done if t.user_attrs.get("origin") == "default"), None)
    best = max(done, key=lambda t: t.value, default=None)
    sigma = _noise(default.value if default is not None else 0.5, n_valid)
    gain = sigma * max(1.0, math.sqrt(2 * math.log(max(1, len(ran)))))
    if best is None or default is None or best.value <= default.value + gain:
        params = defaults
        stopped = study.user_attrs.get("stopped", "")
        base = f"no trial completed ({stopped})" if default is None else f"default scored {default.value:.4f}"
        why = (
            f"the task's defaults: {base}; no trial beat it by > {gain:.4f} validation macro-F1 "
            f"(what the best of {len(ran)} equal trials gains by luck)"
        )
        score = None if default is None else default.value
    else:
        params = {k: float(f"{v:.3g}") for k, v in best.params.items()}
        why = (
            f"trial {best.number} scored {best.value:.4f} validation macro-F1 vs the default's "
            f"{default.value:.4f} (same subsample and epochs; luck explains up to {gain:.4f})"
        )
        score = best.value
    return params, {
        "trials": len(ran),
        "completed": len(done),
        "pruned": len(pruned),
        "best_params": params,
        "best_valid_macro_f1": score,
        "default_valid_macro_f1": None if default is None else default.value,
        "why": why,
        "table": [_trial_row(t) for t in ran],
        "stopped": study.user_attrs.get("stopped"),
        "skipped": None,
    }


def _noise(score: float, n_valid: int) -> float:
    """Standard error of the difference of two validation scores near ``score`` on ``n_valid`` items."""
    f = min(0.99, max(0.01, score))
    return max(1.0 / max(1, n_valid), math.sqrt(2 * f * (1 - f) / max(1, n_valid)))


def _trial_row(trial) -> dict:
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "origin": trial.user_attrs.get("origin", "tpe"),
        "params": {k: float(f"{v:.3g}") for k, v in trial.params.items()},
        "valid_macro_f1": trial.value,
        "epoch_scores": trial.user_attrs.get("epoch_scores", []),
        "seconds": trial.user_attrs.get("seconds"),
    }
