"""A revised dataset is a new version: its manifest names the parent and changes.jsonl lists every change."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aimass.data import import_dataset
from aimass.data.revise import CHANGES_FILE, revise_dataset
from aimass.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def parent(bbc_csv):
    return import_dataset(bbc_csv, name="revise-news")


def test_drop_and_relabel_make_a_child_with_lineage(parent):
    rows = parent.rows()
    new_label = next(c for c in parent.classes if c != rows[3]["label"])
    child = revise_dataset(
        parent, drop={0: "label issue"}, relabel={3: (new_label, "label issue")}, note="test"
    )
    assert child.id != parent.id and child.name == parent.name
    assert child.manifest["parent"] == {"id": parent.id, "digest": parent.digest, "name": parent.name}
    assert child.manifest["changes"]["dropped"] == 1 and child.manifest["changes"]["relabelled"] == 1
    assert child.summary()["rows"] == parent.summary()["rows"] - 1 == len(child.rows())
    changes = [json.loads(line) for line in (child.path / CHANGES_FILE).read_text().splitlines()]
    assert [(c["action"], c["parent_row"]) for c in changes] == [("drop", 0), ("relabel", 3)]
    assert changes[0]["text"] == rows[0]["text"] and changes[1]["new_label"] == new_label
    assert child.rows()[2]["label"] == new_label and child.rows()[2]["text"] == rows[3]["text"]
    assert "revised from " + parent.id in child.describe()
    assert len(parent.rows()) == len(rows)  # the parent is untouched
    again = revise_dataset(parent, drop={0: "label issue"}, relabel={3: (new_label, "label issue")})
    assert again.id == child.id  # same changes, same content: same version


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "no rows to drop or relabel"),
        ({"drop": {10_000: "x"}}, "not in dataset"),
        ({"drop": {1: "x"}, "relabel": {1: ("tech", "x")}}, "both dropped and relabelled"),
        ({"relabel": {1: ("weather", "x")}}, "unknown label"),
    ],
)
def test_bad_changes_say_what_to_do(parent, changes, message):
    with pytest.raises(ConfigError, match=message) as info:
        revise_dataset(parent, **changes)
    assert info.value.hint


def test_relabelling_to_the_same_label_is_refused(parent):
    row = parent.rows()[1]
    with pytest.raises(ConfigError, match="already have the label"):
        revise_dataset(parent, relabel={1: (row["label"], "x")})


def test_dropping_a_whole_class_is_refused(parent):
    rows = parent.rows()
    doomed = {i: "x" for i, row in enumerate(rows) if row["label"] == "tech"}
    with pytest.raises(DataError, match="at least 2 examples|at least two"):
        revise_dataset(parent, drop=dict(list(doomed.items())[:-1]))


def test_an_image_child_holds_its_images(tmp_path, digits):
    arrays, targets = digits
    for digit in (0, 1):
        folder = tmp_path / "photos" / f"d{digit}"
        folder.mkdir(parents=True)
        for i, array in enumerate(arrays[targets == digit][:8]):
            Image.fromarray(np.kron(array, np.ones((4, 4), dtype=np.uint8))).save(folder / f"{i}.png")
    parent = import_dataset(tmp_path / "photos", name="revise-digits")
    child = revise_dataset(parent, relabel={0: ("d1" if parent.rows()[0]["label"] == "d0" else "d0", "x")})
    assert child.kind == "image" and len(child.rows()) == len(parent.rows())
    assert all((child.path / row["image"]).is_file() for row in child.rows())
    assert child.manifest["parent"]["id"] == parent.id and "leakage" in child.manifest
