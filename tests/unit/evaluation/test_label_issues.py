"""Confident learning, near-duplicates and hard examples on synthetic probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from aimass.errors import DataError
from aimass.evaluation import label_issues as cl


def noisy_problem(n=1500, k=4, noise=0.08, seed=0):
    """Probabilities of a decent model of the true classes, and labels with ``noise`` of them flipped."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += rng.uniform(1.5, 5, n)
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = true.copy()
    flipped = rng.random(n) < noise
    given[flipped] = (true[flipped] + rng.integers(1, k, flipped.sum())) % k
    return true, given, flipped, proba


def test_flipped_labels_are_found():
    true, given, flipped, proba = noisy_problem()
    mask = cl.find_label_issues(given, proba)
    hits = (mask & flipped).sum()
    assert hits / mask.sum() >= 0.8 and hits / flipped.sum() >= 0.7
    ranked = cl.rank_issues(given, proba, mask)
    assert set(ranked) == set(np.flatnonzero(mask))
    worst = cl.margins(given, proba)[ranked]
    assert (np.diff(worst) >= 0).all()  # worst label quality first


def test_a_clean_set_flags_few():
    true, _, _, proba = noisy_problem(noise=0.0)
    mask = cl.find_label_issues(true, proba)
    assert mask.mean() <= 0.03


def test_confident_joint_rows_sum_to_label_counts():
    _, given, _, proba = noisy_problem(n=600, k=3)
    joint = cl.confident_joint(given, proba)
    assert joint.dtype.kind == "i"
    assert joint.sum(1).tolist() == np.bincount(given, minlength=3).tolist()
    assert (np.diag(joint) > joint.sum(1) * 0.7).all()


def test_thresholds_are_mean_self_confidence():
    labels = np.array([0, 0, 1])
    proba = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    assert cl.class_thresholds(labels, proba).round(3).tolist() == [0.7, 0.7]


def test_no_class_is_emptied():
    labels = np.array([0, 0, 1, 1, 1, 1])
    proba = np.array([[0.1, 0.9], [0.1, 0.9], [0.1, 0.9], [0.2, 0.8], [0.1, 0.9], [0.2, 0.8]])
    mask = cl.find_label_issues(labels, proba, min_per_class=1)
    assert mask[labels == 0].sum() <= 1


def test_matches_cleanlab_on_the_same_probabilities():
    filters = pytest.importorskip("cleanlab.filter")  # bench-only dependency
    _, given, _, proba = noisy_problem(n=2000, k=5, noise=0.1, seed=3)
    ours, theirs = cl.find_label_issues(given, proba), filters.find_label_issues(given, proba)
    assert (ours != theirs).mean() <= 0.005


def test_the_confident_joint_is_rounded_to_its_row_totals_halves_to_even():
    """Each calibrated row keeps its total; which cell gives way on a tie decides which rows are
    pruned, so it is the paper's reference rounding (nearest, halves to even, then the cells
    furthest from their value)."""
    matrix = np.array([[2.5, 1.5, 1.0], [0.4, 0.4, 5.2], [3.6, 3.6, 0.8]])
    rounded = cl._round_rows(matrix, np.array([5, 6, 8]))
    assert rounded.sum(1).tolist() == [5, 6, 8] and rounded[0].tolist() == [2, 2, 1]
    assert rounded[1].tolist() == [0, 1, 5] and rounded[2].tolist() == [
        3,
        4,
        1,
    ]  # ties: the later cell up, the earlier down


def test_the_rounding_is_cleanlabs():
    util = pytest.importorskip("cleanlab.internal.util")  # bench-only dependency
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows = rng.dirichlet(np.ones(6), size=6) * rng.integers(5, 400, size=(6, 1))
        totals = np.rint(rows.sum(1)).astype(int)
        ours = cl._round_rows(rows, totals)
        assert (ours == util.round_preserving_row_totals(rows)).all()


def test_hard_examples_have_the_smallest_top_two_margin():
    proba = np.array([[0.5, 0.5], [0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
    assert cl.hard_examples(proba, 2).tolist() == [0, 2]
    assert cl.hard_examples(proba, 2, exclude=np.array([True, False, False, False])).tolist() == [2, 3]


def test_near_duplicates_pair_each_query_with_its_closest_reference():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 16))
    test = rng.normal(size=(10, 16))
    test[3] = train[7] * 2 + 1e-3  # the same direction: cosine 1
    test[5] = train[9] + rng.normal(scale=0.05, size=16)
    found = cl.near_duplicates(train, test, threshold=0.95)
    assert [(q, r) for q, r, _ in found] == [(3, 7), (5, 9)]
    assert found[0][2] >= found[1][2] >= 0.95
    assert cl.near_duplicates(train, test, threshold=1.0 - 1e-6) == found[:1]
    assert cl.near_duplicates(train[:0], test) == []


def test_out_of_fold_probabilities_never_see_their_row():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    features = rng.normal(size=(60, 8)) + 3 * labels[:, None]
    proba = cl.out_of_fold_proba(features, labels, 3, folds=5)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(1), 1)
    assert (proba.argmax(1) == labels).mean() > 0.8


def test_bad_inputs_say_what_to_pass():
    with pytest.raises(DataError, match="at least two rows of every class"):
        cl.out_of_fold_proba(np.zeros((5, 2)), np.array([0, 0, 0, 0, 1]), 2)
    with pytest.raises(DataError, match="shape"):
        cl.find_label_issues(np.array([0, 1]), np.array([0.5, 0.5]))
    with pytest.raises(DataError, match="class indices"):
        cl.find_label_issues(np.array([0, 2]), np.full((2, 2), 0.5))


def noisy_multilabel(n=1200, k=5, noise=0.05, seed=0):
    """Independent label probabilities of a decent model, the true label sets, and the given ones with
    ``noise`` of the rows changed in one decision (a label added or left out)."""
    rng = np.random.default_rng(seed)
    true = (rng.random((n, k)) < 0.35).astype(int)
    logits = np.where(true == 1, rng.uniform(1, 5, (n, k)), -rng.uniform(1, 5, (n, k)))
    proba = 1 / (1 + np.exp(-logits))
    given = true.copy()
    changed = rng.random(n) < noise
    cells = rng.integers(0, k, n)
    given[changed, cells[changed]] = 1 - given[changed, cells[changed]]
    return true, given, changed, proba


def test_multilabel_issues_are_the_changed_decisions():
    true, given, changed, proba = noisy_multilabel()
    cells = cl.find_multilabel_issues(given, proba)
    rows = cells.any(1)
    hits = (rows & changed).sum()
    assert hits / rows.sum() >= 0.8 and hits / changed.sum() >= 0.8
    assert (given[cells] != true[cells]).mean() >= 0.8  # the decision flagged is the one changed
    # a label every row has (or none has) is never flagged
    given[:, 0], proba[:, 0] = 1, 0.01
    assert not cl.find_multilabel_issues(given, proba)[:, 0].any()


def test_rows_rank_by_the_probability_of_their_label_set():
    targets = np.array([[1, 0], [1, 1], [0, 1]])
    proba = np.array([[0.9, 0.2], [0.9, 0.2], [0.5, 0.5]])
    loglik = cl.label_set_log_likelihood(targets, proba)
    assert np.allclose(np.exp(loglik), [0.72, 0.18, 0.25])
    assert cl.rank_rows(loglik, np.array([True, True, True])).tolist() == [1, 2, 0]
    assert cl.multilabel_margins(targets, proba).round(2).tolist() == [[0.8, 0.6], [0.8, -0.6], [0.0, 0.0]]


def test_multilabel_matches_cleanlab_on_the_same_probabilities():
    filters = pytest.importorskip("cleanlab.multilabel_classification.filter")  # bench-only dependency
    _, given, _, proba = noisy_multilabel(n=1500, seed=4)
    ours = cl.find_multilabel_issues(given, proba).any(1)
    theirs = filters.find_label_issues(labels=[list(np.flatnonzero(r)) for r in given], pred_probs=proba)
    assert (ours != theirs).mean() <= 0.005


def test_out_of_fold_label_probabilities_never_see_their_row():
    rng = np.random.default_rng(0)
    targets = (rng.random((80, 3)) < 0.4).astype(int)
    targets[:4] = 1  # every label has rows on both sides
    targets[4:8] = 0
    features = rng.normal(size=(80, 6)) + 3 * np.hstack([targets, targets])
    proba = cl.out_of_fold_multilabel(features, targets, strata=targets.argmax(1), folds=5)
    assert proba.shape == (80, 3) and ((proba > 0.5) == targets).mean() > 0.9
    with pytest.raises(DataError, match="two rows of every label"):
        cl.out_of_fold_multilabel(features, np.column_stack([targets, np.eye(80)[0]]).astype(int))
    with pytest.raises(DataError, match="same shape"):
        cl.find_multilabel_issues(targets, proba[:, :2])
