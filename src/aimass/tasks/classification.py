"""Pieces every classification task shares: the validation hold-out and the response schema.

>>> import numpy as np
>>> encode_scores(["neg", "pos"], np.array([[0.2, 0.8]]))["predictions"][0]["label"]
'pos'
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pydantic import BaseModel

from aimass.errors import ConfigError, DataError


def parse_config(config_class, params: dict, owner: str):
    """``config_class(**params)`` with the time budget parsed; an invalid value is a ConfigError
    naming the parameter, what was wrong and what was given (sklearn style)."""
    from aimass import budget

    params = dict(params, time_budget=budget.seconds(params.get("time_budget")))
    try:
        return config_class(**params)
    except Exception as exc:  # pydantic.ValidationError
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": ["?"], "msg": str(exc)}
        name = first["loc"][0]
        raise ConfigError(
            f"The '{name}' parameter of {owner} is invalid: {first['msg']}. "
            f"Got {params.get(name)!r} instead.",
            hint=f"See {owner}'s docstring or `aimass train --help` for valid values.",
        ) from None


def holdout(train: tuple, seed: int) -> tuple[tuple, tuple]:
    """Carve a stratified validation split (10%, at least one per class) out of ``train``."""
    from sklearn.model_selection import train_test_split

    items, labels = train
    counts = Counter(labels)
    n_valid = max(len(counts), round(0.1 * len(items)))
    if min(counts.values()) < 2 or n_valid > len(items) - len(counts):
        rare = min(counts, key=counts.get)
        raise DataError(
            f"Too few examples to hold out validation data: class '{rare}' has {counts[rare]}.",
            hint="Give every class at least 2 examples (8 or more works much better), or pass valid data.",
        )
    a, b, ya, yb = train_test_split(items, labels, test_size=n_valid, stratify=labels, random_state=seed)
    return (list(a), list(ya)), (list(b), list(yb))


class Prediction(BaseModel):
    label: str
    scores: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


def encode_scores(classes: list[str], proba: np.ndarray) -> dict:
    """``{"predictions": [{"label", "scores": {label: probability}}]}`` for rows of ``proba``."""
    return {
        "predictions": [
            {
                "label": classes[int(row.argmax())],
                "scores": {c: round(float(p), 6) for c, p in zip(classes, row)},
            }
            for row in proba
        ]
    }


def check_encodable(text: str, where: str) -> None:
    """Refuse text that cannot be written as UTF-8 (a lone surrogate such as ``"\\ud800"``, which
    JSON's ``\\u`` escapes can carry): a ``ValueError`` naming ``where`` and the position, so the
    request is a 422 before it reaches a batch it could break.

    >>> check_encodable("ok", "inputs[0]")
    >>> check_encodable("a\\ud800", "inputs[3]")
    Traceback (most recent call last):
    ...
    ValueError: inputs[3] has a lone surrogate (U+D800) at character 1; send valid Unicode text
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(text[exc.start])
        raise ValueError(
            f"{where} has a lone surrogate (U+{bad:04X}) at character {exc.start}; send valid Unicode text"
        ) from None
