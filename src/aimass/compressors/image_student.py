"""``distill`` and ``prune`` for image classifiers: the fine-tuned top stages get smaller.

An image model fine-tunes the top ``unfrozen_`` stages of EfficientNet-Lite0 on cached outputs of
the frozen stages below; its students change only those stages, so they train just as cheaply:

- ``distill`` keeps ``blocks`` MBConv blocks of each fine-tuned stage (the first, which changes the
  resolution or width, and then the next ones; the residual repeats after them go);
- ``prune`` removes the ``channels`` fraction of each fine-tuned block's expansion channels (the
  MBConv analogue of a transformer's FFN channels), the least important by first-order Taylor score
  ``|w * dL/dw|`` of the expand and depthwise convolutions.

Then the student trains on the parent's temperature-softened probabilities of the same augmented
views plus the labels (:func:`fit`), keeping its best epoch by validation macro-F1.

A structure is stored as the model's ``structure_``::

    {"blocks": {"4": [0], "5": [0]},   # per fine-tuned stage: the blocks kept (original numbering)
     "mid": {"4.0": 336}}              # per block ("stage.block" after the cut): expansion channels

:func:`apply` reshapes a freshly loaded backbone to it before the saved weights are loaded.
"""

from __future__ import annotations

import copy
import time

import torch
from pydantic import Field
from torch import nn

from aimass.backbones.image_net import pixels as _pixels
from aimass.compressors.distill import Training, distill_loss, settings
from aimass.errors import ConfigError, DataError
from aimass.train import stages


class DistillSettings(Training):
    blocks: int = Field(default=1, ge=1, le=16)
    batch_size: int = Field(default=32, ge=2, le=1024)
    lr: float | None = Field(default=None, gt=0, lt=1)


class PruneSettings(Training):
    channels: float = Field(default=0.5, ge=0, lt=1)
    samples: int = Field(default=256, ge=8, le=8192)
    batch_size: int = Field(default=32, ge=2, le=1024)
    lr: float | None = Field(default=None, gt=0, lt=1)


# ------------------------------------------------------------- structure
def apply(encoder, structure: dict) -> None:
    """Reshape a freshly loaded EfficientNet ``encoder`` in place to ``structure``."""
    for stage, keep in structure.get("blocks", {}).items():
        blocks = encoder.stages[int(stage)]
        encoder.stages[int(stage)] = nn.Sequential(*[blocks[i] for i in keep])
    for key, width in structure.get("mid", {}).items():
        stage, block = (int(part) for part in key.split("."))
        keep_mid(encoder.stages[stage][block], torch.arange(width))


def keep_mid(block, index: torch.Tensor) -> None:
    """Keep the expansion channels at ``index`` of an MBConv ``block`` (expand, depthwise, project)."""
    if isinstance(block.expand, nn.Identity):
        raise ConfigError("This block has no expansion channels to prune.", hint="Prune fewer stages.")
    block.expand = _cut(block.expand, index, out=True)
    block.depthwise = _cut(block.depthwise, index, out=True, depthwise=True)
    block.project = _cut(block.project, index, out=False)


def _cut(conv_bn, index: torch.Tensor, *, out: bool, depthwise: bool = False):
    """A copy of a ConvBN keeping output channels ``index`` (``out``) or input channels ``index``."""
    new = copy.deepcopy(conv_bn)
    conv = new.conv
    weight = conv.weight.detach()
    if depthwise:
        conv.groups = conv.in_channels = conv.out_channels = len(index)
    elif out:
        conv.out_channels = len(index)
    else:
        conv.in_channels = len(index)
    conv.weight = nn.Parameter(weight.index_select(0 if out else 1, index).clone())
    if conv.bias is not None and out:
        conv.bias = nn.Parameter(conv.bias.detach()[index].clone())
    if out and isinstance(new.bn, nn.BatchNorm2d):
        bn = new.bn
        bn.num_features = len(index)
        for name in ("weight", "bias"):
            setattr(bn, name, nn.Parameter(getattr(bn, name).detach()[index].clone()))
        for name in ("running_mean", "running_var"):
            setattr(bn, name, getattr(bn, name)[index].clone())
    return new.requires_grad_(conv_bn.conv.weight.requires_grad)


# -------------------------------------------------------------- students
def student_of(parent):
    """A fitted copy of ``parent`` with its own network (the parent is left alone)."""
    if not getattr(parent, "unfrozen_", 0) or getattr(parent, "runtime_", None) is not None:
        raise ConfigError(
            "This version has no fine-tuned torch stages to make smaller.",
            hint="Distill or prune a version trained with unfreeze >= 1, before int8 or onnx.",
        )
    child = type(parent)(**parent.get_params())
    skip = {"net_", "runtime_", "compression_", "stages_", "timings_", "structure_"}
    for key, value in vars(parent).items():
        if key.endswith("_") and not key.startswith("_") and key not in skip:
            setattr(child, key, value)
    child.net_ = copy.deepcopy(parent.net_).eval()
    child.structure_ = copy.deepcopy(getattr(parent, "structure_", None) or {"blocks": {}, "mid": {}})
    return child


def top_stages(model) -> range:
    return range(model.net_.n_layers - model.unfrozen_, model.net_.n_layers)


def distill(parent, data, given: dict):
    """A student keeping ``blocks`` blocks of each fine-tuned stage, trained on the parent."""
    cfg = settings(DistillSettings, given, "distill")
    if cfg.unlabeled is not None:
        raise ConfigError("'unlabeled' texts apply to text models only.", hint="Leave it out for images.")
    child = student_of(parent)
    for stage in top_stages(child):
        key = str(stage)
        kept = child.structure_["blocks"].get(key, list(range(len(child.net_.encoder.stages[stage]))))
        keep = list(range(min(cfg.blocks, len(kept))))
        child.net_.encoder.stages[stage] = nn.Sequential(*[child.net_.encoder.stages[stage][i] for i in keep])
        child.structure_["blocks"][key] = [kept[i] for i in keep]
        child.structure_["mid"] = {k: v for k, v in child.structure_["mid"].items() if _kept(k, key, keep)}
    fit(child, parent, data, cfg)
    return child


def _kept(mid_key: str, stage: str, keep: list[int]) -> bool:
    s, b = mid_key.split(".")
    return s != stage or int(b) in keep


def prune(parent, data, given: dict):
    """A student whose fine-tuned blocks lose the ``channels`` fraction of expansion channels."""
    cfg = settings(PruneSettings, given, "prune")
    child = student_of(parent)
    inputs = Inputs(child, data, cfg.seed)
    scores = _importance(child, inputs, cfg.samples, cfg.batch_size)
    for (stage, block_index, block), score in zip(_blocks(child), scores, strict=True):
        n_keep = max(8, round(len(score) * (1 - cfg.channels) / 8) * 8)
        if n_keep >= len(score):
            continue
        keep_mid(block, torch.topk(score, n_keep).indices.sort().values)
        child.structure_["mid"][f"{stage}.{block_index}"] = n_keep
    fit(child, parent, data, cfg, inputs)
    return child


def _blocks(model):
    for stage in top_stages(model):
        for index, block in enumerate(model.net_.encoder.stages[stage]):
            if not isinstance(block.expand, nn.Identity):
                yield stage, index, block


# -------------------------------------------------------------- training
class Inputs:
    """The student's training inputs: the parent's cached views through the frozen lower stages."""

    def __init__(self, model, data, seed: int):
        if not hasattr(data, "inputs"):
            raise DataError("Image students train on the parent's image dataset.", hint="Pass a Dataset.")
        base = round(model.image_size_ * 256 / 224)
        index = {c: i for i, c in enumerate(model.classes_)}
        self.start = model.net_.n_layers - model.unfrozen_
        self.generator = torch.Generator().manual_seed(seed)
        splits = {}
        for name in ("train", "valid"):
            items, labels = data.inputs(name), data.labels(name)
            keep = [i for i, label in enumerate(labels) if label in index]
            y = torch.tensor([index[labels[i]] for i in keep])
            splits[name] = (_pixels([items[i] for i in keep], base), y)
        self.train_px, self.y = splits["train"]
        self.valid_px, self.valid_y = splits["valid"]
        if not len(self.y) or not len(self.valid_y):
            raise DataError("The parent's dataset has no train or valid images left.", hint="Re-import it.")
        pixels = (self.train_px, self.valid_px)
        self.cached, self.valid = model.stage_inputs(pixels, self.start, self.generator)


def fit(child, teacher, data, cfg, inputs: Inputs | None = None) -> None:
    """Train the student's top stages on the teacher's soft targets of the same views and the labels."""
    began = time.monotonic()
    deadline = None if cfg.time_budget is None else began + cfg.time_budget
    inputs = inputs or Inputs(child, data, cfg.seed)
    start, net, last = inputs.start, child.net_, {}
    soft = _soft_targets(teacher, inputs, cfg.temperature)
    n_views = soft.shape[0]
    teacher_s = time.monotonic() - began

    def forward(index):
        last["pick"] = torch.randint(0, n_views, (len(index),), generator=inputs.generator)
        hidden = inputs.cached[last["pick"], index].float()
        return net.forward_from(start, hidden.contiguous(memory_format=torch.channels_last))

    def forward_eval(index):
        hidden = inputs.valid[index].float()
        return net.forward_from(start, hidden.contiguous(memory_format=torch.channels_last))

    soft_flat, y_flat = soft.reshape(-1, soft.shape[-1]), inputs.y.repeat(n_views)
    flat = distill_loss(soft_flat, y_flat, cfg.temperature, cfg.alpha)

    def loss(logits, index):  # the soft targets of the very views ``forward`` drew
        return flat(logits, last["pick"] * len(inputs.y) + index)

    train = stages.Features(torch.empty(len(inputs.y), 0), inputs.y)
    valid = stages.Features(torch.empty(len(inputs.valid_y), 0), inputs.valid_y)
    top = list(net.encoder.head.parameters())
    learn = stages.top_learner(
        net,
        train,
        valid,
        start=start,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        forward=forward,
        forward_eval=forward_eval,
        head_params=list(net.head.dense.parameters()) + top,
        loss=loss,
    ).unfreeze(child.unfrozen_)  # before the timing: the step timing needs gradients
    per_epoch = _epoch_seconds(net, forward, len(inputs.y), cfg.batch_size)
    left = float("inf") if deadline is None else deadline - time.monotonic()
    epochs = max(1, min(cfg.epochs, int(left // (per_epoch * 1.15))))
    result = stages.train_top(learn, epochs, (cfg.lr or child.lr_body, child.lr_head / 3), deadline=deadline)
    net.eval()
    child.stages_ = {"student": result.__dict__}
    child.timings_ = {"teachers": round(teacher_s, 2), "train_student": round(result.seconds, 2)}


@torch.inference_mode()
def _soft_targets(teacher, inputs: Inputs, temperature: float, batch: int = 128) -> torch.Tensor:
    """The teacher's probabilities at ``temperature`` for every cached view: ``[views, N, classes]``."""
    net = teacher.net_.eval()
    out = []
    for view in inputs.cached:
        chunks = [view[i : i + batch].float() for i in range(0, len(view), batch)]
        last = torch.channels_last
        logits = [net.forward_from(inputs.start, c.contiguous(memory_format=last)) for c in chunks]
        out.append(torch.softmax(torch.cat(logits) / temperature, -1))
    return torch.stack(out)


def _epoch_seconds(net, forward, n: int, batch_size: int) -> float:
    index = torch.arange(min(batch_size, n))
    times = []
    for _ in range(2):
        began = time.perf_counter()
        nn.functional.cross_entropy(forward(index), torch.zeros(len(index), dtype=torch.long)).backward()
        net.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - began)
    return min(times) * n / len(index)


def _importance(child, inputs: Inputs, samples: int, batch_size: int) -> list[torch.Tensor]:
    """Per fine-tuned MBConv block: the Taylor score of each expansion channel, from the gradients
    of the cross-entropy on ``samples`` centre-cropped training images."""
    net = child.net_
    net.requires_grad_(False)
    blocks = [block for _, _, block in _blocks(child)]
    for block in blocks:
        block.requires_grad_(True)
    net.eval()  # BatchNorm statistics stay as trained
    rows = torch.randperm(len(inputs.y), generator=torch.Generator().manual_seed(0))[:samples]
    for begin in range(0, len(rows), batch_size):
        index = rows[begin : begin + batch_size]
        hidden = inputs.cached[0, index].float().contiguous(memory_format=torch.channels_last)
        logits = net.forward_from(inputs.start, hidden)
        nn.functional.cross_entropy(logits, inputs.y[index], reduction="sum").backward()
    scores = []
    for block in blocks:
        expand, depthwise = block.expand.conv.weight, block.depthwise.conv.weight
        score = (expand * expand.grad).abs().sum((1, 2, 3))
        score = score + (depthwise * depthwise.grad).abs().sum((1, 2, 3))
        scores.append(score.detach())
    net.zero_grad(set_to_none=True)
    net.requires_grad_(False)
    return scores
