"""Batch augmentation: shapes, ranges, determinism by seed, and that views really differ."""

from __future__ import annotations

import torch

from aimass.train import augment


def _batch(n=6, size=40):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def test_center_is_the_middle_crop_scaled_to_unit_range():
    images = _batch()
    view = augment.center(images, 32)
    assert view.shape == (6, 3, 32, 32) and view.dtype == torch.float32
    assert torch.equal(view, images[:, :, 4:36, 4:36].float() / 255)


def test_augment_is_seeded_in_range_and_varies():
    images = _batch()
    a = augment.augment(images, 32, torch.Generator().manual_seed(1))
    b = augment.augment(images, 32, torch.Generator().manual_seed(1))
    c = augment.augment(images, 32, torch.Generator().manual_seed(2))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, augment.center(images, 32))


def test_flip_only_mirrors_the_crop():
    images = _batch(n=32)
    out = augment.augment(
        images, 40, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0
    )
    plain = images.float() / 255
    flipped = [torch.allclose(o, p.flip(-1), atol=1e-5) for o, p in zip(out, plain)]
    same = [torch.allclose(o, p, atol=1e-5) for o, p in zip(out, plain)]
    assert all(f or s for f, s in zip(flipped, same)) and 0 < sum(flipped) < 32
