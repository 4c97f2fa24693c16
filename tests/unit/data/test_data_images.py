"""Decoding with limits: formats, mode conversion, EXIF orientation, bombs, corrupt files."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from aimass.data.images import MAX_PIXELS, check_image, open_image, read_image_file, to_rgb
from aimass.errors import ConfigError, DataError, TooLargeError


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds a few bytes of garbage pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"junk") + chunk(b"IEND", b"")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize(
    ("fmt", "tolerance"), [("JPEG", 20), ("PNG", 0), ("WEBP", 20), ("BMP", 0), ("GIF", 60)]
)
def test_each_format_decodes_to_the_same_rgb_photo(photos, encode, fmt, tolerance):
    photo = photos["chelsea"]
    image = open_image(encode(photo, fmt), where=f"cat.{fmt.lower()}")
    assert image.mode == "RGB" and image.size == photo.size
    assert np.abs(pixels(image) - pixels(photo)).mean() <= tolerance
    assert check_image(encode(photo, fmt)).format == fmt


def test_gif_gives_its_first_frame(encode):
    frames = [Image.new("RGB", (12, 8), color) for color in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    image = open_image(data)
    assert image.mode == "RGB" and image.size == (12, 8)
    assert image.getpixel((5, 5)) == (255, 0, 0)


def test_transparency_is_composited_on_white(encode):
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    image = open_image(encode(rgba, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((2, 1)) == (255, 0, 0)
    assert image.getpixel((1, 0)) in ((127, 127, 127), (128, 128, 128))


def test_palette_with_transparent_index(encode):
    palette = Image.new("P", (3, 1))
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    image = open_image(encode(palette, "PNG", transparency=0))
    assert [image.getpixel((x, 0)) for x in range(3)] == [(255, 255, 255), (0, 200, 0), (255, 255, 255)]


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1", "CMYK"])
def test_other_modes_become_rgb(photos, encode, mode):
    photo = photos["coffee"]
    source = photo.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = encode(source, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    image = open_image(data)
    assert image.mode == "RGB" and image.size == photo.size
    expected = pixels(source.convert("RGB"))
    assert np.abs(pixels(image) - expected).mean() < (8 if mode == "CMYK" else 1)


def test_16_bit_grayscale_is_scaled_not_clipped(encode):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    image = open_image(data)
    assert [image.getpixel((x, 0))[0] for x in range(4)] == [0, 1, 128, 255]
    assert image.getpixel((2, 0)) == (128, 128, 128)


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I;16B", [0, 65535], [0, 255]),
        ("I", [0, 255], [0, 255]),
        ("I", [0, 65535], [0, 255]),
        ("I", [-1000, 1000], [0, 255]),
    ],
)
def test_integer_modes_scale_by_their_range(mode, values, expected):
    if mode == "I;16B":
        image = Image.frombytes(mode, (2, 1), np.array(values, dtype=">u2").tobytes())
    else:
        image = Image.fromarray(np.array([values], dtype=np.int32))
    assert image.mode == mode
    rgb = to_rgb(image)
    assert [rgb.getpixel((x, 0)) for x in range(2)] == [(v, v, v) for v in expected]


@pytest.mark.parametrize(
    ("orientation", "size"), [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))]
)
def test_exif_orientation_is_applied(encode, orientation, size):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright = open_image(encode(image, "JPEG", exif=exif, quality=95))
    assert upright.size == size
    red_at = {1: (2, 10), 3: (37, 10), 6: (10, 2), 8: (10, 37)}[orientation]
    red, _, blue = upright.getpixel(red_at)
    assert red > 200 and blue < 60
    assert check_image(encode(image, "JPEG", exif=exif)).width == size[0]


def test_decompression_bomb_is_refused_from_its_header(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(TooLargeError) as info:
        open_image(png_header_only(30000, 30000), where="bomb.png")
    err = info.value
    assert err.message == "bomb.png is 30000x30000 = 900.0 MP, over the 40.0 MP limit"
    assert "AIMASS_MAX_PIXELS" in err.hint and "max_pixels" in err.hint
    assert err.code == "too_large" and err.http_status == 413 and isinstance(err, DataError)


def test_pillow_global_limit_is_neither_used_nor_changed(photos, encode, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_image(encode(photos["camera"], "PNG")).size == photos["camera"].size
    with pytest.raises(TooLargeError):
        open_image(png_header_only(30000, 30000))
    assert Image.MAX_IMAGE_PIXELS == 100


def test_pixel_limit_from_argument_and_environment(photos, encode, monkeypatch):
    data = encode(photos["coffee"], "PNG")  # 64x43
    assert MAX_PIXELS == 40_000_000
    monkeypatch.setenv("AIMASS_MAX_PIXELS", "1000")
    with pytest.raises(TooLargeError, match=r"64x43 = 2,752 pixels, over the 1,000 pixels limit"):
        open_image(data, where="coffee.png")
    assert open_image(data, max_pixels=3000).size == (64, 43)
    monkeypatch.setenv("AIMASS_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="AIMASS_MAX_PIXELS must be a positive number"):
        open_image(data)
    with pytest.raises(ConfigError, match="max_pixels must be a positive number. Got -5 instead"):
        open_image(data, max_pixels=-5)


def test_byte_limit_is_checked_before_reading(tmp_path, photos, encode, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(encode(photos["coffee"], "PNG"))
    monkeypatch.setenv("AIMASS_MAX_IMAGE_BYTES", "100")
    size = path.stat().st_size
    message = rf"big.png is {size:,} bytes, over the 100 bytes limit per image"
    with pytest.raises(TooLargeError, match=message) as info:
        read_image_file(path)
    assert "AIMASS_MAX_IMAGE_BYTES" in info.value.hint and info.value.where == str(path)
    with pytest.raises(TooLargeError):
        open_image(path.read_bytes())


def test_truncated_jpeg_names_the_file(tmp_path, photos, encode):
    data = encode(photos["astronaut"], "JPEG")
    path = tmp_path / "broken.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError) as info:
        open_image(path)
    err = info.value
    assert not isinstance(err, TooLargeError)
    assert err.message.startswith("broken.jpg is corrupt or truncated") and err.where == str(path)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00garbage" * 20, "upload is not a JPEG, PNG, WebP, BMP or GIF image"),
        (b"GIF89a" + b"\x00" * 4, "upload is corrupt or truncated"),
        (png_header_only(10, 10), "upload is corrupt or truncated"),
        (b"%PDF-1.4 not an image", "upload is not a JPEG, PNG, WebP, BMP or GIF image"),
    ],
)
def test_garbage_is_a_data_error_naming_the_upload(data, message):
    with pytest.raises(DataError) as info:
        open_image(data, where="upload")
    assert info.value.message.startswith(message) and info.value.code == "data_error"


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read missing.png"):
        open_image(tmp_path / "missing.png")


def test_path_and_bytes_give_the_same_image(tmp_path, photos, encode):
    path = tmp_path / "a.webp"
    path.write_bytes(encode(photos["chelsea"], "WEBP", lossless=True))
    assert open_image(path).tobytes() == open_image(str(path)).tobytes() == photos["chelsea"].tobytes()
