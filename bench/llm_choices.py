"""``n`` choices and constrained decoding: what one request costs the shared decode loop.

Two measurements on the bundled SmolLM2-135M, in fp32, on the loop every stream shares
(:class:`aimass.llm.batcher.Scheduler`):

* ``n`` choices: one request with ``n=8`` against the same request with ``n=1`` (the peer, in the
  same run): a 1,500-token prompt, 4 tokens each. The prompt is prefilled once and its 8 choices
  share that KV cache (vLLM's parallel sampling), so ``n=8`` should cost about one prefill, not
  eight (before: 41.5 s against 5.4 s);
* a counted repetition, ``guided_regex: (a{1000}){1000}``: the time its constraint takes to build
  (the request's own thread, before any work) and its first token mask (on the decode loop, where
  every stream waits for it), against ``[a-z]{1,5}`` built the same way.

Usage::

    python bench/llm_choices.py [--tokens 1500]

Prints a table and writes ``bench/results/llm_choices.json``. Bars: ``n=8`` within 1.5x ``n=1``'s
time; the counted repetition's first mask on the decode loop under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "llm_choices.json"
TEXT = "The committee met on Tuesday to discuss the budget for the coming year and agreed to raise spending. "


def choices(base, tokens: int) -> dict:
    from aimass.llm import batcher, decode

    ids = decode.text_ids(base.tokenizer, TEXT * (tokens // 15 + 1))[:tokens]
    loop = batcher.Scheduler(base, 8)
    rows = {}
    for n in (1, 8):
        params = decode.SamplingParams(max_tokens=4, temperature=1.0, seed=1, n=n)
        began, prefills = time.perf_counter(), getattr(loop, "prefills", 0)  # (an older checkout: none)
        out = loop.submit(ids, params, None)
        rows[f"n={n}"] = {
            "seconds": round(time.perf_counter() - began, 2),
            "first_token_s": round(out.first_token_s, 2),
            "prefills": getattr(loop, "prefills", -1) - prefills,
            "choices": len(out.choices),
        }
    rows["ratio"] = round(rows["n=8"]["seconds"] / rows["n=1"]["seconds"], 2)
    rows["prompt_tokens"] = len(ids)
    return rows


def constraints(base) -> dict:
    from aimass.llm import decode, structured

    eos = decode.eos_ids(base.model, base.tokenizer)
    rows = {}
    for pattern in ("[a-z]{1,5}", "(a{1000}){1000}"):
        began = time.perf_counter()
        make = structured.regex(base.tokenizer, eos, pattern)
        built = time.perf_counter()
        make().allowed(10)  # what the decode loop computes before the first token
        rows[pattern] = {
            "build_s": round(built - began, 3),
            "first_mask_on_loop_s": round(time.perf_counter() - built, 4),
        }
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1500)
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    os.environ.setdefault("AIMASS_HOME", tempfile.mkdtemp(prefix="aimass-bench-"))
    from aimass.llm import decode
    from aimass.llm.hub import Hub

    decode.set_threads()
    base = Hub().base("smollm2-135m")
    picked = choices(base, args.tokens)
    masks = constraints(base)
    print(f"prompt of {picked['prompt_tokens']} tokens, 4 tokens a choice")
    for n in ("n=1", "n=8"):
        row = picked[n]
        first, prefills = row["first_token_s"], row["prefills"]
        print(f"  {n}: {row['seconds']:6.2f} s, first token {first:.2f} s, {prefills} prefill(s)")
    print(f"  n=8 / n=1: {picked['ratio']}x")
    for pattern, row in masks.items():
        built, first = row["build_s"], row["first_mask_on_loop_s"]
        print(f"  {pattern:18} built in {built:.3f} s; first mask on the loop {first:.4f} s")
    counted = masks["(a{1000}){1000}"]["first_mask_on_loop_s"]
    bars = [
        {"bar": "n=8 within 1.5x n=1's time", "value": picked["ratio"], "pass": picked["ratio"] <= 1.5},
        {
            "bar": "a counted repetition's first mask on the loop under 50 ms",
            "value": counted,
            "pass": counted < 0.05,
        },
    ]
    for bar in bars:
        print(f"{'PASS' if bar['pass'] else 'FAIL'}  {bar['bar']}: {bar['value']}")
    result = {
        "bench": "llm_choices",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "choices": picked,
        "constraints": masks,
        "bars": bars,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
