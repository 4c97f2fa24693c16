"""distill and prune work on image models too: the fine-tuned top stages lose blocks or expansion
channels, the student learns from its parent, and the child saves, loads, exports and predicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aimass import api
from aimass.compressors import image_student
from aimass.errors import ConfigError
from aimass.tasks import get_task


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    spec = get_task("image-classification")
    images, labels = spec.sample_data(per_class=30)
    root = tmp_path_factory.mktemp("digits-students") / "digits"
    for i, (data, label) in enumerate(zip(images, labels)):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i}.png").write_bytes(data)
    ds = api.import_dataset(root, name="digits-students")
    params = {"image_size": 64, "unfreeze": 2, "epochs_top": 2, "batch_size": 16, "baselines": False}
    model = spec.estimator(**params).fit(ds, progress=False)  # the network: what the students shrink
    record = api.register(model, "digits-students", report=model.evaluate(ds, "test"))
    return ds, model, record.ref


def params(model) -> int:
    return sum(p.numel() for p in model.net_.parameters())


def agreement(a, b, items) -> float:
    return float(np.mean(np.array(a.predict(items)) == np.array(b.predict(items))))


def test_distill_keeps_fewer_blocks_and_learns_from_the_parent(digits, tmp_path):
    ds, parent, ref = digits
    result = api.compress(ref, "distill", max_drop=100, epochs=3, time_budget=60)
    child = api.load(result["model"])
    top = list(image_student.top_stages(parent))
    assert all(len(child.net_.encoder.stages[s]) == 1 for s in top)
    assert any(len(parent.net_.encoder.stages[s]) > 1 for s in top)
    assert child.structure_["blocks"] and params(child) < params(parent)
    assert agreement(child, parent, ds.inputs("test")) >= 0.6
    again = type(child).load(child.save(tmp_path / "again"))
    items = ds.inputs("test")[:8]
    assert np.allclose(again.predict_proba(items), child.predict_proba(items), atol=1e-5)
    assert result["comparison"]["size_ratio"] < 1.0


def test_prune_removes_expansion_channels(digits):
    ds, parent, ref = digits
    result = api.compress(ref, "prune", max_drop=100, channels=0.5, epochs=2, time_budget=60)
    child = api.load(result["model"])
    assert child.structure_["mid"]
    for key, width in child.structure_["mid"].items():
        stage, block = (int(x) for x in key.split("."))
        full = parent.net_.encoder.stages[stage][block].expand.conv.out_channels
        assert child.net_.encoder.stages[stage][block].expand.conv.out_channels == width < full
    assert params(child) < params(parent)
    assert agreement(child, parent, ds.inputs("test")) >= 0.6


def test_keep_mid_cuts_an_mbconv_block_consistently():
    from aimass.backbones.efficientnet import MBConv

    block = MBConv(16, 16, 3, 1, 6).eval()
    x = torch.randn(2, 16, 8, 8)
    image_student.keep_mid(block, torch.arange(96))  # all channels: the same function
    before = block(x)
    image_student.keep_mid(block, torch.arange(48))
    assert block(x).shape == before.shape == (2, 16, 8, 8)
    assert block.depthwise.conv.groups == 48 and block.project.conv.in_channels == 48


def test_settings_are_checked_before_training(digits):
    _, parent, _ = digits
    with pytest.raises(ConfigError):
        image_student.distill(parent, None, {"unlabeled": ["a text"]})
    with pytest.raises(ConfigError, match="blocks"):
        image_student.distill(parent, None, {"blocks": 0})


def test_a_distilled_child_exports_and_serves(digits, tmp_path):
    from fastapi.testclient import TestClient

    from aimass.serve.app import create_app

    ds, _, ref = digits
    result = api.compress(ref, "distill", max_drop=100, epochs=1, time_budget=30)
    for fmt in ("safetensors", "onnx"):  # each export runs its own predict.py against aimass
        manifest = api.export(result["model"], fmt, tmp_path / fmt)
        assert manifest["check"]["predict_py_max_abs_diff_proba"] < 1e-4, manifest["check"]
    with TestClient(create_app([result["model"]], open_predict=True)) as client:
        image = Path(ds.inputs("test")[0]).read_bytes()
        name = ref.partition(":")[0]
        answer = client.post(f"/v1/models/{name}/predict", files=[("inputs", ("x.png", image))])
        assert answer.status_code == 200 and answer.json()["model"] == result["model"]
