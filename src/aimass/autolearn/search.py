"""The search: preparation, the learning-rate range test, the trials and their confirmation.

torch and the training stages are imported where they are used (see :mod:`aimass.autolearn.tuners`)."""

from __future__ import annotations

import math
import statistics
import time

from aimass.autolearn.final import _State
from aimass.autolearn.plan import _plan, _reserve
from aimass.autolearn.run import _Run
from aimass.autolearn.settings import LR_STEPS
from aimass.autolearn.trials import EpochReport, _fit_scores, _noise, _pick, optuna_search
from aimass.autolearn.tuners import Bundle
from aimass.backbones import param_groups


# ==================================================================== search
def _search_or_resume(run: _Run, tuner, ds, state: _State) -> dict:
    """The final fit's parameters: from an interrupted run's saved state, or searched now."""
    backbone, why = tuner.describe_backbone(ds)
    run.choose("backbone", backbone, why)
    if "params" in state.saved:
        run.plan = _reserve(run, tuner, ds) if tuner.searches else tuner.reserve(run, ds)
        run.search = state.saved["search"]
        run.choose("hyper-parameters", state.saved["params"], "resumed: the interrupted run's search result")
        return state.saved["params"]
    return _search(run, tuner, ds)


def _search(run: _Run, tuner, ds) -> dict:
    """Prepare, LR range test, Optuna trials; returns the final fit's parameters. A task whose
    tuner does not search sizes its run itself (``tuner.settle``)."""
    if not tuner.searches:
        return tuner.settle(run, ds)
    defaults = tuner.default_params()
    reason = tuner.searchable(ds)
    run.plan = _reserve(run, tuner, ds)
    if reason is None:
        with run.phase("prepare", 0.08, "embedding with the frozen backbone and fitting the head"):
            prepared = tuner.prepare(ds, run.seed, run.progress)
        run.plan = _plan(run, tuner, ds, prepared)
        reason = run.plan.skip
    if reason is not None:
        run.search = _no_search(reason, defaults)
        run.choose("hyper-parameters", defaults, f"the task's defaults: {reason}")
        return defaults
    return _run_search(run, tuner, prepared, defaults)


def _no_search(reason: str, defaults: dict) -> dict:
    return {
        "trials": 0,
        "pruned": 0,
        "best_params": defaults,
        "best_valid_macro_f1": None,
        "lr_range_test": None,
        "skipped": reason,
    }


def _run_search(run: _Run, tuner, prepared, defaults: dict) -> dict:
    import torch

    plan = run.plan
    index = _stratified(prepared.train_features_.y, plan.n_sub, run.seed)
    deadline = time.monotonic() + plan.search_s
    with run.phase("lr_range_test", 0.2, "learning-rate range test on the cached features"):
        bundle = tuner.bundle(prepared, index)
        bundle.snapshot = {k: v.detach().clone() for k, v in bundle.net.state_dict().items()}
        torch.manual_seed(run.seed)
        share = min(deadline, time.monotonic() + 0.3 * plan.search_s)
        lr_test = lr_range_test(bundle, tuner, defaults, run.seed, share)
    run.choose("lr_body proposal", lr_test["suggested_lr_body"], _lr_why(lr_test))
    with run.phase("search", 0.3, "searching hyper-parameters (Optuna)"):
        study = optuna_search(bundle, tuner, defaults, lr_test, deadline - plan.confirm_s, run.seed)
        params, search = _pick(study, defaults, len(bundle.valid))
        if params != defaults:
            params, search = _confirm(run, tuner, prepared, defaults, params, search, deadline)
    search.update(lr_range_test=lr_test, subsample=len(index), epochs_per_trial=tuner.trial_epochs)
    search["planned_s"] = {k: round(v, 1) for k, v in plan.__dict__.items() if k.endswith("_s")}
    search["compression_reserved"] = plan.compress_reserved
    run.search = search
    run.choose("hyper-parameters", params, search["why"])
    return params


def _confirm(run: _Run, tuner, prepared, defaults: dict, params: dict, search: dict, deadline: float):
    """The winner of several noisy trials is optimistic (the winner's curse): it replaces the default
    only if it beats it again, by more than the comparison's noise, on another subsample trained
    with another seed."""
    seed = run.seed + 1
    bundle = tuner.bundle(prepared, _stratified(prepared.train_features_.y, run.plan.n_sub, seed))
    bundle.snapshot = {k: v.detach().clone() for k, v in bundle.net.state_dict().items()}
    scores = {}
    for name, candidate in (("default", defaults), ("winner", params)):
        report = EpochReport(None, bundle.forward_eval, bundle.valid.y)
        scores[name] = max(_fit_scores(bundle, tuner, candidate, report, deadline, seed) or [float("nan")])
    sigma = _noise(scores["default"], len(bundle.valid))
    search["confirmation"] = {"seed": seed, "subsample": run.plan.n_sub, "noise": sigma, **scores}
    if scores["winner"] > scores["default"] + sigma:
        search["why"] += (
            f"; confirmed on another subsample: {scores['winner']:.4f} vs {scores['default']:.4f}"
        )
        return params, search
    search["why"] = (
        f"the task's defaults: trial winner {params} was not confirmed on another subsample "
        f"({scores['winner']:.4f} vs the default's {scores['default']:.4f}; noise {sigma:.4f})"
    )
    search["best_params"], search["best_valid_macro_f1"] = defaults, search["default_valid_macro_f1"]
    return defaults, search


def _lr_why(lr_test: dict) -> str:
    if lr_test["suggested_lr_body"] is None:
        reached = lr_test["points"][-1][0] if lr_test["points"] else lr_test["lr_min"]
        return (
            f"LR range test ran out of time after {lr_test['steps']} steps (lr_body up to {reached:.2g}): "
            "no proposal; the search centres on the default"
        )
    end = f"diverged at {lr_test['diverged_at']:.2g}" if lr_test["diverged_at"] else "no divergence"
    return (
        f"LR range test over {lr_test['steps']} steps: loss lowest at lr_body "
        f"{lr_test['lr_at_min_loss']:.2g} ({end}); a tenth of it is proposed to the search"
    )


def _stratified(y, n: int, seed: int):
    """``n`` row indices drawn per class in proportion, seeded (all rows when ``n`` covers them)."""
    import torch

    if n >= len(y):
        return torch.arange(len(y))
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for label in torch.unique(y):
        rows = torch.nonzero(y == label).flatten()
        take = max(2, round(n * len(rows) / len(y)))
        picked.append(rows[torch.randperm(len(rows), generator=generator)[:take]])
    return torch.sort(torch.cat(picked)).values


def lr_range_test(bundle: Bundle, tuner, defaults: dict, seed: int, deadline: float) -> dict:
    """Stage-2 steps with ``lr_body`` growing geometrically over ``tuner.lr_sweep`` (the head at its
    default rate); the smoothed loss per step, the rate where it was lowest and a tenth of that."""
    import torch

    from aimass.train import stages

    net, lo, hi = bundle.net, *tuner.lr_sweep
    stages.set_trainable(net, bundle.n_top)
    if getattr(net.head, "lexical", None) is not None:
        net.head.lexical.weight.requires_grad_(False)  # as in stage 2: TF-IDF keeps its stage-1 fit
    head = bundle.head_params()
    for p in head:
        p.requires_grad_(True)
    groups = param_groups(net.encoder, head, bundle.n_top, defaults["lr_head"] * tuner.head_scale, 1.0)
    scales = [g["lr"] for g in groups[1:]]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    points, seconds, average, best, diverged = [], [], 0.0, float("inf"), None
    net.train()
    try:
        for step in range(LR_STEPS):
            lr = lo * (hi / lo) ** (step / (LR_STEPS - 1))
            for group, scale in zip(optimizer.param_groups[1:], scales):
                group["lr"] = lr * scale
            rows = torch.randperm(len(bundle.train), generator=generator)[: tuner.batch_size]
            began = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(bundle.forward(rows), bundle.train.y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seconds.append(time.perf_counter() - began)
            average = 0.7 * average + 0.3 * float(loss.detach())
            smooth = average / (1 - 0.7 ** (step + 1))
            points.append([lr, round(smooth, 5)])
            if not math.isfinite(smooth) or smooth > 4 * best:
                diverged = lr
                break
            best = min(best, smooth)
            if time.monotonic() > deadline:
                break
    finally:
        bundle.restore()
    return _lr_summary(points, seconds, diverged, tuner)


def _lr_summary(points: list, seconds: list, diverged, tuner) -> dict:
    """A tenth of the rate at the lowest loss, once the loss has diverged or the sweep is complete;
    a sweep cut short by the clock proposes nothing (its lowest point says nothing about the rest)."""
    lo, hi = tuner.lr_sweep
    kept = points if diverged is None else points[:-1]
    at_min = min(kept, key=lambda p: p[1])[0] if kept else lo
    complete = diverged is not None or len(points) == LR_STEPS
    suggested = float(f"{min(hi / 10, max(lo * 10, at_min / 10)):.3g}") if complete else None
    return {
        "lr_min": lo,
        "lr_max": hi,
        "steps": len(points),
        "lr_at_min_loss": at_min,
        "diverged_at": diverged,
        "suggested_lr_body": suggested,
        "step_s": round(statistics.median(seconds[1:] or seconds or [0.0]), 4),
        "points": points,
    }
