"""Model worker processes: a deployment's forward passes run in a child process of their own.

The server keeps HTTP, decoding and batching; the worker only loads the task's light
runtime (for text: onnxruntime + tokenizers, no torch) and answers batches. If a worker
dies (killed, out of memory), the batch it held fails at once with 503 and the next batch
starts a fresh worker; nothing waits on a dead process.

Wire format on the worker's stdin/stdout: frames of a 4-byte big-endian length and a body,
the body being a JSON header, a newline, then the binary parts the header describes.
Items are text (inline in the header) or bytes; answers are one float32/uint8 array.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from aimass.errors import Unavailable


# ------------------------------------------------------------------ frames
def frame(header: dict, blobs: list[bytes] = ()) -> bytes:
    """One frame's bytes. Raises ``ValueError`` (e.g. ``UnicodeEncodeError`` for a lone surrogate)
    for content that cannot be sent: a problem of this batch, never of the worker."""
    body = json.dumps(header, ensure_ascii=False).encode() + b"\n" + b"".join(blobs)
    return struct.pack(">I", len(body)) + body


def write_frame(stream, header: dict, blobs: list[bytes] = ()) -> None:
    stream.write(frame(header, blobs))
    stream.flush()


def read_frame(stream) -> tuple[dict, memoryview] | None:
    size = _read_exact(stream, 4)
    if size is None:
        return None
    body = _read_exact(stream, struct.unpack(">I", size)[0])
    if body is None:
        return None
    cut = body.index(b"\n")
    return json.loads(body[:cut]), memoryview(body)[cut + 1 :]


def _read_exact(stream, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def encode_items(items: list) -> tuple[dict, list[bytes]]:
    described, blobs = [], []
    for item in items:
        if isinstance(item, str):
            described.append({"s": item})
        else:
            data = bytes(item)
            described.append({"b": len(data)})
            blobs.append(data)
    return {"items": described}, blobs


def decode_items(header: dict, blob: memoryview) -> list:
    items, at = [], 0
    for item in header["items"]:
        if "s" in item:
            items.append(item["s"])
        else:
            items.append(bytes(blob[at : at + item["b"]]))
            at += item["b"]
    return items


# ------------------------------------------------------------ server side
class WorkerDied(Unavailable):
    code = "worker_restarting"


class Worker:
    """One child process serving ``runtime`` (``module:Class``) from ``folder``.

    ``run(items)`` is called from one thread at a time (the deployment's batcher thread).
    """

    def __init__(self, runtime: str, folder: str | Path, options: dict | None = None, on_event=None):
        self.runtime, self.folder, self.options = runtime, str(folder), options or {}
        self.on_event = on_event or (lambda kind, message: None)
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.start_s = 0.0
        self.closing = False  # set by close(): a lost worker then is the shutdown's, not a death
        self._lock = threading.Lock()

    def start(self, timeout: float = 120.0) -> float:
        """Start the process and wait for its ready frame; returns the seconds it took."""
        began = time.perf_counter()
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(self.options.get("threads") or len(os.sched_getaffinity(0))),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aimass.serve.worker",
                self.runtime,
                self.folder,
                json.dumps(self.options),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        ready = read_frame(self.proc.stdout)
        if ready is None or not ready[0].get("ok"):
            code = self.proc.wait(timeout=timeout)
            detail = ready[0].get("error") if ready else f"exit code {code}"
            raise RuntimeError(f"the model worker did not start: {detail}")
        self.start_s = time.perf_counter() - began
        return self.start_s

    def run(self, items: list) -> np.ndarray:
        with self._lock:
            if self.closing:
                raise _closed()
            if self.proc is None or self.proc.poll() is not None:
                if self.proc is not None:  # died between batches
                    self.on_event(
                        "failed", f"model worker pid {self.proc.pid} exited ({self.proc.returncode})"
                    )
                self._restart()
            data = frame(*encode_items(items))  # before any I/O: bad content fails only this batch
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
                answer = read_frame(self.proc.stdout)
            except (OSError, ValueError):  # a broken pipe, or a torn frame from a dying worker
                answer = None
            if answer is None:
                self._lost()
            meta, blob = answer
            if not meta.get("ok"):
                raise RuntimeError(f"worker: {meta.get('error')}")
            return np.frombuffer(blob, dtype=meta["dtype"]).reshape(meta["shape"])

    def _lost(self) -> None:
        """The pipe broke or the answer was cut: the worker is dead or in an unknown state. A live
        one is killed (never waited on), and the next batch starts a fresh one."""
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        if self.closing:  # close() ended it under a batch (a shutdown past its grace): no death
            raise _closed()
        self.on_event("failed", f"model worker pid {proc.pid} died (exit {code}); restarting")
        raise WorkerDied(
            f"The model worker died while answering (exit code {code}); it is being restarted.",
            hint="Retry the request.",
        )

    def _restart(self) -> None:
        self.restarts += 1
        seconds = self.start(timeout=120)
        self.on_event("ready", f"model worker restarted (pid {self.proc.pid}) in {seconds:.2f}s")

    def close(self, timeout: float = 5.0) -> None:
        """End the process: its stdin closes and it exits; killed if it is still there after
        ``timeout`` seconds (a batch it is running fails with 503, and is no worker death: nothing
        is restarted from now on)."""
        self.closing = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):  # the batcher thread was writing: the kill below ends it
                proc.stdin.close()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _closed() -> Unavailable:
    return Unavailable("The model worker is shutting down.", hint="Retry; another server or version serves.")


# ------------------------------------------------------------ worker side
def main(argv: list[str]) -> int:
    runtime, folder, options = argv[0], argv[1], json.loads(argv[2])
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # the protocol owns stdout
    inp = sys.stdin.buffer
    try:
        module, _, name = runtime.partition(":")
        model = getattr(importlib.import_module(module), name)(folder, **options)
    except Exception as exc:
        write_frame(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    try:
        write_frame(out, {"ok": True, "ready": True})
    except BrokenPipeError:  # the server stopped while this worker started: nobody to answer
        return 0
    while (batch := read_frame(inp)) is not None:
        try:
            rows = np.ascontiguousarray(model.predict_proba(decode_items(*batch)))
        except Exception as exc:  # the server turns this into a 500 for this batch only
            write_frame(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        write_frame(out, {"ok": True, "dtype": rows.dtype.str, "shape": list(rows.shape)}, [rows.tobytes()])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
