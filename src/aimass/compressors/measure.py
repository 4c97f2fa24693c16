"""What a compressed version is compared on: accuracy and macro-F1 on the parent's test split,
weight size, p50 latency at batch 1, throughput at batch 32 and load time, all measured in the
same process, one model after the other. Throughput is the best of two windows of
``AIMASS_MEASURE_SECONDS`` (1.5) each: longer for steadier figures on a busy machine.

Each row is timed on the backend the server runs that version on (its ``backend`` column): ONNX
sessions with one intra-op thread per core and no spinning, torch with its own threads. A parent
timed on torch against a child on ONNX measured the backends, not the compression (a lossless ONNX
conversion came out 70 times faster on a busy two-core machine)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from aimass.data.limits import limit

WINDOW_S = 1.5
WINDOW_ENV = "AIMASS_MEASURE_SECONDS"
COLUMNS = [
    *("model", "method", "backend", "accuracy", "macro_f1"),
    *("size_mb", "p50_ms_b1", "items_per_s_b32", "load_s"),
]


def _runtime(model):
    """The ONNX runtime ``model`` predicts with (itself when it is one), or None (torch)."""
    return getattr(model, "runtime_", None) or (model if hasattr(model, "session") else None)


def backend(model) -> str:
    """``onnx``, ``onnx-int8`` or ``torch``: what ``model`` predicts with."""
    runtime = _runtime(model)
    if runtime is None:
        return "torch"
    return "onnx-int8" if runtime.int8 else "onnx"


def weight_bytes(model) -> int:
    """Bytes of the weights ``model`` predicts with: its ONNX file when it runs on one (or is one),
    else its network's tensors (int8 tensors count one byte), plus the TF-IDF branch when it has one."""
    runtime = _runtime(model)
    if runtime is not None:
        return sum(p.stat().st_size for p in _runtime_files(runtime))
    total = _tensor_bytes(model.net_.state_dict())
    lexical = getattr(model, "lexical_", None)
    if lexical is not None:
        total += int(getattr(lexical, "size", 0)) * 4  # the idf vector
    return total


def _runtime_files(runtime) -> list[Path]:
    folder = Path(runtime.folder)
    graph = "model.int8.onnx" if runtime.int8 else "model.onnx"
    return [folder / graph] + [p for p in folder.glob("lexical.*")]


def _tensor_bytes(state) -> int:
    total = 0
    for value in state.values() if isinstance(state, dict) else state:
        if isinstance(value, dict | list | tuple):
            total += _tensor_bytes(value)
        elif hasattr(value, "element_size"):
            total += value.nelement() * value.element_size()
    return total


def speed(model, items: list, *, calls: int = 40, seconds: float | None = None) -> dict:
    """p50 milliseconds of one item per call, and items/s at 32 items per call (best of two windows
    of ``seconds``, default ``AIMASS_MEASURE_SECONDS``)."""
    seconds = limit(WINDOW_ENV, WINDOW_S, seconds, param="seconds")
    for item in items[:3]:
        model.predict_proba([item])
    times = []
    for i in range(calls):
        began = time.perf_counter()
        model.predict_proba([items[i % len(items)]])
        times.append(time.perf_counter() - began)
    batch = [items[i % len(items)] for i in range(32)]
    model.predict_proba(batch)
    best = 0.0
    for _ in range(2):
        n, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            model.predict_proba(batch)
            n += len(batch)
        best = max(best, n / (time.perf_counter() - began))
    return {"p50_ms_b1": statistics.median(times) * 1000, "items_per_s_b32": best}


def row(ref: str, method: str, model, report: dict, items: list, load_s: float, *, served=None) -> dict:
    """One line of the comparison table. ``report``: ``model``'s evaluation; ``served``: what
    answers the version's requests on the server when that is not ``model`` (the ONNX runtime of a
    version served on ONNX): the size, the speed and the backend are its."""
    runner = model if served is None else served
    return {
        "model": ref,
        "method": method,
        "backend": backend(runner),
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "size_mb": weight_bytes(runner) / 1e6,
        **speed(runner, items),
        "load_s": load_s,
    }


def compare(parent: dict, child: dict) -> dict:
    """The child relative to its parent: accuracy drop in points, speed-ups and size ratio."""
    return {
        "accuracy_drop_points": round((parent["accuracy"] - child["accuracy"]) * 100, 3),
        "macro_f1_drop_points": round((parent["macro_f1"] - child["macro_f1"]) * 100, 3),
        "p50_speedup": parent["p50_ms_b1"] / max(child["p50_ms_b1"], 1e-9),
        "throughput_ratio": child["items_per_s_b32"] / max(parent["items_per_s_b32"], 1e-9),
        "size_ratio": child["size_mb"] / max(parent["size_mb"], 1e-9),
    }
