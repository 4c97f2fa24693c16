"""Decode throughput of aimass's continuous batcher on SmolLM2-135M (first slice of issue 23's bench).

Measures, with 1 torch thread: one stream's decode tok/s and time to first token, 8 concurrent streams'
total tok/s (greedy, 64 new tokens, the same prompts), and transformers' own ``generate`` at batch 1 as
the baseline. The llama.cpp server peer of issue 23 is not measured yet (llama-cpp-python is not
installed: an 8.5-minute source build).

    python bench/llm_serving.py
"""

from __future__ import annotations

import json
import threading
import time

import torch

from aimass.llm import batcher, decode
from aimass.llm.hub import HUB

PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short story about a lighthouse keeper.",
    "List five tips for learning a new language.",
    "Describe how a bicycle works.",
    "What are the main causes of inflation?",
    "Give me a recipe for a simple tomato soup.",
    "Summarise the plot of Romeo and Juliet.",
    "Why do cats purr?",
]
NEW = 64


def main() -> dict:
    decode.set_threads(1)
    base = HUB.base("smollm2-135m")
    tok = base.tokenizer
    ids = [decode.chat_ids(tok, [{"role": "user", "content": p}]) for p in PROMPTS]
    params = decode.SamplingParams(max_tokens=NEW, temperature=0.0)
    sched = batcher.scheduler(base)
    sched.submit(ids[0], decode.SamplingParams(max_tokens=4), None)  # warm
    out = sched.submit(ids[0], params, None)
    single = {"tok_s": round(out.completion_tokens / out.seconds, 2), "ttft_s": round(out.first_token_s, 3)}
    results, threads = [None] * 8, []
    began = time.perf_counter()
    for i in range(8):
        t = threading.Thread(target=lambda i=i: results.__setitem__(i, sched.submit(ids[i], params, None)))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    total = sum(r.completion_tokens for r in results)
    eight = {"total_tok_s": round(total / seconds, 2), "tokens": total, "peak_batch": sched.peak}
    with torch.inference_mode(), base.using(None) as model:
        x = torch.tensor([ids[0]])
        began = time.perf_counter()
        y = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False
        )
        hf = (y.shape[1] - x.shape[1]) / (time.perf_counter() - began)
    report = {
        "threads": torch.get_num_threads(),
        "aimass_single": single,
        "aimass_8_streams": eight,
        "transformers_generate_batch1_tok_s": round(hf, 2),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
