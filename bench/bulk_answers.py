"""Bulk answers of a language model: ``TextGenerator.predict`` against decoding one prompt at a time
and against transformers' own batched ``generate``.

``predict`` is what ``aimass predict MODEL --file``, the ``predict`` job, the console's *Answer the
file* and every evaluation (ROUGE-L on the test split) run. One run, 1 torch thread, nothing from a
hub: a LoRA fine-tune of SmolLM2-135M (``--steps`` steps on BBC article -> headline pairs), then
``--prompts`` held-out articles (from pair 1,000 on) answered greedily, ``max_new_tokens`` 32, by:

* ``one at a time``: ``model.generate(prompt)`` per prompt (what ``predict`` did before);
* ``aimass predict``: :func:`aimass.llm.decode.generate_batch`, 8 prompts side by side;
* ``transformers generate``: the peer a careful engineer writes: the same 8-prompt length-sorted
  batches, left-padded, ``model.generate(do_sample=False)`` with the model's end-of-text ids.

Reported: seconds, answers/s, answer tokens/s, and how many answers equal the one-at-a-time ones.
Bars: ``predict`` >= 2x one at a time; ``predict`` >= 0.9x transformers' batched ``generate``.

    python bench/bulk_answers.py [--prompts 48] [--steps 4]

Writes ``bench/results/bulk_answers.json``; exits 0 whatever the bars say.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from aimass.llm import decode  # noqa: E402
from aimass.tasks.text_generation import PREDICT_BATCH, SYSTEM_HEADLINE, TextGenerator, headline_pairs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bulk_answers.json"
TEST_FROM = 1000


def chats(articles: list[str], answers: list[str] | None = None) -> list[list[dict]]:
    out = []
    for i, article in enumerate(articles):
        chat = [{"role": "system", "content": SYSTEM_HEADLINE}, {"role": "user", "content": article}]
        out.append(chat + ([{"role": "assistant", "content": answers[i]}] if answers else []))
    return out


def transformers_generate(model: TextGenerator, prompts: list[list[dict]]) -> list[str]:
    """The peer: transformers' ``generate`` on the same length-sorted batches, left-padded."""
    tokenizer = model.base_.tokenizer
    ids = [decode.chat_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [""] * len(ids)
    for start in range(0, len(order), PREDICT_BATCH):
        rows = order[start : start + PREDICT_BATCH]
        width = max(len(ids[i]) for i in rows)
        x = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids[i])) + ids[i] for i in rows])
        mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in rows])
        with torch.inference_mode(), model.base_.using(model.adapter_) as net:
            y = net.generate(
                input_ids=x,
                attention_mask=mask,
                max_new_tokens=model.max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(decode.eos_ids(net, tokenizer)),
                pad_token_id=tokenizer.pad_token_id,
            )
        for i, row in zip(rows, y[:, width:].tolist(), strict=True):
            out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return out


def timed(fn, tokenizer) -> dict:
    began = time.perf_counter()
    answers = fn()
    seconds = time.perf_counter() - began
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return {"answers": answers, "seconds": round(seconds, 2), "tokens": tokens}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--chars", type=int, default=300)
    args = parser.parse_args(argv)

    articles, headlines = headline_pairs(32, chars=args.chars)
    params = {"max_steps": args.steps, "batch_size": 4, "max_length": 160, "max_new_tokens": 32, "threads": 1}
    model = TextGenerator(**params, seed=0, eval_examples=1).fit(chats(articles, headlines), progress=False)
    test, _ = headline_pairs(args.prompts, chars=args.chars, skip=TEST_FROM)
    prompts = chats(test)
    tokenizer = model.base_.tokenizer
    model.predict(prompts[:2])  # warm: the first call builds what later ones reuse

    runs = {
        "one at a time": timed(
            lambda: [model.generate(p).choices[0].text.strip() for p in prompts], tokenizer
        ),
        "aimass predict": timed(lambda: model.predict(prompts), tokenizer),
        "transformers generate": timed(lambda: transformers_generate(model, prompts), tokenizer),
    }
    alone = runs["one at a time"]["answers"]
    rows = {}
    for name, run in runs.items():
        rows[name] = {
            "seconds": run["seconds"],
            "answers/s": round(len(prompts) / run["seconds"], 2),
            "answer tokens/s": round(run["tokens"] / run["seconds"], 1),
            "equal to one at a time": sum(a == b for a, b in zip(run["answers"], alone, strict=True)),
        }
    speedup = runs["one at a time"]["seconds"] / runs["aimass predict"]["seconds"]
    vs_peer = runs["transformers generate"]["seconds"] / runs["aimass predict"]["seconds"]
    bars = [
        {"bar": f"predict >= 2x one at a time (measured {speedup:.2f}x)", "pass": speedup >= 2.0},
        {"bar": f"predict >= 0.9x transformers generate (measured {vs_peer:.2f}x)", "pass": vs_peer >= 0.9},
    ]
    report = {
        "bench": "bulk_answers",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()},
        "settings": {**vars(args), **params, "batch": PREDICT_BATCH},
        "rows": rows,
        "bars": bars,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{len(prompts)} prompts, max_new_tokens 32, 1 thread, batch {PREDICT_BATCH}")
    for name, row in rows.items():
        print(f"  {name:24} {row}")
    for bar in bars:
        print(("PASS " if bar["pass"] else "FAIL ") + bar["bar"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
