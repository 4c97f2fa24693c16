"""An image whose header alone trips Pillow's own decompression-bomb check (the WebP plugin applies
it while reading the header) is one refused image, never a crash of the whole import or request."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from aimass.data.image_import import import_images
from aimass.data.images import check_image, total_pixels
from aimass.errors import TooLargeError


@pytest.fixture(scope="module")
def huge_webp() -> bytes:
    """A 1x1 lossless WebP (a few dozen bytes) whose header is rewritten to say 16383x16383."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "WEBP", lossless=True)
    data = bytearray(buf.getvalue())
    at = data.find(b"VP8L") + 8  # the 0x2f signature, then 14 bits of width-1 and of height-1
    assert data[at] == 0x2F
    rest = int.from_bytes(data[at + 1 : at + 5], "little") & ~((1 << 28) - 1)
    data[at + 1 : at + 5] = ((16382 | 16382 << 14) | rest).to_bytes(4, "little")
    return bytes(data)


def test_a_webp_over_pillows_limit_is_too_large(huge_webp):
    with pytest.raises(TooLargeError, match="huge.webp is over Pillow's own pixel limit"):
        check_image(huge_webp, where="huge.webp")
    with pytest.raises(TooLargeError, match=r"inputs\[1\] is over Pillow's own pixel limit") as info:
        total_pixels([_png(), huge_webp])
    assert info.value.http_status == 413


def test_it_is_one_reject_in_an_import(home, tmp_path, write_classes, huge_webp):
    pets = write_classes(tmp_path / "pets")
    (pets / "coffee" / "huge.webp").write_bytes(huge_webp)
    ds = import_images(pets)
    rejects = [json.loads(line) for line in ds.rejects_path.read_text(encoding="utf-8").splitlines()]
    assert [(r["raw"], r["kind"]) for r in rejects] == [("coffee/huge.webp", "too large")]
    assert "over Pillow's own pixel limit" in rejects[0]["reason"]
    assert ds.summary()["rows"] == 15


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3)).save(buf, "PNG")
    return buf.getvalue()
