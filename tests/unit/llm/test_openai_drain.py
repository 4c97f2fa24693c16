"""SIGTERM on ``aimass serve``: an open stream finishes with ``[DONE]``, new connections are refused,
then the process exits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from aimass.serve import auth


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(headlines_model, tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    cmd = [sys.executable, "-m", "aimass", "serve", "--port", str(port), "--jobs", "0", "--grace", "60"]
    proc = subprocess.Popen(
        [*cmd, "--model", headlines_model["model"]],
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    else:
        proc.kill()
        pytest.fail(f"aimass serve did not get ready: {(tmp_path / 'serve.log').read_text()[-2000:]}")
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_sigterm_drains_an_open_stream(server, headlines_model):
    proc, url = server
    _, key = auth.create_key("drain", ["predict"])
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "model": headlines_model["model"],
        "messages": [{"role": "user", "content": "Write a long story about a dragon and a knight."}],
        "max_tokens": 40,
        "temperature": 0,
        "stream": True,
    }
    lines, refused = [], None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line:
                continue
            lines.append(line)
            if refused is None and '"content"' in line and '"content": ""' not in line:
                proc.send_signal(signal.SIGTERM)  # the first token arrived: stop the server
                time.sleep(0.5)
                try:
                    refused = httpx.get(f"{url}/readyz", timeout=5).status_code  # 503 while draining
                except httpx.TransportError:
                    refused = "refused"  # the listener is closed
    assert refused in (503, "refused")
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] in (
        ["length"],
        ["stop"],
    )
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
