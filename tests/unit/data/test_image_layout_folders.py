"""Listing an imported folder. Symbolic links: one that leads outside the folder (to a file or a whole
class folder) is never read and is listed as a reject saying so; links that stay inside are followed,
and a link back to a parent folder is no endless walk. A class folder that gives no image is named
in a warning, not dropped without a word."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from aimass.data import import_dataset
from aimass.data.image_import import import_images
from aimass.data.image_layout import image_files, read_layout
from aimass.data.read import LINK_OUT

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symbolic links")


def _rejects(ds) -> list[dict]:
    return [json.loads(line) for line in ds.rejects_path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def outside(tmp_path, write_classes) -> Path:
    """Images and a secret text file that are not in the folder being imported."""
    elsewhere = write_classes(tmp_path / "elsewhere", names=("camera",), per_class=3)
    (elsewhere / "secret.txt").write_text("db_password=hunter2 and more server-only words")
    return elsewhere


def test_image_links_leading_out_are_rejects_and_never_read(home, tmp_path, write_classes, outside):
    pets = write_classes(tmp_path / "pets")
    (pets / "stolen").symlink_to(outside / "camera")  # a class folder
    (pets / "coffee" / "leak.jpg").symlink_to(outside / "camera" / "0.jpg")  # a file
    (pets / "chelsea" / "deeper").symlink_to(outside / "camera")  # a folder inside a class folder
    (pets / "coffee" / "again.jpg").symlink_to(pets / "astronaut" / "1.jpg")  # into another class: a reject
    (pets / "astronaut" / "loop").symlink_to(pets)  # inside, back to the top: no endless walk
    ds = import_images(pets, name="pets")
    assert ds.classes == ["astronaut", "chelsea", "coffee"]
    # astronaut/1.jpg stays astronaut's (read again as coffee, both copies were conflicts thrown away)
    assert "astronaut/1.jpg" in {row["source"] for row in ds.rows()}
    out = {r["raw"]: r for r in _rejects(ds) if r["reason"] == LINK_OUT}
    assert set(out) == {"stolen", "coffee/leak.jpg", "chelsea/deeper", "coffee/again.jpg"}
    assert out["stolen"]["file"] == str(pets / "stolen") and out["stolen"]["kind"] == "link outside"
    assert not any(str(outside) in row["source"] or "camera" in row["source"] for row in ds.rows())
    assert len(list(image_files(pets))) == 16 and len(list(image_files(pets / "astronaut"))) == 5


def test_split_folder_and_manifest_links_leading_out_are_not_read(home, tmp_path, write_classes, outside):
    root = tmp_path / "splits"
    write_classes(root / "train")
    (root / "valid").symlink_to(outside)  # a whole split
    (root / "labels.csv").symlink_to(outside / "secret.txt")  # not read as a manifest either
    layout = read_layout(root)
    assert layout.kind == "split folders" and {item.split for item in layout.items} == {"train"}
    assert [(r["raw"], r["reason"]) for r in layout.rejects] == [
        ("labels.csv", LINK_OUT),
        ("valid", LINK_OUT),
    ]
    assert all(item.file.resolve().is_relative_to(root) for item in layout.items)


def test_document_links_leading_out_are_rejects_and_never_read(home, tmp_path, outside):
    docs = tmp_path / "docs"
    for label in ("pos", "neg"):
        (docs / label).mkdir(parents=True)
        for i in range(6):
            (docs / label / f"{i}.txt").write_text(f"{label} document number {i}")
    (docs / "pos" / "leak.txt").symlink_to(outside / "secret.txt")
    (docs / "stolen").symlink_to(outside)
    (docs / "neg" / "same.txt").symlink_to(docs / "neg" / "0.txt")  # stays inside: read
    ds = import_dataset(docs)
    assert not any("hunter2" in text for text in ds.texts()) and "stolen" not in ds.classes
    rejects = _rejects(ds)
    assert {(r["raw"], r["kind"]) for r in rejects if r["reason"] == LINK_OUT} == {
        ("pos/leak.txt", "link outside"),
        ("stolen", "link outside"),
    }
    assert [r["reason"] for r in rejects if r["reason"] != LINK_OUT] == ["duplicate of neg/0.txt"]  # same.txt
    assert not any("hunter2" in json.dumps(r) for r in rejects)
    assert ds.summary()["rows"] == 12


def test_a_folder_of_nothing_but_links_out_says_so(home, tmp_path, outside):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pos").symlink_to(outside)
    with pytest.raises(Exception, match="no documents .* not read: 1 a link that leads outside"):
        import_dataset(docs)
    shutil.rmtree(outside)


def test_a_class_folder_that_gives_no_image_is_named_in_a_warning(tmp_path, write_classes):
    pets = write_classes(tmp_path / "pets")
    (pets / "empty one").mkdir()
    (pets / "notes").mkdir()
    (pets / "notes" / "readme.txt").write_text("not an image")
    (pets / "hidden only").mkdir()
    (pets / "hidden only" / ".x.jpg").write_bytes(b"\xff\xd8")
    layout = read_layout(pets)
    assert {item.label for item in layout.items} == {"astronaut", "chelsea", "coffee"}
    fix = "; put the class's images in it, or remove it"
    assert layout.warnings == [
        "class folder 'empty one' was left out: it holds no images" + fix,
        "class folder 'hidden only' was left out: it holds no images" + fix,
        "class folder 'notes' was left out: none of its 1 file(s) is an image (see the rejects)" + fix,
    ]
    split = tmp_path / "split"
    write_classes(split / "train")
    (split / "valid" / "coffee").mkdir(parents=True)
    assert read_layout(split).warnings == [
        "class folder 'valid/coffee' was left out: it holds no images" + fix
    ]
    ds = import_dataset(pets, name="pets-with-empty")  # the import says it, as the layout does
    assert any("'empty one' was left out" in w for w in ds.manifest["warnings"]), ds.manifest["warnings"]


def test_a_readme_beside_the_archive_s_top_folder_does_not_merge_its_classes(tmp_path, write_classes):
    """``README.md`` + ``pets/<class>/...`` was read as one class 'pets' ("check the label column")."""
    import zipfile

    tree = write_classes(tmp_path / "tree" / "pets", start=5)  # images no other test stored
    (tmp_path / "tree" / "README.md").write_text("Photos of three pets.")
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((tmp_path / "tree").rglob("*")):
            zf.write(path, path.relative_to(tmp_path / "tree").as_posix())
    ds = import_dataset(archive, name="pets-readme")
    assert set(ds.labels()) == {"astronaut", "chelsea", "coffee"}
    assert any("README.md" in w for w in ds.manifest["warnings"]), ds.manifest["warnings"]
    assert tree.is_dir()
