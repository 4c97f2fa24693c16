"""Batch API bench: a file of chat requests answered by ``aimass batch`` (a job that answers every
line with the chat route's own code, 16 in flight, by continuous batching) against the live server
asked by an ``openai`` client script, one request at a time and 16 at a time, in one run, on the
same registered fine-tune, the same requests and the same threads.

What a user gains from a batch over a loop of client calls: wall time for all the answers (the
batch's includes its process, its worker's start and the model's load, also reported apart), and
the same answers (greedy decoding: each batch line must equal the sequential answer).

    python bench/batches.py            # ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from llm_serving import fine_tune  # noqa: E402  (the LLM bench's small registered fine-tune)
from serving import free_port, start, stop  # noqa: E402

RESULTS = HERE / "results" / "batches.json"
NEW = 24


def requests(n: int, model: str) -> list[dict]:
    """``n`` chat requests: BBC article openings (other topics than the fine-tune's), greedy."""
    from aimass.data import bbc_news_path, bbc_news_text

    paths = sorted((bbc_news_path() / "business").glob("*.txt"))[:n]
    return [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": " ".join(bbc_news_text(p).split())[:300]}],
                "max_tokens": NEW,
                "temperature": 0,
            },
        }
        for i, p in enumerate(paths)
    ]


def by_client(base: str, key: str, lines: list[dict], workers: int) -> tuple[float, dict[str, str]]:
    """Seconds for ``workers`` client threads to ask every request, and the answers."""
    import openai

    client = openai.OpenAI(base_url=base, api_key=key, max_retries=5, timeout=600)

    def one(line: dict) -> tuple[str, str]:
        answer = client.chat.completions.create(**line["body"])
        return line["custom_id"], answer.choices[0].message.content

    began = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        answers = dict(pool.map(one, lines))
    return time.perf_counter() - began, answers


def by_batch(path: Path, env: dict) -> tuple[float, dict[str, str], dict]:
    """Seconds for ``aimass batch`` (a new process, its job's worker, the model's load, every
    answer), the answers, and the job."""
    out = path.with_name("answers.jsonl")
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "aimass", "batch", str(path), "-o", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - began
    job = json.loads(done.stdout[done.stdout.index("{") :])
    answers = {}
    for raw in out.read_text().splitlines():
        line = json.loads(raw)
        assert line["response"]["status_code"] == 200, line
        answers[line["custom_id"]] = line["response"]["body"]["choices"][0]["message"]["content"]
    return seconds, answers, job


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aimass-batch-bench-"))
    os.environ["AIMASS_HOME"] = str(work / "home")
    env = {**os.environ, "AIMASS_LLM_THREADS": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        from aimass.serve import auth

        ref = fine_tune(work)
        lines = requests(args.requests, ref)
        path = work / "requests.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        _, key = auth.create_key("bench", ["predict"])
        port = free_port()
        cmd = [sys.executable, "-m", "aimass", "serve", "--port", str(port), "--model", ref, "--jobs", "0"]
        proc = start(cmd, f"http://127.0.0.1:{port}/readyz", env)
        try:
            base = f"http://127.0.0.1:{port}/v1"
            one_s, one = by_client(base, key, lines, 1)
            print(f"client, one at a time: {one_s:.1f} s", flush=True)
            many_s, many = by_client(base, key, lines, 16)
            print(f"client, 16 at a time:  {many_s:.1f} s", flush=True)
        finally:
            stop(proc)
        batch_s, batch, job = by_batch(path, env)
        print(f"aimass batch:          {batch_s:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    same = sum(batch[k] == one[k] for k in one)
    rows = {
        "requests": len(lines),
        "max_tokens": NEW,
        "client_one_at_a_time_s": round(one_s, 1),
        "client_16_at_a_time_s": round(many_s, 1),
        "aimass_batch_s": round(batch_s, 1),
        "aimass_batch_load_s": job["result"]["seconds"]["load"],
        "aimass_batch_answer_s": job["result"]["seconds"]["answer"],
        "batch_attempts": job["attempt"],
        "answers_equal_to_sequential": f"{same}/{len(one)}",
        "answers_equal_16_vs_sequential": f"{sum(many[k] == one[k] for k in one)}/{len(one)}",
    }
    bars = [
        {
            "bar": "aimass batch takes less wall time than a client asking one at a time (ratio)",
            "value": round(batch_s / one_s, 3),
            "pass": batch_s < one_s,
        },
        {
            "bar": "the batch's answering within 1.1x of 16 client threads on a warm server (ratio)",
            "value": round(job["result"]["seconds"]["answer"] / many_s, 3),
            "pass": job["result"]["seconds"]["answer"] <= 1.1 * many_s,
        },
        {
            "bar": "every batch answer equals the sequential answer",
            "value": rows["answers_equal_to_sequential"],
            "pass": same == len(one),
        },
    ]
    for bar in bars:
        print(f"{'PASS' if bar['pass'] else 'FAIL'}  {bar['bar']}: {bar['value']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    results = {"generated": time.strftime("%Y-%m-%dT%H:%M:%S"), "threads": 1, "rows": rows, "bars": bars}
    args.output.write_text(json.dumps(results, indent=2))
    return 0 if all(b["pass"] for b in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
