"""LLM serving bench (issue 23): aimass's OpenAI-compatible server against llama.cpp's own server and
a bare FastAPI + transformers ``generate`` server, on the same SmolLM2-135M-Instruct (the bundled
Q4_1 GGUF; aimass and transformers run its weights dequantised to fp32), the same prompts and one
thread each, in one run, over HTTP with the official ``openai`` client.

Measured per system: one stream's decode tok/s (token chunks after the first, over their time),
time to first token for a ~200-token prompt (median of 3 different articles), then 8 concurrent
requests' total completion tok/s. Greedy, at most 64 new tokens.

llama.cpp's server is a source build (~8.5 min), kept out of aimass's environment:

    python3 -m venv .venv-llama && .venv-llama/bin/pip install 'llama-cpp-python[server]==0.3.36'
    python bench/llm_serving.py --llama-python .venv-llama/bin/python     # ~6 minutes on 2 cores

Without ``--llama-python`` the llama.cpp peer is skipped and its bars say "not measured".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from serving import free_port, start, stop  # noqa: E402  (the serving bench's process helpers)

RESULTS = HERE / "results" / "llm_serving.json"
NEW = 64
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


def long_prompts(n: int = 3, tokens: int = 200) -> list[str]:
    """``n`` different BBC articles, each cut to about ``tokens`` tokens of SmolLM2's tokenizer, then
    a question. Different texts: llama.cpp reuses the cached prefix of the previous prompt, so the
    same prompt twice would time a cache hit, not a prefill."""
    from aimass.data import bbc_news_path, bbc_news_text
    from aimass.llm.backbone import get_llm_backbone, load_tokenizer

    tok = load_tokenizer(get_llm_backbone("smollm2-135m"))
    out = []
    for path in sorted((bbc_news_path() / "business").glob("*.txt"))[:n]:
        text = " ".join(bbc_news_text(path).split())
        ids = tok(text, add_special_tokens=False)["input_ids"][: tokens - 12]
        out.append(tok.decode(ids) + "\n\nWhat is this article about?")
    return out


def fine_tune(work: Path) -> str:
    """A LoRA fine-tune of a few steps, registered: what `aimass serve` serves; its base answers as
    ``smollm2-135m`` (the model every system here is asked for)."""
    import aimass
    from aimass.data import bbc_news_path, bbc_news_text

    lines = []
    for path in sorted((bbc_news_path() / "tech").glob("*.txt"))[:16]:
        headline, _, body = bbc_news_text(path).strip().partition("\n")
        messages = [
            {"role": "user", "content": " ".join(body.split())[:200]},
            {"role": "assistant", "content": headline},
        ]
        lines.append(json.dumps({"messages": messages}))
    data = work / "pairs.jsonl"
    data.write_text("\n".join(lines) + "\n")
    ds = aimass.import_dataset(data, name="bench-gen")
    params = {"max_steps": 2, "batch_size": 4, "max_length": 96, "max_new_tokens": 8, "eval_examples": 1}
    return aimass.train_model("text-generation", ds, name="bench-gen", progress=False, seed=0, **params)[
        "model"
    ]


def systems(args, env: dict, key: str) -> dict[str, dict]:
    from aimass.llm.backbone import gguf_path

    py, port = sys.executable, {k: free_port() for k in ("aimass", "int8", "int4", "llama", "hf")}

    def aimass(name: str, *flags: str) -> dict:
        cmd = [py, "-m", "aimass", "serve", "--port", str(port[name]), "--model", "bench-gen", "--jobs", "0"]
        return {
            "cmd": cmd + list(flags),
            "health": f"http://127.0.0.1:{port[name]}/readyz",
            "base": f"http://127.0.0.1:{port[name]}/v1",
            "key": key,
            "model": "smollm2-135m",
            "stream": True,
        }

    found = {
        "aimass": aimass("aimass"),
        "aimass --llm-quant int8": aimass("int8", "--llm-quant", "int8"),
        "aimass --llm-quant int4": aimass("int4", "--llm-quant", "int4"),
        "transformers generate (bare FastAPI)": {
            "cmd": [py, str(HERE / "peers" / "hf_generate.py"), str(port["hf"])],
            "health": f"http://127.0.0.1:{port['hf']}/health",
            "base": f"http://127.0.0.1:{port['hf']}/v1",
            "key": "none",
            "model": "smollm2-135m",
            "stream": False,
        },
    }
    if args.llama_python:
        found["llama.cpp server"] = {
            "cmd": [
                args.llama_python,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf_path()),
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
                "--n_ctx",
                "2048",
                "--host",
                "127.0.0.1",
                "--port",
                str(port["llama"]),
            ],  # fmt: skip
            "health": f"http://127.0.0.1:{port['llama']}/v1/models",
            "base": f"http://127.0.0.1:{port['llama']}/v1",
            "key": "none",
            "model": "smollm2",
            "stream": True,
        }
    return found


def ask(client, model: str, prompt: str, max_tokens: int = NEW):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0
    )


def streamed(client, model: str, prompt: str, max_tokens: int) -> tuple[float, list[float]]:
    """(time to the first content chunk, the arrival time of every content chunk)."""
    began = time.perf_counter()
    arrivals = []
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - began)
    return (arrivals[0] if arrivals else float("nan")), arrivals


def measure(spec: dict, prompts_200: list[str]) -> dict:
    import openai

    client = openai.OpenAI(base_url=spec["base"], api_key=spec["key"], max_retries=0, timeout=600)
    model = spec["model"]
    ask(client, model, PROMPTS[0], 4)  # warm
    out: dict = {}
    began = time.perf_counter()
    answer = ask(client, model, PROMPTS[1])
    out["single_request_tok_s"] = answer.usage.completion_tokens / (time.perf_counter() - began)
    if spec["stream"]:
        _, arrivals = streamed(client, model, PROMPTS[1], NEW)
        out["decode_tok_s"] = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        out["decode_chunks"] = len(arrivals)
        out["ttft_200_s"] = statistics.median(streamed(client, model, p, 1)[0] for p in prompts_200)
    answers = [None] * len(PROMPTS)

    def one(i: int) -> None:
        answers[i] = ask(client, model, PROMPTS[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS))]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    tokens = sum(a.usage.completion_tokens for a in answers)
    out.update(streams_8_tok_s=tokens / seconds, streams_8_tokens=tokens, streams_8_s=seconds)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def bars(rows: dict) -> list[dict]:
    hf, cpp = rows["transformers generate (bare FastAPI)"], rows.get("llama.cpp server")
    checks = []
    for name in ("aimass", "aimass --llm-quant int8", "aimass --llm-quant int4"):
        me = rows[name]
        checks += [
            (
                f"{name}: 8 streams >= 2 x its single stream",
                me["streams_8_tok_s"] / me["decode_tok_s"],
                ">=",
                2.0,
            ),
            (
                f"{name}: 8 streams >= 5 x transformers generate",
                me["streams_8_tok_s"] / hf["streams_8_tok_s"],
                ">=",
                5,
            ),
        ]
        if cpp:
            checks += [
                (
                    f"{name}: single-stream decode >= 0.8 x llama.cpp",
                    me["decode_tok_s"] / cpp["decode_tok_s"],
                    ">=",
                    0.8,
                ),
                (
                    f"{name}: TTFT (200-token prompt) <= 1.2 x llama.cpp",
                    me["ttft_200_s"] / cpp["ttft_200_s"],
                    "<=",
                    1.2,
                ),
                (
                    f"{name}: 8 streams >= 1.5 x llama.cpp",
                    me["streams_8_tok_s"] / cpp["streams_8_tok_s"],
                    ">=",
                    1.5,
                ),
            ]
    out = [
        {"bar": name, "value": round(v, 3), "pass": v <= limit if op == "<=" else v >= limit}
        for name, v, op, limit in checks
    ]
    if not cpp:
        out.append({"bar": "the llama.cpp bars", "value": None, "pass": False, "note": "not measured"})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llama-python", help="the python of a venv with llama-cpp-python[server]")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aimass-llm-bench-"))
    os.environ["AIMASS_HOME"] = str(work / "home")
    env = {**os.environ, "AIMASS_LLM_THREADS": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        from aimass.serve import auth

        began = time.perf_counter()
        ref = fine_tune(work)
        print(f"fine-tuned {ref} in {time.perf_counter() - began:.0f} s", flush=True)
        _, key = auth.create_key("bench", ["predict"])
        prompts_200 = long_prompts()
        rows = {}
        for name, spec in systems(args, env, key).items():
            proc = start(spec["cmd"], spec["health"], env)
            try:
                rows[name] = measure(spec, prompts_200)
            finally:
                stop(proc)
            print(f"{name:38s} {json.dumps(rows[name])}", flush=True)
        results = {"threads": 1, "max_new_tokens": NEW, "rows": rows, "bars": bars(rows)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    for bar in results["bars"]:
        print(f"{'PASS' if bar['pass'] else 'FAIL'}  {bar['bar']}: {bar['value']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%S"), **results}, indent=2))
    return 0 if all(b["pass"] for b in results["bars"]) else 1


if __name__ == "__main__":
    sys.exit(main())
