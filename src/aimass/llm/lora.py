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


# What the int8 weights are calibrated on: one forward pass of fp32 over this text records each
# projection's largest input per channel, for SmoothQuant's per-channel scales (a few channels of
# a small LM carry activations 100-1000x the rest; int8 activations quantised per call flatten them).
CALIBRATION = (
    "The central bank left interest rates unchanged on Thursday, saying that inflation had eased but "
    "that the labour market was still tight. Shares in London rose after the decision, while the pound "
    "fell against the dollar. In other news, the football club announced a new manager, a film about a "
    "young musician won the top prize at the festival, and the government published plans to build "
    "new homes across the country. Scientists said a new battery could charge a phone in five minutes. "
    "Question: what is the capital of France? Answer: Paris. Write a short headline for this article. "
    'def add(a, b):\n    return a + b\n{"name": "Ada", "age": 36, "tags": ["math", "code"]}\n'
)
SMOOTH_ALPHA = 0.5  # how much of an input channel's range moves into the weights (SmoothQuant's alpha)


PROMPT_ROWS = 16  # a call with more tokens per sequence than this (a prompt) runs fp32


class Int8Linear(nn.Module):
    """A ``Linear`` with int8 weights (per output channel) behind a SmoothQuant input scale.

    A decode step's few rows run fbgemm's dynamic int8 kernel, weights read at a quarter of fp32's
    bytes. The kernel quantises its input with one scale per call, so the rows are first divided
    by their own largest value (and the output rows multiplied back, exact in fp32): each token
    gets a scale of its own, as the rows of a batch of different requests should. A prompt's many
    tokens (over :data:`PROMPT_ROWS` per sequence; a decode step has one, however large the batch)
    run fp32 on the dequantised weights instead: a prompt is compute-bound, and its tokens' errors
    would stay in the KV cache for the whole answer. SmolLM2, next-token agreement with fp32 over a
    300-token news prompt: 0.95 this way, 0.88 with int8 activations per token, 0.40 with one int8
    scale for the whole prompt.
    """

    def __init__(self, quantized: nn.Module, bias: torch.Tensor | None = None, inv_scale=None):
        super().__init__()
        self.quantized = quantized
        weight = quantized.weight()
        self.register_buffer("weight_int8", weight.int_repr())  # for prompts (unpacking costs more)
        self.register_buffer("weight_scale", weight.q_per_channel_scales().float())
        self.register_buffer("bias", bias)
        self.register_buffer("inv_scale", inv_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inv_scale is not None:
            x = x * self.inv_scale
        tokens = x.shape[-2] if x.dim() > 1 else 1  # per sequence: a decode step's batch has 1
        if tokens > PROMPT_ROWS:
            out = F.linear(x, self.weight_int8.float()) * self.weight_scale  # scales per output
        elif x.numel() > x.shape[-1]:
            top = x.abs().amax(-1, keepdim=True).clamp(min=1e-6)
            out = self.quantized(x / top) * top
        else:
            out = self.quantized(x)
        return out if self.bias is None else out + self.bias


@torch.inference_mode()
def input_ranges(model: nn.Module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The largest absolute input per channel of every ``nn.Linear`` over one forward pass."""
    ranges: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(module, inputs, output):
            x = inputs[0]
            top = x.detach().abs().reshape(-1, x.shape[-1]).amax(0)
            ranges[name] = torch.maximum(ranges[name], top) if name in ranges else top

        return hook

    hooks = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    ]
    try:
        model(input_ids=input_ids)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # siblings that read one input


class Shared(nn.Module):
    """One :class:`Int8Linear` computing sibling projections of the same input (``q, k, v``;
    ``gate, up``) in one kernel call: a decode step's small calls cost their overhead more than
    their arithmetic (SmolLM2, 1 thread: q, k and v 79 us apart, 31 us fused). The model still
    calls each projection: the first call computes every part for that input tensor, the others
    take their slice of it."""

    def __init__(self, linear: Int8Linear, sizes: list[int]):
        super().__init__()
        self.linear, self.sizes = linear, sizes
        self._input: torch.Tensor | None = None
        self._parts: tuple[torch.Tensor, ...] = ()

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if x is not self._input:  # the input is held, so a new tensor can never share its id
            self._parts = self.linear(x).split(self.sizes, -1)
            self._input = x
        return self._parts[index]


class SharedPart(nn.Module):
    def __init__(self, shared: Shared, index: int):
        super().__init__()
        self.shared, self.index = shared, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.part(x, self.index)


def sibling_groups(names) -> list[tuple[str, ...]]:
    """``names`` of linears grouped as :data:`FUSED` siblings where a whole group is there."""
    names, groups, taken = list(names), [], set()
    for name in names:
        parts = name.split(".")
        for group in FUSED:
            if group[0] in parts and name not in taken:
                at = parts.index(group[0])
                members = tuple(".".join(parts[:at] + [g] + parts[at + 1 :]) for g in group)
                if all(m in names for m in members):
                    groups.append(members)
                    taken.update(members)
    return groups + [(name,) for name in names if name not in taken]


def int8_linear(weight: torch.Tensor, bias: torch.Tensor | None, inv_scale=None) -> Int8Linear:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    linear.qconfig = per_channel_dynamic_qconfig
    return Int8Linear(DynamicLinear.from_float(linear), bias, inv_scale)


@torch.no_grad()
def quantize_int8(model: nn.Module, calibration_ids: torch.Tensor | None = None) -> nn.Module:
    """Give every projection (under the LoRA layers) and the LM head int8 weights, in place;
    siblings reading one input (:data:`FUSED`) become one :class:`Shared` kernel call.

    With ``calibration_ids`` (token ids ``[1, T]``, e.g. of :data:`CALIBRATION`) each layer's
    input channels are first rescaled as SmoothQuant does: ``W[:, j] * s_j`` and ``x_j / s_j``,
    ``s_j = max|x_j| ** alpha / max|W[:, j]| ** (1 - alpha)``, exact in fp32, so the int8 kernel
    sees flatter activations. SmolLM2 greedy decoding, teacher-forced on news text, picks fp32's
    next token at 0.88 of the positions this way (0.80 without the scales). A tied LM head keeps
    its fp32 embedding untouched."""
    import warnings

    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    ranges = input_ranges(model, calibration_ids) if calibration_ids is not None else {}
    for group in sibling_groups(linears):
        weight = torch.cat([linears[n].weight.detach().float() for n in group])
        biases = [linears[n].bias for n in group]
        bias = None
        if any(b is not None for b in biases):
            bias = torch.cat(
                [
                    b.detach().float() if b is not None else weight.new_zeros(linears[n].out_features)
                    for n, b in zip(group, biases)
                ]
            )
        inverse = None
        if group[0] in ranges:
            scale = ranges[group[0]].clamp(min=1e-5) ** SMOOTH_ALPHA
            scale = (scale / weight.abs().amax(0).clamp(min=1e-5) ** (1 - SMOOTH_ALPHA)).clamp(min=1e-5)
            weight, inverse = weight * scale[None, :], 1.0 / scale
        with warnings.catch_warnings():  # torch marks eager-mode quantisation deprecated, yet ships it
            warnings.simplefilter("ignore")
            layer = int8_linear(weight, bias, inverse)
        shared = Shared(layer, [linears[n].out_features for n in group]) if len(group) > 1 else None
        for index, name in enumerate(group):
            parent, _, leaf = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, leaf, SharedPart(shared, index) if shared is not None else layer)
    return model
