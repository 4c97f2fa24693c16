"""Stratified seeded split and user-given split columns."""

from __future__ import annotations

from collections import Counter

import pytest

from aimass.data import import_dataset
from aimass.data.split import random_splits
from aimass.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))


def labels(counts):
    return [label for label, n in counts.items() for _ in range(n)]


def test_stratified_fractions():
    ys = labels({"a": 100, "b": 50})
    splits, warnings = random_splits(ys, seed=0, valid_frac=0.1, test_frac=0.2)
    pairs = Counter(zip(splits, ys, strict=True))
    assert pairs[("test", "a")] == 20 and pairs[("valid", "a")] == 10
    assert pairs[("test", "b")] == 10 and pairs[("valid", "b")] == 5
    assert warnings == []


def test_same_seed_same_split_other_seed_differs():
    ys = labels({"a": 40, "b": 40})
    first = random_splits(ys, seed=3, valid_frac=0.1, test_frac=0.2)[0]
    assert first == random_splits(ys, seed=3, valid_frac=0.1, test_frac=0.2)[0]
    assert first != random_splits(ys, seed=4, valid_frac=0.1, test_frac=0.2)[0]


def test_small_classes_get_one_of_each_or_stay_in_train():
    ys = labels({"big": 30, "three": 3, "two": 2})
    splits, warnings = random_splits(ys, seed=0, valid_frac=0.1, test_frac=0.2)
    per = Counter(zip(splits, ys, strict=True))
    assert per[("train", "three")] == per[("valid", "three")] == per[("test", "three")] == 1
    assert per[("train", "two")] == 2
    assert len(warnings) == 1 and "'two' has only 2 examples" in warnings[0]


def test_zero_fractions():
    splits, _ = random_splits(labels({"a": 5, "b": 5}), seed=0, valid_frac=0, test_frac=0)
    assert set(splits) == {"train"}


@pytest.mark.parametrize(("valid", "test"), [(-0.1, 0.2), (0.5, 0.5), (0.1, 1.0)])
def test_bad_fractions(valid, test):
    with pytest.raises(ConfigError):
        random_splits(["a", "b"], seed=0, valid_frac=valid, test_frac=test)


def test_import_records_split_and_warning(tmp_path):
    rows = "".join(f"sample text {i},{'a' if i < 20 else 'b'}\n" for i in range(22))
    path = tmp_path / "w.csv"
    path.write_text("text,label\n" + rows, encoding="utf-8")
    ds = import_dataset(path, seed=1, valid_frac=0.1, test_frac=0.2)
    assert ds.manifest["counts"]["by_split_class"]["train"]["b"] == 2
    assert any("'b' has only 2 examples" in w for w in ds.manifest["warnings"])
    assert (ds.manifest["seed"], ds.manifest["valid_frac"], ds.manifest["test_frac"]) == (1, 0.1, 0.2)


def test_user_split_column(tmp_path):
    body = "text,label,split\n" + "".join(
        f"row {i},{'ab'[i % 2]},{['train', 'train', 'dev', 'test'][i % 4] if i > 1 else 'train'}\n"
        for i in range(12)
    )
    path = tmp_path / "u.csv"
    path.write_text(body, encoding="utf-8")
    ds = import_dataset(path)
    assert ds.manifest["split_source"] == "column" and ds.manifest["columns"]["split"] == "split"
    assert ds.texts("valid") == [f"row {i}" for i in range(2, 12, 4)]
    assert "class 'b' has no rows in the valid split" in ds.manifest["warnings"]


def test_user_split_class_missing_from_train(tmp_path):
    body = "text,label,split\n" + "".join(f"r{i},a,train\n" for i in range(8)) + ("r8,b,test\nr9,b,test\n")
    path = tmp_path / "m.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(DataError, match="no rows in the train split"):
        import_dataset(path)
