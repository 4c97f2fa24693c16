"""One copy of each base model in memory, many LoRA adapters on it.

A served fine-tune (``headlines:2``) is an adapter attached by name to the shared base of its
backbone; ``adapter=None`` runs the base alone. A served base has its projections under
:class:`aimass.llm.lora.LoraLinear` layers (no peft at serving time) and, with
``AIMASS_LLM_QUANT=int8`` (``aimass serve --llm-quant int8``), int8 weights below them. With
``int4`` the base also gets an int4 ONNX graph (:mod:`aimass.llm.int4`) that decodes its
requests and its fine-tunes' too: each attached fine-tune's LoRA is fed to that one graph as
inputs (:mod:`aimass.llm.int4_lora`), so ten fine-tunes still cost one copy of the base. A base
being fine-tuned holds a peft model instead (training needs peft's trainable wrappers).

>>> Hub().names()
[]
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aimass.errors import ConfigError
from aimass.llm.backbone import get_llm_backbone

if TYPE_CHECKING:
    import torch

    from aimass.llm import lora as lora_layers

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANT = ("none", "int8", "int4")


def _lora():
    """:mod:`aimass.llm.lora` (torch), imported when a base loads: the server imports this module
    to list the bases, and a server that serves no language model never loads torch for it."""
    from aimass.llm import lora

    return lora


def quant_setting() -> str:
    """The served bases' weights: ``AIMASS_LLM_QUANT`` (``none``, the default, ``int8`` or ``int4``)."""
    value = (os.environ.get("AIMASS_LLM_QUANT") or "none").lower()
    if value not in QUANT:
        raise ConfigError(
            f"AIMASS_LLM_QUANT={value!r} is not one of {', '.join(QUANT)}.", hint="Use none, int8 or int4."
        )
    return value


@dataclass
class Base:
    backbone: str
    tokenizer: object
    model: object  # the transformers model (its projections LoRA-ready), or a PeftModel in training
    lock: threading.RLock = field(default_factory=threading.RLock)
    adapters: dict[str, int] = field(default_factory=dict)  # adapter name -> users
    selection: lora_layers.Selection = field(default_factory=lambda: _lora().Selection())
    quant: str = "none"
    int4: object = None  # with --llm-quant int4, the aimass.llm.int4.Runner of the base and its fine-tunes

    @property
    def peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def attach(self, name: str, lora: dict, state: dict[str, torch.Tensor]) -> None:
        """Load adapter ``name`` (its LoRA settings and weights) onto this base; idempotent."""
        with self.lock:
            if name in self.adapters:
                self.adapters[name] += 1
                return
            _lora().load(self.model, name, lora, state)
            if self.int4 is not None:
                self.int4.add_adapter(name, self.model)
            self.adapters[name] = 1

    def detach(self, name: str) -> None:
        with self.lock:
            if name not in self.adapters:
                return
            self.adapters[name] -= 1
            if self.adapters[name] <= 0:
                del self.adapters[name]
                _lora().remove(self.model, name)
                if self.int4 is not None:
                    self.int4.remove_adapter(name)

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
                lora_layers = _lora()
                selection = lora_layers.Selection()
                lora_layers.wrap(model, LORA_TARGETS, selection)
                if quant == "int8":
                    ids = tokenizer(lora_layers.CALIBRATION, return_tensors="pt")["input_ids"]
                    lora_layers.quantize_int8(model, ids)
                base = Base(backbone, tokenizer, model, selection=selection, quant=quant)
                if quant == "int4":
                    base.int4 = _int4_runner(backbone, model)
                self._bases[backbone] = base
            return self._bases[backbone]


def context_limit(model) -> int:
    """The context the server allows: the model's, at most ``AIMASS_LLM_MAX_CONTEXT`` (4,096)."""
    model_limit = getattr(model.config, "max_position_embeddings", None) or 2048
    return min(model_limit, int(os.environ.get("AIMASS_LLM_MAX_CONTEXT", "4096")))


def _int4_runner(backbone: str, model):
    from aimass.llm import int4

    where = get_llm_backbone(backbone).locate()
    if not Path(where).is_dir():  # a Hub id: its snapshot, downloaded by load()
        from huggingface_hub import snapshot_download

        where = snapshot_download(where, local_files_only=True)
    return _runner(int4.built(where, backbone), model)


def _runner(folder, model):
    from aimass.llm import batcher, decode, int4

    return int4.Runner(folder, context_limit(model), max(8, batcher.MAX_BATCH), threads=decode.set_threads())


HUB = Hub()
