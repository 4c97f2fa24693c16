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


def decode_agreement(reference, model, ids, prompt: int = 8) -> float:
    """Teacher-forced decoding, one token per step as served: how often ``model`` picks the next
    token ``reference`` picks."""
    agree = []
    with torch.inference_mode():
        caches = [None, None]
        for at in range(prompt, ids.shape[1]):
            step = ids[:, :prompt] if at == prompt else ids[:, at - 1 : at]
            picks = []
            for i, m in enumerate((reference, model)):
                out = m(input_ids=step, past_key_values=caches[i], use_cache=True)
                caches[i] = out.past_key_values
                picks.append(int(out.logits[0, -1].argmax()))
            agree.append(picks[0] == picks[1])
    return sum(agree) / len(agree)


def test_an_int8_base_keeps_most_next_tokens_and_applies_adapters(peft_model, ids, monkeypatch):
    model, settings, state = peft_model
    monkeypatch.setenv("AIMASS_LLM_QUANT", "int8")
    base = Hub().base("smollm2-135m")
    assert base.quant == "int8"
    layer = base.model.model.layers[0]
    assert isinstance(base.model.lm_head, lora.Int8Linear)
    assert isinstance(layer.mlp.down_proj.base, lora.Int8Linear)
    assert layer.mlp.down_proj.base.inv_scale is not None  # calibrated (SmoothQuant scales)
    assert isinstance(layer.self_attn.q_proj.base, lora.SharedPart)  # q, k, v: one kernel call
    assert layer.self_attn.v_proj.base.shared is layer.self_attn.q_proj.base.shared
    base.attach("mine", settings, state)
    with torch.inference_mode():
        with model.disable_adapter():
            fp32 = model(ids).logits[0]
        with base.using(None) as served:
            int8 = served(ids).logits[0]  # a prompt: fp32 arithmetic on the int8 weights
        with base.using("mine") as served:
            tuned = served(ids).logits[0]
            want_tuned = model(ids).logits[0]
    prompt_agree = (fp32.argmax(-1) == int8.argmax(-1)).float().mean().item()
    assert prompt_agree >= 0.85, prompt_agree  # 0.95 measured on news text (0.40 with int8 activations)
    assert torch.nn.functional.cosine_similarity(fp32, int8, dim=-1).min() > 0.9
    assert (tuned.argmax(-1) == want_tuned.argmax(-1)).float().mean() >= 0.85  # the adapter applies
    assert not torch.allclose(tuned, int8, atol=1e-2)
    with model.disable_adapter(), base.using(None) as served:
        agree = decode_agreement(model, served, ids)
    assert agree >= 0.7, agree  # int8 activations per step: 0.88 measured on news text


def test_siblings_share_one_int8_call_and_answer_as_their_own_weights():
    torch.manual_seed(0)
    block = torch.nn.Module()
    for name, out in (("q_proj", 6), ("k_proj", 2), ("v_proj", 2), ("o_proj", 4)):
        setattr(block, name, torch.nn.Linear(4, out, bias=name == "k_proj"))
    model = torch.nn.Sequential(block)
    weights = {n: (m.weight.detach().clone(), m.bias) for n, m in block.named_children()}
    assert lora.sibling_groups(["0.q_proj", "0.k_proj", "0.v_proj", "0.o_proj"]) == [
        ("0.q_proj", "0.k_proj", "0.v_proj"),
        ("0.o_proj",),
    ]
    lora.quantize_int8(model)
    x = torch.randn(20, 4)  # over PROMPT_ROWS: the dequantised weights, close to fp32
    for name, (weight, bias) in weights.items():
        got = getattr(block, name)(x)
        want = torch.nn.functional.linear(x, weight, bias)
        assert got.shape == want.shape and torch.allclose(got, want, atol=0.05), name
        one = getattr(block, name)(x[:1])  # a decode row: the int8 kernel
        assert torch.allclose(one, want[:1], atol=0.1), name
    shared = block.q_proj.shared
    assert block.k_proj.shared is shared and isinstance(block.o_proj, lora.Int8Linear)
    steps = torch.randn(20, 1, 4)  # a decode step of 20 sequences: int8 activations, not a prompt
    o_proj = block.o_proj
    prompt_path = torch.nn.functional.linear(steps, o_proj.weight_int8.float()) * o_proj.weight_scale
    got = o_proj(steps)
    assert torch.allclose(got, torch.nn.functional.linear(steps, weights["o_proj"][0]), atol=0.1)
    assert not torch.equal(got, prompt_path)
    assert torch.equal(o_proj(steps.reshape(1, 20, 4)), prompt_path.reshape(1, 20, 4))  # a prompt


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
