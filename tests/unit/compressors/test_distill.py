"""``distill``: a shallower student of the session's small BBC model, trained on soft targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import bbc_held_out, bbc_sample, weights_snapshot

from aimass import api
from aimass.compressors import distill, get_compressor, structure
from aimass.errors import ConfigError, DataError
from aimass.tasks import get_task
from aimass.tasks.text_classification import TextClassifier

held_out, snapshot = bbc_held_out, weights_snapshot


@pytest.fixture(scope="module")
def distilled(small_model, tmp_path_factory):
    before = snapshot(small_model), small_model.predict_proba(held_out()[0])
    extra = tmp_path_factory.mktemp("unlabeled") / "news.txt"
    extra.write_text("\n".join(t.replace("\n", " ") for t in bbc_sample(per_class=20)[0][::4]))
    teacher = api.register(small_model, "distill-teacher")
    method = get_compressor(
        "distill",
        layers=2,
        epochs=2,
        time_budget=60,
        unlabeled=str(extra),
        teachers=[teacher.ref],
    )
    child = method.mark(method.compress(small_model, bbc_sample(), get_task("text-classification")), "news:1")
    return child, before


def test_student_has_fewer_layers_and_parameters(distilled, small_model):
    child, _ = distilled
    assert structure.describe(child.net_.encoder)["layers"] == 2 < small_model.net_.n_layers == 6
    assert child.structure_["layers"] == [2, 5]  # every third block, ending with the top one
    params = [sum(p.numel() for p in m.net_.encoder.encoder.parameters()) for m in (child, small_model)]
    assert params[0] < 0.4 * params[1]
    assert child.stages_["student"]["history"] and "train_student" in child.timings_


def test_save_load_gives_identical_probabilities(distilled, tmp_path):
    child, _ = distilled
    child.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["fitted"]["structure_"] == child.structure_
    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    saved = {k.split(".")[4] for k in tensors if k.startswith("net.encoder.encoder.layer.")}
    assert saved == {"0", "1"}  # every block of the student, not only the top `unfrozen_` ones
    again = TextClassifier.load(tmp_path / "m")
    texts = held_out()[0]
    np.testing.assert_allclose(again.predict_proba(texts), child.predict_proba(texts), atol=1e-6)
    assert again.net_.n_layers == 2 and again.compression_["method"] == "distill"


def test_student_predicts_held_out_news_far_above_chance(distilled):
    child, _ = distilled
    texts, labels = held_out()
    accuracy = np.mean(np.array(child.predict(texts)) == np.array(labels))
    assert accuracy >= 0.7, f"held-out accuracy {accuracy} (chance 0.2)"


def test_onnx_export_matches_torch(distilled, tmp_path):
    child, _ = distilled
    report = child.export_onnx(tmp_path / "onnx", int8=False)
    assert report["max_abs_diff_logits"] < 1e-4 and report["max_abs_diff_proba"] < 1e-4


def test_parent_is_unchanged(distilled, small_model, tmp_path):
    _, (state, proba) = distilled
    after = snapshot(small_model)
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    np.testing.assert_array_equal(small_model.predict_proba(held_out()[0]), proba)
    assert small_model.structure_ is None and not hasattr(small_model, "compression_")
    small_model.save(tmp_path / "p")  # a model as fitted writes no structure
    assert "structure_" not in json.loads((tmp_path / "p" / "model.json").read_text())["fitted"]


def test_settings_are_checked_before_any_training(small_model, tmp_path):
    data = bbc_sample(per_class=4)
    with pytest.raises(ConfigError, match="'layers'"):
        get_compressor("distill", layers=0).compress(small_model, data, get_task("text-classification"))
    with pytest.raises(ConfigError, match="at most 6"):
        get_compressor("distill", layers=7).compress(small_model, data, get_task("text-classification"))
    with pytest.raises(DataError, match="does not exist"):
        get_compressor("distill", unlabeled=str(tmp_path / "none.txt")).compress(
            small_model, data, get_task("text-classification")
        )


def test_loss_is_soft_kl_plus_cross_entropy_on_labelled_rows_only():
    soft = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    y = torch.tensor([0, distill.IGNORE])
    logits = soft.log() * 2.0  # the student equals the teachers at T = 2
    index = torch.arange(2)
    assert distill.distill_loss(soft, y, 2.0, 1.0)(logits, index) == pytest.approx(0.0, abs=1e-6)
    ce = torch.nn.functional.cross_entropy(logits[:1], y[:1])
    assert distill.distill_loss(soft, y, 2.0, 0.0)(logits, index) == pytest.approx(float(ce))
    assert distill.pick_layers(6, 2) == [2, 5] and distill.pick_layers(12, 4) == [2, 5, 8, 11]
