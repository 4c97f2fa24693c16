"""``int8-dynamic``: PyTorch dynamic quantisation of every ``nn.Linear`` (int8 weights,
activations quantised on the fly), for users who stay on torch.

The child stores the parent's fp32 weights and quantises them again at load: the result is
deterministic, and safetensors cannot hold torch's packed int8 parameters.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from aimass.compressors import Compressor, register_compressor


@register_compressor("int8-dynamic")
class DynamicInt8(Compressor):
    backend = "torch"

    def compress(self, model, data, spec):
        return model  # quantised when the saved child is loaded (see restore)

    def restore(self, model, folder: Path, spec):
        # every Linear used as a layer; a TF-IDF branch multiplies its weight directly, so stays fp32
        names = {n for n, m in model.net_.named_modules() if type(m) is nn.Linear and "lexical" not in n}
        with warnings.catch_warnings():  # torch marks eager-mode quantisation deprecated, yet ships it
            warnings.simplefilter("ignore")
            model.net_ = torch.ao.quantization.quantize_dynamic(model.net_, names, dtype=torch.qint8)
        model.net_.eval()
        return model
