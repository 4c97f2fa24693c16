"""Architecture changes of a text encoder that survive save/load: which backbone layers are kept,
which attention heads each kept layer lost and how many feed-forward channels it keeps.

A structure is a small JSON-able dict, stored as a fitted ``structure_`` of the model::

    {"layers": [2, 5],        # backbone layers kept, bottom to top
     "heads": [[0, 7], []],   # per kept layer: pruned attention heads (backbone numbering)
     "ffn": [768, 1536]}      # per kept layer: intermediate (FFN) channels kept

:func:`apply` reshapes a freshly loaded backbone encoder to a structure before the saved weights
are loaded into it (shapes change, so it must come first). The compressors change a copy of a
fitted encoder step by step with :func:`keep_layers`, :func:`prune_heads` and
:func:`keep_channels`, which pick *which* heads and channels go; a saved model only needs their
number, since its weights are stored already cut.

Works on Hugging Face BERT-style encoders (BERT, MiniLM, XLM-R): ``encoder.encoder.layer[i]``
with ``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``
and ``output.dense``.

>>> from transformers import BertConfig, BertModel
>>> encoder = BertModel(BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
...                                intermediate_size=64), add_pooling_layer=False)
>>> apply(encoder, {"layers": [1, 3], "heads": [[0], []], "ffn": [16, 64]})
>>> describe(encoder)
{'layers': 2, 'heads': [3, 4], 'ffn': [16, 64]}
"""

from __future__ import annotations

import torch
from torch import nn

from aimass.backbones import layers
from aimass.errors import ConfigError


def full(encoder) -> dict:
    """The structure of an encoder as its backbone ships it (nothing removed)."""
    blocks = list(layers(encoder))
    return {
        "layers": list(range(len(blocks))),
        "heads": [[] for _ in blocks],
        "ffn": [block.intermediate.dense.out_features for block in blocks],
    }


def apply(encoder, structure: dict) -> None:
    """Reshape a freshly loaded backbone ``encoder`` in place to ``structure``."""
    keep_layers(encoder, structure["layers"])
    for block, heads, ffn in zip(layers(encoder), structure["heads"], structure["ffn"], strict=True):
        prune_heads(block, heads)
        keep_channels(block, torch.arange(ffn))


def describe(encoder) -> dict:
    """How many layers, heads per layer and FFN channels per layer ``encoder`` runs."""
    blocks = list(layers(encoder))
    return {
        "layers": len(blocks),
        "heads": [block.attention.self.num_attention_heads for block in blocks],
        "ffn": [block.intermediate.dense.out_features for block in blocks],
    }


def keep_layers(encoder, index: list[int]) -> None:
    """Keep only the blocks at positions ``index`` (bottom to top) of ``encoder``."""
    blocks = list(layers(encoder))
    encoder.encoder.layer = nn.ModuleList([blocks[i] for i in index])
    encoder.config.num_hidden_layers = len(index)


def heads_of(block) -> int:
    """The number of attention heads ``block`` was built with (its backbone's)."""
    return block.attention.self.config.num_attention_heads


def prune_heads(block, heads) -> None:
    """Remove attention ``heads`` (backbone numbering; already removed ones are skipped)."""
    attention = block.attention
    done = set(getattr(attention, "pruned_heads", ()))
    alive = [h for h in range(heads_of(block)) if h not in done]
    keep = [i for i, h in enumerate(alive) if h not in set(heads)]
    if len(keep) == len(alive):
        return
    if not keep:
        raise ConfigError("A layer must keep at least one attention head.", hint="Prune fewer heads.")
    size = attention.self.attention_head_size
    index = torch.cat([torch.arange(i * size, (i + 1) * size) for i in keep])
    for name in ("query", "key", "value"):
        setattr(attention.self, name, _cut(getattr(attention.self, name), index, dim=0))
    attention.output.dense = _cut(attention.output.dense, index, dim=1)
    attention.self.num_attention_heads = len(keep)
    attention.self.all_head_size = len(keep) * size
    attention.pruned_heads = done | set(heads)


def alive_heads(block) -> list[int]:
    """The backbone numbers of the heads ``block`` still runs, in order."""
    done = set(getattr(block.attention, "pruned_heads", ()))
    return [h for h in range(heads_of(block)) if h not in done]


def keep_channels(block, index: torch.Tensor) -> None:
    """Keep the intermediate (FFN) channels at positions ``index`` of ``block``."""
    if len(index) == block.intermediate.dense.out_features:
        return
    if not len(index):
        raise ConfigError("A layer must keep at least one FFN channel.", hint="Prune fewer channels.")
    block.intermediate.dense = _cut(block.intermediate.dense, index, dim=0)
    block.output.dense = _cut(block.output.dense, index, dim=1)


def _cut(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` keeping the output rows (``dim=0``) or input columns (``dim=1``)."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias
    if bias is not None and dim == 0:
        bias = bias.detach()[index].clone()
    elif bias is not None:
        bias = bias.detach().clone()
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    out = out.to(dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    out.requires_grad_(linear.weight.requires_grad)
    return out
