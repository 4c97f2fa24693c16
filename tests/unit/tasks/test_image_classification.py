"""Image-task pieces the contract test does not reach: input kinds, sizing, TTA, the top-losses grid."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aimass.errors import ConfigError, DataError
from aimass.tasks.image_classification import (
    ImageClassification,
    ImageClassifier,
    auto_size,
    decode_item,
    to_pixels,
)


def _png(size=(50, 30), color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_to_pixels_accepts_bytes_paths_pil_and_arrays(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(_png())
    for item in (_png(), str(path), Image.open(path), np.full((30, 50), 7, dtype=np.uint8)):
        px = to_pixels(item, 24)
        assert px.shape == (3, 24, 24) and px.dtype.is_floating_point is False
    assert to_pixels(_png(), 24)[0].float().mean() > 190  # red stays red


def test_corrupt_bytes_name_where():
    with pytest.raises(DataError, match="photo-9"):
        to_pixels(b"not an image", 24, where="photo-9")


def test_line_wrapped_base64_is_read_and_other_characters_refused():
    """What the ``base64`` tool (without -w0), Python's ``encodebytes`` and Java's MIME encoder send:
    lines of 76 characters ended by CRLF or LF."""
    data = _png((120, 90))
    wrapped = base64.encodebytes(data).decode()
    assert "\n" in wrapped and decode_item(wrapped, 0) == data
    assert decode_item(wrapped.replace("\n", "\r\n"), 0) == data
    assert decode_item("data:image/png;base64,\n" + wrapped + "  \t", 0) == data
    for bad in (wrapped.replace("\n", "*"), wrapped.replace("\n", "\u00a0", 1)):
        with pytest.raises(DataError, match=r"inputs\[3\] is not base64"):
            decode_item(bad, 3)


def test_auto_size_follows_the_images():
    assert auto_size([_png((28, 28))] * 3) == 128
    assert auto_size([_png((400, 300))] * 3) == 224


def test_text_backbone_is_refused():
    images, labels = ImageClassification.sample_data(per_class=4)
    with pytest.raises(ConfigError, match="reads text"):
        ImageClassifier(backbone="minilm-l6").fit((images, labels), progress=False)


def test_tta_and_top_losses_grid(tmp_path):
    images, labels = ImageClassification.sample_data(per_class=8)
    model = ImageClassifier(**ImageClassification.fast_params).fit((images, labels), progress=False)
    plain = model.predict_proba(images)
    model.tta = True
    mirrored = model.predict_proba(images)
    assert plain.shape == mirrored.shape and not np.allclose(plain, mirrored)
    np.testing.assert_allclose(mirrored.sum(1), 1.0, atol=1e-5)
    paths = []
    for i, data in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(data)
    report = model.evaluate(([str(p) for p in paths], labels))
    assert report["top_losses"][0]["image"].endswith(".png")
    written = ImageClassification.plots(report, tmp_path)
    assert [p.name for p in written] == ["confusion_matrix.png", "top_losses.png"]
    assert Image.open(written[1]).size[0] > 300


def test_held_out_images_are_read_not_stored_and_need_no_training_minimum(tmp_path, monkeypatch):
    """``evaluate --data FOLDER``: three images of one class are a fine test set (the training rules
    refused fewer than 10, or one class); nothing is stored; an unreadable one and a repeat are left
    out; an archive's images come back as bytes."""
    import zipfile

    from aimass.data import list_datasets

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    folder = tmp_path / "photos"
    (folder / "red").mkdir(parents=True)
    for i in range(3):
        (folder / "red" / f"{i}.png").write_bytes(_png(color=(200, 10 * i, 10)))
    (folder / "red" / "copy.png").write_bytes(_png(color=(200, 0, 10)))  # a repeat of 0.png
    (folder / "red" / "broken.png").write_bytes(b"not an image")
    images, labels = ImageClassification.eval_data(folder, None)
    assert sorted(Path(p).name for p in images) == ["0.png", "1.png", "2.png"] and labels == ["red"] * 3
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in (folder / "red").glob("[0-9].png"):
            z.write(file, f"red/{file.name}")
    images, labels = ImageClassification.eval_data(archive, None)
    assert len(images) == 3 and all(isinstance(x, bytes) for x in images) and labels == ["red"] * 3
    assert list_datasets() == []
    for bad in ("copy.png", "0.png", "1.png", "2.png"):  # only the unreadable one is left
        (folder / "red" / bad).unlink()
    with pytest.raises(DataError, match="No usable image"):
        ImageClassification.eval_data(folder, None)
