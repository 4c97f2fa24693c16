"""Sentence embeddings from aimass's text encoders, for ``POST /v1/embeddings``.

An embedding is the encoder's attention-masked mean over its last hidden states, L2-normalised
(:func:`aimass.backbones.text_net.mean_pool`, what classifiers are trained on). Models that embed:

* the text backbones by name, loaded on first use and kept: ``minilm-l6`` (alias ``minilm``,
  ``all-minilm-l6-v2``; 384-d, English) and ``multilingual-e5-small`` (alias ``e5-small``; 384-d);
* a served text-classification version (``reviews:3``): its own encoder, fine-tuned blocks included.

E5 was trained with ``"query: "`` / ``"passage: "`` in front of each text. A text that already starts
with one is embedded as it is; otherwise ``input_type`` (``query`` or ``passage``) picks the prefix,
and without it the backbone's default, ``"query: "`` (symmetric tasks: similarity, clustering).
Encoders without prefixes ignore ``input_type``. They run in bfloat16 where the CPU computes it
natively (:mod:`aimass.backbones.precision`).

>>> Embedder("x", tokenizer=None, encoder=None, prefix="query: ").prepare(["hi", "passage: doc"], None)
['query: hi', 'passage: doc']
>>> canonical("e5-small"), canonical("reviews:3")
('multilingual-e5-small', 'reviews:3')
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from aimass.backbones import get_backbone

if TYPE_CHECKING:
    import torch

ALIASES = {"minilm": "minilm-l6", "all-minilm-l6-v2": "minilm-l6", "e5-small": "multilingual-e5-small"}
BACKBONES = ("minilm-l6", "multilingual-e5-small")
PREFIXES = {"query": "query: ", "passage": "passage: "}


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


class Embedder:
    """A tokenizer and encoder that embed texts; ``prefix``: the default E5 prefix, if any."""

    def __init__(self, name: str, tokenizer, encoder, prefix: str = "", max_length: int = 512):
        self.name, self.tokenizer, self.encoder = name, tokenizer, encoder
        self.prefix, self.max_length = prefix, max_length
        self.lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        return int(self.encoder.config.hidden_size)

    def prepare(self, texts: list[str], input_type: str | None) -> list[str]:
        """The texts as the encoder reads them (E5 prefixes added where missing)."""
        if not self.prefix:
            return list(texts)
        prefix = PREFIXES.get(input_type or "", self.prefix)
        return [t if t.startswith(tuple(PREFIXES.values())) else prefix + t for t in texts]

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each prepared text, special tokens included (what ``usage`` counts)."""
        return [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]

    def embed(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """``[len(texts), dimensions]`` normalised mean-pooled vectors of prepared texts (longest first,
        dynamic padding; rows in the order given)."""
        import torch  # heavy: loaded by the first embedding, not by every module that imports this one

        from aimass.backbones.precision import low_precision
        from aimass.backbones.text_net import mean_pool

        out = torch.zeros(len(texts), self.dimensions)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self.lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                with low_precision():
                    hidden = self.encoder(**enc).last_hidden_state
                out[idx] = mean_pool(hidden.float(), enc["attention_mask"])
        return out


class Embedders:
    """Backbone embedders by name, each loaded once (a classifier's encoder needs no loading)."""

    def __init__(self):
        self._loaded: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    @staticmethod
    def names() -> list[str]:
        return list(BACKBONES)

    def backbone(self, name: str) -> Embedder:
        name = canonical(name)
        with self._lock:
            if name not in self._loaded:
                spec = get_backbone(name)
                tokenizer, encoder = spec.load()
                for p in encoder.parameters():
                    p.requires_grad_(False)
                self._loaded[name] = Embedder(name, tokenizer, encoder, spec.prefix, spec.max_positions)
            return self._loaded[name]

    @staticmethod
    def of_classifier(ref: str, model) -> Embedder | None:
        """The encoder of a fitted text classifier (None when it runs on another runtime)."""
        net, tokenizer = getattr(model, "net_", None), getattr(model, "tokenizer_", None)
        if net is None or tokenizer is None or getattr(model, "runtime_", None) is not None:
            return None
        limit = int(getattr(net.encoder.config, "max_position_embeddings", 512) or 512)
        return Embedder(ref, tokenizer, net.encoder, getattr(model, "prefix_", "") or "", min(512, limit))


EMBEDDERS = Embedders()
