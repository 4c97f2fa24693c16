"""What the up-front estimate counts, and the tuners: a task's search plan (search space and cost
model), which the task names (``Task.tuner``); :func:`get_tuner` asks the task for it.

The task files, torch and the training stages are imported inside the methods that use them:
``aimass.api`` imports the auto-learning package, and the command line stays light (no torch)."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aimass.backbones import default_backbone, get_backbone
from aimass.data import read_table
from aimass.data.archive import archive_kind, member_names
from aimass.data.image_layout import IMAGE_EXTENSIONS, image_files
from aimass.errors import ConfigError
from aimass.tasks import available_tasks, get_task


@dataclass
class Count:
    """What the up-front estimate needs: how many items, and how long the texts are."""

    items: int
    mean_chars: float = 0.0
    backbone: str | None = None
    tokens: float = 0.0  # per example, where the task counts tokens (text generation)


# ==================================================================== tuners (one per task)
@dataclass
class Bundle:
    """What stage 2 trains on, cut from a prepared estimator: the net, a training subsample,
    the validation rows and how to get logits for either.

    The head is refitted on the subsample first, so that a trial is the real run in miniature
    (head, then stage 2, on the same rows). Stage 2 on a few rows from a head fitted on all of them
    would reward whatever moves the weights least: the lowest learning rate.
    """

    net: object
    n_top: int
    train: object  # stages.Features of the subsample
    valid: object  # stages.Features of the validation split
    forward: Callable  # training logits of subsample rows
    forward_eval: Callable  # logits of validation rows
    head_params: Callable[[], list]
    snapshot: dict = field(default_factory=dict)

    def restore(self) -> None:
        self.net.load_state_dict(self.snapshot)
        self.net.eval()


class TextTuner:
    """Text classification: MiniLM / e5 encoders, stage 2 on cached hidden states."""

    items = "texts"
    searches = True  # stage 2 is searched (the generation tuner plans instead: ``settle``)
    least_work = "embedding them with the frozen backbone, fitting a head and evaluating"
    more_time = "to search hyper-parameters and fine-tune the top blocks"
    rate = 0.021  # s per 128-token text for MiniLM's frozen pass on 2 cores (BBC: 35.5 s / 1,701)
    max_epochs = 4  # TextClassifier's stage-2 cap for data that is not few-shot
    trial_epochs = 2
    batch_size = 16
    lr_sweep = (1e-6, 1e-2)
    head_scale = 1 / 3  # TextClassifier trains the head at lr_head / 3 in stage 2
    # the cost model below is for two blocks in stage 2, and the prepared cache sits below them
    fixed = {"unfreeze": 2}
    compress_s = 20.0  # ONNX export, int8 quantisation and latency timing of parent and child (BBC: 29 s)

    def compress_item_s(self, item: float) -> float:
        return 1.5 * item  # the parent's and the child's evaluation of each test text

    def count(self, source: Path) -> Count:
        rows, _, _ = read_table(source)
        chars = statistics.fmean(len(r["text"]) for r in rows) if rows else 0.0
        return Count(len(rows), chars)

    def count_dataset(self, ds) -> Count:
        texts = ds.texts()
        chars = statistics.fmean(len(t) for t in texts) if texts else 0.0
        return Count(len(texts), chars, default_backbone(ds.manifest.get("language") or "en"))

    def item_seconds(self, count: Count) -> float:
        depth = 2.0 if count.backbone == "multilingual-e5-small" else 1.0  # 12 layers vs 6
        return self.rate * depth * min(1.0, max(0.3, count.mean_chars / 700))

    def minimum_seconds(self, count: Count) -> float:
        return 10.0 + count.items * self.item_seconds(count) + 0.002 * count.items

    def embed_seconds(self, count: Count) -> float:
        return self.item_seconds(count)

    def step_seconds(self, count: Count) -> float:
        """A stage-2 step on two blocks: 0.34 s for BBC's 128-token batches of 16, and not much less
        for short texts (the optimiser and the TF-IDF branch cost the same)."""
        depth = 2.0 if count.backbone == "multilingual-e5-small" else 1.0  # wider e5 blocks
        return 0.34 * depth * min(1.0, max(0.6, count.mean_chars / 700))

    def final_seconds(self, n_train: int, step: float, overhead: float) -> float:
        return overhead + self.max_epochs * step * math.ceil(n_train / self.batch_size) * 1.15

    def view_seconds(self, rows: int) -> float:
        return 0.0  # the hidden states are cached already

    def useful_seconds(self, count: Count) -> float:
        epoch = 0.7 * count.items * self.item_seconds(count)  # a stage-2 epoch ~ the frozen pass
        return self.minimum_seconds(count) * 1.6 + self.max_epochs * epoch * 1.15 + 60

    def default_params(self) -> dict:
        from aimass.tasks.text_classification import TextClassifier

        defaults = TextClassifier().get_params()
        return {"lr_body": defaults["lr_body"], "lr_head": defaults["lr_head"]}

    def searchable(self, ds) -> str | None:
        """Why the search cannot run on ``ds`` (few-shot data has no validation split), or None."""
        from aimass.tasks.text_classification import FEW_SHOT_PER_CLASS

        pool = len(ds.texts("train")) + len(ds.texts("valid"))
        classes = len(set(ds.labels()))
        if pool < FEW_SHOT_PER_CLASS * classes:
            return (
                f"few-shot data ({pool} examples, < {FEW_SHOT_PER_CLASS} per class): there is no validation "
                "split to select on, so the task's few-shot plan (contrastive pairs) is used as is"
            )
        return None

    def prepare(self, ds, seed: int, progress: bool):
        """Fit the default estimator up to stage 2 (fills the feature cache); keep stage 2's inputs."""
        from aimass.tasks.text_classification import TextClassifier

        class Prepared(TextClassifier):
            def _stage_top(self, cfg, train, val, deadline, run_dir, resume, baseline):
                from aimass.train import stages

                self.train_features_, self.valid_features_ = train, val
                return stages.StageResult(skipped="auto: the search trains stage 2")

        # the search's preparation keeps the network; the final fit runs the portfolio
        return Prepared(seed=seed, time_budget=None, **{**self.fixed, "baselines": False}).fit(
            ds, progress=progress
        )

    def bundle(self, prepared, index) -> Bundle:
        from aimass.tfidf.branch import rows
        from aimass.train import stages
        from aimass.train.stages import Features

        net, train, valid = prepared.net_, prepared.train_features_, prepared.valid_features_
        start = net.n_layers - prepared.unfrozen_
        lexical = None if train.lexical is None else rows(train.lexical, index)
        sub = Features(train.pooled[index], train.y[index], train.hidden[index], train.mask[index], lexical)
        stages.fit_head(net, sub, valid, seed=prepared.seed)  # a miniature of the real run, see Bundle

        def logits(features, rows_):
            mask = features.mask[rows_].long()
            width = int(mask.sum(1).max())
            lex = None if features.lexical is None else rows(features.lexical, rows_)
            return net.forward_from(start, features.hidden[rows_, :width].float(), mask[:, :width], lex)

        return Bundle(
            net,
            prepared.unfrozen_,
            sub,
            valid,
            lambda i: logits(sub, i),
            lambda i: logits(valid, i),
            lambda: list(net.head.dense.parameters()),
        )

    def describe_backbone(self, ds) -> tuple[str, str]:
        language = ds.manifest.get("language") or "en"
        name = default_backbone(language)
        why = f"detected language '{language}' -> {get_backbone(name).description}"
        return name, why


class ImageTuner:
    """Image classification: EfficientNet-Lite0, stage 2 on cached lower-stage outputs of views."""

    items = "images"
    searches = True
    least_work = TextTuner.least_work
    more_time = TextTuner.more_time
    rate = 0.0045  # s per image: import + decode + the frozen pass at 128 px on 2 cores (Fashion-MNIST)
    max_epochs = 12  # ImageClassifier's stage-2 cap
    trial_epochs = 3
    batch_size = 32
    lr_sweep = (1e-5, 1e-1)
    head_scale = 1 / 3  # ImageClassifier trains the head at lr_head / 3 in stage 2
    fixed: dict = {}  # parameters the final fit always takes
    compress_s = 15.0

    def compress_item_s(self, item: float) -> float:
        return 0.024  # Fashion-MNIST: 63 s for 2,000 test images (parent and int8 child evaluated)

    def count(self, source: Path) -> Count:
        return Count(_count_images(source))

    def count_dataset(self, ds) -> Count:
        return Count(len(ds.labels()))

    def item_seconds(self, count: Count) -> float:
        return self.rate

    def minimum_seconds(self, count: Count) -> float:
        return 12.0 + count.items * self.rate

    def embed_seconds(self, count: Count) -> float:
        return 0.0032  # the frozen pass alone (Fashion-MNIST: 15.9 s for 5,000 images)

    def step_seconds(self, count: Count) -> float:
        return 0.004 * self.batch_size  # Fashion-MNIST at 128 px: ~18 s per epoch of 4,500 images

    def final_seconds(self, n_train: int, step: float, overhead: float) -> float:
        epochs = self.max_epochs * step * math.ceil(n_train / self.batch_size) * 1.15
        return overhead + self.view_seconds(n_train) + epochs

    def view_seconds(self, rows: int) -> float:
        return rows * 3 * 0.003  # the centre crop and 2 random views through the lower stages

    def useful_seconds(self, count: Count) -> float:
        epoch = 0.7 * count.items * 0.004  # Fashion-MNIST: ~18 s per 4,500 images and epoch
        return self.minimum_seconds(count) * 1.6 + self.max_epochs * epoch * 1.15 + 90

    def default_params(self) -> dict:
        from aimass.tasks.image_classification import ImageClassifier

        defaults = ImageClassifier().get_params()
        return {"lr_body": defaults["lr_body"], "lr_head": defaults["lr_head"]}

    def searchable(self, ds) -> str | None:
        return None  # a validation split is always held out

    def prepare(self, ds, seed: int, progress: bool):
        from aimass.tasks.image_classification import ImageClassifier

        class Prepared(ImageClassifier):
            def _stage_top(self, cfg, pixels, feats, deadline, run_dir, resume, baseline):
                from aimass.train import stages

                self.train_features_, self.valid_features_ = feats
                self.pixels_, self.views_ = pixels, 1 + cfg.augment
                return stages.StageResult(skipped="auto: the search trains stage 2")

        # the search's preparation keeps the network; the final fit runs the portfolio
        return Prepared(seed=seed, time_budget=None, **{**self.fixed, "baselines": False}).fit(
            ds, progress=progress
        )

    def bundle(self, prepared, index) -> Bundle:
        """The subsample's centre crop and ``augment`` random views through the frozen lower stages,
        as ImageClassifier's stage 2 caches them; one view per image is drawn at each step."""
        import torch

        from aimass.backbones.image_net import lower as _lower
        from aimass.train import augment, stages
        from aimass.train.stages import Features

        net, (train_px, valid_px) = prepared.net_, prepared.pixels_
        train, valid = prepared.train_features_, prepared.valid_features_
        size, start = prepared.image_size_, net.n_layers - prepared.unfrozen_
        generator = torch.Generator().manual_seed(prepared.seed)
        views = [lambda b: augment.center(b, size)]
        views += [lambda b: augment.augment(b, size, generator)] * (prepared.views_ - 1)
        lower = net.encoder.fuse_for_inference()
        cached = torch.stack([_lower(lower, net.normalise, train_px[index], v, start) for v in views])
        valid_lower = _lower(lower, net.normalise, valid_px, views[0], start)
        last = torch.channels_last

        def forward(rows_):
            pick = torch.randint(0, len(views), (len(rows_),), generator=generator)
            return net.forward_from(start, cached[pick, rows_].float().contiguous(memory_format=last))

        def forward_eval(rows_):
            return net.forward_from(start, valid_lower[rows_].float().contiguous(memory_format=last))

        sub = Features(train.pooled[index], train.y[index])
        stages.fit_head(
            net, sub, valid, seed=prepared.seed, dense_grid=((1.0, 1.0), (10.0, 1.0), (100.0, 1.0))
        )
        return Bundle(
            net,
            prepared.unfrozen_,
            sub,
            valid,
            forward,
            forward_eval,
            lambda: list(net.head.dense.parameters()) + list(net.encoder.head.parameters()),
        )

    def describe_backbone(self, ds) -> tuple[str, str]:
        return (
            "efficientnet-lite0",
            f"the bundled image backbone: {get_backbone('efficientnet-lite0').description}",
        )


def get_tuner(task: str):
    """The search plan of ``task`` (``Task.make_tuner``, its ``task`` set); a clear error lists the
    tasks that have one."""
    tuner = get_task(task).make_tuner()
    if tuner is None:
        planned = [t for t in available_tasks() if get_task(t).tuner]
        raise ConfigError(
            f"auto has no search plan for task '{task}'; available: {', '.join(planned)}",
            hint=f"Train it with `aimass train --task {task} --data ...` instead.",
        )
    return tuner


def _count_images(source: Path) -> int:
    """Images in a folder, archive or manifest, from names only (nothing is decoded). An archive
    over the member limit is refused here, before its listing is built, as its import would be."""
    if source.is_dir():
        return sum(1 for _ in image_files(source))
    if archive_kind(source) is not None:
        names = member_names(source)
    else:
        with source.open(newline="", encoding="utf-8", errors="replace") as fh:
            return max(0, sum(1 for _ in csv.reader(fh)) - 1)
    return sum(1 for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
