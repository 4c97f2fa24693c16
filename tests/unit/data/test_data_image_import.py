"""Image dataset import: layouts, archives, rejects, duplicates, leakage, ids and dispatch."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from aimass.data import import_dataset, load_dataset
from aimass.data.image_import import import_images, looks_like_images
from aimass.errors import ConfigError, DataError

ROW_KEYS = {"image", "label", "split", "source", "sha256", "width", "height"}


def rejects_of(ds) -> dict[str, dict]:
    """Rejects by their ``raw`` field (the image's source path, or the manifest line)."""
    lines = ds.rejects_path.read_text(encoding="utf-8").splitlines()
    return {r["raw"]: r for r in map(json.loads, lines)}


def zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, file.relative_to(folder.parent).as_posix())
    return path


def tar_folder(folder: Path, path: Path, mode: str) -> Path:
    with tarfile.open(path, mode) as tf:
        tf.add(folder, arcname=folder.name)
    return path


@pytest.fixture
def pets(tmp_path, write_classes) -> Path:
    """Three classes of five photo crops each: ``pets/<photo>/<i>.jpg``."""
    return write_classes(tmp_path / "pets")


def test_class_folders_are_stored_by_content(home, pets):
    ds = import_images(pets, name="pets")
    assert ds.kind == "image" and ds.manifest["kind"] == "image" and ds.name == "pets"
    assert ds.classes == ["astronaut", "chelsea", "coffee"]
    assert ds.summary()["splits"] == {"train": 9, "valid": 3, "test": 3}
    rows = ds.rows()
    assert len(rows) == 15 and set(rows[0]) == ROW_KEYS
    for row in rows:
        original = (pets / row["source"]).read_bytes()
        stored = ds.path / row["image"]
        assert stored.read_bytes() == original  # original bytes, not re-encoded
        assert row["sha256"] == hashlib.sha256(original).hexdigest()
        assert row["image"] == f"images/{row['sha256'][:2]}/{row['sha256']}.jpg"
        assert (row["width"], row["height"]) == (40, 30) and row["source"].split("/")[0] == row["label"]
    assert ds.inputs("test") == [str(ds.path / r["image"]) for r in ds.rows("test")]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in ds.inputs())
    assert ds.labels("test") == [r["label"] for r in ds.rows("test")]
    assert load_dataset("pets").id == ds.id


def test_every_bad_file_is_a_reject_with_its_reason(home, pets, photos, encode):
    good = (pets / "chelsea" / "0.jpg").read_bytes()
    (pets / "chelsea" / "cut.jpg").write_bytes(good[: len(good) // 2])
    (pets / "chelsea" / "noise.png").write_bytes(b"\x00\x01 not an image" * 10)
    (pets / "coffee" / "big.png").write_bytes(encode(photos["coffee"].resize((200, 150)), "PNG"))
    (pets / "coffee" / "notes.txt").write_text("taken in the kitchen")
    (pets / "loose.jpg").write_bytes(good)
    (pets / "README.md").write_text("pets")
    (pets / "coffee" / ".DS_Store").write_bytes(b"mac")
    ds = import_images(pets, max_pixels=10_000)
    rejects = rejects_of(ds)
    assert {raw: r["kind"] for raw, r in rejects.items()} == {
        "chelsea/cut.jpg": "unreadable image",
        "chelsea/noise.png": "unreadable image",
        "coffee/big.png": "too large",
        "coffee/notes.txt": "unsupported file",
        "loose.jpg": "no label",
    }
    assert rejects["chelsea/cut.jpg"]["reason"].startswith("chelsea/cut.jpg is corrupt or truncated")
    assert rejects["chelsea/cut.jpg"]["file"] == str(pets / "chelsea" / "cut.jpg")
    assert rejects["coffee/big.png"]["reason"] == (
        "coffee/big.png is 200x150 = 30,000 pixels, over the 10,000 pixels limit"
    )
    assert ds.summary()["rows"] == 15 and ds.manifest["rejects"] == 5 and ds.manifest["max_pixels"] == 10_000
    assert any("README.md" in w for w in ds.summary()["warnings"])
    assert str(ds.rejects_path) in ds.describe()


def test_duplicates_in_a_class_and_conflicting_labels(home, pets):
    shutil.copy(pets / "coffee" / "0.jpg", pets / "coffee" / "copy.jpg")
    shutil.copy(pets / "chelsea" / "1.jpg", pets / "astronaut" / "stray.jpg")
    ds = import_images(pets)
    rejects = rejects_of(ds)
    assert rejects["coffee/copy.jpg"]["reason"] == "duplicate of coffee/0.jpg"
    assert rejects["coffee/copy.jpg"]["kind"] == "duplicate"
    assert rejects["astronaut/stray.jpg"]["reason"] == (
        "conflicting labels: the same image is also labelled 'chelsea' at chelsea/1.jpg"
    )
    assert rejects["chelsea/1.jpg"]["kind"] == "conflicting labels"
    assert ds.manifest["rejects_by_reason"] == {"conflicting labels": 2, "duplicate": 1}
    assert {r["source"] for r in ds.rows()} == {f"{c}/{i}.jpg" for c in ds.classes for i in range(5)} - {
        "chelsea/1.jpg"
    }


def test_split_folders_are_kept(home, tmp_path, write_classes):
    root = tmp_path / "flowers"
    write_classes(root / "train", per_class=6)
    write_classes(root / "val", per_class=2, start=6)
    write_classes(root / "test", per_class=2, start=8)
    ds = import_images(root)
    assert ds.manifest["layout"] == "split folders" and ds.manifest["split_source"] == "given"
    top = {"train": "train", "val": "valid", "test": "test"}
    assert all(row["split"] == top[row["source"].split("/")[0]] for row in ds.rows())
    assert ds.summary()["splits"] == {"train": 18, "valid": 6, "test": 6}
    assert {r["label"] for r in ds.rows("valid")} == {"astronaut", "chelsea", "coffee"}


def test_missing_split_folder_is_drawn_from_train(home, tmp_path, write_classes):
    root = tmp_path / "flowers"
    write_classes(root / "train", per_class=10)
    write_classes(root / "test", per_class=2, start=10)
    ds = import_images(root, valid_frac=0.2)
    assert all(r["source"].startswith("train/") for r in ds.rows("valid"))
    assert all(r["source"].startswith("test/") for r in ds.rows("test"))
    assert ds.summary()["splits"] == {"train": 24, "valid": 6, "test": 6}
    assert ds.manifest["valid_frac"] == 0.2 and ds.manifest["test_frac"] == 0.0


def test_the_same_image_in_two_splits_is_reported_as_leakage(home, tmp_path, write_classes):
    root = tmp_path / "leaky"
    write_classes(root / "train", per_class=4)
    write_classes(root / "valid", per_class=2, start=4)
    write_classes(root / "test", per_class=2, start=6)
    shutil.copy(root / "train" / "coffee" / "0.jpg", root / "test" / "coffee" / "again.jpg")
    ds = import_images(root)
    leakage = ds.summary()["leakage"]
    assert len(leakage) == 1 and leakage[0]["splits"] == ["test", "train"]
    assert leakage[0]["sources"] == ["test/coffee/again.jpg", "train/coffee/0.jpg"]
    warnings = ds.summary()["warnings"]
    assert any(w.startswith("leakage: 1 image(s) are in more than one split") for w in warnings)
    assert ds.manifest["rejects"] == 0 and ds.summary()["rows"] == 25


def write_digits_manifest(folder: Path, digits, fmt: str, with_split: bool) -> Path:
    """Digits 0-2 as PNG files under ``folder/img`` and a manifest listing them."""
    images, targets = digits
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(36):
        name = f"img/{i:03d}.png"
        Image.fromarray(images[i]).resize((16, 16), Image.NEAREST).save(folder / name)
        split = ("train", "val", "test")[i % 3]
        rows.append({"path": name, "label": f"digit{targets[i] % 3}", "split": split})
    if not with_split:
        rows = [{k: v for k, v in row.items() if k != "split"} for row in rows]
    if fmt == "jsonl":
        path = folder / "labels.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        path = folder / "labels.csv"
        header = list(rows[0])
        lines = [",".join(header)] + [",".join(r[k] for k in header) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("fmt", "with_split"), [("csv", True), ("jsonl", False)])
def test_manifest(home, tmp_path, digits, fmt, with_split):
    manifest = write_digits_manifest(tmp_path / "digits", digits, fmt, with_split)
    ds = import_images(manifest)
    assert ds.manifest["layout"] == "manifest" and ds.manifest["format"] == fmt
    assert ds.summary()["rows"] == 36 and ds.manifest["columns"]["path"] == "path"
    assert all(row["source"].startswith("img/") and row["width"] == 16 for row in ds.rows())
    if with_split:
        expected = {"train": 0, "valid": 1, "test": 2}
        assert all(int(r["source"][4:7]) % 3 == expected[r["split"]] for r in ds.rows())
    assert import_images(manifest.parent).id == ds.id  # the folder holding the manifest


def test_manifest_rows_with_problems_are_rejected(home, tmp_path, digits):
    manifest = write_digits_manifest(tmp_path / "digits", digits, "csv", with_split=True)
    with manifest.open("a") as fh:
        fh.write(
            "img/missing.png,digit0,train\nimg/000.png,,train\n,digit1,test\nimg/001.png,digit1,holdout\n"
        )
    lines = import_images(manifest).rejects_path.read_text().splitlines()
    rejects = {r["line"]: r for r in map(json.loads, lines)}
    assert {line: r["kind"] for line, r in rejects.items()} == {
        38: "file not found",
        39: "missing label",
        40: "missing path",
        41: "unknown split",
    }
    assert rejects[38]["file"] == str(manifest) and rejects[38]["raw"] == "img/missing.png,digit0,train"


@pytest.mark.parametrize("bad", ["../outside.png", "img/../../outside.png", "/etc/passwd", "link/secret.png"])
def test_manifest_paths_may_not_leave_its_folder(home, tmp_path, digits, bad):
    manifest = write_digits_manifest(tmp_path / "digits", digits, "csv", with_split=False)
    (tmp_path / "outside.png").write_bytes((tmp_path / "digits" / "img" / "000.png").read_bytes())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "digits" / "link").symlink_to(tmp_path / "elsewhere")
    with manifest.open("a") as fh:
        fh.write(f"{bad},digit0\n")
    with pytest.raises(DataError, match=r"is outside the manifest's folder") as info:
        import_images(manifest)
    assert info.value.where == f"{manifest}:38" and "relative" in info.value.hint


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_archives_import_like_the_folder(home, tmp_path, pets, kind):
    (pets / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    folder = import_images(pets)
    path = tmp_path / f"pets.{kind}"
    if kind == "zip":
        zip_folder(pets, path)
    else:
        tar_folder(pets, path, {"tar": "w", "tar.gz": "w:gz"}[kind])
    ds = import_images(path)
    assert ds.id == folder.id and len(ds.manifest["imports"]) == 2
    assert ds.manifest["imports"][1]["source"] == str(path.resolve())
    assert not [p for p in (home / "datasets").iterdir() if p.name.startswith(".extract-")]
    other = import_images(path, name="fresh", seed=1)
    assert other.id != ds.id and other.name == "fresh" and other.manifest["format"] == kind
    assert rejects_of(other)["coffee/broken.jpg"]["file"] == f"{path}/pets/coffee/broken.jpg"


def test_archive_of_split_folders_and_of_a_manifest(home, tmp_path, write_classes, digits):
    root = write_classes(tmp_path / "split" / "train", per_class=4).parent
    write_classes(root / "test", per_class=2, start=4)
    assert import_images(zip_folder(root, tmp_path / "split.zip")).manifest["layout"] == "split folders"
    write_digits_manifest(tmp_path / "digits", digits, "csv", with_split=True)
    ds = import_images(tar_folder(tmp_path / "digits", tmp_path / "digits.tgz", "w:gz"))
    assert ds.manifest["layout"] == "manifest" and ds.name == "digits"


def test_unsafe_archive_is_refused_and_cleaned_up(home, tmp_path, pets):
    path = zip_folder(pets, tmp_path / "evil.zip")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("../../evil.txt", b"owned")
    with pytest.raises(DataError, match=r"'../../evil.txt' refused: its path contains '..'"):
        import_images(path)
    assert [p.name for p in (home / "datasets").iterdir()] == []
    assert not (home / "evil.txt").exists() and not (home.parent / "evil.txt").exists()


def test_same_content_same_id(home, tmp_path, pets):
    first = import_images(pets, name="a")
    copy = shutil.copytree(pets, tmp_path / "copy")
    (copy / "coffee" / "0.jpg").rename(copy / "coffee" / "renamed.jpg")
    second = import_images(copy, name="b")
    assert second.id == first.id and second.names == ["a", "b"]
    assert import_images(pets, test_frac=0.3).id != first.id


def test_not_trainable(home, tmp_path, write_classes):
    with pytest.raises(DataError, match=r"only one class \('coffee'\)"):
        import_images(write_classes(tmp_path / "one", names=("coffee",), per_class=12))
    root = write_classes(tmp_path / "small", names=("coffee", "camera"), per_class=6)
    for file in list((root / "camera").iterdir())[1:]:
        file.unlink()
    with pytest.raises(DataError, match="every class needs at least 2 examples: 'camera' has 1 example"):
        import_images(root, min_rows=5)
    with pytest.raises(DataError, match="only 4 usable row"):
        import_images(write_classes(tmp_path / "few", names=("coffee", "camera"), per_class=2))
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "cat" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"only 0 usable row\(s\)") as info:
        import_images(empty)
    assert "unreadable image: 1" in info.value.hint
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "notes.md").write_text("no images here")
    with pytest.raises(DataError, match="no images found in class sub-folders") as info:
        import_images(tmp_path / "flat")
    assert "<folder>/<label>/<image>" in info.value.hint
    (tmp_path / "fake.zip").write_text("path,caption\n")
    with pytest.raises(DataError, match="neither a .zip, .tar or .tar.gz archive nor an image manifest"):
        import_images(tmp_path / "fake.zip")


def test_dispatch_by_content(home, tmp_path, pets, digits, bbc_csv):
    manifest = write_digits_manifest(tmp_path / "digits", digits, "csv", with_split=False)
    text_folder = tmp_path / "texts"
    for label in ("a", "b"):
        (text_folder / label).mkdir(parents=True)
        for i in range(6):
            (text_folder / label / f"{i}.txt").write_text(f"text {i} about {label}")
    archive = zip_folder(pets, tmp_path / "upload.bin")
    assert [looks_like_images(p) for p in (pets, manifest, archive, tmp_path / "digits")] == [True] * 4
    assert [looks_like_images(p) for p in (bbc_csv, text_folder, tmp_path / "nothing")] == [False] * 3
    images = import_dataset(archive)
    assert images.kind == "image" and images.name == "upload"
    text = import_dataset(text_folder)
    assert text.kind == "text" and text.manifest["kind"] == "text"
    assert text.inputs("train") == text.texts("train") and text.inputs()[0].startswith("text ")
    with pytest.raises(ConfigError, match="holds images, not texts"):
        images.texts()
    with pytest.raises(ConfigError, match="text_col apply to text tables"):
        import_dataset(pets, text_col="caption")
    with pytest.raises(ConfigError, match="max_pixels applies to image datasets only"):
        import_dataset(bbc_csv, max_pixels=100)
    assert import_dataset(manifest, max_pixels=1000).manifest["max_pixels"] == 1000


def test_manifests_without_kind_are_text(home, bbc_csv):
    ds = import_dataset(bbc_csv)
    manifest = json.loads((ds.path / "manifest.json").read_text())
    del manifest["kind"]
    (ds.path / "manifest.json").write_text(json.dumps(manifest))
    old = load_dataset(ds.id)
    assert old.kind == "text" and old.inputs() == old.texts()
    assert "encoding" in old.describe()


def test_images_imported_again_report_their_own_rejects(home, tmp_path, pets):
    """The same images again, now beside a broken one: the dataset is the stored one, and the
    broken image is this import's reject (it was reported as 0, the first import's)."""
    first = import_images(pets, name="pets")
    (pets / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    again = import_images(pets, name="pets-again")
    s = again.summary()
    assert again.id == first.id and s["already_stored"] and s["rejects"] == 1
    (reject,) = [json.loads(line) for line in Path(s["rejects_file"]).read_text().splitlines()]
    assert reject["raw"] == "coffee/broken.jpg" and reject["kind"] == "unreadable image"
    assert rejects_of(first) == {} and load_dataset("pets").summary()["imports"][1]["rejects"] == 1


def test_hidden_images_are_skipped_with_a_warning_litter_silently(home, tmp_path, pets):
    """``cat/.hidden.png`` is a real image the user gave: skipped, it is named in a warning; macOS
    and Windows litter (.DS_Store, AppleDouble ``._x.jpg``, __MACOSX/) is skipped without one."""
    shutil.copy(pets / "coffee" / "0.jpg", pets / "coffee" / ".hidden.jpg")
    (pets / ".cache").mkdir()
    shutil.copy(pets / "chelsea" / "0.jpg", pets / ".cache" / "x.jpg")
    (pets / "coffee" / ".DS_Store").write_bytes(b"mac")
    (pets / "coffee" / "._0.jpg").write_bytes(b"apple double")
    (pets / "__MACOSX" / "coffee").mkdir(parents=True)
    (pets / "__MACOSX" / "coffee" / "._1.jpg").write_bytes(b"apple double")
    for source in (pets, zip_folder(pets, tmp_path / "pets.zip")):
        ds = import_images(source, seed=1 if source == pets else 2)  # a new dataset each: its warnings
        (warning,) = [w for w in ds.summary()["warnings"] if "hidden" in w]
        assert warning.startswith("skipped 2 hidden file(s)") and ".cache/x.jpg" in warning, source
        assert "coffee/.hidden.jpg" in warning and "DS_Store" not in warning and "._" not in warning
        assert ds.summary()["rows"] == 15


def test_hidden_documents_are_skipped_with_a_warning(home, tmp_path):
    for label in ("pos", "neg"):
        (tmp_path / "docs" / label).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "docs" / label / f"{i}.txt").write_text(f"{label} document number {i}")
    (tmp_path / "docs" / "pos" / ".draft.txt").write_text("a pos draft")
    (tmp_path / "docs" / "pos" / ".DS_Store").write_bytes(b"mac")
    ds = import_dataset(tmp_path / "docs")
    assert [w for w in ds.summary()["warnings"] if "hidden" in w] == [
        "skipped 1 hidden file(s), whose name or folder starts with '.': pos/.draft.txt; "
        "rename them without the leading dot to import them"
    ]
