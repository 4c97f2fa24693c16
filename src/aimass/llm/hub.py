"""One copy of each base model in memory, many LoRA adapters on it.

A served fine-tune (``headlines:2``) is an adapter attached by name to the shared base of its
backbone; ``adapter=None`` runs the base alone. Decoding holds the base's lock: one request
decodes at a time on a base (a first, per-request path; see docs note in ``openai_routes``).

>>> Hub().names()
[]
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from aimass.llm.backbone import get_llm_backbone

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Base:
    backbone: str
    tokenizer: object
    model: object  # the transformers model, wrapped in a PeftModel once an adapter attaches
    lock: threading.RLock = field(default_factory=threading.RLock)
    adapters: dict[str, int] = field(default_factory=dict)  # adapter name -> users

    @property
    def peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def attach(self, name: str, lora: dict, state: dict[str, torch.Tensor]) -> None:
        """Load adapter ``name`` (its LoRA settings and weights) onto this base; idempotent."""
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        with self.lock:
            if name in self.adapters:
                self.adapters[name] += 1
                return
            config = LoraConfig(**lora)
            if not self.peft:
                self.model = get_peft_model(self.model, config, adapter_name=name)
            else:
                self.model.add_adapter(name, config)
            set_peft_model_state_dict(self.model, state, adapter_name=name)
            self.model.eval()
            self.adapters[name] = 1

    def detach(self, name: str) -> None:
        with self.lock:
            if name not in self.adapters:
                return
            self.adapters[name] -= 1
            if self.adapters[name] <= 0:
                del self.adapters[name]
                if len(self.model.peft_config) > 1:
                    self.model.delete_adapter(name)
                # the last adapter stays loaded (peft cannot delete it) but is never selected again

    @contextmanager
    def using(self, adapter: str | None):
        """The model with ``adapter`` active (or none), under the lock."""
        with self.lock:
            if adapter is None:
                if self.peft:
                    with self.model.disable_adapter():
                        yield self.model
                else:
                    yield self.model
                return
            self.model.set_adapter(adapter)
            yield self.model


class Hub:
    """Bases by backbone name, each loaded once."""

    def __init__(self):
        self._bases: dict[str, Base] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(self._bases)

    def base(self, backbone: str) -> Base:
        with self._lock:
            if backbone not in self._bases:
                tokenizer, model = get_llm_backbone(backbone).load()
                for p in model.parameters():
                    p.requires_grad_(False)
                self._bases[backbone] = Base(backbone, tokenizer, model)
            return self._bases[backbone]


HUB = Hub()
