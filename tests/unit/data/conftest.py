"""Image fixtures built from real photos (scikit-image) and digits (scikit-learn), kept small."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PHOTOS = ("coffee", "chelsea", "astronaut", "camera")


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """The four photos as RGB images about 64 pixels wide."""
    import skimage.data

    shrunk = {}
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        shrunk[name] = image.resize((64, round(64 * image.height / image.width)))
    return shrunk


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as uint8 (0..255) arrays and their targets."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images * (255 / 16)).round().astype(np.uint8), data.target


def _encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _variant(image: Image.Image, index: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    box = (index * 3, index * 2, image.width - 12 + index * 3 // 2, image.height - 10 + index)
    return image.crop(box).resize(size)


@pytest.fixture(scope="session")
def encode():
    """``encode(image, fmt="JPEG", **options) -> bytes``: the image saved in a format."""
    return _encode


@pytest.fixture(scope="session")
def variant():
    """``variant(image, index) -> Image``: a distinct 40x30 crop of the image."""
    return _variant


@pytest.fixture(scope="session")
def write_classes(photos):
    """Write ``<root>/<photo>/<i>.jpg`` for the given photos; returns the function."""

    def write(root: Path, names=PHOTOS[:3], per_class: int = 5, start: int = 0) -> Path:
        for name in names:
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(start, start + per_class):
                (folder / f"{i}.jpg").write_bytes(_encode(_variant(photos[name], i)))
        return root

    return write


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh AIMASS_HOME for the test."""
    root = tmp_path / "home"
    monkeypatch.setenv("AIMASS_HOME", str(root))
    return root
