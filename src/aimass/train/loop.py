"""The original loop interface, kept for its callers: a :class:`~aimass.train.learner.Learner`
given its optimiser and scheduler ready-made (the scheduler steps after every optimiser step).

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

from aimass.train.callbacks import StepScheduler
from aimass.train.learner import Learner


class Loop(Learner):
    """``batches(epoch)`` yields ``(inputs, target)``; ``validate()`` -> metrics."""

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
        callbacks = [StepScheduler(), *callbacks]
        super().__init__(
            model, batches, validate, head=(), forward=forward, loss_fn=loss_fn, callbacks=callbacks
        )
        self.given_optimizer = self.optimizer = optimizer
        self.scheduler = scheduler
