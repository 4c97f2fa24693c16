"""Callbacks for :class:`aimass.train.learner.Learner`: each a few dozen lines, each optional.

A callback is any object with methods named after the learner's events (``before_fit``,
``after_step``, ``after_epoch`` ...), each called with the learner. ``order`` (default 0) sorts
them: :class:`TimeBudget` plans the epochs first (-30), :class:`OneCycle` builds its schedule
next (-20), :class:`EpochProgress` reports last (100); the rest run in the order given.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aimass.backbones.precision import low_precision
from aimass.errors import ConfigError
from aimass.store.artifacts import write_atomic
from aimass.train.progress import notify, pause_point


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that train (the rest is the frozen backbone), plus the buffers of the
    modules that own them (BatchNorm running statistics move with the weights)."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for name, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            prefix = f"{name}." if name else ""
            state.update({prefix + b: t.detach().clone() for b, t in module.named_buffers(recurse=False)})
    return state


class Tracker:
    """What :class:`BestKeeper` and :class:`EarlyStopping` share (fastai's ``TrackerCallback``): the
    validation metric ``monitor``, which way is better (``mode``: "max", "min", or "auto": "min"
    when the name contains "loss", else "max") and the ``best`` score so far.

    A callback given to ``Learner(callbacks=)`` serves every fit, so ``before_fit`` starts over
    (:meth:`reset`) when the state is left from an earlier fit; not when it is new, set by hand
    (a baseline to beat) or restored from a checkpoint. A monitor that validation does not report
    (a typo) is a ConfigError at the first epoch's end that names the metrics it does report."""

    def __init__(self, monitor: str, mode: str = "auto"):
        self.monitor, self.mode, self.sign = monitor, mode, _direction(monitor, mode)
        self.phase = "new"  # "fitting" between before_fit and after_fit, then "done"
        self.reset()

    def reset(self) -> None:
        self.best = -self.sign * float("inf")

    def improved(self, score: float, by: float = 0.0) -> bool:
        """Whether ``score`` beats ``best`` by more than ``by``, in the better direction."""
        return self.sign * (score - self.best) > by

    def restored(self) -> None:
        """Called when a checkpoint filled the state: the next ``before_fit`` keeps it."""
        self.phase = "fitting" if self.phase == "fitting" else "new"

    def before_fit(self, loop) -> None:
        if self.phase == "done":
            self.reset()
        self.phase = "fitting"

    def after_validate(self, loop) -> None:
        if self.monitor not in loop.metrics:
            reported = ", ".join(sorted(loop.metrics)) or "none (no validation data?)"
            raise ConfigError(
                f"{type(self).__name__} monitors {self.monitor!r}, which validation does not report; "
                f"it reports: {reported}.",
                hint=f"Pass monitor= one of those names to {type(self).__name__}.",
            )

    def after_fit(self, loop) -> None:
        self.phase = "done"


def _direction(monitor: str, mode: str) -> int:
    """+1 where higher is better, -1 where lower is; "auto": lower for a loss."""
    if mode not in ("max", "min", "auto"):
        raise ConfigError(
            f"mode must be 'max', 'min' or 'auto'; got {mode!r}.", hint="Use mode='min' for a loss."
        )
    if mode == "auto":
        mode = "min" if "loss" in monitor else "max"
    return 1 if mode == "max" else -1


class BestKeeper(Tracker):
    """Remember the weights of the best epoch by ``monitor`` (see :class:`Tracker` for ``mode``);
    restore them after fit."""

    def __init__(self, monitor: str = "macro_f1", mode: str = "auto"):
        super().__init__(monitor, mode)

    def reset(self) -> None:
        super().reset()
        self.state, self.epoch = None, -1

    def after_epoch(self, loop) -> None:
        score = loop.metrics.get(self.monitor)  # None: a cancelled epoch, not validated
        if score is not None and self.improved(score):
            self.best, self.epoch = score, loop.epoch
            self.state = trainable_state(loop.model)

    def after_fit(self, loop) -> None:
        if self.phase == "fitting" and self.state is not None:  # not when another before_fit failed
            loop.model.load_state_dict(self.state, strict=False)
        super().after_fit(loop)


class MixedPrecision:
    """Training forward passes in bfloat16 autocast; weights, gradients, the loss and the optimiser
    stay float32 (fastai's ``MixedPrecision`` without loss scaling: bfloat16 has float32's range).
    Validation keeps float32, so the epoch kept is judged as it will serve. Worth it where the CPU
    computes bfloat16 natively (:func:`aimass.backbones.precision.bf16_enabled`): one MiniLM or E5
    block's forward and backward on 32 x 256 tokens take half the time on 2 AMX cores."""

    plain = None  # the learner's own forward, while a fit runs

    def before_fit(self, loop) -> None:
        self.plain = forward = loop.forward

        def mixed(model, inputs):
            with low_precision(enabled=True):
                out = forward(model, inputs)
            return out.float() if torch.is_tensor(out) and out.is_floating_point() else out

        loop.forward = mixed

    def after_fit(self, loop) -> None:
        if self.plain is not None:  # None: another callback's before_fit failed before this one's
            loop.forward, self.plain = self.plain, None


class WeightAverage:
    """An exponential moving average of the trainable weights (and their BatchNorm statistics),
    updated every step over a horizon of about ``steps`` steps. Validation sees the average, so
    :class:`BestKeeper` (listed before this callback) keeps the best *averaged* weights; training
    goes on from the raw ones. With ``keep=True`` (no keeper) the average is the final model.
    :class:`Checkpoint` saves the average (``state_tensors``), so a resumed run goes on with it.
    Each fit starts a new average, unless a checkpoint restored one."""

    def __init__(self, steps: float, keep: bool = False):
        self.decay, self.keep, self.shadow, self.raw = 1.0 - 1.0 / max(1.0, steps), keep, None, None
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (average, live tensor)
        self.phase = "new"  # "fitting" between before_fit and after_fit, then "done"

    def before_fit(self, loop) -> None:
        if self.shadow is None or self.phase == "done":  # else restored (the checkpoint may come later)
            self.shadow = trainable_state(loop.model)
        self.pairs, self.phase = [], "fitting"

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.shadow or {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.shadow, self.pairs = {k: v.clone() for k, v in tensors.items()}, []
        self.phase = "fitting" if self.phase == "fitting" else "new"

    def after_batch(self, loop) -> None:
        if not self.pairs:  # load_state_dict copies in place: references to live tensors hold
            live = loop.model.state_dict(keep_vars=True)
            self.pairs = [(avg, live[name].detach()) for name, avg in self.shadow.items()]
        with torch.no_grad():
            for avg, value in self.pairs:
                if avg.is_floating_point():
                    avg.lerp_(value, 1.0 - self.decay)
                else:
                    avg.copy_(value)

    def before_validate(self, loop) -> None:
        self.raw = trainable_state(loop.model)
        loop.model.load_state_dict(self.shadow, strict=False)

    def after_epoch(self, loop) -> None:
        if self.raw is not None:
            loop.model.load_state_dict(self.raw, strict=False)
            self.raw = None

    def after_fit(self, loop) -> None:
        if self.keep and self.phase == "fitting":  # not when another before_fit failed before this one's
            loop.model.load_state_dict(self.shadow, strict=False)
        self.phase = "done"


class EarlyStopping(Tracker):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs,
    counted from epoch ``start`` on (epochs of a learning-rate warm-up are often worse and should
    not stop the run). ``mode`` says which way is better (see :class:`Tracker`); each fit starts
    over, unless a checkpoint restored the count."""

    def __init__(
        self,
        monitor: str = "macro_f1",
        patience: int = 3,
        min_delta: float = 1e-4,
        start: int = 0,
        mode: str = "auto",
    ):
        self.patience, self.min_delta, self.start = patience, min_delta, start
        super().__init__(monitor, mode)

    def reset(self) -> None:
        super().reset()
        self.wait = 0

    def after_epoch(self, loop) -> None:
        score = loop.metrics.get(self.monitor)  # None: a cancelled epoch, not validated
        if score is None:
            return
        if self.improved(score, self.min_delta):
            self.best, self.wait = score, 0
        elif loop.epoch >= self.start:
            self.wait += 1
            loop.stop = loop.stop or self.wait >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = state["best"], state["wait"]
        self.restored()


class TimeBudget:
    """Stop before ``deadline`` (a ``time.monotonic()`` value), judging by the last epoch's length.

    With ``epoch_seconds`` (an estimate of one epoch) it also plans: before the fit, the epochs
    are cut to those that fit in the time left with ``margin`` to spare (none if not even one
    does: ``planned`` then says 0 and nothing trains). It runs first (``order`` -30), so the
    one-cycle schedule spans the planned epochs."""

    order = -30

    def __init__(self, deadline: float, epoch_seconds: float | None = None, margin: float = 1.15):
        self.deadline, self.epoch_seconds, self.margin = deadline, epoch_seconds, margin
        self.started, self.planned = None, None

    def before_fit(self, loop) -> None:
        self.started = None  # an earlier fit's last epoch says nothing about this one's first
        if self.epoch_seconds is not None:
            left = self.deadline - time.monotonic()
            self.planned = max(0, min(loop.n_epoch, int(left // (self.epoch_seconds * self.margin))))
            loop.n_epoch = self.planned

    def before_epoch(self, loop) -> None:
        now = time.monotonic()
        if self.started is not None and now + (now - self.started) > self.deadline:
            loop.stop = True
        self.started = now

    def after_batch(self, loop) -> None:
        loop.stop = loop.stop or time.monotonic() > self.deadline


class History:
    """Keep the validation metrics and mean training loss of every epoch."""

    def __init__(self):
        self.rows: list[dict] = []
        self._losses: list[float] = []

    def after_batch(self, loop) -> None:
        self._losses.append(loop.loss)

    def after_epoch(self, loop) -> None:
        mean = sum(self._losses) / max(1, len(self._losses))
        self.rows.append({"epoch": loop.epoch, "train_loss": round(mean, 5), **loop.metrics})
        self._losses = []


class StepScheduler:
    """Step ``loop.scheduler`` (any torch LR scheduler) after every optimiser step."""

    def after_step(self, loop) -> None:
        if loop.scheduler is not None:
            loop.scheduler.step()


class OneCycle(StepScheduler):
    """The one-cycle policy (Smith; fastai's ``fit_one_cycle``): each parameter group's rate
    warms up from a 25th of its ``lr`` to it over ``pct_start`` of the steps, then anneals
    (cosine) to a 10,000th of that, while AdamW's beta1 moves from 0.95 to 0.85 and back.
    The schedule spans ``n_epoch`` epochs of ``steps_per_epoch`` steps (at least ``min_steps``)
    and is ``loop.scheduler``, so :class:`Checkpoint` saves and restores it."""

    order = -20

    def __init__(self, pct_start: float = 0.25, min_steps: int = 1):
        self.pct_start, self.min_steps = pct_start, min_steps

    def before_fit(self, loop) -> None:
        steps = loop.n_epoch * loop.steps_per_epoch()
        loop.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            loop.optimizer,
            max_lr=[g["lr"] for g in loop.optimizer.param_groups],
            total_steps=max(self.min_steps, steps),
            pct_start=self.pct_start,
        )


class EpochProgress:
    """Tell the progress observers (:func:`aimass.train.progress.observe`: jobs, the CLI) after
    each epoch; the learner adds one unless given one."""

    order = 100

    def after_epoch(self, loop) -> None:
        notify("train epochs", loop.epoch + 1, loop.n_epoch)


class Checkpoint:
    """Write trainable weights + optimizer/scheduler state after each epoch (safetensors + JSON).

    With ``resume=True`` the fit starts from the checkpoint in ``folder`` if there is one
    (:func:`restore`: weights, optimiser, schedule, ``keeper``, callbacks' state, RNG), at the
    epoch after the one saved. List it after the callbacks whose state it saves."""

    def __init__(self, folder: Path, keeper: BestKeeper | None = None, extra=None, resume: bool = False):
        self.folder, self.keeper, self.extra, self.resume = Path(folder), keeper, extra or {}, resume

    def before_fit(self, loop) -> None:
        first = restore(self.folder, loop, self.keeper) if self.resume else None
        loop.start_epoch = loop.start_epoch if first is None else first

    def after_epoch(self, loop) -> None:
        tensors = {}
        if self.keeper is not None and self.keeper.state is not None:
            tensors.update({f"best.{k}": v for k, v in self.keeper.state.items()})
        for callback in loop.fit_callbacks:  # e.g. WeightAverage's running average
            if hasattr(callback, "state_tensors"):
                name = type(callback).__name__
                tensors.update({f"cb.{name}.{k}": v for k, v in callback.state_tensors().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {
            "epoch": loop.epoch,
            "step": loop.step,
            "best": None if self.keeper is None else [self.keeper.best, self.keeper.epoch],
            "callbacks": {
                type(c).__name__: c.state_dict() for c in loop.fit_callbacks if hasattr(c, "state_dict")
            },
            **self.extra,
        }
        write_checkpoint(self.folder, loop.model, loop.optimizer, loop.scheduler, meta=meta, tensors=tensors)
        pause_point(f"after epoch {loop.epoch + 1}")  # a paused job stops here and resumes from it


def write_checkpoint(folder: Path, model, optimizer, scheduler=None, *, meta: dict, tensors=None) -> None:
    """Write ``folder/checkpoint.safetensors``: the trainable weights (``model.*``), the optimizer's
    state (``opt.*``) and ``tensors``; its metadata is ``meta`` plus the schedule's state and the
    param groups' hyper-parameters, as JSON (no pickle). ``checkpoint.json`` repeats the metadata."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    everything = {f"model.{k}": v for k, v in trainable_state(model).items()}
    everything.update(_optimizer_tensors(optimizer))
    everything.update(tensors or {})
    meta = {
        **meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "param_groups": _optimizer_groups(optimizer),
    }
    # one file holds weights and state (safetensors metadata), replaced atomically: a kill
    # between two writes cannot pair one epoch's weights with another's counters
    text = json.dumps(meta)
    write_atomic(
        folder / "checkpoint.safetensors",
        lambda p: save_file(_contig(everything), p, metadata={"aimass.checkpoint": text}),
    )
    write_atomic(folder / "checkpoint.json", lambda p: Path(p).write_text(text))


def checkpoint_meta(folder: Path) -> dict | None:
    """The metadata of ``folder``'s checkpoint (read from the weights file itself), or None."""
    weights = Path(folder) / "checkpoint.safetensors"
    if not weights.exists():
        return None
    with safe_open(str(weights), "pt") as handle:
        return json.loads((handle.metadata() or {})["aimass.checkpoint"])


def read_checkpoint(folder: Path, model, optimizer, scheduler=None) -> tuple[dict, dict] | None:
    """Load what :func:`write_checkpoint` wrote into ``model``, ``optimizer`` and ``scheduler``;
    returns ``(meta, tensors)`` (the tensors hold the extra ones), or None when there is none."""
    meta = checkpoint_meta(folder)
    if meta is None:
        return None
    tensors = load_file(str(Path(folder) / "checkpoint.safetensors"))
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=False)
    _load_optimizer(optimizer, tensors, meta.get("param_groups"))
    if scheduler is not None and meta.get("scheduler"):
        scheduler.load_state_dict(meta["scheduler"])
    return meta, tensors


def restore(folder: Path, loop, keeper: BestKeeper | None = None) -> int | None:
    """Load a :class:`Checkpoint` into ``loop``; returns the next epoch, or None if none exists."""
    found = read_checkpoint(folder, loop.model, loop.optimizer, loop.scheduler)
    if found is None:
        return None
    meta, tensors = found
    if keeper is not None and meta.get("best"):
        keeper.best, keeper.epoch = meta["best"]
        keeper.state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        keeper.restored()
    for callback in loop.fit_callbacks:
        state = meta.get("callbacks", {}).get(type(callback).__name__)
        if state is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(state)
        prefix = f"cb.{type(callback).__name__}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if own and hasattr(callback, "load_state_tensors"):
            callback.load_state_tensors(own)
    if "rng.torch" in tensors:  # dropout masks continue as in an uninterrupted run
        torch.set_rng_state(tensors["rng.torch"])
    loop.step = meta["step"]
    return meta["epoch"] + 1


def _optimizer_tensors(optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for pid, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"opt.{pid}.{key}"] = torch.as_tensor(value).clone()
    return out


def _optimizer_groups(optimizer) -> list[dict]:
    """Hyperparameters of each param group (lr, betas, ... as a scheduler left them), JSON-ready."""
    return [
        {k: _jsonable(v) for k, v in group.items() if k != "params" and _jsonable(v) is not _SKIP}
        for group in optimizer.state_dict()["param_groups"]
    ]


def _load_optimizer(optimizer, tensors, groups: list[dict] | None = None) -> None:
    state_dict = copy.deepcopy(optimizer.state_dict())
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state_dict["state"].setdefault(int(pid), {})[key] = value
    for group, saved in zip(state_dict["param_groups"], groups or [], strict=False):
        group.update({k: _like(group[k], v) if k in group else v for k, v in saved.items()})
    optimizer.load_state_dict(state_dict)


_SKIP = object()


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        items = [_jsonable(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else items
    return value if value is None or isinstance(value, (bool, int, float, str)) else _SKIP


def _like(current, saved):
    """``saved`` (from JSON) in the type of ``current``: tuples stay tuples, tensors stay tensors."""
    if isinstance(current, torch.Tensor):
        return torch.tensor(saved, dtype=current.dtype, device=current.device)
    if isinstance(current, tuple) and isinstance(saved, list):
        return tuple(_like(c, s) for c, s in zip(current, saved, strict=False))
    return saved


def _contig(tensors):
    return {k: v.contiguous() for k, v in tensors.items()}
