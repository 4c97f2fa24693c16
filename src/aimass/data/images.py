"""Decode one image with limits, the same way for import, training and the server.

The pixel limits are checked from the header, before any pixel is decoded: per image
(``AIMASS_MAX_PIXELS``, default 40 MP) and, for the images of one server request together,
:func:`total_pixels` (``AIMASS_MAX_REQUEST_PIXELS``, default 192 MP: sixteen 12 MP photos), so a
request of small, highly compressed files cannot make the server decode gigapixels. Pillow's own
decompression-bomb check is not relied on: the format plugins are called directly, so its global
``Image.MAX_IMAGE_PIXELS`` is neither needed nor changed. The WebP plugin applies it anyway while
reading the header; that refusal is a :class:`TooLargeError` like ours, not a crash.

>>> import io
>>> from PIL import Image
>>> buf = io.BytesIO()
>>> Image.new("LA", (4, 3)).save(buf, "PNG")
>>> open_image(buf.getvalue(), where="upload.png").mode
'RGB'
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

from aimass.data.limits import MIB, limit, mebibytes, megapixels
from aimass.errors import DataError, TooLargeError

MAX_PIXELS = 40_000_000
MAX_REQUEST_PIXELS = 192_000_000  # sixteen 12 MP photos per request
MAX_IMAGE_BYTES = 50 * MIB
PIXELS_ENV = "AIMASS_MAX_PIXELS"
REQUEST_PIXELS_ENV = "AIMASS_MAX_REQUEST_PIXELS"
BYTES_ENV = "AIMASS_MAX_IMAGE_BYTES"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}
SUPPORTED = "JPEG, PNG, WebP, BMP or GIF"
_REGISTERED = (BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin)
_FORMATS = tuple(FORMAT_EXTENSIONS)  # the plugins above register these in Image.OPEN when imported
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WHITE = (255, 255, 255, 255)
_RESIZE = f"Resize the image, or raise the limit with max_pixels= or {PIXELS_ENV}."


@dataclass(frozen=True)
class ImageInfo:
    """What import records about a decoded image: its format and size after EXIF orientation."""

    format: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        """The file extension of the format (``.jpg`` for JPEG)."""
        return FORMAT_EXTENSIONS[self.format]


def pixel_limit(max_pixels: int | None = None) -> int:
    """Pixels allowed per image: ``max_pixels``, else ``AIMASS_MAX_PIXELS``, else ``MAX_PIXELS``."""
    return limit(PIXELS_ENV, MAX_PIXELS, max_pixels, param="max_pixels")


def request_pixel_limit(max_pixels: int | None = None) -> int:
    """Pixels allowed in all images of one request: ``max_pixels``, else ``AIMASS_MAX_REQUEST_PIXELS``,
    else ``MAX_REQUEST_PIXELS`` (192 million)."""
    return limit(REQUEST_PIXELS_ENV, MAX_REQUEST_PIXELS, max_pixels, param="max_pixels")


def byte_limit() -> int:
    """Bytes allowed per image file: ``AIMASS_MAX_IMAGE_BYTES``, else ``MAX_IMAGE_BYTES``."""
    return limit(BYTES_ENV, MAX_IMAGE_BYTES, None)


def open_image(source: str | Path | bytes, *, max_pixels: int | None = None, where: str = "") -> Image.Image:
    """Decode an image fully and return it in RGB, upright.

    Args:
        source: A file path or the file's bytes.
        max_pixels: Pixel limit (default: ``AIMASS_MAX_PIXELS`` or 40 million).
        where: Name used in messages (default: the file name, or ``image`` for bytes).

    Returns:
        A loaded RGB image with EXIF orientation applied; transparency is flattened on
        white, 16-bit images are scaled to 8 bits, GIFs give their first frame.

    Raises:
        TooLargeError: The file or its pixel count is over a limit (HTTP 413).
        DataError: The file is missing, corrupt, truncated or not a JPEG, PNG, WebP,
            BMP or GIF image (HTTP 422).
    """
    return _decode(source, max_pixels, where)[0]


def check_image(source: str | Path | bytes, *, max_pixels: int | None = None, where: str = "") -> ImageInfo:
    """Decode an image as :func:`open_image` does and return its format and upright size.

    Raises:
        TooLargeError: Over a limit.
        DataError: Unreadable (see :func:`open_image`).
    """
    image, fmt = _decode(source, max_pixels, where)
    return ImageInfo(fmt, image.width, image.height)


def total_pixels(sources: Sequence[bytes], *, max_pixels: int | None = None, name: str = "inputs") -> int:
    """The pixels of all ``sources`` together, read from their headers alone (no pixel is decoded),
    refused as soon as the running total passes the limit per request.

    Each image's byte and pixel limits are checked on the way, so a request over any limit is
    refused before any of its images is decoded.

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO()
    >>> Image.new("RGB", (4, 3)).save(buf, "PNG")
    >>> total_pixels([buf.getvalue()] * 2)
    24
    >>> try:
    ...     total_pixels([buf.getvalue()] * 3, max_pixels=30)
    ... except TooLargeError as exc:
    ...     print(exc.message)
    inputs[2] brings the request to 36 pixels of images, over the limit of 30 pixels per request

    Args:
        sources: The images' bytes, in request order.
        max_pixels: The limit (default: ``AIMASS_MAX_REQUEST_PIXELS`` or 192 million).
        name: What the request calls its list, for messages (``inputs[2]``).

    Raises:
        TooLargeError: An image, or the running total, is over a limit (HTTP 413).
        DataError: An image's header is unreadable (HTTP 422).
    """
    most, total = request_pixel_limit(max_pixels), 0
    for i, source in enumerate(sources):
        width, height = _header_size(source, f"{name}[{i}]")
        total += width * height
        if total > most:
            raise TooLargeError(
                f"{name}[{i}] brings the request to {megapixels(total)} of images, "
                f"over the limit of {megapixels(most)} per request",
                hint=f"Send fewer or smaller images per request (resize photos first), "
                f"or raise {REQUEST_PIXELS_ENV}.",
            )
    return total


def _header_size(source: bytes, name: str) -> tuple[int, int]:
    data, name, place = _read(source, name)
    with io.BytesIO(data) as fp:
        image = _identify(fp, name, place)
        _check_pixels(image, pixel_limit(), name, place)
        return image.size


def read_image_file(path: str | Path, *, where: str = "") -> bytes:
    """The bytes of an image file, refusing it before reading when it is over the byte limit.

    Raises:
        TooLargeError: Over ``AIMASS_MAX_IMAGE_BYTES``.
        DataError: The file cannot be read.
    """
    return _read(Path(path), where)[0]


def _decode(source, max_pixels, where) -> tuple[Image.Image, str]:
    data, name, place = _read(source, where)
    with io.BytesIO(data) as fp:
        image = _identify(fp, name, place)
        _check_pixels(image, pixel_limit(max_pixels), name, place)
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return to_rgb(upright), image.format
        except Image.DecompressionBombError as exc:
            message = f"{name} has a frame over Pillow's own pixel limit ({exc})"
            raise TooLargeError(message, where=place, hint=_RESIZE) from exc
        except _DECODE_ERRORS as exc:
            raise _corrupt(name, place, exc) from exc


def _read(source, where: str) -> tuple[bytes, str, str | None]:
    """The bytes, the name for messages and the ``where`` of errors; the byte limit is checked first."""
    most = byte_limit()
    if isinstance(source, bytes | bytearray | memoryview):
        name = where or "image"
        _check_bytes(len(source), most, name, None)
        return bytes(source), name, None
    if not isinstance(source, str | Path) or not str(source):
        raise DataError(
            f"{where or 'an image'} is {type(source).__name__} {str(source)[:40]!r}, not an image",
            where=where or None,
            hint="Pass a file path, the file's bytes, a PIL image or an H x W x 3 array.",
        )
    path = Path(source)
    place = str(path)  # an error's where: the message names the file alone, not its path again
    name = where if where and where != place else path.name
    try:
        _check_bytes(path.stat().st_size, most, name, place)
        return path.read_bytes(), name, place
    except OSError as exc:
        raise DataError(
            f"cannot read {name}: {exc.strerror or exc}", where=place, hint="Check the path."
        ) from exc


def _check_bytes(size: int, most: int, name: str, place: str | None) -> None:
    if size > most:
        raise TooLargeError(
            f"{name} is {mebibytes(size)}, over the {mebibytes(most)} limit per image",
            where=place,
            hint=f"Shrink or recompress the file, or raise the limit with {BYTES_ENV}.",
        )


def _identify(fp: io.BytesIO, name: str, place: str | None) -> ImageFile.ImageFile:
    """Parse the header with the first plugin that accepts it; no pixel is decoded here."""
    prefix = fp.read(16)
    for fmt in _FORMATS:
        factory, accept = Image.OPEN[fmt]
        accepted = accept(prefix) if accept else True
        if not accepted or isinstance(accepted, str):
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except Image.DecompressionBombError as exc:  # the WebP plugin checks its size itself, here
            message = f"{name} is over Pillow's own pixel limit ({exc})"
            raise TooLargeError(message, where=place, hint="Resize the image.") from exc
        except _DECODE_ERRORS as exc:
            raise _corrupt(name, place, exc) from exc
    raise DataError(
        f"{name} is not a {SUPPORTED} image",
        where=place,
        hint="Convert it to JPEG or PNG, or remove it.",
    )


def _check_pixels(image: Image.Image, most: int, name: str, place: str | None) -> None:
    width, height = image.size
    if width * height > most:
        raise TooLargeError(
            f"{name} is {width}x{height} = {megapixels(width * height)}, over the {megapixels(most)} limit",
            where=place,
            hint=_RESIZE,
        )


def _corrupt(name: str, place: str | None, exc: Exception) -> DataError:
    return DataError(
        f"{name} is corrupt or truncated ({exc})",
        where=place,
        hint="Re-export or re-download the image, or remove it.",
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decoded mode to RGB.

    Transparency (RGBA, LA, palette with a transparent colour) is composited on white;
    16-bit and 32-bit integer images are scaled to 8 bits, not clipped; CMYK, 1-bit,
    grayscale and palette images go through Pillow's conversion.
    """
    if image.mode.startswith("I"):
        return _scale_to_8bit(image).convert("RGB")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit modes map 0..65535 to 0..255; mode ``I`` is read as 8-bit, 16-bit or its own range.

    Mode ``I`` (32-bit integers) says nothing about the bit depth, so the values decide:
    within 0..255 they are kept, within 0..65535 they are 16-bit, otherwise the image's
    own minimum and maximum are stretched to 0..255.
    """
    values = np.asarray(image, dtype=np.float64)
    low, high = (0.0, 65535.0) if image.mode.startswith("I;16") else _int_range(values)
    scaled = (values - low) * (255.0 / max(high - low, 1.0))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _int_range(values: np.ndarray) -> tuple[float, float]:
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low >= 0 and high <= 255:
        return 0.0, 255.0
    if low >= 0 and high <= 65535:
        return 0.0, 65535.0
    return low, high
