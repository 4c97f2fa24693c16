"""Serving's own LoRA layers answer as peft does, and an int8 base keeps the model's answers."""

from __future__ import annotations

import pytest
import torch

from aimass.llm import lora
from aimass.llm.backbone import get_llm_backbone, load_tokenizer
from aimass.llm.hub import LORA_TARGETS, Hub


@pytest.fixture(scope="module")
def peft_model():
    """SmolLM2 under peft with a random (non-zero) adapter, as a fit leaves it."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    torch.manual_seed(0)
    _, model = get_llm_backbone("smollm2-135m").load()
    settings = {"r": 8, "lora_alpha": 16, "target_modules": list(LORA_TARGETS), "init_lora_weights": False}
    model = get_peft_model(model, LoraConfig(**settings), adapter_name="default").eval()
    state = get_peft_model_state_dict(model, adapter_name="default")
    return model, settings, state


TEXT = (
    "The central bank raised interest rates by a quarter of a point on Thursday, saying inflation was "
    "still too high and the economy was growing faster than expected. Shares fell in London as traders"
)


@pytest.fixture(scope="module")
def ids():
    tokenizer = load_tokenizer(get_llm_backbone("smollm2-135m"))
    return tokenizer(TEXT, return_tensors="pt")["input_ids"]


def test_the_served_layers_give_peft_s_logits_exactly(peft_model, ids, monkeypatch):
    model, settings, state = peft_model
    monkeypatch.delenv("AIMASS_LLM_QUANT", raising=False)
    base = Hub().base("smollm2-135m")
    base.attach("mine", settings, state)
    with torch.inference_mode():
        want = model(ids).logits
        with model.disable_adapter():
            want_base = model(ids).logits
        with base.using("mine") as served:
            got = served(ids).logits
        with base.using(None) as served:
            got_base = served(ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=0) and torch.allclose(
        got_base, want_base, atol=1e-5, rtol=0
    )
    assert not torch.allclose(got, got_base, atol=1e-2)  # the adapter does change the answer
    base.detach("mine")
    with torch.inference_mode(), base.using("mine") as served:  # gone: the base alone answers
        assert torch.allclose(served(ids).logits, want_base, atol=1e-5, rtol=0)


def test_an_int8_base_keeps_most_next_tokens_and_applies_adapters(peft_model, ids, monkeypatch):
    model, settings, state = peft_model
    monkeypatch.setenv("AIMASS_LLM_QUANT", "int8")
    base = Hub().base("smollm2-135m")
    assert base.quant == "int8"
    assert isinstance(base.model.lm_head, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(base.model.model.layers[0].mlp.down_proj.base, torch.nn.Linear)  # kept in fp32
    base.attach("mine", settings, state)
    with torch.inference_mode():
        with model.disable_adapter():
            fp32 = model(ids).logits[0]
        with base.using(None) as served:
            int8 = served(ids).logits[0]
        with base.using("mine") as served:
            tuned = served(ids).logits[0]
    agree = (fp32.argmax(-1) == int8.argmax(-1)).float().mean().item()
    assert agree >= 0.7, agree  # the greedy next token at most positions (0.81 measured; 0.4 with down_proj)
    assert torch.nn.functional.cosine_similarity(fp32, int8, dim=-1).min() > 0.75
    assert not torch.allclose(tuned, int8, atol=1e-2)


def test_a_bad_quant_setting_and_a_foreign_adapter_are_clear_errors(monkeypatch):
    from aimass.errors import ConfigError

    monkeypatch.setenv("AIMASS_LLM_QUANT", "int3")
    with pytest.raises(ConfigError, match="AIMASS_LLM_QUANT"):
        Hub().base("smollm2-135m")
    layer_model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="takes no LoRA"):
        lora.load(
            layer_model,
            "x",
            {"r": 2},
            {"0.lora_A.weight": torch.zeros(2, 4), "0.lora_B.weight": torch.zeros(4, 2)},
        )
