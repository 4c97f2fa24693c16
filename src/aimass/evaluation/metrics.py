"""Classification metrics as plain JSON-able numbers."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_report(y_true, y_pred, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
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
        "macro_f1": round(
            float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)), 4
        ),
        "per_class": per_class,
        "confusion_matrix": {
            "labels": classes,
            "matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        },
    }


def top_losses(texts, y_true, proba: np.ndarray, classes: list[str], k: int = 10) -> list[dict]:
    """The ``k`` examples with the highest loss (most confidently wrong first)."""
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
                "predicted": classes[pred],
                "probability": round(float(proba[i, pred]), 4),
                "loss": round(float(losses[i]), 4),
            }
        )
    return rows


def quick_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy and macro-F1 on integer labels (used every epoch)."""
    return {
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }
