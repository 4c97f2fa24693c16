"""Many LoRA adapters on one served base, fp32 or int8, without peft's wrappers.

Serving needs less than training: each target projection computes ``base(x)`` plus the active
adapter's ``B(A(x)) * scale``, exactly the sum peft computes, so a loaded adapter answers as it did
when trained. Owning the layer lets the base below it be a dynamically quantised int8 ``Linear``
(``torch.ao``), which peft cannot wrap: the decode step of a small model on a CPU is bound by
reading its weights, and int8 reads a quarter of them.

>>> import torch
>>> selection = Selection()
>>> layer = LoraLinear(torch.nn.Linear(4, 3), selection)
>>> layer.add("a", torch.zeros(2, 4), torch.zeros(3, 2), scale=2.0)
>>> x = torch.ones(1, 4)
>>> selection.name = "a"
>>> bool(torch.equal(layer(x), layer.base(x)))  # a zero adapter changes nothing
True
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


class Selection:
    """Which adapter the next forward pass applies: ``name`` for the whole batch (``None``: the
    base alone), or ``rows``, one adapter (or ``None``) per batch row, when sequences of different
    fine-tunes share a decode step."""

    def __init__(self):
        self.name: str | None = None
        self.rows: list[str | None] | None = None


class LoraLinear(nn.Module):
    """``base(x)`` (an fp32 or int8 ``Linear``) plus the selected adapter's low-rank update."""

    def __init__(self, base: nn.Module, selection: Selection):
        super().__init__()
        self.base = base
        self.selection = selection
        self.adapters: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}

    def add(self, name: str, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        self.adapters[name] = (a, b, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        rows = self.selection.rows
        if rows is None:
            found = self.adapters.get(self.selection.name) if self.selection.name is not None else None
            if found is None:
                return out
            a, b, scale = found
            return out + F.linear(F.linear(x, a), b) * scale
        for name in set(rows) - {None}:
            if (found := self.adapters.get(name)) is None:
                continue
            a, b, scale = found
            index = torch.tensor([i for i, r in enumerate(rows) if r == name], dtype=torch.long)
            part = x.index_select(0, index)
            out = out.index_add(0, index, F.linear(F.linear(part, a), b) * scale)
        return out


def wrap(model: nn.Module, targets: tuple[str, ...], selection: Selection) -> int:
    """Put every ``nn.Linear`` whose name ends in one of ``targets`` under a :class:`LoraLinear`
    (once); returns how many were wrapped."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    ]
    for name, module in found:
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, LoraLinear(module, selection))
    return len(found)


def load(model: nn.Module, name: str, lora: dict, state: dict[str, torch.Tensor]) -> None:
    """Add adapter ``name`` from a peft state dict (``...q_proj.lora_A.weight``) and its LoRA
    settings (``r``, ``lora_alpha``, ``use_rslora``) to the wrapped layers of ``model``."""
    r = int(lora["r"])
    alpha = float(lora.get("lora_alpha", r))
    scale = alpha / (r**0.5) if lora.get("use_rslora") else alpha / r
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        match = PEFT_KEY.match(key)
        if match is None:
            raise ValueError(f"adapter weight {key!r} is not a LoRA A/B matrix")
        parts.setdefault(match["module"], {})[match["part"]] = tensor.detach().float()
    for module_name, ab in parts.items():
        layer = model.get_submodule(module_name)
        if not isinstance(layer, LoraLinear) or set(ab) != {"A", "B"}:
            raise ValueError(f"adapter {name!r} targets {module_name!r}, which takes no LoRA here")
        layer.add(name, ab["A"], ab["B"], scale)


def remove(model: nn.Module, name: str) -> None:
    for module in model.modules():
        if isinstance(module, LoraLinear):
            module.adapters.pop(name, None)


# Kept in fp32: the MLP's output projection. Its inputs carry the outlier activations that per-batch
# int8 activation quantisation flattens (SmolLM2, next-token agreement with fp32 on a news text:
# every Linear int8 0.38-0.41, all but down_proj 0.81, with a minimum logit cosine of 0.86).
FP32_KEEP = ("down_proj",)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamically quantise the projections under the LoRA layers and the LM head to int8 weights
    (per output channel; activations quantised per batch at run time), except :data:`FP32_KEEP`."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not any(f".{keep}." in f".{name}." for keep in FP32_KEEP)
    }
    return quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
