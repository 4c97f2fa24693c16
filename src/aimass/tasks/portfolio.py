"""A portfolio with a baseline floor: every classification fit also fits its task's cheap
baselines (``Task.baselines``) and keeps whichever candidate scores best on the validation split.

AutoGluon's idea: a platform that picks the model must never hand over something a simple
baseline beats on the user's own validation data. The network is one candidate; each baseline is
another. They are compared on the validation split by accuracy, then macro-F1; the network wins
a tie. A winning baseline is refitted on train + valid and *installed* into the estimator (it
becomes the estimator's network: a linear layer over pixels or TF-IDF features), so the model
predicts, saves, exports and serves like any other. What was compared stays with the model:
``candidates_`` (each candidate's validation scores) and ``chosen_``, saved in ``model.json`` and
shown in ``evaluate()``'s report under ``portfolio``.

Without a validation split (few-shot text) there is nothing to pick on: the network is kept and
the report says why.

>>> pick({"network": {"accuracy": 0.86, "macro_f1": 0.85}, "pixels": {"accuracy": 0.97, "macro_f1": 0.97}})
'pixels'
>>> pick({"network": {"accuracy": 0.9, "macro_f1": 0.9}, "pixels": {"accuracy": 0.9, "macro_f1": 0.9}})
'network'
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from aimass.tasks import get_task
from aimass.tasks.base import load_ref

NETWORK = "network"


class Baseline:
    """A cheap candidate a task declares in ``Task.baselines``.

    ``__init__`` stores the seed; ``fit(model, train, valid)`` trains on the training split only
    (``model`` is the estimator being fitted, set up: its ``classes_`` and, for text, its TF-IDF
    branch) and sets ``valid_scores_``; ``install(model, train, valid)`` refits on train + valid and
    makes the estimator predict with it.
    """

    name: ClassVar[str] = ""
    C_GRID: ClassVar[tuple[float, ...]] = (0.1, 1.0)

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, model, train: tuple, valid: tuple) -> Baseline:  # pragma: no cover - interface
        raise NotImplementedError

    def install(self, model, train: tuple, valid: tuple) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    # ------------------------------------------------------------ shared by the baselines
    @staticmethod
    def targets(model, labels: list) -> np.ndarray:
        """Labels as indices of ``model.classes_`` (-1 for a label the training split lacks)."""
        index = {c: i for i, c in enumerate(model.classes_)}
        return np.array([index.get(label, -1) for label in labels])

    def select(self, xa, ya: np.ndarray, xb, yb: np.ndarray) -> None:
        """Fit a logistic regression for each C of ``C_GRID`` (ascending: each fit starts from the
        last one's weights) on (xa, ya); keep the best C by validation accuracy then macro-F1 on
        (xb, yb) in ``C_``, its scores in ``valid_scores_`` and its weights to start the refit from."""
        from aimass.evaluation import quick_scores  # heavy: scikit-learn

        best, clf = None, self.logreg(self.C_GRID[0])
        for c in self.C_GRID:
            with one_blas_thread():
                clf.set_params(C=c).fit(xa[ya >= 0], ya[ya >= 0])
            scores = quick_scores(yb, clf.predict(xb))
            if best is None or (scores["accuracy"], scores["macro_f1"]) > best[1]:
                weights = (clf.coef_.copy(), clf.intercept_.copy())
                best = (c, (scores["accuracy"], scores["macro_f1"]), scores, weights)
        self.C_, self.valid_scores_, self.start_ = best[0], {**best[2], "C": best[0]}, best[3]

    def refit(self, x, y: np.ndarray):
        """The logistic regression with the chosen C on (x, y), from the selected fit's weights."""
        clf = self.logreg(self.C_)
        clf.coef_, clf.intercept_ = (w.copy() for w in self.start_)
        with one_blas_thread():
            return clf.fit(x, y)

    def logreg(self, c: float):
        from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn

        return LogisticRegression(C=c, max_iter=500, random_state=self.seed, warm_start=True)


def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread. Measured on the 2-core bench machine with
    torch loaded: lbfgs on 1,600 x 784 pixels took 10 s for 100 iterations with the default BLAS
    threads and 0.2 s with one (the threads of the two libraries fight over the cores)."""
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    return threadpool_limits(limits=1, user_api="blas")


def fit_baselines(
    model, train: tuple, valid: tuple | None, seed: int, *, on: bool = True
) -> dict[str, Baseline]:
    """Each baseline of ``model``'s task fitted on ``train`` (none without a validation split, or
    when ``on`` is False: the estimator's ``baselines=False``)."""
    if valid is None or not on:
        return {}
    out = {}
    for name, ref in get_task(model.task).baselines.items():
        began = time.perf_counter()
        baseline = load_ref(ref)(seed=seed).fit(model, train, valid)
        baseline.seconds_ = time.perf_counter() - began
        out[name] = baseline
    return out


def pick(candidates: dict[str, dict]) -> str:
    """The best candidate by validation accuracy, then macro-F1; the network wins a tie."""
    return max(
        candidates,
        key=lambda n: (candidates[n]["accuracy"], candidates[n]["macro_f1"], n == NETWORK),
    )


def choose(
    model, train: tuple, valid: tuple | None, baselines: dict[str, Baseline], *, on: bool = True
) -> None:
    """Score the fitted network on ``valid``, keep the best candidate (installing a baseline that
    wins) and record ``candidates_`` and ``chosen_`` on ``model`` (with ``on`` False, or a task
    without baselines: the network, and no candidates)."""
    from aimass.evaluation import quick_scores  # heavy: scikit-learn

    model.chosen_ = NETWORK
    if not on or not get_task(model.task).baselines:
        model.candidates_ = {}
        return
    if valid is None:
        model.candidates_ = {NETWORK: {"note": "no validation split (few-shot): nothing to pick on"}}
        return
    began = time.perf_counter()
    truth = Baseline.targets(model, valid[1])
    predicted = model.predict_proba(valid[0]).argmax(1)
    candidates: dict[str, dict[str, Any]] = {NETWORK: _rounded(quick_scores(truth, predicted))}
    candidates[NETWORK]["score_s"] = round(time.perf_counter() - began, 2)
    for name, baseline in baselines.items():
        candidates[name] = {**_rounded(baseline.valid_scores_), "fit_s": round(baseline.seconds_, 2)}
    best = pick(candidates)
    if best != NETWORK:
        baselines[best].install(model, train, valid)
        candidates[best]["refit"] = "train + valid"
    model.chosen_, model.candidates_ = best, candidates


def summary(model) -> dict | None:
    """``{"chosen", "candidates"}`` of a fitted model (None for a model fitted without a portfolio)."""
    if not getattr(model, "candidates_", None):
        return None
    return {
        "chosen": model.chosen_,
        "candidates": model.candidates_,
        "by": "validation accuracy, then macro-F1",
    }


def _rounded(scores: dict) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()}
