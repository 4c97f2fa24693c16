"""One copy of each base model in memory, many LoRA adapters on it.

A served fine-tune (``headlines:2``) is an adapter attached by name to the shared base of its
backbone; ``adapter=None`` runs the base alone. A served base has its projections under
:class:`aimass.llm.lora.LoraLinear` layers (no peft at serving time) and, with
``AIMASS_LLM_QUANT=int8`` (``aimass serve --llm-quant int8``), int8 weights below them. A base
being fine-tuned holds a peft model instead (training needs peft's trainable wrappers).

>>> Hub().names()
[]
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from aimass.errors import ConfigError
from aimass.llm import lora as lora_layers
from aimass.llm.backbone import get_llm_backbone

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANT = ("none", "int8")


def quant_setting() -> str:
    """The served bases' weights: ``AIMASS_LLM_QUANT`` (``none``, the default, or ``int8``)."""
    value = (os.environ.get("AIMASS_LLM_QUANT") or "none").lower()
    if value not in QUANT:
        raise ConfigError(f"AIMASS_LLM_QUANT={value!r} is not one of {', '.join(QUANT)}.", hint="Use int8.")
    return value


@dataclass
class Base:
    backbone: str
    tokenizer: object
    model: object  # the transformers model (its projections LoRA-ready), or a PeftModel in training
    lock: threading.RLock = field(default_factory=threading.RLock)
    adapters: dict[str, int] = field(default_factory=dict)  # adapter name -> users
    selection: lora_layers.Selection = field(default_factory=lora_layers.Selection)
    quant: str = "none"

    @property
    def peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def attach(self, name: str, lora: dict, state: dict[str, torch.Tensor]) -> None:
        """Load adapter ``name`` (its LoRA settings and weights) onto this base; idempotent."""
        with self.lock:
            if name in self.adapters:
                self.adapters[name] += 1
                return
            lora_layers.load(self.model, name, lora, state)
            self.adapters[name] = 1

    def detach(self, name: str) -> None:
        with self.lock:
            if name not in self.adapters:
                return
            self.adapters[name] -= 1
            if self.adapters[name] <= 0:
                del self.adapters[name]
                lora_layers.remove(self.model, name)

    @contextmanager
    def using(self, adapter: str | None):
        """The model with ``adapter`` active (or none), under the lock."""
        with self.lock:
            if self.peft:  # a model being fine-tuned
                if adapter is None:
                    with self.model.disable_adapter():
                        yield self.model
                else:
                    self.model.set_adapter(adapter)
                    yield self.model
                return
            previous, self.selection.name = self.selection.name, adapter
            try:
                yield self.model
            finally:
                self.selection.name = previous

    @contextmanager
    def using_rows(self, adapters: list[str | None]):
        """The model applying ``adapters[i]`` to batch row i (fine-tunes mixed in one decode step)."""
        with self.lock:
            if len(set(adapters)) == 1:
                with self.using(adapters[0]) as model:
                    yield model
                return
            self.selection.rows = list(adapters)
            try:
                yield self.model
            finally:
                self.selection.rows = None


class Hub:
    """Bases by backbone name, each loaded once, LoRA-ready (and int8 when configured)."""

    def __init__(self):
        self._bases: dict[str, Base] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(self._bases)

    def base(self, backbone: str) -> Base:
        with self._lock:
            if backbone not in self._bases:
                quant = quant_setting()
                tokenizer, model = get_llm_backbone(backbone).load()
                for p in model.parameters():
                    p.requires_grad_(False)
                model.eval()
                selection = lora_layers.Selection()
                lora_layers.wrap(model, LORA_TARGETS, selection)
                if quant == "int8":
                    ids = tokenizer(lora_layers.CALIBRATION, return_tensors="pt")["input_ids"]
                    lora_layers.quantize_int8(model, ids)
                self._bases[backbone] = Base(backbone, tokenizer, model, selection=selection, quant=quant)
            return self._bases[backbone]


HUB = Hub()
