"""Stratified, seeded train/valid/test split, or checks on a user-given split column."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from aimass.data.multilabel import split_labels, strata
from aimass.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")


def check_fractions(valid_frac: float, test_frac: float) -> None:
    """Validate split fractions.

    Raises:
        ConfigError: A fraction is negative, or together they leave nothing to train on.
    """
    if not (0 <= valid_frac < 1 and 0 <= test_frac < 1 and valid_frac + test_frac < 1):
        raise ConfigError(
            f"invalid split fractions valid_frac={valid_frac}, test_frac={test_frac}",
            hint="Each must be between 0 and 1 and together below 1 (e.g. 0.1 and 0.2).",
        )


def random_splits(
    labels: list[str], *, seed: int, valid_frac: float, test_frac: float
) -> tuple[list[str], list[str]]:
    """Assign each row to train/valid/test, stratified by label and reproducible by seed.

    Every class large enough gets at least one valid and one test example (when the
    fraction is above 0); a class too small for that stays entirely in train.

    Args:
        labels: One label per row.
        seed: Seed for ``numpy.random.RandomState``.
        valid_frac: Share of each class for validation.
        test_frac: Share of each class for test.

    Returns:
        One split name per row, and warnings about classes kept in train only.
    """
    check_fractions(valid_frac, test_frac)
    rng = np.random.RandomState(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    splits, warnings = ["train"] * len(labels), []
    for label in sorted(by_class):
        indices = np.asarray(by_class[label])[rng.permutation(len(by_class[label]))]
        sizes = _sizes(len(indices), valid_frac, test_frac)
        if sizes is None:
            warnings.append(
                f"class {label!r} has only {len(indices)} examples: all kept in "
                "train, so valid/test have none of it"
            )
            continue
        n_valid, n_test = sizes
        for index in indices[:n_test]:
            splits[index] = "test"
        for index in indices[n_test : n_test + n_valid]:
            splits[index] = "valid"
    return splits, warnings


def draw_splits(rows: list[dict], multi: bool, **fractions) -> tuple[list[str], list[str]]:
    """:func:`random_splits` of rows (``{"label"}``); several labels a row (``multi``): stratified
    by each row's rarest label, and warned about per label, not per stratum.

    >>> rows = [{"label": "a|b"}] * 6 + [{"label": "a"}] * 6
    >>> draw_splits(rows, True, seed=0, valid_frac=0.2, test_frac=0.2)[1]
    []
    """
    if not multi:
        return random_splits([row["label"] for row in rows], **fractions)
    splits, _ = random_splits(strata(rows), **fractions)
    found: dict[str, Counter] = defaultdict(Counter)
    for row, split in zip(rows, splits, strict=True):
        for label in split_labels(row["label"]):
            found[label][split] += 1
    warnings = [
        f"label {label!r} is on {sum(by.values())} row(s), none of them in the {split} split"
        for label, by in sorted(found.items())
        for split in ("valid", "test")
        if fractions.get(f"{split}_frac", 0) > 0 and not by[split]
    ]
    return splits, warnings


def _sizes(n: int, valid_frac: float, test_frac: float) -> tuple[int, int] | None:
    """(valid, test) sizes for a class of n rows; None when it cannot fill every split."""
    if n < 1 + (valid_frac > 0) + (test_frac > 0):
        return None
    n_valid = max(1, int(n * valid_frac + 0.5)) if valid_frac > 0 else 0
    n_test = max(1, int(n * test_frac + 0.5)) if test_frac > 0 else 0
    while n - n_valid - n_test < 1:
        if n_valid >= n_test and n_valid > 1:
            n_valid -= 1
        else:
            n_test -= 1
    return n_valid, n_test


def check_column_splits(rows: list[dict], where: str, multi: bool = False) -> list[str]:
    """Check a user-given split: every class must be in train.

    Args:
        rows: Good rows with ``split`` set from the split column.
        where: File name for error messages.
        multi: The rows carry several labels each (stored joined, ``"a|b"``): every label is a class.

    Returns:
        Warnings (classes missing from valid or test).

    Raises:
        DataError: No train rows, or a class without train rows.
    """
    present: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        present[row["split"]].update(split_labels(row["label"]) if multi else [row["label"]])
    classes = set().union(*present.values())
    missing = sorted(classes - present["train"])
    if missing:
        raise DataError(
            f"class(es) {missing} have no rows in the train split",
            where=where,
            hint="Move some of their rows to train (in the split column, or into the training file).",
        )
    return [
        f"class {label!r} has no rows in the {split} split"
        for split in ("valid", "test")
        if present.get(split)
        for label in sorted(classes - present[split])
    ]


def holdout(train: tuple, seed: int) -> tuple[tuple, tuple]:
    """Carve a stratified validation split (10%, at least one per class) out of ``train``."""
    from sklearn.model_selection import train_test_split  # heavy (~1 s): aimass.data stays light

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
