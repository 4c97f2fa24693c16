"""Continual learning on cached features: a fitted head goes on learning from new data (and new
classes) without forgetting the old, the way a retrain on everything would not need to.

* :func:`replay_rows` picks the rows of the old training data that travel with the new data
  (up to ``n`` per class, seeded): rehearsal, the simplest guard against forgetting.
* :func:`grow_head` widens a :class:`~aimass.backbones.text_net.Head`: the old classes keep their
  rows, each new class gets a row that starts as the mean of the old ones (neither favoured nor
  excluded), and new TF-IDF columns start at zero.
* :func:`fit_continued` trains that head (the encoder stays frozen) on the new rows plus the
  replayed ones, with an L2 pull of the old rows toward their parent values (L2-SP), keeping the
  best epoch by validation macro-F1; the grown head as it starts is the score to beat.

>>> import torch
>>> from aimass.backbones.text_net import Head
>>> grown = grow_head(Head(4, 2, 3), n_classes=3, n_lexical=5)
>>> tuple(grown.dense.weight.shape), tuple(grown.lexical.weight.shape)
((3, 4), (3, 5))
>>> replay_rows(["a", "a", "a", "b"], 2, seed=0)
[1, 2, 3]
"""

from __future__ import annotations

import random
import time

import torch

from aimass.backbones.text_net import Head
from aimass.train.callbacks import BestKeeper, EarlyStopping, History, TimeBudget, trainable_state
from aimass.train.learner import Learner
from aimass.train.stages import Batches, Features, StageResult, _lex, _scores


def replay_rows(labels: list, n: int, *, seed: int) -> list[int]:
    """Indices of up to ``n`` rows of each label (a seeded draw, returned in row order)."""
    by_label: dict = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    rng = random.Random(seed)
    keep = [i for rows in by_label.values() for i in (rows if len(rows) <= n else rng.sample(rows, n))]
    return sorted(keep)


def grow_head(head: Head, n_classes: int, n_lexical: int = 0) -> Head:
    """A copy of ``head`` with ``n_classes`` rows and (if it has a TF-IDF branch) ``n_lexical``
    columns there; see the module docstring for how the new rows and columns start."""
    old, dim = head.dense.out_features, head.dense.in_features
    old_lex = head.lexical.in_features if head.lexical is not None else 0
    grown = Head(dim, n_classes, max(n_lexical, old_lex) if old_lex else 0, dropout=head.dropout.p)
    with torch.no_grad():
        grown.dense.weight[:old] = head.dense.weight
        grown.dense.bias[:old] = head.dense.bias
        grown.dense.weight[old:] = head.dense.weight.mean(0)
        grown.dense.bias[old:] = head.dense.bias.mean()
        if old_lex:
            grown.lexical.weight.zero_()
            grown.lexical.weight[:old, :old_lex] = head.lexical.weight
            grown.lexical.weight[old:, :old_lex] = head.lexical.weight.mean(0)
    return grown.eval()


def _anchor(head: Head, n_old: int, n_old_lex: int):
    """``penalty()``: the squared distance of the old classes' weights from where they start."""
    pairs = [(head.dense.weight, slice(0, n_old), slice(None)), (head.dense.bias, slice(0, n_old), None)]
    if head.lexical is not None:
        pairs.append((head.lexical.weight, slice(0, n_old), slice(0, n_old_lex)))
    start = [(p[rows] if cols is None else p[rows, cols]).detach().clone() for p, rows, cols in pairs]

    def penalty() -> torch.Tensor:
        total = torch.zeros(())
        for (p, rows, cols), p0 in zip(pairs, start, strict=True):
            now = p[rows] if cols is None else p[rows, cols]
            total = total + ((now - p0) ** 2).sum()
        return total

    return penalty


@torch.inference_mode()
def pooled_through(net, start: int, hidden: torch.Tensor, mask: torch.Tensor, batch_size: int = 64):
    """Pooled embeddings after running blocks ``start..`` of ``net`` over cached hidden states
    (each batch cut to its longest row)."""
    out = []
    for index in torch.arange(len(hidden)).split(batch_size):
        rows = mask[index].long()
        width = max(1, int(rows.sum(1).max()))
        out.append(net.pooled_from(start, hidden[index, :width].float(), rows[:, :width]))
    return torch.cat(out) if out else torch.zeros(0, hidden.shape[-1])


def fit_continued(
    head: Head,
    train: Features,
    valid: Features | None,
    *,
    n_old: int,
    n_old_lex: int = 0,
    seed: int = 0,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 32,
    anchor: float = 1e-3,
    deadline: float | None = None,
) -> StageResult:
    """Train ``head`` (already grown) on ``train``'s pooled embeddings and TF-IDF rows, one cycle
    of ``epochs`` at ``lr`` (AdamW, no weight decay); ``anchor`` weighs the pull of the first
    ``n_old`` rows (and ``n_old_lex`` TF-IDF columns) toward their starting values. With ``valid``
    the best epoch by macro-F1 is kept (the starting head counts as epoch -1); without, the last."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    for p in head.parameters():
        p.requires_grad_(True)
    penalty = _anchor(head, n_old, n_old_lex)

    def forward(model, index):
        return model(train.pooled[index], _lex(train, index))

    def loss(logits, index):
        return torch.nn.functional.cross_entropy(logits, train.y[index]) + anchor * penalty()

    def validate():
        return _scores(lambda i: head(valid.pooled[i], _lex(valid, i)), valid)

    data = Batches(len(train), batch_size, seed)
    learn = Learner(
        head,
        data,
        validate if valid is not None else None,
        head=head.parameters(),
        forward=forward,
        loss_fn=loss,
        wd=0.0,
    )
    keeper, history = BestKeeper(), History()
    callbacks = [history]
    if valid is not None:
        head.eval()
        with torch.inference_mode():
            keeper.best, keeper.state = validate()["macro_f1"], trainable_state(head)
        callbacks += [keeper, EarlyStopping(patience=5, start=epochs // 3)]
    if deadline is not None:
        callbacks.append(TimeBudget(deadline))
    learn.fit_one_cycle(epochs, lr, pct_start=0.1, callbacks=callbacks)
    head.eval()
    best = (keeper.epoch, keeper.best) if valid is not None else (learn.epoch, float("nan"))
    return StageResult(history.rows, *best, time.perf_counter() - started)
