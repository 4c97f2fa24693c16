"""A server's life around its models: start-up while they load, a shutdown that runs past its
grace, and what ``serving.json`` keeps of versions that failed to restore."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from tests.conftest import live_server

from aimass import api
from aimass.autolearn.deploy import _deploy
from aimass.autolearn.run import _Run
from aimass.serve import auth
from aimass.serve.app import create_app

# about 64 tokens each: 32 requests of 256 take the small model several seconds, so a grace of 2 s
# ends with requests still waiting on a fast machine too
LONG = "Shares fell sharply after the bank cut its profit forecast for the year, traders said today. "
TEXTS = [f"{LONG * 3} {i}" for i in range(256)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str, Path]:
    """``aimass serve`` as a user starts it (open prediction, no job runner): process, URL, log."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "aimass", "serve", "--port", str(port), "--jobs", "0", "--open-predict"]
    with log.open("w") as out:
        proc = subprocess.Popen([*cmd, *args], env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", log


def probe(url: str) -> tuple[int | None, int | None, str | None]:
    """(/livez status, /readyz status, readiness word), or Nones while nothing listens."""
    try:
        live = httpx.get(f"{url}/livez", timeout=2).status_code
        ready = httpx.get(f"{url}/readyz", timeout=2)
        return live, ready.status_code, ready.json().get("status")
    except httpx.TransportError:
        return None, None, None


def watch_start(proc: subprocess.Popen, url: str, until) -> list[tuple]:
    """Probe every 0.1 s until ``until(probe)``; every probe seen (fails if the server died)."""
    seen, deadline = [], time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        seen.append(probe(url))
        if until(seen[-1]):
            return seen
        time.sleep(0.1)
    pytest.fail(f"the server never got there; it answered {seen[-5:]}")


@pytest.fixture(scope="module")
def versions(small_model) -> list[str]:
    return [api.register(small_model, "life-news").ref for _ in range(2)]


def queued(url: str) -> int:
    """Requests queued or running at the ``life-news`` service now (/metrics)."""
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    for line in httpx.get(f"{url}/metrics", headers=admin, timeout=5).text.splitlines():
        if line.startswith('aimass_queue_depth{model="life-news"}'):
            return int(float(line.split()[-1]))
    return 0


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


# ------------------------------------------------------- 1. past the grace
def test_requests_cut_off_by_the_grace_get_a_json_503_and_the_exit_keeps_to_it(versions, tmp_path):
    proc, url, log = serve(tmp_path, "--grace", "2", "--model", versions[0])
    answers, lock = [], threading.Lock()

    def call():
        try:
            r = httpx.post(f"{url}/v1/models/life-news/predict", json={"inputs": TEXTS}, timeout=60)
            answer = (r.status_code, r.headers.get("content-type", ""), r.text[:300], r.headers)
        except httpx.TransportError as exc:  # a connection cut without an answer
            answer = (type(exc).__name__, "", "", {})
        with lock:
            answers.append(answer)

    try:
        watch_start(proc, url, lambda seen: seen[1] == 200)
        threads = [threading.Thread(target=call) for _ in range(32)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and queued(url) + len(answers) < 32:
            time.sleep(0.05)  # every request has reached the model (or been refused, 429)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        took = time.monotonic() - began
        for t in threads:
            t.join(60)
    finally:
        stop(proc)
    text = log.read_text()
    codes = [a[0] for a in answers]
    assert len(answers) == 32 and set(codes) <= {200, 429, 503}, [a[:3] for a in answers]
    cut = [a for a in answers if a[0] == 503]
    assert cut, codes  # some were still waiting when the grace ran out
    for _, kind, body, headers in cut:  # the documented error, not uvicorn's plain-text 500
        assert kind == "application/json" and json.loads(body)["error"]["code"] == "unavailable", body
        assert headers["retry-after"] == "1"
    assert took < 2 + 2.0, f"exited {took:.1f}s after SIGTERM with --grace 2"  # one budget, not two
    for sign in ("restarting", "died", "BrokenPipeError", "CancelledError", "Traceback"):
        assert sign not in text, text[-3000:]


# --------------------------------------------------- 4. loading in the background
def test_the_server_listens_while_it_loads_and_sigterm_stops_the_loading(versions, tmp_path):
    proc, url, log = serve(tmp_path, "--grace", "5", "--model", versions[0], "--model", versions[1])
    try:
        # before its models are loaded, a liveness probe gets 200 and a readiness probe 503 "loading"
        seen = watch_start(proc, url, lambda seen: seen[0] == 200 or seen[1] == 200)
        assert seen[-1] == (200, 503, "loading"), seen[-1]
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # while the first version loads
        proc.wait(30)
        took = time.monotonic() - began
    finally:
        stop(proc)
    text = log.read_text()
    assert took < 4, f"exited {took:.1f}s after SIGTERM"  # not after loading everything
    assert f"{versions[1]} loaded" not in text and "Traceback" not in text, text[-3000:]


def test_auto_deploy_waits_for_a_server_still_loading_instead_of_starting_a_second(
    versions, tmp_path, monkeypatch
):
    """``aimass auto --deploy`` against a server that listens but still loads its models (``/readyz``
    503 ``loading``) deploys into it once ready: a second server on the same port exits at once."""
    proc, url, log = serve(tmp_path, "--model", versions[0], "--model", versions[1])
    monkeypatch.setenv("AIMASS_SERVER", url)
    try:
        seen = watch_start(proc, url, lambda seen: seen[0] == 200 or seen[1] == 200)
        assert seen[-1] == (200, 503, "loading"), seen[-1]
        run = _Run(60.0, None, False, 0, 30.0)
        tuner = SimpleNamespace(task="text-classification")
        test_rows = SimpleNamespace(inputs=lambda split: ["Shares fell after the bank cut its forecast."])
        served = _deploy(run, "life-news", versions[1], tuner, test_rows)
    finally:
        stop(proc)
    assert "error" not in served, served
    assert served["started_pid"] is None and served["prediction"]  # the running server answered


# ---------------------------------------- 2, 3. versions that failed to restore
@pytest.fixture(scope="module")
def restore_home(small_model, tmp_path_factory) -> SimpleNamespace:
    """A home of its own with three versions of one model (``keep-news``)."""
    home = tmp_path_factory.mktemp("restore") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIMASS_HOME", str(home))
        refs = [api.register(small_model, "keep-news") for _ in range(3)]
    return SimpleNamespace(home=home, refs=[r.ref for r in refs], paths=[Path(r.path) for r in refs])


def saved_state(home: Path, services: dict) -> None:
    torch = {"backend": "torch"}  # no ONNX export: the tests are about the split, not the backend
    state = {
        name: [{"ref": ref, "weight": weight, "settings": torch} for ref, weight in versions]
        for name, versions in services.items()
    }
    (home / "serving.json").write_text(json.dumps({"version": 1, "services": state}))


def split(base: str, name: str, admin: dict) -> dict:
    versions = httpx.get(f"{base}/v1/services/{name}", headers=admin).json()["versions"]
    return {v["ref"]: v["weight"] for v in versions}


def test_a_partial_restore_splits_the_traffic_in_whole_percentages_adding_up_to_100(
    restore_home, monkeypatch
):
    monkeypatch.setenv("AIMASS_HOME", str(restore_home.home))
    v1, v2, v3 = restore_home.refs
    saved_state(restore_home.home, {"keep-news": [(v1, 10), (v2, 10), (v3, 10), ("keep-news:99", 70)]})
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    with live_server(create_app()) as base:
        weights = split(base, "keep-news", admin)
        assert sum(weights.values()) == 100 and sorted(weights.values()) == [33, 33, 34], weights
        again = httpx.put(f"{base}/v1/services/keep-news/traffic", json=weights, headers=admin)
        assert again.status_code == 200, again.text  # what it shows can be sent back as it is
        events = httpx.get(f"{base}/v1/services/keep-news/events", headers=admin).json()["events"]
    failed = next(e for e in events if e["kind"] == "failed")
    assert "keep-news:99" in failed["message"] and ".;" not in failed["message"], failed


def test_a_version_that_failed_to_restore_stays_saved_until_the_operator_changes_it(
    restore_home, monkeypatch
):
    monkeypatch.setenv("AIMASS_HOME", str(restore_home.home))
    v1, _, v3 = restore_home.refs
    weights = restore_home.paths[2] / "model.safetensors"
    intact = weights.read_bytes()
    saved_state(
        restore_home.home,
        {"keep-news": [(v1, 80), (v3, 20)], "keep-other": [(v3, 100)], "keep-gone": [("keep-news:99", 100)]},
    )
    path = restore_home.home / "serving.json"
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    try:
        weights.write_bytes(intact[:1000])  # damaged while the server was down
        with live_server(create_app()) as base:
            assert split(base, "keep-news", admin) == {v1: 100}
            other = httpx.get(f"{base}/v1/services/keep-other", headers=admin).json()
            assert other["state"] == "failed" and other["versions"] == []
            gone = httpx.post(f"{base}/v1/models/keep-gone/predict", json={"inputs": ["x"]}, headers=admin)
            assert gone.status_code == 503 and "keep-news:99" in gone.json()["error"]["message"]
            # an unrelated change: new settings for the version that did load
            body = {"model": v1, "settings": {"backend": "torch", "max_batch_size": 16}}
            changed = httpx.post(f"{base}/v1/services", json=body, headers=admin, timeout=60)
            assert changed.status_code == 200, changed.text
            assert changed.json()["on_restart"] == f"{v1} (80%), {v3} (20%)"
            state = json.loads(path.read_text())["services"]
            assert [(v["ref"], v["weight"]) for v in state["keep-news"]] == [(v1, 80), (v3, 20)]
            assert state["keep-news"][0]["settings"]["max_batch_size"] == 16
            assert [(v["ref"], v["weight"]) for v in state["keep-other"]] == [(v3, 100)]
            assert [v["ref"] for v in state["keep-gone"]] == ["keep-news:99"]
            # undeploying a service is the operator's word on it: its saved entries go
            assert httpx.delete(f"{base}/v1/services/keep-gone", headers=admin).status_code == 200
            assert "keep-gone" not in json.loads(path.read_text())["services"]
        weights.write_bytes(intact)  # the files are back: a restart serves what was saved
        with live_server(create_app()) as base:
            assert split(base, "keep-news", admin) == {v1: 80, v3: 20}
            assert split(base, "keep-other", admin) == {v3: 100}
    finally:
        weights.write_bytes(intact)
