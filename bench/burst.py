"""Burst bench: a real server sheds load by deadline, not by a fixed queue length.

Starts ``aimass serve`` on 127.0.0.1 (loopback only) with the small BBC text model of
``bench/serving.py`` and fires two bursts, each request on its own connection, all connections
opened first and then sent at once:

(a) 200 simultaneous one-text requests at the default settings: all should be 200;
(b) a burst ~20x what the model answers within a short deadline (the same version deployed as
    a second service with ``timeout_s`` 0.2 s): fast 429s with ``Retry-After``, the rest 200,
    no 5xx and no connection errors.

The client is a few lines of raw HTTP/1.1 on asyncio, so that it costs a small machine little
next to the server. Prints the counts, latency percentiles and the 429 answer times, what the
model did during burst (b), and writes ``bench/results/burst.json``.

The server admits a request when the model, at the speed it measured before the burst, should
answer it within half its deadline. On a small machine a burst can slow the model by more than
that (the event loop refusing it, the client and the model share the cores; the client runs at
``nice 10``, as if it were elsewhere); the requests admitted at the burst's start then end in
504s: ``forward passes`` shows the model's speed during the burst against ``model inputs/s``.

    python bench/burst.py                 # ~1-2 minutes on 2 cores
    python bench/burst.py --timeout 0.5   # the short deadline of burst (b)
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from serving import TEXT, free_port, start, stop, train

from aimass.serve.batching import BatchSettings

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "burst.json"
HOST = "127.0.0.1"
MOST = 4000  # requests in burst (b), whatever the measured capacity


@dataclass
class Answer:
    status: int  # 0: the connection failed
    seconds: float
    retry_after: str | None = None
    error: str | None = None
    body: bytes = b""


def request_bytes(service: str, close: bool = True) -> bytes:
    body = json.dumps({"inputs": [TEXT]}).encode()
    head = (
        f"POST /v1/models/{service}/predict HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    return head.encode() + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    """(status, lower-case headers, body) of one HTTP/1.1 answer."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return int(lines[0].split(" ", 2)[1]), headers, body


async def one(port: int, payload: bytes, go: asyncio.Event, connected: list | None = None) -> Answer:
    """Connect, wait for ``go``, send the request, read the whole answer."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as exc:
        return Answer(0, 0.0, error=f"connect: {type(exc).__name__}")
    if connected is not None:
        connected.append(1)
    await go.wait()
    began = time.perf_counter()
    try:
        writer.write(payload)
        await writer.drain()
        status, headers, body = await answer(reader)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return Answer(0, time.perf_counter() - began, error=type(exc).__name__)
    finally:
        writer.close()
    return Answer(status, time.perf_counter() - began, headers.get("retry-after"), body=body)


async def burst(port: int, service: str, n: int) -> tuple[list[Answer], float]:
    """``n`` requests sent at once on ``n`` open connections; (answers, seconds until the last)."""
    go, payload, connected = asyncio.Event(), request_bytes(service), []
    tasks = [asyncio.ensure_future(one(port, payload, go, connected)) for _ in range(n)]
    waited = time.perf_counter() + 10
    while len(connected) + sum(t.done() for t in tasks) < n and time.perf_counter() < waited:
        await asyncio.sleep(0.01)  # every connection open (or failed) before the first byte is sent
    began = time.perf_counter()
    go.set()
    answers = await asyncio.gather(*tasks)
    return answers, time.perf_counter() - began


async def closed_loop(port: int, service: str, clients: int, seconds: float) -> float:
    """Answers/s with ``clients`` kept-alive connections, each sending one request after another."""
    payload, answered, deadline = request_bytes(service, close=False), [0], time.perf_counter() + seconds

    async def client():
        reader, writer = await asyncio.open_connection(HOST, port)
        while time.perf_counter() < deadline:
            writer.write(payload)
            status = (await answer(reader))[0]
            answered[0] += status == 200
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    return answered[0] / (time.perf_counter() - began)


def model_seconds(port: int, service: str) -> tuple[float, float, float]:
    """(inputs, seconds, batches) of the forward passes of ``service`` so far, from its metrics."""
    from aimass.serve.auth import admin_token  # /metrics needs usage:Read

    token = {"Authorization": f"Bearer {admin_token()}"}
    text = httpx.get(f"http://{HOST}:{port}/metrics", headers=token, timeout=10).text

    def total(name: str) -> float:
        prefix = f'{name}{{model="{service}"}}'
        return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(prefix))

    return (
        total("aimass_batch_size_sum"),
        total("aimass_batch_seconds_sum"),
        total("aimass_batch_size_count"),
    )


def passes(before: tuple, after: tuple) -> dict:
    """What the model did between two :func:`model_seconds`."""
    items, seconds, batches = (a - b for a, b in zip(after, before, strict=True))
    return {
        "inputs": int(items),
        "batches": int(batches),
        "inputs_per_s": round(items / max(seconds, 1e-9), 1),
        "busy_s": round(seconds, 3),
    }


def summary(answers: list[Answer], seconds: float) -> dict:
    statuses: dict[str, int] = {}
    for a in answers:
        statuses[str(a.status)] = statuses.get(str(a.status), 0) + 1
    out = {"requests": len(answers), "statuses": statuses, "burst_s": round(seconds, 3)}
    for status in (200, 429):
        times = sorted(a.seconds for a in answers if a.status == status)
        if times:
            out[f"ms_{status}"] = {p: round(1000 * pick(times, q), 1) for p, q in PERCENTILES.items()}
    retry = [a.retry_after for a in answers if a.status == 429]
    if retry:
        out["retry_after"] = {v: retry.count(v) for v in sorted(set(map(str, retry)))}
    errors = [a.error for a in answers if a.error]
    out["connection_errors"] = {e: errors.count(e) for e in set(errors)}
    failed = [a for a in answers if a.status >= 500]
    if failed:
        out["example_5xx"] = failed[0].body.decode(errors="replace")[:300]
    return out


PERCENTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}


def pick(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def deploy_short(base: str, ref: str, timeout_s: float, home: Path) -> None:
    """The same version as a second service, ``burst-short``, with a short ``timeout_s``."""
    token = (home / "admin.token").read_text().strip()
    body = {"model": ref, "service": "burst-short", "settings": {"timeout_s": timeout_s}}
    r = httpx.post(
        f"{base}/v1/services", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=300
    )
    r.raise_for_status()


async def measure(port: int, timeout_s: float) -> dict:
    for service in ("bench-news", "burst-short"):  # some traffic first: each batcher learns the speed
        for size in (1, 8, 32, 1, 32):
            await burst(port, service, size)
    before = model_seconds(port, "bench-news")
    served = await closed_loop(port, "bench-news", 32, 3.0)
    model = passes(before, model_seconds(port, "bench-news"))["inputs_per_s"]  # while it runs
    fits = summary(*await burst(port, "bench-news", 200))
    await asyncio.sleep(1)
    n = min(MOST, max(200, round(20 * model * timeout_s)))  # 20x what the model answers in the deadline
    before = model_seconds(port, "burst-short")
    over = summary(*await burst(port, "burst-short", n))
    await asyncio.sleep(timeout_s + 0.5)
    over["model_during_burst"] = passes(before, model_seconds(port, "burst-short"))
    return {
        "served_per_s_32_keepalive_clients": round(served, 1),
        "model_inputs_per_s": model,
        "fits": fits,
        "over": {"x_capacity": 20, **over},
    }


def bars(r: dict) -> list[dict]:
    fits, over = r["fits"], r["over"]
    s = over["statuses"]
    fives = sum(v for k, v in s.items() if k.startswith("5"))
    checks = [
        ("(a) 200 simultaneous requests all answered 200", fits["statuses"].get("200", 0), ">=", 200),
        ("(b) 429s answered within, p90 ms", over.get("ms_429", {}).get("p90", 1e9), "<=", 1000.0),
        ("(b) every 429 has Retry-After", sum(over.get("retry_after", {}).values()), ">=", s.get("429", 0)),
        ("(b) no 5xx", fives, "<=", 0),
        ("(b) no connection errors", s.get("0", 0), "<=", 0),
    ]
    return [
        {"bar": name, "value": v, "pass": v <= limit if op == "<=" else v >= limit}
        for name, v, op, limit in checks
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=0.2, help="timeout_s of the service of burst (b)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aimass-burst-"))
    atexit.register(shutil.rmtree, work, True)
    home = work / "home"
    os.environ["AIMASS_HOME"] = str(home)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    ref, _ = train(work)
    port, defaults = free_port(), BatchSettings()
    cmd = [sys.executable, "-m", "aimass", "serve", "--port", str(port), "--model", ref, "--open-predict"]
    # --max-queue: BatchSettings' default (a memory bound), whatever the CLI's default says
    cmd += ["--jobs", "0", "--max-queue", str(defaults.max_queue)]
    base = f"http://{HOST}:{port}"
    proc = start(cmd, f"{base}/readyz", env)
    try:
        deploy_short(base, ref, args.timeout, home)
        os.nice(10)  # the client yields the cores to the server, as a client elsewhere would
        results = asyncio.run(measure(port, args.timeout))
    finally:
        stop(proc)
    results = {"settings": {**defaults.__dict__, "burst_b_timeout_s": args.timeout}, **results}
    results["bars"] = bars(results)
    render(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%S"), **results}, indent=2))
    return 0 if all(b["pass"] for b in results["bars"]) else 1


def render(r: dict) -> None:
    print(f"\nserved answers/s, 32 kept-alive clients: {r['served_per_s_32_keepalive_clients']}")
    print(f"model inputs/s while running (from /metrics): {r['model_inputs_per_s']}")
    for name, row in (("(a) 200 at once, default settings", r["fits"]), ("(b) ~20x capacity", r["over"])):
        print(f"{name}: {row['requests']} requests in {row['burst_s']} s -> {row['statuses']}")
        for status in (200, 429):
            if f"ms_{status}" in row:
                print(f"    {status} ms: {row[f'ms_{status}']}")
        if row.get("retry_after"):
            print(f"    Retry-After: {row['retry_after']}")
        if row["connection_errors"]:
            print(f"    connection errors: {row['connection_errors']}")
        if row.get("model_during_burst"):
            print(f"    forward passes: {row['model_during_burst']}")
        if row.get("example_5xx"):
            print(f"    e.g. {row['example_5xx']}")
    for b in r["bars"]:
        print(f"  [{'PASS' if b['pass'] else 'FAIL'}] {b['bar']}: {b['value']}")


if __name__ == "__main__":
    sys.exit(main())
