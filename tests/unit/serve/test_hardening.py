"""Hostile and careless requests to a real server on loopback: each probe of issue 21 that the
server layer answers (bad strings, unbounded bodies, untyped settings, error shape, restarts)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from tests.conftest import live_server

from aimass import api
from aimass.serve import auth
from aimass.serve.app import create_app

TEXT = "The striker scored twice as United won the cup final."


@pytest.fixture(scope="module")
def srv(small_model):
    first = api.register(small_model, "hard-news")
    second = api.register(small_model, "hard-news")
    _, predict_key = auth.create_key("hard-p", ["predict"])
    _, manage_key = auth.create_key("hard-m", ["manage"])
    with live_server(create_app([first.ref])) as base:
        yield SimpleNamespace(
            base=base,
            first=first.ref,
            second=second.ref,
            pk={"Authorization": f"Bearer {predict_key}"},
            mk={"Authorization": f"Bearer {manage_key}"},
        )


def predict(srv, body, **kwargs) -> httpx.Response:
    return httpx.post(
        f"{srv.base}/v1/models/hard-news/predict", json=body, headers=srv.pk, timeout=60, **kwargs
    )


def assert_error_shape(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "hint", "request_id", "type", "param"}  # + OpenAI's type, param
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# ------------------------------------------------------------ 1. bad strings
def test_a_lone_surrogate_is_a_422_at_once_and_innocent_requests_still_pass(srv):
    raw = b'{"inputs": ["fine text", "\\ud800 broken"]}'
    statuses, stop = [], threading.Event()

    def innocent():
        while not stop.is_set():
            statuses.append(predict(srv, {"inputs": [TEXT]}).status_code)

    thread = threading.Thread(target=innocent)
    thread.start()
    try:
        for _ in range(5):
            began = time.monotonic()
            response = httpx.post(
                f"{srv.base}/v1/models/hard-news/predict",
                content=raw,
                headers={**srv.pk, "content-type": "application/json"},
                timeout=60,
            )
            assert time.monotonic() - began < 5  # was 10 s: the engine waited on a live worker
            error = assert_error_shape(response, 422)
            assert "inputs[1]" in error["message"] and "surrogate" in error["message"]
    finally:
        stop.set()
        thread.join()
    assert statuses and set(statuses) == {200}


def test_a_frame_that_cannot_be_encoded_is_not_a_worker_death(small_model, tmp_path):
    from aimass.serve.worker import Worker

    small_model.export_onnx(tmp_path)
    events = []
    worker = Worker("aimass.runtime.text:TextRuntime", tmp_path, on_event=lambda *e: events.append(e))
    worker.start()
    try:
        pid = worker.proc.pid
        with pytest.raises(ValueError):
            worker.run(["ok", "\ud800"])
        assert worker.proc.pid == pid and worker.proc.poll() is None and not events
        assert worker.run([TEXT]).shape[0] == 1  # the same process answers the next batch
    finally:
        worker.close()


# ------------------------------------------------------- 3. bounded bodies
def answer_before_the_end(srv, path: str, headers: dict, chunks: int, size: int = 1024 * 1024) -> int:
    """Send a chunked body of ``chunks`` chunks but never its end, then read the answer: a server
    that waits for the whole body (to parse it, or to check the key after) never answers."""
    host, port = srv.base.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Transfer-Encoding: chunked"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for _ in range(chunks):
            try:
                sock.sendall(f"{size:x}\r\n".encode() + b"a" * size + b"\r\n")
            except OSError:  # the server answered and closed: stop sending
                break
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1])


def test_no_key_no_body_read(srv):
    headers = {"Authorization": "Bearer am_nope_nope", "Content-Type": "application/json"}
    assert answer_before_the_end(srv, "/v1/keys", headers, chunks=1) == 401


def test_chunked_bodies_are_capped_on_the_stream(srv):
    headers = {**srv.mk, "Content-Type": "application/json"}
    assert answer_before_the_end(srv, "/v1/keys", headers, chunks=3) == 413  # 1 MB for management
    headers = {**srv.pk, "Content-Type": "application/json"}
    assert answer_before_the_end(srv, "/v1/models/hard-news/predict", headers, chunks=4) == 413  # 2 MB
    headers = {**srv.pk, "Content-Type": "multipart/form-data; boundary=xyz"}  # documents: 16 MiB
    assert answer_before_the_end(srv, "/v1/models/hard-news/predict", headers, chunks=18) == 413
    assert predict(srv, {"inputs": [TEXT]}).status_code == 200


# ---------------------------------------------------------- 5. typed settings
@pytest.mark.parametrize(
    "settings",
    [{"max_queue": "abc"}, {"max_wait_ms": "x"}, {"timeout_s": -1}, {"max_batch_size": True}, {"nope": 1}],
)
def test_invalid_settings_are_422_and_the_old_version_keeps_serving(srv, settings):
    response = httpx.post(
        f"{srv.base}/v1/services",
        json={"model": srv.second, "settings": settings},
        headers=srv.mk,
        timeout=60,
    )
    error = assert_error_shape(response, 422)
    assert "settings" in error["message"]
    answer = predict(srv, {"inputs": [TEXT]})
    assert answer.status_code == 200 and answer.json()["model"] == srv.first


def test_new_settings_for_a_deployed_version_apply(srv):
    body = {"model": srv.first, "settings": {"max_batch_size": 4, "timeout_s": 12.5}}
    response = httpx.post(f"{srv.base}/v1/services", json=body, headers=srv.mk, timeout=60)
    assert response.status_code == 200, response.text
    version = response.json()["versions"][0]
    assert version["settings"]["max_batch_size"] == 4 and version["settings"]["timeout_s"] == 12.5
    assert predict(srv, {"inputs": [TEXT] * 9}).status_code == 200  # three batches of at most 4


# --------------------------------------------------------- 7. one error shape
@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/v1/nothing-here", {}, 404),
        ("POST", "/v1/services", {"json": {"nomodel": 1}}, 422),
        (
            "POST",
            "/v1/services",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
        ),
        ("POST", "/v1/services", {"json": {"model": "hard-news:999999999999999999999"}}, 422),
        (
            "POST",
            "/v1/keys",
            {"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"content-type": "application/json"}},
            400,
        ),
        ("PUT", "/v1/services/hard-news/traffic", {"json": {"x": True}}, 422),
    ],
)
def test_management_errors_have_one_shape(srv, method, path, kwargs, status):
    headers = {**srv.mk, **kwargs.pop("headers", {})}
    assert_error_shape(httpx.request(method, srv.base + path, headers=headers, timeout=60, **kwargs), status)


def test_predict_errors_have_one_shape(srv):
    deep = b"[" * 100_000 + b"]" * 100_000
    url = f"{srv.base}/v1/models/hard-news/predict"
    assert_error_shape(httpx.post(url, content=deep, headers=srv.pk, timeout=60), 422)
    no_boundary = {**srv.pk, "content-type": "multipart/form-data"}
    assert_error_shape(httpx.post(url, content=b"xx", headers=no_boundary, timeout=60), 400)
    huge = f"{srv.base}/v1/models/hard-news:999999999999999999999/predict"
    assert_error_shape(httpx.post(huge, json={"inputs": [TEXT]}, headers=srv.pk, timeout=60), 404)


def test_every_route_documents_its_errors(srv):
    spec = httpx.get(f"{srv.base}/openapi.json", timeout=60).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert {"401", "403", "404", "413", "422", "429", "503"} <= documented, (method, path)
            schema = operation["responses"]["422"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


# ------------------------------------------------------- 9. smaller ones
def test_events_of_an_unknown_service_are_404(srv):
    response = httpx.get(f"{srv.base}/v1/services/never-deployed/events", headers=srv.mk, timeout=60)
    assert_error_shape(response, 404)
    known = httpx.get(f"{srv.base}/v1/services/hard-news/events", headers=srv.mk, timeout=60)
    assert known.status_code == 200 and known.json()["events"]


@pytest.mark.parametrize("weights", [{"W": True}, {"W": 500}, {"W": -1}, {"W": 60}, {"W": 1.5}, {}])
def test_traffic_weights_are_whole_percentages_adding_to_100(srv, weights):
    weights = {srv.first if k == "W" else k: v for k, v in weights.items()}
    response = httpx.put(
        f"{srv.base}/v1/services/hard-news/traffic", json=weights, headers=srv.mk, timeout=60
    )
    assert_error_shape(response, 422)
    assert predict(srv, {"inputs": [TEXT]}).status_code == 200


def test_a_service_whose_first_deploy_failed_says_why(srv, small_model):
    broken = api.register(small_model, "hard-broken")
    for weights in Path(broken.path).glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    shutil.rmtree(Path(broken.path) / "onnx", ignore_errors=True)
    body = {"model": broken.ref, "settings": {"backend": "torch"}}
    failed = httpx.post(f"{srv.base}/v1/services", json=body, headers=srv.mk, timeout=60)
    assert failed.status_code in (409, 422, 500), failed.text
    response = httpx.post(
        f"{srv.base}/v1/models/hard-broken/predict", json={"inputs": [TEXT]}, headers=srv.pk, timeout=60
    )
    error = assert_error_shape(response, 503)
    assert "failed" in error["message"] and broken.ref in error["message"]
    assert "retry shortly" not in error["hint"].lower() and "deploy" in error["hint"]


# ---------------------------------------------- 8. what survives a restart
def test_a_rollback_and_a_traffic_split_survive_a_restart(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    first = api.register(small_model, "rb-news")
    second = api.register(small_model, "rb-news")
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    with live_server(create_app()) as base:  # starts on the latest: v2
        assert (
            httpx.get(f"{base}/v1/services/rb-news", headers=admin).json()["versions"][0]["ref"] == second.ref
        )
        back = httpx.post(f"{base}/v1/services", json={"model": first.ref}, headers=admin, timeout=60).json()
        assert back["on_restart"] == f"{first.ref} (100%)"
    with live_server(create_app()) as base:
        served = httpx.get(f"{base}/v1/services/rb-news", headers=admin).json()["versions"]
        assert [(v["ref"], v["weight"]) for v in served] == [(first.ref, 100)]
        body = {"model": second.ref, "weight": 20, "settings": {"max_batch_size": 8}}
        assert httpx.post(f"{base}/v1/services", json=body, headers=admin, timeout=60).status_code == 200
    saved = json.loads((tmp_path / "home" / "serving.json").read_text())["services"]["rb-news"]
    assert {v["ref"]: v["weight"] for v in saved} == {first.ref: 80, second.ref: 20}
    with live_server(create_app()) as base:
        served = httpx.get(f"{base}/v1/services/rb-news", headers=admin).json()["versions"]
        assert {v["ref"]: v["weight"] for v in served} == {first.ref: 80, second.ref: 20}
        canary = next(v for v in served if v["ref"] == second.ref)
        assert canary["settings"]["max_batch_size"] == 8


def test_a_manage_key_cannot_mint_a_key_with_more_scopes(srv):
    body = {"name": "escalate", "scopes": ["jobs:code"]}
    response = httpx.post(f"{srv.base}/v1/keys", json=body, headers=srv.mk, timeout=60)
    assert_error_shape(response, 403)
    same = httpx.post(f"{srv.base}/v1/keys", json={"scopes": ["predict"]}, headers=srv.mk, timeout=60)
    assert same.status_code == 200 and same.json()["scopes"] == ["predict"]
