"""Chunked prefill: how long a running stream waits while a long prompt joins the batch.

On the bundled SmolLM2-135M, fp32, on the loop every stream shares
(:class:`aimass.llm.batcher.Scheduler`): a stream decodes 80 tokens; once it has 4, a request with a
long prompt (3,000 tokens by default, 1 token to answer) is submitted. Measured for the stream:
its largest gap between two tokens, and for the long request its time to the first token. Once
with the prompt prefilled a chunk (256 tokens) at a time between the batch's decode steps, and once
with the whole prompt in one forward pass (the peer, ``chunk 0``, in the same run). An audit saw a
17.4 s gap with a 3,900-token prompt before chunking.

Usage::

    python bench/llm_prefill.py [--tokens 3000] [--chunk 256]

Prints a table and writes ``bench/results/llm_prefill.json``. Bars: the stream's largest gap with
chunking under a quarter of the unchunked one; the long request's first token at most 1.5x later.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "llm_prefill.json"
TEXT = "The committee met on Tuesday to discuss the budget for the coming year and agreed to raise spending. "


def run(base, chunk: int, tokens: int) -> dict:
    from aimass.llm import batcher, decode

    loop = batcher.Scheduler(base, 8)
    loop.chunk = chunk
    long_ids = decode.text_ids(base.tokenizer, TEXT * (tokens // 15 + 1))[:tokens]
    story = decode.text_ids(base.tokenizer, "Write a very long story about a dragon.")
    stamps: list[float] = []
    done = {}

    def on_delta(index, text, reason, entries):
        stamps.append(time.perf_counter())

    def stream():
        params = decode.SamplingParams(max_tokens=80, temperature=2.0, seed=0)
        done["stream"] = loop.submit(story, params, None, on_delta=on_delta)

    worker = threading.Thread(target=stream)
    worker.start()
    while len(stamps) < 4:
        time.sleep(0.005)
    out = loop.submit(long_ids, decode.SamplingParams(max_tokens=1, temperature=0.0), None)
    worker.join()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {
        "chunk": chunk,
        "prompt_tokens": len(long_ids),
        "stream_max_gap_s": round(max(gaps), 3),
        "stream_median_gap_s": round(sorted(gaps)[len(gaps) // 2], 3),
        "long_first_token_s": round(out.first_token_s, 2),
        "stream_tokens": done["stream"].completion_tokens,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    os.environ.setdefault("AIMASS_HOME", tempfile.mkdtemp(prefix="aimass-bench-"))
    from aimass.llm import decode
    from aimass.llm.hub import Hub

    decode.set_threads()
    base = Hub().base("smollm2-135m")
    rows = {"chunked": run(base, args.chunk, args.tokens), "whole": run(base, 0, args.tokens)}
    print(f"a stream decoding while a {rows['whole']['prompt_tokens']}-token prompt joins")
    for name, row in rows.items():
        gap, median, first = row["stream_max_gap_s"], row["stream_median_gap_s"], row["long_first_token_s"]
        print(
            f"  {name:8} (chunk {row['chunk']:4}): stream's largest gap {gap:6.2f} s "
            f"(median {median:.3f} s); long prompt's first token {first:.2f} s"
        )
    gap = rows["chunked"]["stream_max_gap_s"] / rows["whole"]["stream_max_gap_s"]
    later = rows["chunked"]["long_first_token_s"] / rows["whole"]["long_first_token_s"]
    bars = [
        {
            "bar": "the stream's largest gap, chunked / whole, under 0.25",
            "value": round(gap, 3),
            "pass": gap < 0.25,
        },
        {
            "bar": "the long prompt's first token, chunked / whole, at most 1.5",
            "value": round(later, 2),
            "pass": later <= 1.5,
        },
    ]
    for bar in bars:
        print(f"{'PASS' if bar['pass'] else 'FAIL'}  {bar['bar']}: {bar['value']}")
    result = {
        "bench": "llm_prefill",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": rows,
        "bars": bars,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
