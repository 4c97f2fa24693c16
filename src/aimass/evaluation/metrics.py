"""Classification metrics as plain JSON-able numbers."""

from __future__ import annotations

import numpy as np

from aimass.errors import DataError


def check_labels(labels, classes: list[str], shown: int = 8) -> None:
    """Refuse data none of whose labels is one of the model's ``classes`` (no score means anything
    then); data with some such labels is scored, the others listed as ``unknown_labels``.

    >>> check_labels(["pos", "other"], ["pos", "neg"])
    >>> try:
    ...     check_labels(["好评", "差评"], ["positive", "negative"])
    ... except DataError as exc:
    ...     print(exc.message)
    None of the data's labels (好评, 差评) is a class of the model (negative, positive).
    """
    given = set(labels)
    if given & set(classes):
        return

    def listed(values) -> str:
        values = sorted(map(str, values))
        more = f" and {len(values) - shown} more" if len(values) > shown else ""
        return ", ".join(values[:shown]) + more

    raise DataError(
        f"None of the data's labels ({listed(given)}) is a class of the model ({listed(classes)}).",
        hint="Evaluate on data labelled with the model's classes (by default its own test split), "
        "or relabel this data to them.",
    )


def classification_report(y_true, y_pred, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``per_class`` has a row for every one of ``classes`` (one the data lacks has support 0);
    ``macro_f1`` is the mean F1 of the labels the data has or the model predicted, as
    scikit-learn's ``f1_score(average="macro")`` computes it: a class of the model that the test
    data lacks and the model never predicts is left out, not counted as an F1 of 0 (a label the
    model never saw counts, as one it always misses).

    >>> report = classification_report(["a"] * 8, ["a"] * 7 + ["b"], ["a", "b", "c", "d"])
    >>> report["accuracy"], report["macro_f1"], report["per_class"]["c"]["support"]
    (0.875, 0.4667, 0)
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    per_class = {
        c: {
            "precision": round(float(p), 4),
            "recall": round(float(r), 4),
            "f1": round(float(f), 4),
            "support": int(s),
        }
        for c, p, r, f, s in zip(classes, precision, recall, f1, support)
    }
    return {
        "n": len(y_true),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 4),
        "per_class": per_class,
        "confusion_matrix": {
            "labels": classes,
            "matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        },
    }


def top_losses(texts, y_true, proba: np.ndarray, classes: list[str], k: int = 10) -> list[dict]:
    """The ``k`` examples with the highest loss (most confidently wrong first): each with its
    ``actual`` label and ``p_true`` (the probability given to it), the ``predicted`` label and
    ``probability`` (the probability of the prediction), and ``loss`` (``-log p_true``)."""
    index = {c: i for i, c in enumerate(classes)}
    true_idx = np.array([index.get(y, -1) for y in y_true])
    p_true = np.where(true_idx >= 0, proba[np.arange(len(true_idx)), np.maximum(true_idx, 0)], 0.0)
    losses = -np.log(np.clip(p_true, 1e-12, 1.0))
    rows = []
    for i in np.argsort(-losses)[:k]:
        pred = int(proba[i].argmax())
        rows.append(
            {
                "text": texts[i][:300],
                "actual": y_true[i],
                "p_true": round(float(p_true[i]), 4),
                "predicted": classes[pred],
                "probability": round(float(proba[i, pred]), 4),
                "loss": round(float(losses[i]), 4),
            }
        )
    return rows


def quick_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy and macro-F1 on integer labels (used every epoch)."""
    from sklearn.metrics import f1_score  # heavy: scikit-learn, and the server imports this module

    return {
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def multilabel_report(
    texts, y_true: list[list[str]], proba: np.ndarray, classes: list[str], threshold: float, k: int = 10
) -> dict:
    """Scores of a multi-label classifier: ``accuracy`` (the share of rows whose predicted label
    set is exactly right: subset accuracy), ``micro_f1`` (over every row-label decision),
    ``macro_f1`` (the mean of the labels' F1), ``samples_f1`` (the mean of the rows' F1),
    ``hamming_loss`` (the share of row-label decisions that are wrong), per-label precision,
    recall, F1 and support, and the ``k`` rows with the highest loss (the summed binary
    cross-entropy of their labels). A row's predicted labels are those scoring at least
    ``threshold``, or its best label when none does.

    >>> report = multilabel_report(["a", "b"], [["x"], ["x", "y"]], np.array([[0.9, 0.2], [0.8, 0.3]]),
    ...                            ["x", "y"], 0.5)
    >>> report["accuracy"], report["micro_f1"], report["per_class"]["y"]["recall"]
    (0.5, 0.8, 0.0)
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    truth = multi_hot(y_true, classes)
    predicted = decide(proba, threshold)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, average=None, zero_division=0
    )
    per_class = {
        c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for c, p, r, f, s in zip(classes, precision, recall, f1, support)
    }
    clipped = np.clip(proba, 1e-7, 1 - 1e-7)
    losses = -(truth * np.log(clipped) + (1 - truth) * np.log(1 - clipped)).sum(1)
    unknown = sorted({label for labels in y_true for label in labels} - set(classes))
    return {
        "n": len(y_true),
        "accuracy": float((truth == predicted).all(1).mean()),
        "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(truth, predicted, average="samples", zero_division=0)),
        "hamming_loss": float((truth != predicted).mean()),
        "threshold": threshold,
        "per_class": per_class,
        "top_losses": [
            {
                "text": texts[i][:300],
                "actual": list(y_true[i]),
                "predicted": [c for c, on in zip(classes, predicted[i]) if on],
                "scores": {c: round(float(p), 4) for c, p in zip(classes, proba[i])},
                "loss": round(float(losses[i]), 4),
            }
            for i in np.argsort(-losses)[:k]
        ],
        **({"unknown_labels": unknown} if unknown else {}),
    }


def multi_hot(label_sets: list[list[str]], classes: list[str]) -> np.ndarray:
    """``[n, len(classes)]`` 0/1: which of ``classes`` each row has (other labels are left out)."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(label_sets), len(classes)), dtype=np.int64)
    for row, labels in enumerate(label_sets):
        for label in labels:
            if label in index:
                out[row, index[label]] = 1
    return out


def decide(proba: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 decisions: every label scoring at least ``threshold``, and each row's best label when
    none does (every training row has at least one label)."""
    out = (proba >= threshold).astype(np.int64)
    if len(out):
        out[np.arange(len(out)), proba.argmax(1)] = 1
    return out
