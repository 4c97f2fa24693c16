"""What the multi-label tasks share: one logistic regression per label over a fixed design matrix,
the candidates compared on the validation split (each at its best threshold), and the response
a served model gives (every label at or above the threshold, with every label's score).

A task builds the designs (text: TF-IDF beside the frozen embedding; images: the frozen pooled
features, or the raw pixels) and hands them to :func:`choose`; the winner's weights become its
network's head, so it saves, exports and serves like a single-label model with a sigmoid per label
instead of one softmax.

>>> import numpy as np
>>> encode_label_sets(["a", "b"], np.array([[0.9, 0.2]]), 0.5)["predictions"][0]["labels"]
['a']
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from aimass.data.multilabel import split_labels
from aimass.errors import DataError
from aimass.tasks import portfolio

# label fits a candidate may take (one regression per label and setting; ~0.25 s each on 2,000 rows
# of noisy labels): many labels try the first settings only (100 labels: 2 settings each)
LABEL_FITS = 200
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.05))
VALID_SHARE = 0.15  # held out for the choice when the data has no validation split


@dataclass
class Choice:
    """The candidate kept: its ``name``, ``settings``, ``threshold`` and weights (``coef``
    ``[labels, features]``, ``bias``), and every candidate's validation scores."""

    name: str
    settings: dict
    threshold: float
    coef: np.ndarray
    bias: np.ndarray
    candidates: dict


def choose(grids: dict[str, Iterable[tuple[dict, object, object]]], targets, fixed, seed: int) -> Choice:
    """Fit every candidate's settings on the training rows and keep the best by validation
    micro-F1 (then macro-F1; the network wins a tie).

    Args:
        grids: candidate name -> ``(settings, x_train, x_valid)`` in the order to try them (keys
            of ``settings`` starting with ``_`` go to the winner's :class:`Choice` only).
        targets: the multi-hot ``(train, valid)`` label matrices.
        fixed: the threshold to use, or None to pick it on validation.
        seed: the regressions' seed.
    """
    from aimass.evaluation.metrics import decide

    candidates, best = {}, None
    for name, grid in grids.items():
        began, top, tried = time.perf_counter(), None, 0
        for settings, x_train, x_valid in grid:
            tried += 1
            coef, bias = fit_labels(x_train, targets[0], settings["C"], seed)
            proba = sigmoid(x_valid @ coef.T + bias)
            threshold, scores = best_threshold(proba, targets[1], fixed, decide)
            if top is None or (scores["micro_f1"], scores["macro_f1"]) > top[0]:
                top = ((scores["micro_f1"], scores["macro_f1"]), settings, threshold, scores, coef, bias)
        _, settings, threshold, scores, coef, bias = top
        shown = {k: v for k, v in settings.items() if not k.startswith("_")}  # "_...": the fit's own data
        candidates[name] = {**scores, **shown, "threshold": threshold, "settings_tried": tried}
        candidates[name]["fit_s"] = round(time.perf_counter() - began, 2)
        key = (scores["micro_f1"], scores["macro_f1"], name == portfolio.NETWORK)
        if best is None or key > best[0]:
            best = (key, Choice(name, settings, threshold, coef, bias, {}))
    choice = best[1]
    choice.candidates = candidates if len(candidates) > 1 else {}
    return choice


def settings_per_candidate(n_labels: int) -> int:
    """How many settings each candidate tries: :data:`LABEL_FITS` label fits in all."""
    return max(1, LABEL_FITS // n_labels)


def fit_labels(x, y: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One logistic regression per label column of ``y``: (coef ``[labels, features]``, bias).
    A label every training row has (or none has) gets no weights and a bias that says so."""
    from sklearn.linear_model import LogisticRegression

    coef, bias = np.zeros((y.shape[1], x.shape[1]), dtype=np.float64), np.zeros(y.shape[1])
    with portfolio.one_blas_thread():
        for j in range(y.shape[1]):
            column = y[:, j]
            if column.min() == column.max():
                bias[j] = 8.0 if column[0] else -8.0
                continue
            clf = LogisticRegression(C=c, solver="liblinear", random_state=seed).fit(x, column)
            coef[j], bias[j] = clf.coef_[0], clf.intercept_[0]
    return coef, bias


def sigmoid(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z)))


def best_threshold(proba: np.ndarray, truth: np.ndarray, fixed: float | None, decide) -> tuple[float, dict]:
    """(threshold, scores): the threshold of :data:`THRESHOLDS` with the best micro-F1 on
    ``truth`` (the middle one wins ties), or ``fixed`` when given."""
    from sklearn.metrics import f1_score

    best = None
    for t in (fixed,) if fixed else THRESHOLDS:
        predicted = decide(proba, t)
        scores = {
            "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "accuracy": float((truth == predicted).all(1).mean()),
        }
        key = (round(scores["micro_f1"], 6), -abs(t - 0.5))
        if best is None or key > best[0]:
            best = (key, float(t), {k: round(v, 6) for k, v in scores.items()})
    return best[1], best[2]


def multi_hot(label_sets: list[list[str]], classes: list[str]) -> np.ndarray:
    from aimass.evaluation.metrics import multi_hot as hot

    return hot(label_sets, classes)


def label_list(value) -> list[str]:
    """One row's labels given in Python: a list (or tuple, set) of labels, or a string: one label,
    or a stored row's labels joined by ``|``."""
    if isinstance(value, str):
        return split_labels(value)
    return sorted({str(v) for v in value})


def holdout(train: tuple, seed: int) -> tuple[tuple, tuple]:
    """(train, valid): :data:`VALID_SHARE` of the rows drawn at random for validation."""
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(train[0]))
    n_valid = max(1, round(VALID_SHARE * len(order)))
    if len(order) - n_valid < 2:
        raise DataError(
            "Too few rows to hold out validation data.", hint="Add rows, or pass validation data."
        )

    def pick(rows) -> tuple[list, list]:
        return [train[0][i] for i in rows], [train[1][i] for i in rows]

    return pick(sorted(order[n_valid:])), pick(sorted(order[:n_valid]))


def classes_of(label_sets: list[list[str]]) -> list[str]:
    """The labels of the training rows, sorted; a DataError when there are fewer than two."""
    classes = sorted({label for labels in label_sets for label in labels})
    if len(classes) < 2:
        raise DataError("Training needs at least two labels.", hint="Add examples of another label.")
    return classes


class SetPredictor:
    """``predict`` and the evaluation report every multi-label estimator shares (mixed in before
    the single-label estimator it extends, which gives ``predict_proba``, ``classes_``,
    ``threshold_`` and the portfolio)."""

    def predict(self, items: list) -> list[list[str]]:
        """The labels of each input: every label scoring at least ``threshold_`` (its best label
        when none does)."""
        from aimass.evaluation.metrics import decide

        decided = decide(self.predict_proba(items), self.threshold_)
        return [[c for c, on in zip(self.classes_, row) if on] for row in decided]

    def _sets_report(self, names: list[str], items: list, labels: list[list[str]], top_k: int) -> dict:
        """Subset accuracy, micro-, macro- and samples-F1, Hamming loss, per-label scores, the
        ``top_k`` rows with the highest loss (named by ``names``) and the portfolio's choice."""
        from aimass.evaluation.metrics import multilabel_report

        proba = self.predict_proba(items)
        report = multilabel_report(names, labels, proba, self.classes_, self.threshold_, top_k)
        chosen = portfolio.summary(self)
        if chosen:
            report["portfolio"] = {
                **chosen,
                "by": "validation micro-F1 (each at its best threshold), then macro-F1",
            }
        return report


# ------------------------------------------------------------------ serving
class Prediction(BaseModel):
    labels: list[str]
    scores: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


def encode_label_sets(classes: list[str], proba: np.ndarray, threshold: float) -> dict:
    """``{"predictions": [{"labels", "scores": {label: probability}}]}``: every label scoring at
    least ``threshold`` (a row's best label when none does)."""
    from aimass.evaluation.metrics import decide

    decided = decide(proba, threshold)
    return {
        "predictions": [
            {
                "labels": [c for c, on in zip(classes, row) if on],
                "scores": {c: round(float(p), 6) for c, p in zip(classes, scores)},
            }
            for row, scores in zip(decided, proba)
        ]
    }
