"""How an exported model's row of probabilities becomes its answer, for every exported script
(inlined into each ``predict.py`` by :func:`aimass.standalone.script`).

>>> import numpy as np
>>> labels_of(np.array([0.7, 0.6, 0.1]), ["a", "b", "c"], 0.5)
['a', 'b']
>>> labels_of(np.array([0.7, 0.6, 0.1]), ["a", "b", "c"], None)
'a'
"""

from __future__ import annotations

import numpy as np


def labels_of(row: np.ndarray, labels: list[str], threshold: float | None):
    """One row of probabilities as its best label, or (a multi-label model: ``threshold`` set)
    every label scoring at least ``threshold``, its best one when none does."""
    best = labels[int(row.argmax())]
    if threshold is None:
        return best
    return [label for label, p in zip(labels, row) if p >= threshold] or [best]
