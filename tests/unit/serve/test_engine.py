"""The serving engine over real HTTP on loopback: swaps, canaries, failures, back-pressure, metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import live_server

from aimass import api
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.serve.batching import BatchSettings

ADMIN = {"Authorization": f"Bearer {auth.admin_token()}"}
TEXTS = ["The striker scored twice as United won the cup final.", "Parliament voted on the budget bill."]


@pytest.fixture(scope="module")
def versions(small_model):
    first = api.register(small_model, "engine-news")
    second = api.register(small_model, "engine-news")
    return first.ref, second.ref


@pytest.fixture(scope="module")
def url(versions):
    with live_server(create_app([versions[0]], BatchSettings(max_queue=8), open_predict=True)) as base:
        yield base


def predict(base: str, name: str = "engine-news", **kwargs) -> httpx.Response:
    return httpx.post(f"{base}/v1/models/{name}/predict", json={"inputs": TEXTS}, timeout=60, **kwargs)


def test_swap_under_steady_load_drops_nothing(url, versions):
    first, second = versions
    statuses, served, stop = [], set(), threading.Event()

    def load():
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                r = c.post(f"{url}/v1/models/engine-news/predict", json={"inputs": TEXTS})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    served.add(r.json()["model"])

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    deployed = httpx.post(f"{url}/v1/services", json={"model": second}, headers=ADMIN, timeout=120)
    time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join(60)
    assert deployed.status_code == 200, deployed.text
    assert [v["ref"] for v in deployed.json()["versions"]] == [second]
    assert statuses and set(statuses) == {200}
    assert served == {first, second}
    kinds = [
        e["kind"] for e in httpx.get(f"{url}/v1/services/engine-news/events", headers=ADMIN).json()["events"]
    ]
    for kind in ("created", "loading", "warmed", "ready", "swapped", "draining", "stopped"):
        assert kind in kinds


def test_canary_split_then_full_traffic(url, versions):
    first, second = versions
    canary = httpx.post(
        f"{url}/v1/services", json={"model": first, "weight": 30}, headers=ADMIN, timeout=120
    ).json()
    assert {v["ref"]: v["weight"] for v in canary["versions"]} == {second: 70, first: 30}
    seen = {predict(url).json()["model"] for _ in range(40)}
    assert seen == {first, second}
    assert predict(url, f"engine-news:{first.split(':')[1]}").json()["model"] == first
    again = httpx.post(
        f"{url}/v1/services", json={"model": first, "weight": 50}, headers=ADMIN, timeout=60
    ).json()
    assert {v["ref"]: v["weight"] for v in again["versions"]} == {
        second: 50,
        first: 50,
    }  # re-weighted, not reloaded
    done = httpx.put(f"{url}/v1/services/engine-news/traffic", json={second: 100}, headers=ADMIN).json()
    assert [v["ref"] for v in done["versions"]] == [second]


def test_a_version_that_fails_to_load_never_takes_traffic(url, versions, small_model):
    broken = api.register(small_model, "engine-news")
    for weights in Path(broken.path).glob("*.safetensors"):
        weights.unlink()
    answer = httpx.post(f"{url}/v1/services", json={"model": broken.ref}, headers=ADMIN, timeout=120)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "deploy_failed" and broken.ref in error["message"] and error["hint"]
    events = httpx.get(f"{url}/v1/services/engine-news/events", headers=ADMIN).json()["events"]
    last = [e for e in events if e["ref"] == broken.ref][-1]  # (a version retired before may log after)
    assert last["kind"] == "failed" and "still serving" in last["message"] and last["hint"]
    assert predict(url).json()["model"] == versions[1]


def test_200_simultaneous_requests_against_a_queue_of_8_get_200_or_429(url):
    async def burst():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
            calls = [c.post("/v1/models/engine-news/predict", json={"inputs": TEXTS * 4}) for _ in range(200)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(asyncio.wait_for(burst(), 120))
    codes = [r.status_code for r in responses]
    assert len(codes) == 200 and set(codes) <= {200, 429}
    assert 200 in codes and 429 in codes
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1 and "queue is full" in refused.json()["error"]["message"]


def test_metrics_request_ids_and_limits(url):
    answer = predict(url, headers={"X-Request-ID": "req-42"})
    # the server's own id (what the audit log and errors name: no caller can file rows under
    # another request's), and the client's echoed beside it
    assert answer.headers["X-Client-Request-Id"] == "req-42" and answer.headers["X-Request-ID"] != "req-42"
    assert httpx.get(f"{url}/metrics").status_code == 401  # its series name every service
    text = httpx.get(f"{url}/metrics", headers=ADMIN).text
    for name in (
        "aimass_request_seconds_bucket",
        "aimass_batch_size_bucket",
        "aimass_queue_depth",
        'aimass_responses_total{status="200"}',
    ):
        assert name in text
    big = httpx.post(
        f"{url}/v1/models/engine-news/predict",
        content=b"x" * (20 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert big.status_code == 413 and "limit" in big.json()["error"]["message"]
    assert httpx.get(f"{url}/livez").status_code == 200


def test_undeploy_stops_the_service(versions, small_model):
    with live_server(create_app([versions[1]], open_predict=True)) as base:
        assert predict(base).status_code == 200
        assert (
            httpx.delete(f"{base}/v1/services/engine-news", headers=ADMIN, timeout=60).json()["state"]
            == "stopped"
        )
        gone = predict(base)
        assert gone.status_code == 404
        kinds = [
            e["kind"]
            for e in httpx.get(f"{base}/v1/services/engine-news/events", headers=ADMIN).json()["events"]
        ]
        assert kinds[-1] == "stopped"


def test_sigkill_of_a_worker_under_load_fails_fast_and_restarts(versions):
    import os
    import signal

    with live_server(create_app([versions[1]], open_predict=True)) as base:
        before = httpx.get(f"{base}/v1/services/engine-news", headers=ADMIN).json()["versions"][0]
        assert before["backend"] == "onnx" and before["onnx_check"]["max_abs_diff_proba"] < 1e-4
        statuses, stop = [], threading.Event()

        def load():
            with httpx.Client(timeout=60) as c:
                while not stop.is_set():
                    statuses.append(
                        c.post(f"{base}/v1/models/engine-news/predict", json={"inputs": TEXTS}).status_code
                    )

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(0.5)
        os.kill(before["worker"]["pid"], signal.SIGKILL)
        time.sleep(2)
        stop.set()
        for w in workers:
            w.join(30)
        assert not any(w.is_alive() for w in workers)  # nothing hung
        assert set(statuses) <= {200, 503} and statuses.count(200) > 10
        after = httpx.get(f"{base}/v1/services/engine-news", headers=ADMIN).json()["versions"][0]
        assert after["worker"]["restarts"] == 1 and after["worker"]["pid"] != before["worker"]["pid"]
        kinds = [
            e["kind"]
            for e in httpx.get(f"{base}/v1/services/engine-news/events", headers=ADMIN).json()["events"]
        ]
        assert kinds[-2:] == ["failed", "ready"]
        assert predict(base).status_code == 200


def test_schemathesis_finds_no_server_error(url, tmp_path):
    """Fuzz every route of the OpenAPI spec through schemathesis' own CLI (deterministic, bounded):
    no 5xx. Ten cases per operation: tests/e2e/test_schemathesis.py fuzzes deeper, with more checks."""
    import shutil
    import subprocess
    import sys

    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    run = subprocess.run(
        [cli, "run", f"{url}/openapi.json", "-c", "not_a_server_error", "-n", "10"]
        + ["--generation-deterministic", "-H", f"Authorization: {ADMIN['Authorization']}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its cache folder
    )
    assert run.returncode == 0, run.stdout[-4000:]
