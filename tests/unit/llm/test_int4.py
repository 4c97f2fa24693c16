"""The int4 runtime (``--llm-quant int4``): built once from the converted SmolLM2, it keeps the
model's answers, and rows of different lengths decoded together answer as each does alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from tests.unit.llm.conftest import bbc_pairs


@pytest.fixture(scope="module")
def int4_base():
    import os

    from aimass.llm.hub import Hub

    previous = os.environ.get("AIMASS_LLM_QUANT")
    os.environ["AIMASS_LLM_QUANT"] = "int4"
    try:
        yield Hub().base("smollm2-135m")
    finally:
        if previous is None:
            os.environ.pop("AIMASS_LLM_QUANT", None)
        else:
            os.environ["AIMASS_LLM_QUANT"] = previous


def _ids(base, text: str, n: int) -> list[int]:
    return base.tokenizer(text, add_special_tokens=False)["input_ids"][:n]


def test_int4_keeps_most_of_fp32_s_next_tokens(int4_base):
    runner, model = int4_base.int4, int4_base.model
    assert runner.session.get_outputs()[0].name == "logits"
    ids = _ids(int4_base, " ".join(a for a, _ in bbc_pairs(3, chars=600)), 160)
    with torch.inference_mode():
        fp32 = model(torch.tensor([ids])).logits[0, 40:].numpy()  # next token after 40..159 tokens
    runner.forward(np.array([ids[:40]]), [0])
    int4 = [runner.forward(np.array([[t]]), [40 + i]) for i, t in enumerate(ids[40:])]
    int4 = np.concatenate(int4)
    agree = float((int4.argmax(-1) == fp32.argmax(-1)).mean())
    cos = (int4 * fp32).sum(-1) / np.linalg.norm(int4, axis=-1) / np.linalg.norm(fp32, axis=-1)
    print("int4 vs fp32: next-token agreement", agree, "median cosine", np.median(cos))
    # the GGUF's own Q4_1/Q8_0 blocks are served (aimass.llm.exact_blocks): only the int8
    # activations differ from fp32 (the builder's own 4-bit rounding agreed on 0.60 of tokens)
    assert agree >= 0.9, agree
    assert np.median(cos) > 0.99, (agree, np.median(cos))
    # the prompt graph (only the last position's logits) answers as the step-by-step one did
    last = runner.forward(np.array([ids[:100]]), [0])[0]
    assert last.argmax() == int4[59].argmax()  # (int8 activations: a 100-row product rounds otherwise)
    assert np.abs(last - int4[59]).max() < 1.5, np.abs(last - int4[59]).max()


def test_rows_of_different_lengths_decode_as_alone_and_survive_compaction(int4_base):
    runner = int4_base.int4
    prompts = [_ids(int4_base, a, n) for (a, _), n in zip(bbc_pairs(3, chars=500), (30, 57, 44))]

    def alone(prompt, steps=6):
        logits = runner.forward(np.array([prompt]), [0], first=0)
        out, length = [int(logits[0].argmax())], len(prompt)
        for _ in range(steps):
            logits = runner.forward(np.array([[out[-1]]]), [length], first=0)
            out.append(int(logits[0].argmax()))
            length += 1
        return out

    expected = [alone(p) for p in prompts]
    lengths, tokens = [], []
    for row, prompt in enumerate(prompts):  # each prompt prefilled into its own row
        tokens.append([int(runner.forward(np.array([prompt]), [0], first=row)[0].argmax())])
        lengths.append(len(prompt))
    live = [0, 1, 2]
    for step in range(6):
        if step == 3:  # the middle sequence leaves: the last row moves up
            runner.keep([0, 2], [lengths[0], lengths[2]])
            live = [0, 2]
        feed = np.array([[tokens[i][-1]] for i in live])
        logits = runner.forward(feed, [lengths[i] for i in live])
        for row, i in enumerate(live):
            tokens[i].append(int(logits[row].argmax()))
            lengths[i] += 1
    assert tokens[0] == expected[0] and tokens[2] == expected[2]
    assert tokens[1] == expected[1][:4]


def test_the_served_int4_base_batches_requests_on_its_own_loop(int4_base):
    from aimass.llm import batcher, decode

    int4_scheduler = batcher.scheduler(int4_base)
    assert isinstance(int4_scheduler, batcher.Int4Scheduler)
    assert not isinstance(batcher.scheduler(int4_base, "not-attached"), batcher.Int4Scheduler)
    questions = ["Name the capital of France.", "List three fruits.", "Why is the sky blue?"]
    prompts = [decode.chat_ids(int4_base.tokenizer, [{"role": "user", "content": q}]) for q in questions]
    params = decode.SamplingParams(max_tokens=24, temperature=0, stop=["\n\n"])
    alone = [int4_scheduler.submit(p, params, None).choices[0].text for p in prompts]
    assert "Paris" in alone[0], alone[0]
    together = [None] * len(prompts)

    def ask(i):
        together[i] = int4_scheduler.submit(prompts[i], params, None).choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    assert int4_scheduler.peak >= 2  # they shared decode steps
    sampled = int4_scheduler.submit(prompts[0], decode.SamplingParams(max_tokens=8, seed=7, n=2), None)
    again = int4_scheduler.submit(prompts[0], decode.SamplingParams(max_tokens=8, seed=7, n=2), None)
    assert [c.text for c in sampled.choices] == [c.text for c in again.choices]  # seeded


def _synthetic_adapter(model, scale: float) -> dict:
    gen, state = torch.Generator().manual_seed(0), {}
    for i in range(model.config.num_hidden_layers):
        for proj in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"):
            name = f"model.layers.{i}.{proj}"
            out_features, in_features = model.get_submodule(name).base.weight.shape
            state[f"base_model.model.{name}.lora_A.weight"] = (
                torch.randn(8, in_features, generator=gen) * scale
            )
            state[f"base_model.model.{name}.lora_B.weight"] = (
                torch.randn(out_features, 8, generator=gen) * scale
            )
    return state


def test_merged_weights_answer_as_the_served_lora(int4_base, tmp_path):
    from transformers import AutoModelForCausalLM

    from aimass.llm import int4, lora

    state = _synthetic_adapter(int4_base.model, 0.05)
    lora.load(int4_base.model, "merge-check", {"r": 8, "lora_alpha": 16}, state)  # no int4 build here
    try:
        int4.write_merged(int4_base.model, int4_base.tokenizer, "merge-check", tmp_path)
        ids = torch.tensor([_ids(int4_base, bbc_pairs(1)[0][0], 40)])
        merged = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
        with torch.inference_mode(), int4_base.using("merge-check") as served:
            expected = served(ids).logits
            got = merged(ids).logits
        with torch.inference_mode(), int4_base.using(None) as served:
            plain = served(ids).logits
        assert torch.allclose(got, expected, atol=1e-3), (got - expected).abs().max()
        assert (expected - plain).abs().max() > 0.5  # the adapter does change the answer
    finally:
        lora.remove(int4_base.model, "merge-check")


def test_a_fine_tune_gets_its_own_int4_graph_with_its_lora_merged(int4_base):
    from aimass.llm import batcher

    int4_base.attach("synthetic", {"r": 8, "lora_alpha": 16}, _synthetic_adapter(int4_base.model, 0.05))
    try:
        runner = int4_base.runner("synthetic")
        assert runner is not None and runner is not int4_base.int4
        assert isinstance(batcher.scheduler(int4_base, "synthetic"), batcher.Int4Scheduler)
        ids = _ids(int4_base, " ".join(a for a, _ in bbc_pairs(2, chars=500)), 80)
        with torch.inference_mode(), int4_base.using("synthetic") as served:
            tuned = served(torch.tensor([ids])).logits[0, 20:].numpy()
        runner.forward(np.array([ids[:20]]), [0])
        merged = np.concatenate([runner.forward(np.array([[t]]), [20 + i]) for i, t in enumerate(ids[20:])])
        int4_base.int4.forward(np.array([ids[:20]]), [0])
        base_int4 = np.concatenate(
            [int4_base.int4.forward(np.array([[t]]), [20 + i]) for i, t in enumerate(ids[20:])]
        )
        agree = float((merged.argmax(-1) == tuned.argmax(-1)).mean())
        assert agree >= 0.6, agree
        assert np.abs(merged - base_int4).max() > 0.5  # its own weights, not the base's graph
    finally:
        int4_base.detach("synthetic")
    assert int4_base.runner("synthetic") is None
