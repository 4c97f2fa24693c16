"""A language-model fine-tune exported for llama.cpp: does the fine-tune survive the merge?

One run, 1 thread everywhere, nothing from a hub:

* a LoRA fine-tune of SmolLM2 on BBC article -> headline pairs (``--train`` pairs, ``--steps`` steps
  of 8; the held-out ``--test`` pairs from pair 1,000 on, as ``bench/generation.py``);
* exported as ``gguf`` (merged projections q8_0), ``gguf-f16`` and ``safetensors``: seconds, size,
  and the export's own check (loaded back by transformers, teacher-forced next-token agreement);
* greedy headlines for the test pairs from aimass (the adapter on its base) and, with
  ``--llama-python``, from llama.cpp (llama-cpp-python's ``create_chat_completion``, the GGUF's own
  chat template) on each exported GGUF and on the shipped base GGUF: ROUGE-L against the real
  headlines, how many answers equal aimass's word for word, and llama.cpp's decode tokens/s.

Bars: llama.cpp on the q8_0 export scores within 0.02 ROUGE-L of aimass and above the base GGUF (the
fine-tune is carried over); its answers equal aimass's on at least 80% of the prompts.

llama.cpp is a source build (~8.5 min), kept out of aimass's environment:

    python3 -m venv /work/venv-llama
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
      -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF" /work/venv-llama/bin/pip install --no-cache-dir \
      'llama-cpp-python==0.3.36'

(a cached native build from another machine segfaulted in ``llama_decode`` on the shipped base GGUF
itself on 2026-12-05; the portable AVX2 build above runs it.)
    python bench/llm_export.py --llama-python /work/venv-llama/bin/python       # ~6 min on 2 cores

Writes ``bench/results/llm_export.json``; exits 0 whatever the bars say (a report).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AIMASS_HOME", tempfile.mkdtemp(prefix="aimass-llm-export-"))

from aimass.exporters import write_folder  # noqa: E402
from aimass.llm.backbone import gguf_path  # noqa: E402
from aimass.llm.metrics import rouge_l  # noqa: E402
from aimass.tasks.text_generation import SYSTEM_HEADLINE, TextGenerator, headline_pairs  # noqa: E402

RESULTS = Path(__file__).parent / "results"
LLAMA_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
job = json.load(sys.stdin)
llm = Llama(model_path=job["model"], n_threads=1, n_threads_batch=1, n_ctx=1024, verbose=False, seed=0)
answers, tokens, seconds = [], 0, 0.0
for messages in job["messages"]:
    began = time.perf_counter()
    out = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=job["max_tokens"])
    seconds += time.perf_counter() - began
    tokens += out["usage"]["completion_tokens"]
    answers.append(out["choices"][0]["message"]["content"])
print(json.dumps({"answers": answers, "tokens": tokens, "seconds": seconds}))
"""


def conversations(prompts, answers=None):
    rows = []
    for i, prompt in enumerate(prompts):
        row = [{"role": "system", "content": SYSTEM_HEADLINE}, {"role": "user", "content": prompt}]
        if answers is not None:
            row.append({"role": "assistant", "content": answers[i]})
        rows.append(row)
    return rows


def llama(python: str, model: Path, messages, max_tokens: int) -> dict:
    job = json.dumps({"model": str(model), "messages": messages, "max_tokens": max_tokens})
    ran = subprocess.run(
        [python, "-c", LLAMA_SCRIPT], input=job, capture_output=True, text=True, timeout=1800, check=False
    )
    if ran.returncode != 0:
        raise SystemExit(f"llama.cpp failed on {model.name}:\n{ran.stderr[-3000:]}")
    return json.loads(ran.stdout.strip().splitlines()[-1])


def score(answers, references, ours=None) -> dict:
    row = {"rouge_l": round(rouge_l(answers, references), 4)}
    if ours is not None:
        row["same_as_aimass"] = sum(a.strip() == b.strip() for a, b in zip(answers, ours))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--test", type=int, default=24)
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--llama-python", help="the python of a venv with llama-cpp-python")
    parser.add_argument("--output", default="llm_export.json")
    args = parser.parse_args()

    prompts, answers = headline_pairs(args.train, chars=args.chars)
    test_prompts, references = headline_pairs(args.test, chars=args.chars, skip=1000)
    began = time.perf_counter()
    model = TextGenerator(
        max_steps=args.steps, batch_size=8, max_length=160, max_new_tokens=args.max_tokens, threads=1, seed=0
    ).fit(conversations(prompts, answers), progress=False)
    trained = time.perf_counter() - began
    messages = conversations(test_prompts)
    began = time.perf_counter()
    ours = [model.generate(m, max_tokens=args.max_tokens).choices[0].text.strip() for m in messages]
    ours_s = time.perf_counter() - began
    base = [
        model.generate(m, max_tokens=args.max_tokens, base=True).choices[0].text.strip() for m in messages
    ]
    rows = {
        "aimass fine-tune (adapter on its base, fp32)": score(ours, references)
        | {"seconds": round(ours_s, 1)},
        "aimass base model": score(base, references),
    }
    exports, work = {}, Path(tempfile.mkdtemp(prefix="llm-export-"))
    for fmt in ("gguf", "gguf-f16", "safetensors"):
        began = time.perf_counter()
        manifest = write_folder(model, fmt, work / fmt)
        check = {k: v for k, v in manifest["check"].items() if k != "answers"}
        exports[fmt] = {
            "seconds": round(time.perf_counter() - began, 1),
            "mb": round(sum(manifest["files"].values()) / 1e6, 1),
            "check": check,
        }
        print(fmt, exports[fmt], flush=True)
    if args.llama_python:
        for label, path in (
            ("llama.cpp, gguf export (q8_0 projections)", work / "gguf/model.gguf"),
            ("llama.cpp, gguf-f16 export", work / "gguf-f16/model.gguf"),
            ("llama.cpp, shipped base GGUF (Q4_1)", gguf_path()),
        ):
            got = llama(args.llama_python, path, messages, args.max_tokens)
            answers_cpp = [a.strip() for a in got["answers"]]
            rows[label] = score(answers_cpp, references, ours) | {
                "decode_tok_s": round(got["tokens"] / max(got["seconds"], 1e-9), 1),
                "examples": list(zip(test_prompts[:3], answers_cpp[:3])),
            }
            print(label, {k: v for k, v in rows[label].items() if k != "examples"}, flush=True)
    bars = []
    q8 = rows.get("llama.cpp, gguf export (q8_0 projections)")
    if q8 is None:
        bars.append({"bar": "the llama.cpp bars", "pass": False, "note": "not measured (no --llama-python)"})
    else:
        ft, cpp_base = (
            rows["aimass fine-tune (adapter on its base, fp32)"],
            rows["llama.cpp, shipped base GGUF (Q4_1)"],
        )
        bars += [
            {
                "bar": "llama.cpp on the q8_0 export: ROUGE-L >= aimass's - 0.02",
                "value": [q8["rouge_l"], ft["rouge_l"]],
                "pass": q8["rouge_l"] >= ft["rouge_l"] - 0.02,
            },
            {
                "bar": "llama.cpp on the q8_0 export beats the base GGUF",
                "value": [q8["rouge_l"], cpp_base["rouge_l"]],
                "pass": q8["rouge_l"] > cpp_base["rouge_l"],
            },
            {
                "bar": "answers equal aimass's on >= 80% of prompts",
                "value": f"{q8['same_as_aimass']}/{len(references)}",
                "pass": q8["same_as_aimass"] >= 0.8 * len(references),
            },
        ]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": vars(args) | {"train_seconds": round(trained, 1)},
        "rows": rows,
        "exports": exports,
        "bars": bars,
        "examples": list(zip(test_prompts[:3], references[:3], ours[:3])),
    }
    for name, row in rows.items():
        print(f"{name:48s} {json.dumps({k: v for k, v in row.items() if k != 'examples'})}")
    for bar in bars:
        print(("PASS " if bar["pass"] else "FAIL ") + bar["bar"], bar.get("value", bar.get("note")))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print("wrote", RESULTS / args.output)
    sys.exit(0)


if __name__ == "__main__":
    main()
