"""A small training loop that fires events; everything optional is a callback.

Events, in order: ``before_fit``, ``before_epoch``, ``after_batch`` (per step),
``before_validate``, ``after_epoch`` (after validation; ``loop.metrics`` is set), ``after_fit``.
A callback stops training by setting ``loop.stop = True`` (in ``before_epoch``: that epoch
does not run).

>>> import torch
>>> from aimass.train.loop import Loop
>>> model = torch.nn.Linear(2, 2)
>>> data = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
>>> loop = Loop(model, lambda epoch: data, lambda: {"loss": 0.0}, torch.optim.SGD(model.parameters(), 0.1))
>>> loop.fit(2).epoch
1
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from aimass.train.progress import notify


class Loop:
    """Minimal trainer: ``batches(epoch)`` yields ``(inputs, target)``; ``validate()`` -> metrics."""

    def __init__(
        self,
        model: nn.Module,
        batches: Callable[[int], Iterable[tuple[Any, torch.Tensor]]],
        validate: Callable[[], dict],
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        callbacks: Iterable[Any] = (),
        forward: Callable[[nn.Module, Any], torch.Tensor] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        self.model, self.batches, self.validate = model, batches, validate
        self.optimizer, self.scheduler = optimizer, scheduler
        self.callbacks = list(callbacks)
        self.forward = forward or (lambda m, x: m(*x) if isinstance(x, tuple) else m(x))
        self.loss_fn = loss_fn or nn.functional.cross_entropy
        self.epoch, self.step, self.loss, self.metrics, self.stop = 0, 0, 0.0, {}, False

    def fire(self, event: str) -> None:
        for callback in self.callbacks:
            handler = getattr(callback, event, None)
            if handler is not None:
                handler(self)

    def fit(self, epochs: int, start_epoch: int = 0) -> Loop:
        self.fire("before_fit")
        for self.epoch in range(start_epoch, epochs):
            self.fire("before_epoch")
            if self.stop:  # e.g. TimeBudget: this epoch would not finish in time
                break
            self._train_epoch()
            self.fire("before_validate")
            self.model.eval()
            with torch.inference_mode():
                self.metrics = self.validate()
            self.fire("after_epoch")
            notify("train epochs", self.epoch + 1, epochs)
            if self.stop:
                break
        self.fire("after_fit")
        return self

    def _train_epoch(self) -> None:
        self.model.train()
        for inputs, target in self.batches(self.epoch):
            loss = self.loss_fn(self.forward(self.model, inputs), target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.loss, self.step = float(loss.detach()), self.step + 1
            self.fire("after_batch")
            if self.stop:
                break
