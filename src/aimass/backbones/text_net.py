"""The text network: a pretrained encoder, masked mean pooling and a linear head.

The network can start from any layer, so training the top ``k`` blocks runs on
cached outputs of the frozen lower blocks and costs only those ``k`` blocks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from aimass.backbones import layers
from aimass.backbones.precision import low_precision


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over tokens, L2-normalised."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return nn.functional.normalize(pooled, dim=-1)


class Head(nn.Module):
    """Linear classifier over the pooled embedding plus an optional TF-IDF branch."""

    def __init__(self, dim: int, n_classes: int, n_lexical: int = 0, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(dim, n_classes)
        self.lexical = nn.Linear(n_lexical, n_classes, bias=False) if n_lexical else None
        if self.lexical is not None:
            nn.init.zeros_(self.lexical.weight)

    def forward(self, pooled: torch.Tensor, lexical: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.dense(self.dropout(pooled))
        if self.lexical is not None and lexical is not None:
            with torch.autocast("cpu", enabled=False):  # sparse products have no bfloat16 kernel
                logits = logits.float() + torch.sparse.mm(lexical, self.lexical.weight.t())
        return logits


class TextNet(nn.Module):
    """Encoder + head. ``forward_from(k, hidden, mask)`` runs blocks ``k..`` only."""

    def __init__(self, encoder: nn.Module, head: Head):
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def n_layers(self) -> int:
        return len(layers(self.encoder))

    def pooled_from(self, start: int, hidden, mask) -> torch.Tensor:
        """The normalised mean-pooled embedding after running blocks ``start..``."""
        if start < self.n_layers:
            bias = create_bidirectional_mask(
                config=self.encoder.config, inputs_embeds=hidden, attention_mask=mask
            )
            for block in list(layers(self.encoder))[start:]:
                hidden = block(hidden, attention_mask=bias)
        return mean_pool(hidden, mask)

    @torch.inference_mode()
    def runs_blockwise(self, tokenizer) -> bool:
        """Whether the blocks, run one by one from the embeddings (what :meth:`pooled_from` does to
        fine-tune the top ones on cached hidden states), give what the whole encoder gives on a short
        probe text. DeBERTa's blocks do not: they need relative positions their encoder makes."""
        enc = tokenizer(["a short probe text"], return_tensors="pt")
        mask = enc["attention_mask"]
        try:
            out = self.encoder(**enc, output_hidden_states=True)
            blockwise = self.pooled_from(0, out.hidden_states[0], mask)
        except (TypeError, AttributeError, ValueError, RuntimeError, IndexError):
            return False
        return torch.allclose(blockwise, mean_pool(out.last_hidden_state, mask), atol=1e-4)

    def forward_from(self, start: int, hidden, mask, lexical=None) -> torch.Tensor:
        return self.head(self.pooled_from(start, hidden, mask), lexical)

    def forward(self, input_ids, attention_mask, lexical=None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask), lexical)


def block_seconds(net, batch_size: int, length: int) -> tuple[float, float]:
    """(forward, forward + backward) seconds of one encoder block on a ``batch_size`` x ``length``
    batch, timed on random hidden states (a second, steady pass) before anything is embedded."""
    block = list(layers(net.encoder))[-1]
    shape = (batch_size, length, net.encoder.config.hidden_size)
    hidden = torch.randn(shape, generator=torch.Generator().manual_seed(0))  # the global RNG untouched
    mask = torch.ones(batch_size, length, dtype=torch.long)
    bias = create_bidirectional_mask(config=net.encoder.config, inputs_embeds=hidden, attention_mask=mask)
    was = [p.requires_grad for p in block.parameters()]
    for p in block.parameters():
        p.requires_grad_(True)
    try:
        for _ in range(2):
            began = time.perf_counter()
            with torch.inference_mode(), low_precision():  # as embed() runs it
                block(hidden, attention_mask=bias)
            forward = time.perf_counter() - began
            began = time.perf_counter()
            out = block(hidden, attention_mask=bias)
            out = out[0] if isinstance(out, tuple) else out
            out.float().pow(2).mean().backward()
            both = time.perf_counter() - began
    finally:
        for p, flag in zip(block.parameters(), was, strict=True):
            p.grad = None
            p.requires_grad_(flag)
    return forward, both


def token_counts(tokenizer, texts: list[str]) -> list[int]:
    """Token counts of (a sample of at most ~2000 of) ``texts``, sorted."""
    sample = texts[:: max(1, len(texts) // 2000)]
    return sorted(len(ids) for ids in tokenizer(sample, truncation=False)["input_ids"])


def token_budget(counts: list[int], cap: int, quantile: float = 0.95) -> int:
    """The sequence length the data needs: the ``quantile`` of token counts, at most ``cap``."""
    need = counts[min(len(counts) - 1, int(quantile * len(counts)))] if counts else 8
    return int(min(cap, max(8, math.ceil(need / 8) * 8)))


@torch.inference_mode()
def embed(
    encoder,
    tokenizer,
    texts: list[str],
    *,
    max_length: int,
    keep_layer: int | None = None,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Run the frozen encoder once over ``texts`` (longest first, dynamic padding).

    Returns ``pooled`` [N, H] and, when ``keep_layer`` is given, that layer's
    hidden states ``hidden`` [N, L, H] (fp16) with their ``mask`` [N, L] — the
    cache that top-layer fine-tuning runs on.
    """
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    dim = encoder.config.hidden_size
    out = {"pooled": torch.zeros(len(texts), dim)}
    if keep_layer is not None:
        out["hidden"] = torch.zeros(len(texts), max_length, dim, dtype=torch.float16)
        out["mask"] = torch.zeros(len(texts), max_length, dtype=torch.int8)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        _embed_batch(encoder, tokenizer, [texts[i] for i in idx], idx, max_length, keep_layer, out)
        if progress:
            progress(len(idx))
    return out


def _embed_batch(encoder, tokenizer, batch, idx, max_length, keep_layer, out) -> None:
    enc = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with low_precision():
        result = encoder(**enc, output_hidden_states=keep_layer is not None)
    out["pooled"][idx] = mean_pool(result.last_hidden_state.float(), enc["attention_mask"])
    if keep_layer is not None:
        width = enc["input_ids"].shape[1]
        out["hidden"][idx, :width] = result.hidden_states[keep_layer].to(torch.float16)
        out["mask"][idx, :width] = enc["attention_mask"].to(torch.int8)


class Timer:
    """Wall time of named stages, for reports."""

    def __init__(self):
        self.stages: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.stages[name] = round(self.stages.get(name, 0.0) + now - self._t0, 2)
        self._t0 = now
        return self.stages[name]
