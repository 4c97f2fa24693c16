"""``prune``: attention heads and FFN channels removed from every layer of the small BBC model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from tests.conftest import bbc_held_out, bbc_sample, weights_snapshot
from transformers import BertConfig, BertModel

from aimass.compressors import get_compressor, prune, structure
from aimass.tasks import get_task
from aimass.tasks.text_classification import TextClassifier

held_out, snapshot = bbc_held_out, weights_snapshot


@pytest.fixture(scope="module")
def pruned(small_model):
    before = snapshot(small_model), small_model.predict_proba(held_out()[0])
    method = get_compressor("prune", heads=0.5, ffn=0.5, epochs=1, time_budget=60)
    child = method.mark(method.compress(small_model, bbc_sample(), get_task("text-classification")), "news:1")
    return child, before


def test_every_layer_loses_half_its_heads_and_channels(pruned, small_model):
    child, _ = pruned
    shape = structure.describe(child.net_.encoder)
    assert shape == {"layers": 6, "heads": [6] * 6, "ffn": [768] * 6}
    assert [len(h) for h in child.structure_["heads"]] == [6] * 6
    params = [sum(p.numel() for p in m.net_.encoder.encoder.parameters()) for m in (child, small_model)]
    assert params[0] < 0.55 * params[1]


def test_save_load_gives_identical_probabilities(pruned, tmp_path):
    child, _ = pruned
    child.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["fitted"]["structure_"] == child.structure_
    again = TextClassifier.load(tmp_path / "m")
    assert structure.describe(again.net_.encoder) == structure.describe(child.net_.encoder)
    texts = held_out()[0]
    np.testing.assert_allclose(again.predict_proba(texts), child.predict_proba(texts), atol=1e-6)
    assert again.compression_["method"] == "prune"


def test_pruned_model_predicts_held_out_news_far_above_chance(pruned):
    child, _ = pruned
    texts, labels = held_out()
    accuracy = np.mean(np.array(child.predict(texts)) == np.array(labels))
    assert accuracy >= 0.7, f"held-out accuracy {accuracy} (chance 0.2)"


def test_onnx_export_matches_torch(pruned, tmp_path):
    child, _ = pruned
    report = child.export_onnx(tmp_path / "onnx", int8=False)
    assert report["max_abs_diff_logits"] < 1e-4 and report["max_abs_diff_proba"] < 1e-4


def test_parent_is_unchanged(pruned, small_model):
    _, (state, proba) = pruned
    after = snapshot(small_model)
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    np.testing.assert_array_equal(small_model.predict_proba(held_out()[0]), proba)
    assert structure.describe(small_model.net_.encoder)["heads"] == [12] * 6


def test_structure_rebuilds_a_pruned_encoder_from_its_backbone():
    config = BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    original = BertModel(copy.deepcopy(config), add_pooling_layer=False).eval()
    cut = BertModel(copy.deepcopy(config), add_pooling_layer=False).eval()  # keep_layers edits its config
    cut.load_state_dict(original.state_dict())
    structure.keep_layers(cut, [0, 2])
    structure.prune_heads(cut.encoder.layer[0], [1, 3])
    structure.prune_heads(cut.encoder.layer[0], [0])  # backbone numbering, after an earlier cut
    structure.keep_channels(cut.encoder.layer[1], torch.tensor([3, 5, 60]))
    shape = {"layers": [0, 2], "heads": [[0, 1, 3], []], "ffn": [64, 3]}
    fresh = BertModel(copy.deepcopy(config), add_pooling_layer=False).eval()
    structure.apply(fresh, shape)
    fresh.load_state_dict(cut.state_dict())
    ids = torch.tensor([[1, 5, 9, 2]])
    assert torch.allclose(fresh(input_ids=ids).last_hidden_state, cut(input_ids=ids).last_hidden_state)
    assert structure.describe(fresh) == {"layers": 2, "heads": [1, 4], "ffn": [64, 3]}
    assert prune._channels_kept(1536, 0.5) == 768 and prune._channels_kept(1536, 0.0) == 1536
    assert prune._least(torch.tensor([3.0, 1.0, 2.0]), 5) == [1, 2]  # one head always stays


def test_safetensors_export_of_a_pruned_model_runs_in_its_own_predict_py(pruned, tmp_path):
    """The exported folder's ``predict.py`` rebuilds the encoder from config.json, which knows neither
    the removed heads nor the narrower feed-forward layers: it reshapes to the saved weights."""
    from aimass.exporters.folder import write_folder

    child, _ = pruned
    manifest = write_folder(child, "safetensors", tmp_path / "st", "news:2")
    assert json.loads((tmp_path / "st" / "preprocessing.json").read_text())["structure"] == child.structure_
    assert manifest["check"]["predict_py_max_abs_diff_proba"] < 1e-4, manifest["check"]
