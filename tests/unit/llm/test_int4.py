"""The int4 runtime (``--llm-quant int4``): built once from the converted SmolLM2, it keeps the
model's answers, and rows of different lengths decoded together answer as each does alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from tests.unit.llm.conftest import bbc_pairs

from aimass.llm import decode


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
    before = int4_scheduler.prefills
    sampled = int4_scheduler.submit(prompts[0], decode.SamplingParams(max_tokens=8, seed=7, n=2), None)
    assert int4_scheduler.prefills == before + 1  # both choices start from one prefilled row
    again = int4_scheduler.submit(prompts[0], decode.SamplingParams(max_tokens=8, seed=7, n=2), None)
    assert [c.text for c in sampled.choices] == [c.text for c in again.choices]  # seeded


def test_a_shared_prompt_start_is_copied_not_computed_and_answers_the_same(int4_base):
    runner = int4_base.int4
    head = decode_prompt(int4_base, "Name the capital of France.")
    other = decode_prompt(int4_base, "List three fruits.")
    runner.prefixes.entries.clear()
    runner.prefixes.tokens = 0
    fresh = runner.forward(np.array([other]), [0], first=2)[0]
    fresh_kv = runner.kv[:, :, 2, :, : len(other)].copy()
    runner.prefill(head, 0)  # cached: it shares the template's system prompt with `other`
    before = runner.prefixes.reused
    reused = runner.prefill(other, 1)
    shared = runner.prefixes.reused - before
    assert shared >= 20, shared  # the system prompt and the user turn's opening
    assert np.array_equal(reused, fresh)  # bit for bit: chunked prefill is exact
    assert np.array_equal(runner.kv[:, :, 1, :, : len(other)], fresh_kv)


def test_without_batching_int4_still_decodes_one_request_at_a_time(int4_base, monkeypatch):
    from aimass.llm import batcher

    key = (id(int4_base), "int4")
    shared = batcher._SCHEDULERS.pop(key, None)
    monkeypatch.setenv("AIMASS_LLM_BATCHING", "0")
    try:
        serial = batcher.scheduler(int4_base)
        assert isinstance(serial, batcher.Int4Scheduler) and serial.max_batch == 1
        prompts = [decode_prompt(int4_base, q) for q in ("Name the capital of France.", "Why do cats purr?")]
        params = decode.SamplingParams(max_tokens=6, temperature=0)
        answers = [None, None]

        def ask(i):
            answers[i] = serial.submit(prompts[i], params, None).choices[0].text

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert serial.peak == 1  # never two sequences in one step
        assert answers == [serial.submit(p, params, None).choices[0].text for p in prompts]
    finally:
        batcher._SCHEDULERS.pop(key, None)
        if shared is not None:
            batcher._SCHEDULERS[key] = shared


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


def _stepwise(runner, ids: list[int], adapter=None) -> np.ndarray:
    runner.forward(np.array([ids[:20]]), [0], adapters=[adapter])
    steps = [runner.forward(np.array([[t]]), [20 + i], adapters=[adapter]) for i, t in enumerate(ids[20:])]
    return np.concatenate(steps)


def test_fine_tunes_run_on_the_one_base_graph_through_lora_inputs(int4_base):
    from aimass.llm import batcher

    runner = int4_base.int4
    ids = _ids(int4_base, " ".join(a for a, _ in bbc_pairs(2, chars=500)), 80)
    base_alone = _stepwise(runner, ids)
    # q, v and down only: k's share of the packed QKV projection gets no LoRA
    int4_base.attach("synthetic", {"r": 8, "lora_alpha": 16}, _synthetic_adapter(int4_base.model, 0.05))
    try:
        assert int4_base.int4 is runner and "synthetic" in runner.adapters  # no graph of its own
        assert any(i.name.startswith("lora.") for i in runner.session.get_inputs())
        assert batcher.scheduler(int4_base, "synthetic") is batcher.scheduler(int4_base)
        with torch.inference_mode(), int4_base.using("synthetic") as served:
            tuned = served(torch.tensor([ids])).logits[0, 20:].numpy()
        served_int4 = _stepwise(runner, ids, "synthetic")
        agree = float((served_int4.argmax(-1) == tuned.argmax(-1)).mean())
        print("int4 + LoRA inputs vs fp32 LoRA: next-token agreement", agree)
        assert agree >= 0.9, agree  # exact base blocks, fp32 LoRA: only the int8 activations differ
        assert np.abs(served_int4 - base_alone).max() > 0.5  # the adapter does change the answer
        assert np.array_equal(_stepwise(runner, ids), base_alone)  # the base's rows add zeros
        # a base row and a fine-tune row in one step answer as each does alone
        alone_rows = []
        for length, adapter in ((20, None), (30, "synthetic")):
            runner.forward(np.array([ids[:length]]), [0], adapters=[adapter])
            alone_rows.append(runner.forward(np.array([[ids[length]]]), [length], adapters=[adapter])[0])
        runner.forward(np.array([ids[:20]]), [0], first=0, adapters=[None])
        runner.forward(np.array([ids[:30]]), [0], first=1, adapters=["synthetic"])
        both = runner.forward(np.array([[ids[20]], [ids[30]]]), [20, 30], adapters=[None, "synthetic"])
        assert np.abs(both - np.stack(alone_rows)).max() < 1e-3
        # and through the scheduler: one loop, mixed steps, the same answers as alone
        scheduler = batcher.scheduler(int4_base)
        prompt = decode_prompt(int4_base, "Write a headline about football.")
        params = decode.SamplingParams(max_tokens=12, temperature=0)
        alone = [scheduler.submit(prompt, params, a).choices[0].text for a in (None, "synthetic")]
        assert alone[0] != alone[1]
        together = [None, None]
        mixed_before = scheduler.mixed_steps

        def ask(i, adapter):
            together[i] = scheduler.submit(prompt, params, adapter).choices[0].text

        threads = [threading.Thread(target=ask, args=(i, a)) for i, a in enumerate((None, "synthetic"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert together == alone
        assert scheduler.mixed_steps > mixed_before
    finally:
        int4_base.detach("synthetic")
    assert "synthetic" not in runner.adapters
    assert not isinstance(batcher.scheduler(int4_base, "synthetic"), batcher.Int4Scheduler)


def decode_prompt(base, text: str) -> list[int]:
    return decode.chat_ids(base.tokenizer, [{"role": "user", "content": text}])
