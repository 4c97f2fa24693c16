"""Serving bench: one model, one machine, one run; peers side by side, ratios printed.

Peers: (a) a bare FastAPI handler calling the torch model per request, (b) LitServe with its
batching (same torch model), (c) aimass with the torch, ONNX and ONNX-int8 backends, and ONNX
once more behind the access guard (a user-bound key whose project policy allows predict, so every
request is authenticated and decided by policies, not ``--open-predict``), and ONNX for a key
held to a quota (a monthly quota it never reaches: every request is counted against it). Load
comes from ``wrk`` on loopback: p50 at 1 connection, throughput at 32 connections, each
request one short news sentence (<= 32 tokens). Also measured: the model's offline
throughput at batch 32 (the ceiling served throughput is held to) and how soon a fresh
ONNX worker answers its first request.

    python bench/serving.py                 # ~6 minutes on 2 cores
    python bench/serving.py --duration 5    # shorter load runs
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "serving.json"
TEXT = "Shares in the bank fell sharply after it cut its profit forecast for the year."
BATCH = 32
GUARDED = "aimass (onnx, key + policies)"
QUOTA = "aimass (onnx, key with a quota)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(home: Path) -> tuple[str, str]:
    """A small real BBC model (minilm-l6), registered; returns (ref, folder)."""
    from aimass import api
    from aimass.tasks.text_classification import TextClassification, TextClassifier

    texts, labels = TextClassification.sample_data(per_class=40)
    model = TextClassifier(backbone="minilm-l6", max_length=64, unfreeze=2, epochs_top=2, seed=0)
    model.fit((texts, labels), progress=False)
    record = api.register(model, "bench-news")
    return record.ref, record.path


def offline(folder: str) -> dict:
    """Items/s of the model itself at batch 32 (torch, ONNX, ONNX int8), no server."""
    from aimass.runtime.text import TextRuntime
    from aimass.tasks.text_classification import TextClassifier

    texts = [TEXT] * BATCH
    out = {}
    for name, model in (
        ("torch", TextClassifier.load(folder)),
        ("onnx", TextRuntime(Path(folder) / "onnx")),
        ("onnx-int8", TextRuntime(Path(folder) / "onnx", int8=True)),
    ):
        out[name] = rate(model, texts)
    return out


def rate(model, texts: list[str], windows: int = 3, seconds: float = 2.0) -> float:
    """Items/s of ``model.predict_proba(texts)``: the best of a few windows (a steady ceiling)."""
    model.predict_proba(texts)
    best = 0.0
    for _ in range(windows):
        n, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            model.predict_proba(texts)
            n += len(texts)
        best = max(best, n / (time.perf_counter() - began))
    return best


def fresh_worker(folder: str) -> float:
    """Seconds from starting an ONNX worker process to its first answer."""
    from aimass.serve.worker import Worker

    began = time.perf_counter()
    worker = Worker("aimass.runtime.text:TextRuntime", Path(folder) / "onnx", {"int8": False})
    worker.start()
    worker.run([TEXT])
    seconds = time.perf_counter() - began
    worker.close()
    return seconds


def start(cmd: list[str], health: str, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode}")
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{cmd[:4]} never became healthy")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group (LitServe's and aimass's workers too)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers


def wrk(url: str, connections: int, seconds: int, work: Path, key: str | None = None) -> dict:
    script = work / "post.lua"
    body = json.dumps({"inputs": [TEXT]})
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(body)}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    if key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    script.write_text("\n".join(lines) + "\n")
    threads = min(2, connections)
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--latency",
        "-s",
        str(script),
    ]
    subprocess.run([*cmd[:6], "-d", "2s", *cmd[8:], url], capture_output=True, timeout=60)  # warm-up
    text = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", text)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": rps,
        "p50_ms": float(p50.group(1)) * scale,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def batch_totals(metrics_url: str) -> tuple[float, float]:
    """(items, forward passes) so far, from the server's batch-size histogram."""
    from aimass.serve.auth import admin_token  # /metrics needs usage:Read

    text = httpx.get(metrics_url, headers={"Authorization": f"Bearer {admin_token()}"}, timeout=10).text
    total = sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith("aimass_batch_size_sum"))
    count = sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith("aimass_batch_size_count"))
    return total, count


def offline_at(folder: str, batch: int) -> float:
    """Items/s of the ONNX runtime alone at ``batch`` texts per call."""
    from aimass.runtime.text import TextRuntime

    return rate(TextRuntime(Path(folder) / "onnx"), [TEXT] * batch)


def guarded_key() -> str:
    """A key bound to user ``ana`` of project ``news``, whose team policy allows every action on
    the project's resources: the model and its service are assigned to the project."""
    from aimass.access import directory
    from aimass.serve import auth

    directory.create_project("news")
    directory.create_user("ana")
    team = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "aimass:project/news/*"}]}
    directory.put_policy("newsTeam", team)
    directory.attach("newsTeam", "user", "ana")
    for kind in ("model", "service"):
        directory.assign(kind, "bench-news", "news")
    record, secret = auth.create_key("ana", ["predict"])
    directory.bind_key(record.id, user="ana")
    return secret


def peers(ref: str, folder: str, env: dict) -> dict[str, tuple[list[str], str, str]]:
    py = sys.executable
    port = {k: free_port() for k in ("bare", "litserve", "torch", "onnx", "onnx-int8", "guarded", "quota")}

    def aimass(backend: str, guarded: bool = False, slot: str | None = None) -> tuple[list[str], str, str]:
        p = port[slot or ("guarded" if guarded else backend)]
        cmd = [py, "-m", "aimass", "serve", "--port", str(p), "--model", ref]
        cmd += [] if guarded else ["--open-predict"]
        cmd += ["--backend", backend, "--max-batch-size", str(BATCH)]
        base = f"http://127.0.0.1:{p}"
        return cmd, f"{base}/readyz", f"{base}/v1/models/bench-news/predict"

    return {
        "bare FastAPI (torch)": (
            [py, str(HERE / "peers" / "bare.py"), folder, str(port["bare"])],
            f"http://127.0.0.1:{port['bare']}/health",
            f"http://127.0.0.1:{port['bare']}/predict",
        ),
        "LitServe (torch, batching)": (
            [py, str(HERE / "peers" / "lit.py"), folder, str(port["litserve"])],
            f"http://127.0.0.1:{port['litserve']}/health",
            f"http://127.0.0.1:{port['litserve']}/predict",
        ),
        "aimass (torch)": aimass("torch"),
        "aimass (onnx)": aimass("onnx"),
        "aimass (onnx-int8)": aimass("onnx-int8"),
        GUARDED: aimass("onnx", guarded=True),
        QUOTA: aimass("onnx", guarded=True, slot="quota"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--only", action="append", help="run only systems whose name contains this")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aimass-serving-"))
    atexit.register(shutil.rmtree, work, True)  # models, data, backbone copies
    os.environ["AIMASS_HOME"] = str(work / "home")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    ref, folder = train(work)
    key = guarded_key()
    from aimass.serve.auth import create_key

    _, metered = create_key("metered", ["predict"], quota=10**12)
    from aimass.serve.engine import exported
    from aimass.store import registry
    from aimass.tasks import get_task

    record = registry.get_version(ref)
    export = exported(record, get_task(record.task))
    rows, results = [], {"offline_items_per_s": offline(folder), "export": export}
    results["fresh_worker_first_answer_s"] = fresh_worker(folder)
    for name, (cmd, health, url) in peers(ref, folder, env).items():
        if args.only and not any(o in name for o in args.only):
            continue
        proc = start(cmd, health, env)
        auth = {GUARDED: key, QUOTA: metered}.get(name)
        try:
            one = wrk(url, 1, args.duration, work, auth)
            metrics = health.replace("/readyz", "/metrics")
            before = batch_totals(metrics) if name.startswith("aimass") and not auth else None
            many = wrk(url, 32, args.duration, work, auth)
            if before:  # the batch sizes the server formed under the 32-connection load
                after = batch_totals(metrics)
                many["mean_batch"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
        finally:
            stop(proc)
        rows.append(
            {
                "system": name,
                "p50_ms_c1": one["p50_ms"],
                "rps_c1": one["rps"],
                "rps_c32": many["rps"],
                "mean_batch_c32": many.get("mean_batch"),
                "non_2xx": one["non_2xx"] + many["non_2xx"],
            }
        )
        print(f"{name:28s} p50@1 {one['p50_ms']:7.2f} ms   rps@32 {many['rps']:8.1f}", flush=True)
    results["rows"] = rows
    served = next((r for r in rows if r["system"] == "aimass (onnx)"), None)
    if served:
        results["offline_onnx_at_served_batch"] = offline_at(folder, max(1, round(served["mean_batch_c32"])))
    if args.only:  # a partial run: no bars, no results file
        render({**results, "bars": []})
        return 0
    results["bars"] = bars(results)
    render(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%S"), **results}, indent=2))
    return 0 if all(b["pass"] for b in results["bars"]) else 1


def bars(r: dict) -> list[dict]:
    by = {row["system"]: row for row in r["rows"]}
    bare, lit = by["bare FastAPI (torch)"], by["LitServe (torch, batching)"]
    best = by["aimass (onnx)"]  # the default on CPU
    q = by["aimass (onnx-int8)"]
    checks = [
        ("p50 @1 conn <= 1.15 x bare", best["p50_ms_c1"] / bare["p50_ms_c1"], "<=", 1.15),
        ("rps @32 >= 3 x bare", best["rps_c32"] / bare["rps_c32"], ">=", 3.0),
        ("rps @32 >= 1.2 x LitServe", best["rps_c32"] / lit["rps_c32"], ">=", 1.2),
        ("int8 rps @32 >= 4.5 x bare", q["rps_c32"] / bare["rps_c32"], ">=", 4.5),
        (
            f"served >= 80% of offline at the served batch ({best['mean_batch_c32']:.1f})",
            best["rps_c32"] / r["offline_onnx_at_served_batch"],
            ">=",
            0.8,
        ),
        (
            "served / offline at batch 32 (reported)",
            best["rps_c32"] / r["offline_items_per_s"]["onnx"],
            ">=",
            0.0,
        ),
        ("fresh ONNX worker first answer <= 1.5 s", r["fresh_worker_first_answer_s"], "<=", 1.5),
        ("rps @32 with key + policies >= 0.95 x open", by[GUARDED]["rps_c32"] / best["rps_c32"], ">=", 0.95),
        ("rps @32 with a quota'd key >= 0.95 x open", by[QUOTA]["rps_c32"] / best["rps_c32"], ">=", 0.95),
        ("no non-2xx under load", float(sum(row["non_2xx"] for row in r["rows"])), "<=", 0.0),
    ]
    return [
        {"bar": name, "value": round(v, 3), "pass": v <= limit if op == "<=" else v >= limit}
        for name, v, op, limit in checks
    ]


def render(r: dict) -> None:
    print()
    print(f"{'system':28s} {'p50@1 ms':>9s} {'rps@1':>8s} {'rps@32':>8s} {'non-2xx':>8s}")
    for row in r["rows"]:
        cells = f"{row['p50_ms_c1']:9.2f} {row['rps_c1']:8.1f} {row['rps_c32']:8.1f} {row['non_2xx']:8d}"
        print(f"{row['system']:28s} {cells}")
    off = r["offline_items_per_s"]
    print("offline items/s at batch 32: " + ", ".join(f"{k} {v:.0f}" for k, v in off.items()))
    if "offline_onnx_at_served_batch" in r:
        print(f"offline onnx items/s at the served mean batch: {r['offline_onnx_at_served_batch']:.0f}")
    for row in r["rows"]:
        if row.get("mean_batch_c32"):
            print(f"  {row['system']}: mean batch at 32 connections {row['mean_batch_c32']:.1f}")
    print(f"fresh ONNX worker, start to first answer: {r['fresh_worker_first_answer_s']:.2f} s")
    check = {k: v for k, v in r["export"].items() if "diff" in k or "same" in k}
    print(f"ONNX export check: {json.dumps(check)}")
    for b in r["bars"]:
        print(f"  [{'PASS' if b['pass'] else 'FAIL'}] {b['bar']}: {b['value']}")


if __name__ == "__main__":
    sys.exit(main())
