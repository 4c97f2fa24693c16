"""``prune``: structured pruning that buys real speed on a CPU: whole attention heads and whole
feed-forward (FFN) channels leave every encoder layer, so its matrices get smaller.

1. Importance: first-order Taylor scores ``|w * dL/dw|`` of each head (its query/key/value rows and
   output-projection columns) and each FFN channel (its up-projection row and down-projection
   column; BERT's ``intermediate.dense`` and ``output.dense``, DistilBERT's ``ffn.lin1`` and
   ``ffn.lin2``: :data:`aimass.compressors.structure.LAYOUTS`), with gradients of the cross-entropy
   on ``samples`` training texts.
2. Each layer loses the ``heads`` fraction of its least important heads (it keeps at least one)
   and the ``ffn`` fraction of its least important channels (it keeps a multiple of 8).
3. A short fine-tune learns from the parent's soft targets and the labels
   (:func:`aimass.compressors.distill.fit_student`) within ``time_budget``.

Example:
    >>> from aimass.compressors import get_compressor
    >>> method = get_compressor("prune", heads=0.5, ffn=0.5)
    >>> child = method.compress(parent, dataset, get_task(parent.task))  # doctest: +SKIP
"""

from __future__ import annotations

import random
import time

import torch
from pydantic import Field

from aimass.backbones import layers
from aimass.compressors import Compressor, register_compressor, structure
from aimass.compressors.distill import Training, fit_student, settings, splits, student_of


class Settings(Training):
    """``prune`` settings: the fractions of heads and FFN channels each layer loses."""

    heads: float = Field(default=0.5, ge=0, lt=1)
    ffn: float = Field(default=0.5, ge=0, lt=1)
    samples: int = Field(default=64, ge=1, le=4096)


@register_compressor("prune")
class Prune(Compressor):
    """Remove attention heads and FFN channels by importance, then fine-tune.

    Settings: ``heads`` (0.5: the fraction of each layer's heads removed), ``ffn`` (0.5: of its FFN
    channels), ``samples`` (64 training texts score importance), and the fine-tune's
    ``temperature``, ``alpha``, ``unlabeled``, ``time_budget`` (150 s), ``epochs``, ``batch_size``,
    ``lr`` and ``seed`` as for ``distill``.
    """

    per_task = True  # the task's strategy: an encoder loses heads, an image net expansion channels
    trains = True

    def compress(self, model, data, spec):
        return self.strategy(spec)(model, data, self.settings)


def prune_encoder(model, data, given: dict):
    """``prune`` for a transformer encoder: each layer loses heads and FFN channels by importance."""
    cfg = settings(Settings, given, "prune")
    deadline = None if cfg.time_budget is None else time.monotonic() + cfg.time_budget
    child = student_of(model)
    train, _ = splits(data, cfg.seed)
    scores = importance(child, train, cfg.samples, cfg.batch_size, cfg.seed)
    for i, (block, (heads, channels)) in enumerate(zip(layers(child.net_.encoder), scores, strict=True)):
        alive = structure.alive_heads(block)
        drop = [alive[j] for j in _least(heads, round(cfg.heads * len(heads)))]
        structure.prune_heads(block, drop)
        n_keep = _channels_kept(len(channels), cfg.ffn)
        structure.keep_channels(block, torch.topk(channels, n_keep).indices.sort().values)
        child.structure_["heads"][i] = sorted({*child.structure_["heads"][i], *drop})
        child.structure_["ffn"][i] = n_keep
    fit_student(child, [model], data, cfg, deadline)
    return child


def _least(scores: torch.Tensor, n: int) -> list[int]:
    """Positions of the ``n`` lowest scores, never all of them (a layer keeps one head)."""
    n = min(n, len(scores) - 1)
    return sorted(torch.argsort(scores)[:n].tolist()) if n > 0 else []


def _channels_kept(total: int, fraction: float) -> int:
    """Channels left after removing ``fraction``, rounded to a multiple of 8 (for the kernels)."""
    if fraction == 0:
        return total
    return min(total, max(8, round(total * (1 - fraction) / 8) * 8))


def importance(child, train: tuple, samples: int, batch_size: int, seed: int) -> list[tuple]:
    """Per layer: (Taylor scores of its alive heads, of its FFN channels).

    Gradients of the cross-entropy on ``samples`` random training texts are summed; a group's
    score is the sum of ``|w * grad|`` over its weights.
    """
    net = child.net_
    texts, labels = train
    picked = random.Random(seed).sample(range(len(texts)), min(samples, len(texts)))
    index = {c: i for i, c in enumerate(child.classes_)}
    net.requires_grad_(False)
    for block in layers(net.encoder):
        block.requires_grad_(True)
    for start in range(0, len(picked), batch_size):
        rows = picked[start : start + batch_size]
        batch = [texts[i] for i in rows]
        y = torch.tensor([index.get(labels[i], -100) for i in rows])
        enc = child.tokenizer_(
            child._prefixed(batch),
            truncation=True,
            max_length=child.max_length_,
            padding=True,
            return_tensors="pt",
        )
        lex = child.lexical_.transform(batch) if child.lexical_ else None
        logits = net(enc["input_ids"], enc["attention_mask"], lex)
        torch.nn.functional.cross_entropy(logits, y, reduction="sum").backward()
    scores = [_block_scores(block) for block in layers(net.encoder)]
    net.zero_grad(set_to_none=True)
    net.requires_grad_(False)
    return scores


def _taylor(linear, dim: int) -> torch.Tensor:
    """``|w * grad|`` summed over the other dimension: one score per output row (``dim=0``) or
    input column (``dim=1``); a row's bias counts with it."""
    score = (linear.weight * linear.weight.grad).abs().sum(1 - dim)
    if dim == 0 and linear.bias is not None:
        score = score + (linear.bias * linear.bias.grad).abs()
    return score.detach()


def _block_scores(block) -> tuple[torch.Tensor, torch.Tensor]:
    """(per alive head, per FFN channel) Taylor scores of ``block``, whatever its layout
    (:func:`aimass.compressors.structure.head_parts`)."""
    rows, out, size = structure.head_parts(block)
    per_unit = sum(_taylor(linear, 0) for linear in rows.values()) + _taylor(out, 1)
    heads = per_unit.view(-1, size).sum(1)
    up, down = structure.ffn_parts(block)
    return heads, _taylor(up, 0) + _taylor(down, 1)
