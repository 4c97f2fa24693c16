"""The centre square an image model reads: a long, thin image is never blown up whole before it is
cut (a 106-byte 8000x1 PNG would become 1.8M x 224 pixels), ordinary images keep the exact pixels
they always had, and the exported scripts' copy cuts the same squares."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from aimass.backbones.image_preprocess import MAX_STRETCH, centre_square, square
from aimass.standalone import image_prep

BICUBIC = Image.Resampling.BICUBIC


def _whole(image: Image.Image, size: int) -> Image.Image:
    """The reference: the whole image resized (shorter side to ``size``), then its centre square."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def _picture(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth colour gradients with a few sharp-edged blocks and a little noise, like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    pixels = np.stack(
        [255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 100 * np.sin(x / 7 + y / 11)], -1
    )
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        pixels[y0 : y0 + h // 5 + 1, x0 : x0 + w // 5 + 1] = rng.integers(0, 256, 3)
    pixels += rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _png(w: int, h: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets RLIMIT_AS")
def test_a_thin_image_is_cut_before_it_is_resized():
    """Resized whole, an 8000x1 image needs 1.6 GB; with 512 MiB of address space to spare the square
    comes back all the same, from both copies of the code."""
    child = textwrap.dedent(
        f"""
        import resource
        from PIL import Image
        from aimass.backbones.image_preprocess import square
        from aimass.standalone.image_prep import square as standalone_square
        data = {_png(8000, 1)!r}
        status = open("/proc/self/status").read().split("VmSize:")[1]
        spare = int(status.split()[0]) * 1024 + 512 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (spare, resource.getrlimit(resource.RLIMIT_AS)[1]))
        out = square(data, 224)
        same = standalone_square(Image.new("RGB", (1, 8000), (200, 10, 10)), 224)
        print(out.size, out.getpixel((100, 100)), same.size, same.getpixel((5, 200)))
        """
    )
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(224, 224) (200, 10, 10) (224, 224) (200, 10, 10)"


@pytest.mark.parametrize(
    "shape", [(224, 224), (640, 480), (480, 640), (300, 200), (97, 61), (896, 224), (50, 200)]
)
def test_images_up_to_the_stretch_limit_keep_their_exact_pixels(shape):
    image = _picture(*shape)
    assert max(shape) / min(shape) <= MAX_STRETCH
    for size in (224, 256):
        assert np.array_equal(np.asarray(centre_square(image, size)), np.asarray(_whole(image, size)))


@pytest.mark.parametrize("shape", [(1200, 200), (150, 900), (2000, 90)])
def test_longer_images_read_the_same_pixels_as_resizing_them_whole(shape):
    """Past the limit only the square's own region is resized: the same source pixels, a fraction of a
    grey level apart on average (the two resize passes run in another order)."""
    image = _picture(*shape, seed=1)
    got = np.asarray(centre_square(image, 224), dtype=int)
    want = np.asarray(_whole(image, 224), dtype=int)
    assert got.shape == want.shape == (224, 224, 3)
    assert np.abs(got - want).mean() < 0.5 and np.abs(got - want).max() <= 8


@pytest.mark.parametrize("shape", [(640, 480), (2000, 1), (3, 700), (1200, 200), (224, 1000)])
def test_the_exported_scripts_cut_the_same_square(shape):
    image = _picture(*shape, seed=2)
    ours = np.asarray(square(image, 224))
    assert np.array_equal(ours, np.asarray(image_prep.square(image, 224)))
    assert ours.shape == (224, 224, 3)
