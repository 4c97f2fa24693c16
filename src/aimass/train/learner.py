"""The Learner: a network, its parameter groups, its data and callbacks, in one small object.

It is the middle layer under ``aimass.finetune`` (fastai's ``Learner``): ``freeze`` /
``unfreeze(n)`` pick which backbone blocks train (the blocks come from the backbone table,
:func:`aimass.backbones.layers`), ``fit`` trains with discriminative learning rates, and
``fit_one_cycle`` adds the :class:`~aimass.train.callbacks.OneCycle` schedule. Everything else —
early stopping, keeping the best epoch, checkpoints and resume, the time budget, progress — is a
callback from :mod:`aimass.train.callbacks`.

Events, in the order they fire (each a method a callback may define, called with the learner)::

    before_fit
      before_epoch
        before_train
          before_batch, after_pred, after_loss, after_backward, after_step, after_batch  (per step)
        after_train
        before_validate, after_validate
      after_epoch
    after_fit

A callback stops training at the end of the current step by setting ``learn.stop = True``, or
at once by raising :class:`CancelBatchException` (the rest of this step is skipped),
:class:`CancelTrainException` (the rest of this epoch's steps; validation still runs),
:class:`CancelEpochException` (the rest of this epoch, validation included) or
:class:`CancelFitException` (the rest of the fit). Each cancel fires ``after_cancel_<what>``,
then ``after_<what>``; the levels it ends on its way out end too, innermost first: a
CancelFitException raised in ``after_loss`` fires ``after_batch``, ``after_train``,
``after_epoch``, ``after_cancel_fit`` and ``after_fit``. Any other error passes straight out,
with a note naming the callback and event that raised it; only ``after_fit`` fires then.
Callbacks run in the order given, sorted (stably) by their ``order`` attribute (default 0).

>>> import torch
>>> from aimass.train.learner import Learner
>>> model = torch.nn.Linear(2, 2)
>>> data = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
>>> learn = Learner(model, data, lambda: {"loss": 0.0}, head=model.parameters())
>>> learn.fit_one_cycle(2, 1e-2).epoch
1
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from aimass.backbones import layers, param_groups
from aimass.errors import ConfigError
from aimass.train.callbacks import EpochProgress, OneCycle

EVENTS = (
    "before_fit",
    "before_epoch",
    "before_train",
    "before_batch",
    "after_pred",
    "after_loss",
    "after_backward",
    "after_step",
    "after_batch",
    "after_train",
    "before_validate",
    "after_validate",
    "after_epoch",
    "after_fit",
)


class CancelBatchException(Exception):
    """Skip the rest of this step (no backward pass or optimiser step if raised before them)."""


class CancelTrainException(Exception):
    """Skip the rest of this epoch's steps; validation still runs."""


class CancelEpochException(Exception):
    """Skip the rest of this epoch, validation included."""


class CancelFitException(Exception):
    """End the fit now."""


CANCELS = (CancelBatchException, CancelTrainException, CancelEpochException, CancelFitException)


class Learner:
    """A network with its data, loss, parameter groups and callbacks.

    Args:
        model: the network. ``freeze``/``unfreeze`` need ``body``.
        data: the training batches: a callable ``data(epoch) -> iterable of (inputs, target)``
            (seeded shuffling per epoch), or an iterable read again each epoch. Its ``len`` (if
            it has one) is the number of steps an epoch takes.
        validate: ``validate() -> dict`` of metrics, run under ``inference_mode`` after each epoch
            (``None``: no validation data; ``metrics`` stays empty).
        body: the pretrained backbone whose blocks (:func:`aimass.backbones.layers`) unfreeze from
            the top; default ``model.encoder`` where it exists.
        head: the parameters that always train (default: ``model.head``'s).
        forward: ``forward(model, inputs) -> logits`` (default ``model(inputs)``).
        loss_fn: ``loss_fn(logits, target)`` (default cross-entropy).
        callbacks: callbacks for every fit; ``fit(..., callbacks=)`` adds some for one fit.
        wd: the AdamW weight decay of the optimiser ``fit`` builds.
        optimizer: an optimiser to use instead of building one per fit; ``fit(lr=)`` sets its
            groups' rates.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> batches = [(torch.randn(8, 3), torch.randint(0, 2, (8,)))]
        >>> learn = Learner(net, batches, head=net[2].parameters())
        >>> learn.fit(3, lr=0.01).step
        3
    """

    def __init__(
        self,
        model: nn.Module,
        data: Callable[[int], Iterable] | Iterable,
        validate: Callable[[], dict] | None = None,
        *,
        body: nn.Module | None = None,
        head: Iterable[nn.Parameter] | None = None,
        forward: Callable[[nn.Module, Any], torch.Tensor] | None = None,
        loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
        callbacks: Iterable[Any] = (),
        wd: float = 0.01,
        optimizer: torch.optim.Optimizer | None = None,
    ):
        self.model, self.data, self.validate = model, data, validate
        self.body = body if body is not None else getattr(model, "encoder", None)
        self.head = list(head) if head is not None else list(model.head.parameters())
        self.forward = forward or (lambda m, x: m(*x) if isinstance(x, tuple) else m(x))
        self.loss_fn = loss_fn or nn.functional.cross_entropy
        self.callbacks, self.wd = list(callbacks), wd
        if not any(isinstance(c, EpochProgress) for c in self.callbacks):
            self.callbacks.append(EpochProgress())
        self.given_optimizer, self.optimizer = optimizer, optimizer
        self.scheduler = None  # set by OneCycle; Checkpoint saves and restores it
        self.n_unfrozen, self.whole_body = 0, False
        self.epoch, self.step, self.loss, self.metrics, self.stop = 0, 0, 0.0, {}, False
        self.n_epoch, self.start_epoch, self.fit_callbacks = 0, 0, list(self.callbacks)
        self.inputs = self.target = self.pred = self.loss_tensor = None

    # ------------------------------------------------------------ parameters
    def blocks(self) -> list[nn.Module]:
        """The body's blocks, bottom to top (from the backbone table)."""
        return list(layers(self.body))

    def freeze(self) -> Learner:
        """Only the head trains."""
        return self.unfreeze(0)

    def unfreeze(self, n: int | None = None) -> Learner:
        """The top ``n`` blocks of the body train, and the head. ``None``: the whole model, as
        fastai's ``unfreeze()``: every block and what lies outside them (embeddings, the stem, a
        final norm), which :meth:`param_groups` puts one ``decay`` step below the lowest block."""
        blocks = self.blocks()
        self.whole_body = n is None
        n = len(blocks) if n is None else max(0, min(n, len(blocks)))
        for p in self.body.parameters():
            p.requires_grad_(self.whole_body)
        for block in blocks[len(blocks) - n :]:
            for p in block.parameters():
                p.requires_grad_(True)
        for p in self.head:
            p.requires_grad_(True)
        self.n_unfrozen = n
        return self

    def param_groups(self, lr: float | tuple[float, float] | slice, decay: float = 0.6) -> list[dict]:
        """Discriminative learning rates: ``lr`` is one rate for all, or ``(body, head)``: the head
        gets ``head``, the top unfrozen block ``body`` and each block below ``decay`` times the
        one above (:func:`aimass.backbones.param_groups`)."""
        if isinstance(lr, slice):
            lr = (lr.start, lr.stop)
        lr_body, lr_head = lr if isinstance(lr, tuple | list) else (lr, lr)
        if self.body is None:
            return [{"params": list(self.head), "lr": lr_head}]
        groups = param_groups(self.body, self.head, self.n_unfrozen, lr_head, lr_body, decay)
        if self.whole_body:  # unfreeze(): the body's parameters outside its blocks train too
            grouped = {id(p) for group in groups for p in group["params"]}
            rest = [p for p in self.body.parameters() if id(p) not in grouped]
            if rest:
                groups.append({"params": rest, "lr": lr_body * decay**self.n_unfrozen})
        return groups

    def steps_per_epoch(self) -> int:
        """The steps of one epoch: ``len(data)``, else the batches of epoch 0 counted."""
        if hasattr(type(self.data), "__len__"):
            return len(self.data)
        data = self.data(0)
        return len(data) if hasattr(type(data), "__len__") else sum(1 for _ in data)

    # ------------------------------------------------------------------ fit
    def fit(
        self, epochs: int, lr=None, *, decay: float = 0.6, callbacks: Iterable[Any] = (), start_epoch: int = 0
    ) -> Learner:
        """Train epochs ``start_epoch`` to ``epochs - 1``: AdamW (weight decay ``wd``) on
        :meth:`param_groups` ``(lr, decay)`` (``lr`` None: 1e-3). A given optimiser keeps its
        groups and ``lr`` sets their rates (:meth:`set_rates`); None leaves them as they are
        (a scheduler's, a restored checkpoint's).

        A callback's ``before_fit`` may change ``n_epoch`` (time-budget planning) or
        ``start_epoch`` (resume from a checkpoint)."""
        self.optimizer = self._optimizer(lr, decay)
        every = sorted([*self.callbacks, *callbacks], key=lambda c: getattr(c, "order", 0))
        self.fit_callbacks, self.stop = every, False
        self.n_epoch, self.start_epoch = epochs, start_epoch
        try:
            self.fire("before_fit")
            for epoch in range(self.start_epoch, self.n_epoch):
                self.epoch = epoch
                self._one_epoch()
                if self.stop:
                    break
        except CancelFitException:
            self.fire("after_cancel_fit")
        finally:
            self.fire("after_fit")
        return self

    def fit_one_cycle(
        self,
        epochs: int,
        lr_max=None,
        *,
        decay: float = 0.6,
        pct_start: float = 0.25,
        min_steps: int = 1,
        callbacks: Iterable[Any] = (),
    ) -> Learner:
        """``fit`` with a one-cycle schedule (warm-up for ``pct_start`` of the steps, then
        cosine annealing) peaking at ``lr_max`` (one rate, or ``(body, head)``; None: as ``fit``'s
        ``lr``, so a given optimiser peaks at its rates as they are, annealed by an earlier cycle)."""
        cycle = OneCycle(pct_start=pct_start, min_steps=min_steps)
        return self.fit(epochs, lr_max, decay=decay, callbacks=[cycle, *callbacks])

    def set_rates(self, lr, decay: float = 0.6) -> None:
        """Set the optimiser's rates (fastai's ``set_hyper("lr", ...)``). One rate goes to the group
        with the highest rate and the others keep their ratio to it, so discriminative groups stay
        discriminative; ``(body, head)`` gives each group its rate from :meth:`param_groups`, which
        needs an optimiser built on those groups."""
        groups = self.optimizer.param_groups
        if isinstance(lr, tuple | list | slice):
            rates = [group["lr"] for group in self.param_groups(lr, decay)]
            if len(rates) != len(groups):
                raise ConfigError(
                    f"lr={lr!r} gives {len(rates)} parameter groups (head, then blocks top-down), "
                    f"but the optimizer has {len(groups)}.",
                    hint="Pass one rate (the groups keep their ratios), or build the optimizer on "
                    "learn.param_groups(lr).",
                )
        else:
            top = max(group["lr"] for group in groups)
            rates = [lr * group["lr"] / top if top > 0 else lr for group in groups]
        for group, rate in zip(groups, rates, strict=True):
            group["lr"] = rate

    def fire(self, event: str) -> None:
        for callback in self.fit_callbacks:
            handler = getattr(callback, event, None)
            if handler is None:
                continue
            try:
                handler(self)
            except CANCELS:
                raise
            except Exception as error:  # the type stays; the traceback says whose handler it was
                error.add_note(f"raised by {type(callback).__name__}.{event}")
                raise

    # ------------------------------------------------------------- internals
    def _optimizer(self, lr, decay: float) -> torch.optim.Optimizer:
        if self.given_optimizer is None:
            return self._new_optimizer(1e-3 if lr is None else lr, decay)
        self.optimizer = self.given_optimizer
        if lr is not None:
            self.set_rates(lr, decay)
        return self.optimizer

    def _new_optimizer(self, lr, decay: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.param_groups(lr, decay), weight_decay=self.wd)

    def _level(self, name: str, body: Callable[[], None], cancel: type[Exception], skippable=False) -> None:
        """``before_<name>``, ``body()``, ``after_<name>`` (fastai's ``_with_events``). ``cancel``
        ends the body early and fires ``after_cancel_<name>`` first; a cancel of a wider level
        fires ``after_<name>`` on its way out. Other errors pass at once. ``skippable``: a ``stop``
        set in ``before_<name>`` skips the rest, ``after_<name>`` included."""
        try:
            self.fire(f"before_{name}")
            if skippable and self.stop:
                return
            body()
        except cancel:
            self.fire(f"after_cancel_{name}")
        except CANCELS:
            self.fire(f"after_{name}")
            raise
        self.fire(f"after_{name}")

    def _one_epoch(self) -> None:
        # skippable: TimeBudget's stop in before_epoch says this epoch would not finish in time
        self._level("epoch", self._train_and_validate, CancelEpochException, skippable=True)

    def _train_and_validate(self) -> None:
        self.metrics = {}  # a cancelled epoch reports none
        self.model.train()
        data = self.data(self.epoch) if callable(self.data) else self.data
        self._level("train", lambda: self._all_batches(data), CancelTrainException)
        self.fire("before_validate")
        self.model.eval()
        with torch.inference_mode():
            self.metrics = self.validate() if self.validate is not None else {}
        self.fire("after_validate")

    def _all_batches(self, data) -> None:
        for inputs, target in data:
            self.inputs, self.target = inputs, target
            self._level("batch", self._one_batch, CancelBatchException)
            if self.stop:
                break

    def _one_batch(self) -> None:
        self.pred = self.forward(self.model, self.inputs)
        self.fire("after_pred")
        self.loss_tensor = self.loss_fn(self.pred, self.target)
        self.fire("after_loss")
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_tensor.backward()
        self.fire("after_backward")
        self.optimizer.step()
        self.loss, self.step = float(self.loss_tensor.detach()), self.step + 1
        self.fire("after_step")
