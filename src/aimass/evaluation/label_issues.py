"""Label issues, near-duplicates and hard examples from predicted probabilities (numpy only).

Confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021), written here from the paper:

1. Each class ``k`` gets a threshold ``t_k``: the mean probability of ``k`` over the rows labelled
   ``k`` (its mean self-confidence).
2. The confident joint ``C[i, j]`` counts rows labelled ``i`` whose likely true class is ``j``: the
   most probable class among those whose probability reaches its threshold.
3. ``C`` is calibrated so that row ``i`` sums to the count of label ``i`` (and the whole to ``n``).
4. Prune by noise rate: for every off-diagonal cell, the ``C[i, j]`` rows labelled ``i`` with the
   largest margin ``p_j - p_i`` are flagged; a row the model predicts as its own label is not.

The flagged rows are ranked by their label quality, the normalised margin ``p_given - max_{j !=
given} p_j`` (lowest first). Probabilities must be out of sample (cross-validated), or the model
has already learned the wrong labels.

>>> import numpy as np
>>> labels = np.array([0, 0, 0, 1, 1, 1])
>>> proba = np.array([[.9, .1], [.8, .2], [.1, .9], [.2, .8], [.3, .7], [.1, .9]])
>>> find_label_issues(labels, proba).nonzero()[0].tolist()
[2]
"""

from __future__ import annotations

import numpy as np

from aimass.errors import DataError


def self_confidence(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """The probability each row gives its own label."""
    return proba[np.arange(len(labels)), labels]


def margins(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Label quality: ``p_given - max_{j != given} p_j`` (negative: another class is preferred)."""
    others = proba.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return self_confidence(labels, proba) - others.max(1)


def top_two_margin(proba: np.ndarray) -> np.ndarray:
    """How sure the model is of any class: top probability minus the runner-up."""
    top = np.sort(proba, axis=1)
    return top[:, -1] - top[:, -2]


def class_thresholds(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-class mean self-confidence; a class without rows gets ``inf`` (never confident)."""
    k = proba.shape[1]
    sums = np.bincount(labels, weights=self_confidence(labels, proba), minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_joint(labels: np.ndarray, proba: np.ndarray, *, calibrate: bool = True) -> np.ndarray:
    """``C[given, likely true]`` as integers (rows sum to the label counts when calibrated)."""
    check_inputs(labels, proba)
    k = proba.shape[1]
    above = proba >= class_thresholds(labels, proba) - 1e-6
    confident = above.any(1)
    likely = np.where(above, proba, -np.inf).argmax(1)
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[confident], likely[confident]), 1)
    if not calibrate:
        return joint.astype(int)
    counts = np.bincount(labels, minlength=k).astype(float)
    rows = joint.sum(1, keepdims=True)
    joint = np.where(rows > 0, joint / np.maximum(rows, 1) * counts[:, None], np.diag(counts))
    return _round_rows(joint, counts.astype(int))


def _round_rows(matrix: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Round each row to the nearest integers (halves to even), then move the cells furthest
    from their value by one until the row keeps its total, as the paper's reference
    implementation rounds (so both prune the same counts)."""
    out = np.rint(matrix).astype(int)
    for i, total in enumerate(totals):
        short = int(total - out[i].sum())
        while short:
            step = 1 if short > 0 else -1  # up: the cells furthest below their value; down: above
            picked = np.argsort(matrix[i] - out[i])[::-step][: abs(short)]
            out[i, picked] += step
            short = int(total - out[i].sum())
    return out


def find_label_issues(labels, proba, *, min_per_class: int = 1) -> np.ndarray:
    """A boolean mask of the likely label errors (prune by noise rate; see the module docstring).

    Args:
        labels: ``[n]`` given class indices.
        proba: ``[n, k]`` out-of-sample predicted probabilities.
        min_per_class: Rows of each class never flagged, so no class is emptied.
    """
    labels, proba = np.asarray(labels), np.asarray(proba, dtype=float)
    joint = confident_joint(labels, proba)
    flagged = np.zeros(len(labels), dtype=bool)
    for given in range(proba.shape[1]):
        rows = np.flatnonzero(labels == given)
        budget = len(rows) - min_per_class
        for true in np.argsort(-joint[given]):
            count = min(int(joint[given, true]), budget) if true != given else 0
            if count <= 0:
                continue
            margin = proba[rows, true] - proba[rows, given]
            flagged[rows[np.argsort(-margin, kind="stable")[:count]]] = True
        _cap(flagged, rows, budget, proba[rows, given])
    return flagged & (proba.argmax(1) != labels)


def find_multilabel_issues(targets, proba, *, min_per_class: int = 1) -> np.ndarray:
    """A boolean ``[n, k]`` mask of the label decisions that look wrong in multi-label data: a label
    given that does not apply, or one missing that does.

    One-vs-rest: each label is a yes/no class of its own (probabilities ``[1 - p, p]``) and goes
    through :func:`find_label_issues`; a label every row has, or none has, is never flagged. A row
    is a likely label error when any of its cells is flagged.

    Args:
        targets: ``[n, k]`` 0/1, the labels given (multi-hot).
        proba: ``[n, k]`` out-of-sample probability of each label (independent, not summing to 1).
        min_per_class: Rows of each yes and each no never flagged, per label.

    >>> targets = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]])
    >>> proba = np.array([[.9, .1], [.8, .2], [.9, .9], [.1, .9], [.2, .8], [.1, .9]])
    >>> find_multilabel_issues(targets, proba).nonzero()
    (array([2]), array([1]))
    """
    targets, proba = np.asarray(targets, dtype=int), np.asarray(proba, dtype=float)
    if targets.shape != proba.shape or targets.ndim != 2:
        raise DataError(
            f"Expected targets and probabilities of the same shape [rows, labels]; got "
            f"{list(targets.shape)} and {list(proba.shape)}.",
            hint="Pass one 0/1 column and one probability column per label.",
        )
    mask = np.zeros(targets.shape, dtype=bool)
    for k in range(targets.shape[1]):
        given, p = targets[:, k], proba[:, k]
        if given.min() != given.max():
            mask[:, k] = find_label_issues(given, np.column_stack([1 - p, p]), min_per_class=min_per_class)
    return mask


def multilabel_margins(targets, proba) -> np.ndarray:
    """``[n, k]`` label quality of each decision: ``2p - 1`` for a label given, ``1 - 2p`` for one not
    (the binary margin; negative: the model disagrees with the data)."""
    p = np.asarray(proba, dtype=float)
    return np.where(np.asarray(targets, dtype=bool), 2 * p - 1, 1 - 2 * p)


def label_set_log_likelihood(targets, proba) -> np.ndarray:
    """``[n]`` log-probability the model gives each row's label set exactly (every label given
    present, every other absent, the labels taken as independent): the multi-label label quality
    issues are ranked by, lowest first. It ranks the rows changed at random better than the
    worst single decision does (``bench/label_issues_multilabel.py``)."""
    p = np.clip(np.asarray(proba, dtype=float), 1e-6, 1 - 1e-6)
    return np.where(np.asarray(targets, dtype=bool), np.log(p), np.log1p(-p)).sum(1)


def _cap(flagged: np.ndarray, rows: np.ndarray, budget: int, confidence: np.ndarray) -> None:
    """Keep at most ``budget`` of ``rows`` flagged: the least self-confident ones."""
    picked = flagged[rows]
    if picked.sum() > max(budget, 0):
        keep = rows[picked][np.argsort(confidence[picked], kind="stable")[: max(budget, 0)]]
        flagged[rows] = False
        flagged[keep] = True


def rank_rows(quality: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The flagged rows' indices, lowest ``quality`` first."""
    index = np.flatnonzero(mask)
    return index[np.argsort(quality[index], kind="stable")]


def rank_issues(labels, proba, mask: np.ndarray) -> np.ndarray:
    """The flagged rows' indices, worst label quality (lowest margin) first."""
    return rank_rows(margins(np.asarray(labels), np.asarray(proba)), mask)


def hard_examples(proba, k: int, *, exclude: np.ndarray | None = None) -> np.ndarray:
    """The ``k`` rows with the lowest top-two margin (ambiguous to the model), hardest first."""
    return lowest(top_two_margin(np.asarray(proba, dtype=float)), k, exclude=exclude)


def lowest(margin: np.ndarray, k: int, *, exclude: np.ndarray | None = None) -> np.ndarray:
    """The ``k`` rows of lowest ``margin`` (rows in ``exclude`` left out), lowest first."""
    if exclude is not None:
        margin = np.where(exclude, np.inf, margin)
    order = np.argsort(margin, kind="stable")
    return order[: min(k, int(np.isfinite(margin).sum()))]


def near_duplicates(reference, queries, *, threshold: float = 0.95, chunk: int = 2048) -> list:
    """For each query row, its most similar reference row when the cosine similarity reaches
    ``threshold``: ``[(query_index, reference_index, similarity)]``, most similar first.

    Used with the training rows as ``reference`` and the valid/test rows as ``queries``: a test
    row with a near-copy in training measures memory, not generalisation.
    """
    ref = _unit(np.asarray(reference, dtype=np.float32))
    found = []
    queries = _unit(np.asarray(queries, dtype=np.float32))
    for begin in range(0, len(queries), chunk):
        sims = queries[begin : begin + chunk] @ ref.T
        best = sims.argmax(1) if ref.size else np.zeros(len(sims), dtype=int)
        for offset, j in enumerate(best):
            score = float(sims[offset, j]) if ref.size else -1.0
            if score >= threshold:
                found.append((begin + offset, int(j), score))
    return sorted(found, key=lambda item: -item[2])


def _unit(x: np.ndarray) -> np.ndarray:
    if x.ndim != 2:
        x = x.reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def out_of_fold_proba(features, labels, n_classes: int, *, folds: int = 5, seed: int = 0, c: float = 10.0):
    """Cross-validated probabilities of a logistic regression on ``features`` (dense or sparse):
    each row is predicted by a model that never saw it.

    Raises:
        DataError: A class has fewer than two rows (it cannot be held out and learned).
    """
    from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    smallest = int(np.bincount(labels, minlength=n_classes)[np.unique(labels)].min())
    if smallest < 2:
        raise DataError(
            "Cross-validation needs at least two rows of every class.",
            hint="Add examples of the smallest class, or pass --model to use a trained model instead.",
        )
    proba = np.zeros((len(labels), n_classes))
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    for fit_rows, held_rows in splitter.split(np.zeros(len(labels)), labels):
        model = LogisticRegression(C=c, max_iter=2000).fit(features[fit_rows], labels[fit_rows])
        proba[np.ix_(held_rows, model.classes_)] = model.predict_proba(features[held_rows])
    return proba


def out_of_fold_multilabel(features, targets, *, strata=None, folds: int = 5, seed: int = 0, c: float = 10.0):
    """Cross-validated probability of each label (``[n, k]``): one logistic regression per label
    (liblinear) on ``features``, each row predicted by models that never saw it.

    Args:
        features: ``[n, d]`` dense or sparse.
        targets: ``[n, k]`` 0/1.
        strata: What the folds stratify by (e.g. each row's rarest label), or None for plain folds.

    Raises:
        DataError: A label has fewer than two rows.
    """
    from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn
    from sklearn.model_selection import KFold, StratifiedKFold

    targets = np.asarray(targets, dtype=int)
    smallest = int(targets.sum(0).min())
    if smallest < 2:
        raise DataError(
            "Cross-validation needs at least two rows of every label.",
            hint="Add examples of the rarest label, or pass --model to use a trained model instead.",
        )
    folds = min(folds, len(targets))
    if strata is not None and min(np.unique(strata, return_counts=True)[1]) >= folds:
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(targets, strata)
    else:
        splits = KFold(n_splits=folds, shuffle=True, random_state=seed).split(targets)
    proba = np.zeros(targets.shape)
    for fit_rows, held_rows in splits:
        for k in range(targets.shape[1]):
            given = targets[fit_rows, k]
            if given.min() == given.max():  # this fold has no yes (or no no): that is its answer
                proba[held_rows, k] = given[0]
                continue
            model = LogisticRegression(C=c, solver="liblinear").fit(features[fit_rows], given)
            proba[held_rows, k] = model.predict_proba(features[held_rows])[:, 1]
    return proba


def check_inputs(labels: np.ndarray, proba: np.ndarray) -> None:
    """Raise DataError unless ``proba`` is ``[n, k]`` with ``k >= 2`` and labels are in ``0..k-1``."""
    if proba.ndim != 2 or proba.shape[1] < 2 or len(proba) != len(labels):
        raise DataError(
            f"Expected probabilities of shape [{len(labels)}, classes >= 2]; got {list(proba.shape)}.",
            hint="Pass one row of class probabilities per label.",
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= proba.shape[1]):
        raise DataError(
            f"Labels must be class indices 0..{proba.shape[1] - 1}.",
            hint="Map each label to the index of its probability column.",
        )
