"""Export a torch module to ONNX, quantise it to int8, open an inference session.

Used by the serving engine at deploy time and by compression/export: one exporter.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np


def export_graph(module, args: tuple, path: Path, input_names: list[str], dynamic: dict[str, dict]) -> Path:
    """Trace ``module(*args)`` into ``path`` (opset 17, the axes in ``dynamic`` left free)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter: stable for encoder models and their dynamic axes;
        # the torch.export-based one needs onnxscript and handles fewer of them
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(tmp),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes={**dynamic, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, path)
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantisation of the weights of MatMul/Gemm (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_suffix(".tmp.onnx")
    quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    os.replace(tmp, target)
    return target


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session using ``threads`` intra-op threads (default: the cores
    this process may use), one inter-op thread: no oversubscription on small machines."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
