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

Works on the block layouts of the encoders aimass takes as backbones, one entry each in
:data:`LAYOUTS` (where a block keeps the parts a structure changes): BERT's (BERT, MiniLM, RoBERTa,
XLM-R, ELECTRA), DistilBERT's, DeBERTa-v2's (DeBERTa-v2 and v3) and DeBERTa's, whose heads stay
(one fused query/key/value projection, heads mixed by ``talking_head``). Any other encoder is
refused with a ConfigError before anything changes, never half cut.

>>> from transformers import BertConfig, BertModel
>>> encoder = BertModel(BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
...                                intermediate_size=64), add_pooling_layer=False)
>>> apply(encoder, {"layers": [1, 3], "heads": [[0], []], "ffn": [16, 64]})
>>> describe(encoder)
{'layers': 2, 'heads': [3, 4], 'ffn': [16, 64]}
>>> layout_of(encoder).name
'bert'
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aimass.backbones import block_path, layers
from aimass.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    """Where one family's blocks keep the parts a structure changes (dotted names).

    ``attention`` (from the block): the module running the heads; its ``count`` attribute is how
    many it runs and its ``attention_head_size`` their width. ``rows`` (from ``attention``): its
    projections with one slice of output rows per head; ``optional`` ones only some configurations
    have (DeBERTa-v2's position projections, absent when they share the content ones). ``out``
    (from the block): the projection with one slice of input columns per head. ``ffn`` (from the
    block): the feed-forward's up and down projections. ``heads``: whether heads can be removed.
    """

    name: str
    attention: str
    count: str
    rows: tuple[str, ...]
    out: str
    ffn: tuple[str, str]
    optional: tuple[str, ...] = ()
    heads: bool = True

    def parts(self) -> list[str]:
        """The dotted names (from the block) that a block of this layout must have."""
        inside = [f"{self.attention}.{name}" for name in (self.count, *self.rows)]
        return [*inside, self.out, *self.ffn]


BERT_ATTENTION = {
    "attention": "attention.self",
    "count": "num_attention_heads",
    "out": "attention.output.dense",
}
BERT_FFN = ("intermediate.dense", "output.dense")
LAYOUTS = (  # BERT, MiniLM, RoBERTa, XLM-R and ELECTRA share BERT's blocks
    Layout("bert", rows=("query", "key", "value"), ffn=BERT_FFN, **BERT_ATTENTION),
    Layout(
        "distilbert",
        attention="attention",
        count="n_heads",
        rows=("q_lin", "k_lin", "v_lin"),
        out="attention.out_lin",
        ffn=("ffn.lin1", "ffn.lin2"),
    ),
    Layout(  # the relative-position embeddings are shared and head-free; their projections are per head
        "deberta-v2",
        rows=("query_proj", "key_proj", "value_proj"),
        optional=("pos_key_proj", "pos_query_proj"),
        ffn=BERT_FFN,
        **BERT_ATTENTION,
    ),
    # DeBERTa (v1): q, k and v in one ``in_proj`` with per-head biases beside it, and heads mixed by
    # ``talking_head``: layers and FFN channels only
    Layout("deberta", rows=("in_proj",), ffn=BERT_FFN, heads=False, **BERT_ATTENTION),
)
HINT = (
    "Compress it with int8-dynamic, onnx or onnx-int8 instead, or fine-tune on a backbone of the BERT family "
    "(BERT, MiniLM, RoBERTa, XLM-R, ELECTRA) or DistilBERT to distill or prune it."
)


def layout_of(encoder, backbone: str = "") -> Layout:
    """The entry of :data:`LAYOUTS` that ``encoder``'s blocks follow; a ConfigError naming the
    ``backbone`` and the encoder (its class and model type) when none does."""
    model_type = getattr(getattr(encoder, "config", None), "model_type", "?")
    owner = f"a {type(encoder).__name__} encoder (model type '{model_type}')"
    return _layout(layers(encoder)[0], f"backbone {backbone!r}, {owner}" if backbone else owner)


def _layout(block, owner: str = "") -> Layout:
    """The first entry of :data:`LAYOUTS` whose parts ``block`` has; else a ConfigError naming
    ``owner`` (the encoder), or the block's class."""
    for layout in LAYOUTS:
        if all(_part(block, name) is not None for name in layout.parts()):
            return layout
    raise ConfigError(
        f"aimass cannot remove layers, attention heads or feed-forward channels of "
        f"{owner or f'a {type(block).__name__} block'}: its blocks follow none of the layouts it knows "
        f"({', '.join(layout.name for layout in LAYOUTS)}).",
        hint=HINT,
    )


def full(encoder) -> dict:
    """The structure of an encoder as its backbone ships it (nothing removed)."""
    layout = layout_of(encoder)
    blocks = list(layers(encoder))
    return {
        "layers": list(range(len(blocks))),
        "heads": [[] for _ in blocks],
        "ffn": [_part(block, layout.ffn[0]).out_features for block in blocks],
    }


def apply(encoder, structure: dict) -> None:
    """Reshape a freshly loaded backbone ``encoder`` in place to ``structure``; one it cannot take
    (an unknown layout, heads where they cannot go) is refused before anything changes."""
    layout_of(encoder)  # an unknown layout, named by its encoder
    if any(structure["heads"]):
        head_parts(layers(encoder)[0])  # a layout whose heads stay
    keep_layers(encoder, structure["layers"])
    for block, heads, ffn in zip(layers(encoder), structure["heads"], structure["ffn"], strict=True):
        prune_heads(block, heads)
        keep_channels(block, torch.arange(ffn))


def describe(encoder) -> dict:
    """How many layers, heads per layer and FFN channels per layer ``encoder`` runs."""
    layout = layout_of(encoder)
    blocks = list(layers(encoder))
    return {
        "layers": len(blocks),
        "heads": [getattr(_part(block, layout.attention), layout.count) for block in blocks],
        "ffn": [_part(block, layout.ffn[0]).out_features for block in blocks],
    }


def keep_layers(encoder, index: list[int]) -> None:
    """Keep only the blocks at positions ``index`` (bottom to top) of ``encoder``."""
    layout_of(encoder)  # an encoder the other steps cannot cut is refused before it changes
    blocks = list(layers(encoder))
    _set(encoder, block_path(encoder), nn.ModuleList([blocks[i] for i in index]))
    encoder.config.num_hidden_layers = len(index)  # DistilBERT's config maps it to n_layers


def heads_of(block) -> int:
    """The number of attention heads ``block`` was built with (its backbone's): those it runs and
    those :func:`prune_heads` removed (``block.pruned_heads``)."""
    layout = _layout(block)
    return getattr(_part(block, layout.attention), layout.count) + len(getattr(block, "pruned_heads", ()))


def alive_heads(block) -> list[int]:
    """The backbone numbers of the heads ``block`` still runs, in order."""
    done = set(getattr(block, "pruned_heads", ()))
    return [h for h in range(heads_of(block)) if h not in done]


def head_parts(block) -> tuple[dict[str, nn.Linear], nn.Linear, int]:
    """(the projections with one slice of output rows per head, by name within the attention
    module; the one with a slice of input columns per head; a head's width) of ``block``; a
    ConfigError where heads cannot be removed."""
    layout = _layout(block)
    if not layout.heads:
        raise ConfigError(
            f"Attention heads cannot be removed from a {type(block).__name__} block ({layout.name}): "
            "its heads share one query/key/value projection.",
            hint="Keep its heads: remove layers or feed-forward channels only.",
        )
    attention = _part(block, layout.attention)
    rows = {name: _part(attention, name) for name in (*layout.rows, *layout.optional)}
    rows = {name: linear for name, linear in rows.items() if linear is not None}
    return rows, _part(block, layout.out), attention.attention_head_size


def ffn_parts(block) -> tuple[nn.Linear, nn.Linear]:
    """The feed-forward's up and down projections of ``block``."""
    up, down = _layout(block).ffn
    return _part(block, up), _part(block, down)


def prune_heads(block, heads) -> None:
    """Remove attention ``heads`` (backbone numbering; already removed ones are skipped)."""
    alive = alive_heads(block)
    keep = [i for i, h in enumerate(alive) if h not in set(heads)]
    if len(keep) == len(alive):
        return
    rows, out, size = head_parts(block)
    if not keep:
        raise ConfigError("A layer must keep at least one attention head.", hint="Prune fewer heads.")
    layout = _layout(block)
    attention = _part(block, layout.attention)
    index = torch.cat([torch.arange(i * size, (i + 1) * size) for i in keep])
    for name, linear in rows.items():
        setattr(attention, name, _cut(linear, index, dim=0))
    _set(block, layout.out, _cut(out, index, dim=1))
    setattr(attention, layout.count, len(keep))
    if hasattr(attention, "all_head_size"):  # BERT's and DeBERTa's; DistilBERT's views take -1
        attention.all_head_size = len(keep) * size
    block.pruned_heads = set(getattr(block, "pruned_heads", ())) | {h for h in alive if h in set(heads)}


def keep_channels(block, index: torch.Tensor) -> None:
    """Keep the intermediate (FFN) channels at positions ``index`` of ``block``."""
    up, down = ffn_parts(block)
    if len(index) == up.out_features:
        return
    if not len(index):
        raise ConfigError("A layer must keep at least one FFN channel.", hint="Prune fewer channels.")
    names = _layout(block).ffn
    _set(block, names[0], _cut(up, index, dim=0))
    _set(block, names[1], _cut(down, index, dim=1))


def _part(module, dotted: str):
    """The attribute at ``dotted`` (``attention.self.query``) below ``module``, or None."""
    for name in dotted.split("."):
        module = getattr(module, name, None)
    return module


def _set(module, dotted: str, value) -> None:
    """Replace the attribute at ``dotted`` below ``module`` with ``value``."""
    parent, _, name = dotted.rpartition(".")
    setattr(_part(module, parent) if parent else module, name, value)


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
