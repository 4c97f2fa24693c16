"""Chaos on a live server: steady traffic while a worker is killed, a version is swapped in and
bad requests keep coming; nothing valid is lost and usage metering counts exactly what was served.

A real uvicorn server on 127.0.0.1 serves a text model (the session's ``small_model``) on the
default ONNX backend with a model worker process, from an AIMASS_HOME of this module's own.
While a few client threads send valid predictions with a key of their own:

- a bad-input sender sends lone surrogates (raw JSON escapes), malformed JSON, bodies over the
  model's 2 MB limit and bogus keys, with another key;
- the model worker process is killed with SIGKILL (its pid from ``GET /v1/services/{name}``);
- a second registered version of the same model is deployed (``POST /v1/services``), which
  exports it to ONNX, warms it and swaps traffic to it while the first drains.

Then: every valid request was answered (no client-side exception), each with 200, except at most
one batch that the killed worker held (503 with ``Retry-After``; a batch holds at most one request
per client thread); every bad request got its 4xx; ``GET /v1/usage`` counts exactly the 200
answers (requests and items) for the steady key, and nothing for the key of the bad requests.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from types import SimpleNamespace

import httpx
import pytest
from tests.conftest import live_server

from aimass import api
from aimass.serve import auth
from aimass.serve.app import create_app

SERVICE = "chaos-news"
CLIENTS = 3
TEXTS = [
    "The striker scored twice as United won the cup final.",
    "Parliament voted on the budget bill after a long debate.",
    "Shares in the chip maker rose after strong quarterly results.",
]


@pytest.fixture(scope="module")
def srv(small_model, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIMASS_HOME", str(tmp_path_factory.mktemp("chaos-home")))
        first = api.register(small_model, SERVICE)
        second = api.register(small_model, SERVICE)
        keys = {
            name: auth.create_key(f"chaos-{name}", scopes)
            for name, scopes in [("steady", ["predict"]), ("bad", ["predict"]), ("manage", ["manage"])]
        }
        with live_server(create_app([first.ref], job_runner=0)) as base:
            yield SimpleNamespace(
                base=base,
                first=first.ref,
                second=second.ref,
                steady_id=keys["steady"][0].id,
                bad_id=keys["bad"][0].id,
                steady={"Authorization": f"Bearer {keys['steady'][1]}"},
                bad={"Authorization": f"Bearer {keys['bad'][1]}"},
                manage={"Authorization": f"Bearer {keys['manage'][1]}"},
            )


def steady(srv, n: int, stop: threading.Event, out: list) -> None:
    """Valid predictions of 1-3 inputs, one at a time, until ``stop``; each outcome to ``out``."""
    url = f"{srv.base}/v1/models/{SERVICE}/predict"
    with httpx.Client(timeout=90, headers=srv.steady) as client:
        i = n
        while not stop.is_set():
            inputs = TEXTS[: 1 + i % 3]
            i += 1
            began = time.monotonic()
            try:
                r = client.post(url, json={"inputs": inputs})
            except httpx.HTTPError as exc:
                out.append(SimpleNamespace(status=None, items=len(inputs), error=repr(exc), at=began))
                continue
            model = r.json().get("model") if r.status_code == 200 else None
            out.append(
                SimpleNamespace(
                    status=r.status_code,
                    items=len(inputs),
                    at=began,
                    done=time.monotonic(),
                    model=model,
                    retry_after=r.headers.get("retry-after"),
                    body=r.text[:300],
                )
            )


def bad_requests(srv) -> list[tuple[str, dict, int]]:
    """(what, request kwargs, the status it must get)."""
    json_type = {"content-type": "application/json"}
    oversize = json.dumps({"inputs": ["x" * (2 * 1024 * 1024)]}).encode()  # just past the 2 MB limit
    return [
        ("lone surrogate", {"content": b'{"inputs": ["\\ud800"]}', "headers": {**srv.bad, **json_type}}, 422),
        ("malformed JSON", {"content": b'{"inputs": ["a"', "headers": {**srv.bad, **json_type}}, 422),
        ("oversize body", {"content": oversize, "headers": {**srv.bad, **json_type}}, 413),
        (
            "bogus key",
            {"json": {"inputs": ["a"]}, "headers": {"Authorization": "Bearer am_0badc0de_" + "x" * 43}},
            401,
        ),
        ("no key", {"json": {"inputs": ["a"]}}, 401),
    ]


def bad_sender(srv, stop: threading.Event, out: list) -> None:
    url = f"{srv.base}/v1/models/{SERVICE}/predict"
    kinds = bad_requests(srv)
    i = 0
    while not stop.is_set():
        what, kwargs, expected = kinds[i % len(kinds)]
        i += 1
        try:
            r = httpx.post(url, timeout=90, **kwargs)
            out.append((what, expected, r.status_code, r.text[:200]))
        except httpx.HTTPError as exc:
            out.append((what, expected, None, repr(exc)))
        time.sleep(0.05)


def worker_pids(srv) -> dict[str, dict]:
    info = httpx.get(f"{srv.base}/v1/services/{SERVICE}", headers=srv.manage, timeout=60).json()
    return {v["ref"]: v["worker"] for v in info["versions"]}


def test_kill_swap_and_bad_input_under_steady_traffic(srv):
    before = worker_pids(srv)[srv.first]
    assert before and before["pid"], before
    stop, answers, bad = threading.Event(), [], []
    threads = [threading.Thread(target=steady, args=(srv, n, stop, answers)) for n in range(CLIENTS)]
    threads.append(threading.Thread(target=bad_sender, args=(srv, stop, bad)))
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        killed_at = time.monotonic()
        os.kill(before["pid"], signal.SIGKILL)
        time.sleep(3)
        restarted = worker_pids(srv)[srv.first]
        swap = httpx.post(
            f"{srv.base}/v1/services", json={"model": srv.second}, headers=srv.manage, timeout=120
        )
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert restarted["pid"] != before["pid"] and restarted["restarts"] == 1, restarted
    assert swap.status_code == 200, swap.text
    assert [v["ref"] for v in swap.json()["versions"]] == [srv.second]

    lost = [(round(a.at - killed_at, 2), round(a.done - killed_at, 2)) for a in answers if a.status == 503]
    print(
        f"\nsteady: {Counter(a.status for a in answers)}; bad: {Counter((b[0], b[2]) for b in bad)}; "
        f"503s (sent, answered; s after the kill): {lost}"
    )
    failed = [a for a in answers if a.status is None]
    assert not failed, f"valid requests with no answer: {failed[:5]}"
    not_ok = [a for a in answers if a.status != 200]
    assert all(a.status == 503 for a in not_ok), [(a.status, a.body) for a in not_ok]
    assert len(not_ok) <= CLIENTS, [(a.status, a.body) for a in not_ok]  # one batch at most
    for a in not_ok:
        assert a.retry_after and int(a.retry_after) >= 1, a
        assert a.done >= killed_at, a  # only the batch the killed worker held
    ok = [a for a in answers if a.status == 200]
    assert {a.model for a in ok} == {srv.first, srv.second}
    assert ok[-1].model == srv.second
    assert len(ok) >= 30, len(ok)

    wrong = [b for b in bad if b[2] != b[1]]
    assert not wrong, wrong[:5]
    assert {b[0] for b in bad} == {k[0] for k in bad_requests(srv)}

    after = worker_pids(srv)[srv.second]
    assert after["pid"] != before["pid"]

    usage = httpx.get(f"{srv.base}/v1/usage", params={"key": srv.steady_id}, headers=srv.manage, timeout=60)
    assert usage.status_code == 200, usage.text
    rows = usage.json()["usage"]
    assert {r["key"] for r in rows} == {srv.steady_id} and {r["model"] for r in rows} == {SERVICE}
    assert sum(r["requests"] for r in rows) == len(ok)
    assert sum(r["items"] for r in rows) == sum(a.items for a in ok)
    assert sum(r["compute_ms"] for r in rows) > 0
    refused = httpx.get(f"{srv.base}/v1/usage", params={"key": srv.bad_id}, headers=srv.manage, timeout=60)
    assert refused.json()["usage"] == []  # 4xx answers are not metered
