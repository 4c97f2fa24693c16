"""Task ``text-generation``: LoRA fine-tuning of a causal LM on conversations, and its handler.

A registered version stores only the LoRA adapter (``adapter.safetensors``, ~9 MB for SmolLM2 at
r=8) and its lineage (base model, data digest, params) in ``model.json``: ten fine-tunes of one base
cost ten adapters. Loading attaches the adapter to the one shared copy of the base
(:mod:`aimass.llm.hub`).

>>> from aimass.tasks.text_generation import TextGenerator
>>> TextGenerator(max_steps=20).get_params()["max_steps"]
20
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field, field_validator
from safetensors.torch import load_file, save_file

from aimass.backbones.precision import bf16_enabled, low_precision
from aimass.data import bbc_news_path, bbc_news_text
from aimass.data.limits import limit
from aimass.data.pairs_import import looks_like_pairs, read_held_out
from aimass.errors import ConfigError, DataError, NotFoundError, VersionError
from aimass.estimator import Estimator, parse_config
from aimass.llm import batcher, decode
from aimass.llm.backbone import get_llm_backbone
from aimass.llm.hub import HUB, LORA_TARGETS, Base
from aimass.llm.metrics import exact_match, rouge_l
from aimass.tasks import register_task
from aimass.tasks.base import Task
from aimass.tasks.classification import check_encodable
from aimass.train.callbacks import checkpoint_meta, read_checkpoint, write_checkpoint
from aimass.train.progress import make_progress, pause_point, pause_requested, publish_metrics
from aimass.version import __version__

log = logging.getLogger("aimass.train")

FORMAT = 1
MAX_ITEMS = 16
MAX_CHARS = 20000
MAX_CURVE = 5000  # training-loss points an evaluation keeps (the last ones)
VALID_EXAMPLES = 32  # the most validation conversations scored at each epoch's end and the fit's
VALID_SHARE = 8  # ... and at most one per this many training conversations (at least 8): a cheap check
MAX_EVAL_CONVERSATIONS = 512  # held-out conversations an evaluation scores for loss (a seeded sample)
EVAL_LIMIT = "AIMASS_MAX_EVAL_CONVERSATIONS"  # ... overridden by this environment variable
PREDICT_BATCH = 8  # prompts ``predict`` decodes side by side (smollm2, 1 thread: ~4x the tokens/s of one)
METRIC_EVENTS = 200  # a fit publishes its step metrics about this many times (every step if fewer)
FITTED = ("backbone_", "data_digest_", "max_length_", "lora_")  # what a load needs besides params
EPOCH_CHECKPOINTS = 2  # adapters kept from the ends of the last passes before the final one
CHECKPOINTS = "checkpoints"  # a version's folder of those: checkpoints/step-N.safetensors
SYSTEM_HEADLINE = "Write the headline of this news article."


class Config(BaseModel):
    """Validated hyper-parameters (checked in ``fit``, never in ``__init__``)."""

    backbone: str = "smollm2-135m"
    time_budget: float | None = Field(default=600.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    epochs: float = Field(default=1.0, gt=0, le=100)
    batch_size: int = Field(default=8, ge=1, le=256)
    max_length: int | None = Field(default=None, ge=16, le=8192)
    lr: float = Field(default=1e-3, gt=0, lt=1)
    lora_r: int = Field(default=8, ge=1, le=256)
    lora_alpha: int = Field(default=16, ge=1)
    max_new_tokens: int = Field(default=32, ge=1, le=4096)
    eval_examples: int = Field(default=8, ge=0)
    threads: int = Field(default=1, ge=1, le=256)
    seed: int = 0


def _conversations(data, split: str | None) -> tuple[list[list[dict]], str]:
    """(conversations, digest) from a chat Dataset, a list of conversations or ``(prompts, answers)``."""
    if hasattr(data, "rows"):
        if data.kind != "chat":
            raise DataError(
                f"Dataset {data.name!r} holds {data.kind} data, not conversations.",
                hint="Import chat JSONL, prompt/completion JSONL or a source/target CSV for text-generation.",
            )
        return [r["messages"] for r in data.rows(split)], data.digest
    if isinstance(data, tuple) and len(data) == 2:
        prompts, answers = data
        if len(prompts) != len(answers):
            raise DataError(f"Got {len(prompts)} prompts but {len(answers)} answers.", hint="Pass one each.")
        convs = [_conversation(p, a) for p, a in zip(prompts, answers)]
    else:
        convs = [list(c) for c in data]
    digest = hashlib.sha256(json.dumps(convs, sort_keys=True).encode()).hexdigest()
    return convs, digest


def _conversation(prompt, answer: str) -> list[dict]:
    """A prompt and its answer as one conversation. The prompt is a user message, the messages
    before the answer, or the whole conversation ending in that answer (what a chat Dataset's
    ``inputs`` and :meth:`TextGeneration.eval_data` give)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    messages = [dict(m) for m in prompt]
    if not messages or messages[-1].get("role") != "assistant":
        return [*messages, {"role": "assistant", "content": answer}]
    if messages[-1].get("content") != answer:
        raise DataError(
            "A conversation ends in an assistant turn that is not its answer.",
            hint="Give the messages before the answer, or the whole conversation ending in its answer.",
        )
    return messages


def _valid(data, valid, n_train: int) -> list[list[dict]]:
    """The first validation conversations (``valid``'s, else the ``valid`` split of a Dataset
    ``data``; none for plain conversations), as many as one per :data:`VALID_SHARE` training
    conversations, at least 8 and at most :data:`VALID_EXAMPLES`: scoring them costs a few percent
    of a pass (forward only), and the evaluation scores the whole held-out split at the end."""
    if valid is not None:
        convs, _ = _conversations(valid, "valid")
    else:
        convs = _conversations(data, "valid")[0] if hasattr(data, "rows") else []
    return convs[: min(VALID_EXAMPLES, max(8, n_train // VALID_SHARE))]


def encode_example(
    tokenizer, messages: list[dict], max_length: int | None, *, trailing: bool = True
) -> tuple[list[int], list[int]]:
    """(input ids, labels): labels are -100 except on the assistant turns (content and end of turn).
    Longer than ``max_length``: the start is cut (the answer is what trains); None: never cut.

    ``trailing``: the white space the chat template writes after a turn's end-of-turn token (the
    ``\\n`` after ``<|im_end|>``) is labelled too. Training labels it (as aimass always has: a
    near-certain token, harmless to learn, and a fit stays the adapter earlier versions trained);
    evaluation does not (``trailing=False``): generation stops at the end-of-turn token, so that
    newline is no part of an answer, and counting it lowered the held-out perplexity."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and i > 0:
            start = len(
                tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=False)
            )
            end = len(tokenizer.apply_chat_template(messages[: i + 1], tokenize=False))
            if not trailing:
                end = start + len(full[start:end].rstrip())
            spans.append((start, end))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [-100] * len(ids)
    for j, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and any(s <= a and b <= e for s, e in spans):
            labels[j] = ids[j]
    if max_length is None:
        return ids, labels
    return ids[-max_length:], labels[-max_length:]


AUTO_MAX_LENGTH = 1024  # max_length None: the longest training example's tokens, at most this


def fitted_length(examples: list[tuple[list[int], list[int]]], given: int | None) -> tuple[int, int]:
    """(the tokens per example a fit trains on, how many training examples are longer): ``given``,
    or the longest example's rounded up to 16, at most :data:`AUTO_MAX_LENGTH` (a CPU's memory for
    a batch); a longer example loses its start, the system message first.

    >>> fitted_length([([1] * 40, []), ([1] * 300, [])], None), fitted_length([([1] * 300, [])], 256)
    ((304, 0), (256, 1))
    """
    longest = max((len(ids) for ids, _ in examples), default=16)
    length = given or min(AUTO_MAX_LENGTH, max(16, math.ceil(longest / 16) * 16))
    return length, sum(len(ids) > length for ids, _ in examples)


def sample_held_out(n: int, most: int, generated: int, seed) -> tuple[list[int], list[int]]:
    """(the conversations evaluation scores for loss, those it answers for ROUGE-L): of ``n``, at
    most ``most`` and ``generated``, a seeded random sample when there are more (the generated ones
    among the scored), each in the data's order. The first rows of a file are often its oldest
    or one source's: a sample stands for the whole.

    >>> sample_held_out(5, 512, 8, 0)
    ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    >>> scored, shown = sample_held_out(1000, 4, 2, 0)
    >>> len(scored), set(shown) <= set(scored), scored == sample_held_out(1000, 4, 2, 0)[0]
    (4, True, True)
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[:most]), sorted(order[: min(most, generated)])


def _cut_warning(cut: int, scored: int, length: int) -> str:
    return (
        f"{cut} of the {scored} held-out conversations scored are longer than {length} tokens (the "
        "backbone's context length): their start was cut, so their answers were scored on less of "
        "their prompt (truncated). Shorten those prompts to score them whole."
    )


def lora_settings(cfg: Config) -> dict:
    """peft's ``LoraConfig`` arguments for ``cfg``: rank and scale on all 7 projections of each block."""
    return {
        "r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": 0.0,
        "target_modules": list(LORA_TARGETS),
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Length-sorted batches (little padding), in a seeded random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _token_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Length-sorted batches of at most ``budget`` tokens each, padding included (an example
    longer than that alone): what bounds an evaluation's memory, whatever its examples' lengths.

    >>> _token_batches([10, 300, 12, 40, 11], 64)
    [[0, 4, 2], [3], [1]]
    """
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        if batches and (len(batches[-1]) + 1) * lengths[i] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _token_loss(
    model, batch: dict[str, torch.Tensor], *, labelled_only: bool = False
) -> tuple[torch.Tensor, int, int]:
    """(summed next-token loss over the labelled tokens, how many, how many the model's top token
    gets right: the mean token accuracy OpenAI's fine-tuning metrics report).

    ``labelled_only``: the vocabulary logits are computed only at the positions that predict a
    labelled token in some row (transformers' ``logits_to_keep``), not at every prompt token: a
    2,048-token example with a 60-token answer holds 12 MB of logits instead of 400 (evaluation)."""
    target = batch["labels"][:, 1:]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if labelled_only:
        keep = (target != -100).any(0).nonzero().flatten()
        target = target[:, keep]
        scored = model(**inputs, logits_to_keep=keep).logits
        logits = scored
    else:
        logits = model(**inputs).logits
        scored = logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(
        scored.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), reduction="sum"
    )
    labelled = target != -100
    right = int(((scored.argmax(-1) == target) & labelled).sum())
    return loss, int(labelled.sum()), right


class TextGenerator(Estimator):
    """Fine-tune a causal LM with LoRA on the assistant turns of conversations.

    Example:
        >>> ds = aimass.import_dataset("headlines.jsonl")              # doctest: +SKIP
        >>> model = TextGenerator(time_budget="10m").fit(ds)             # doctest: +SKIP
        >>> model.generate("Write a headline: ...", seed=1).choices[0].text  # doctest: +SKIP

    Args:
        backbone: ``smollm2-135m`` (bundled), ``hf:ORG/NAME`` or a local transformers folder.
        time_budget: wall-time limit of the training loop, e.g. ``"10m"`` (a hard stop).
        max_steps: optimizer steps; None: ``epochs`` over the data. With a fixed number of steps
            that fits the budget a run is reproducible (same seed, same data, same adapter).
        epochs: passes over the training split when ``max_steps`` is None.
        batch_size: examples per step (length-sorted batches, little padding).
        max_length: the most tokens per example (the start of longer ones is cut, with a warning and
            ``train_stats_["truncated_examples"]``); None: the longest training example's, at most
            :data:`AUTO_MAX_LENGTH`.
        lr: peak learning rate of the one-cycle schedule (1e-3: on BBC headlines, 30 steps of 8,
            held-out ROUGE-L 0.226 against 0.163 at 2e-4; bench/results/generation.md).
        lora_r, lora_alpha: LoRA rank and scale, on all 7 projections of each block.
        max_new_tokens: the most tokens ``predict`` and ``evaluate`` generate.
        eval_examples: held-out examples ``evaluate`` generates for (ROUGE-L, base vs fine-tuned): a
            sample seeded by ``seed``, not the first rows.
        threads: torch threads for training and generation (1 is fastest on a busy 2-core machine).
        seed: seeds LoRA initialisation and batch order.
    """

    task = "text-generation"

    def __init__(
        self,
        backbone="smollm2-135m",
        time_budget=600.0,
        max_steps=None,
        epochs=1.0,
        batch_size=8,
        max_length=None,
        lr=1e-3,
        lora_r=8,
        lora_alpha=16,
        max_new_tokens=32,
        eval_examples=8,
        threads=1,
        seed=0,
    ):
        self.backbone = backbone
        self.time_budget = time_budget
        self.max_steps = max_steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.max_length = max_length
        self.lr = lr
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.max_new_tokens = max_new_tokens
        self.eval_examples = eval_examples
        self.threads = threads
        self.seed = seed

    # ----------------------------------------------------------------- fit
    def fit(
        self, data, valid=None, *, run_dir: Path | None = None, resume: bool = False, progress: bool = True
    ) -> TextGenerator:
        """Train a LoRA adapter on a chat Dataset's train split, conversations, or ``(prompts, answers)``.

        With ``run_dir`` the adapter, optimizer, schedule and batch order are checkpointed to
        ``run_dir/checkpoint`` (at most every :data:`CHECKPOINT_SECONDS`, and after the last step);
        ``resume=True`` continues from there and ends where an uninterrupted run ends.

        ``valid`` (conversations; default: a Dataset's ``valid`` split) is scored at the end of each
        epoch and of the fit, on its first few (:func:`_valid`; loss and mean token accuracy:
        ``valid_history_``); ``train_accuracy_`` is each step's token accuracy. The adapters at
        the ends of the last :data:`EPOCH_CHECKPOINTS` passes before the final step are kept too
        (``checkpoints_``; saved with the version, answering as ``NAME:VERSION:ckpt-step-N``)."""
        from peft import LoraConfig, get_peft_model

        cfg = parse_config(Config, self.get_params(), "TextGenerator")
        began = time.monotonic()
        convs, digest = _conversations(data, "train")
        if not convs:
            raise DataError("There are no training examples.", hint="Import data with a train split.")
        decode.set_threads(cfg.threads)
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        per_epoch = math.ceil(len(convs) / cfg.batch_size)
        steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
        guard = {"data_digest": digest, "params": self.get_params(), "steps": steps}
        folder = Path(run_dir) / "checkpoint" if run_dir is not None else None
        if resume and folder is not None:
            _check_resumable(folder, guard)
        tokenizer, model = get_llm_backbone(cfg.backbone).load()
        loaded = time.monotonic()
        whole = [encode_example(tokenizer, c, None) for c in convs]
        length, cut = fitted_length(whole, cfg.max_length)
        if cut:
            log.warning(
                "%d of %d training examples are longer than max_length=%d tokens: their start (the "
                "system message first) is cut. Raise --set max_length=N (at most 8192) to train on all.",
                cut,
                len(whole),
                length,
            )
        examples = [(ids[-length:], labels[-length:]) for ids, labels in whole]
        held = [encode_example(tokenizer, c, length) for c in _valid(data, valid, len(convs))]
        self.lora_ = lora_settings(cfg)
        model = get_peft_model(model, LoraConfig(**self.lora_), adapter_name="default")
        loop = _Loop(model, cfg, steps, guard, per_epoch)
        if resume and folder is not None:
            loop.restore(folder)
        deadline = None if cfg.time_budget is None else began + cfg.time_budget - loop.state.seconds_before
        bar = _progress(progress, steps)
        loop.run(examples, tokenizer.pad_token_id, deadline, folder, bar, held)
        model.eval()
        trained = time.monotonic() - loaded + loop.state.seconds_before
        self.backbone_ = cfg.backbone
        self.data_digest_ = digest
        self.max_length_ = length
        self.history_ = list(loop.state.history)
        self.train_accuracy_ = list(loop.state.accuracy)
        self.valid_history_ = list(loop.state.valid)
        self.snapshots_ = dict(loop.snapshots)
        self.checkpoints_ = [_checkpoint_entry(step, self.valid_history_) for step in self.snapshots_]
        self.train_stats_ = {
            **loop.stats(len(examples), trained),
            "max_length": length,
            "truncated_examples": cut,
        }
        self.timings_ = {"load_backbone": round(loaded - began, 2), "train": round(trained, 2)}
        self.base_ = Base(cfg.backbone, tokenizer, model, adapters={"default": 1})
        self.adapter_ = "default"
        return self

    # ------------------------------------------------------------ generate
    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            return decode.chat_ids(self.base_.tokenizer, [{"role": "user", "content": prompt}])
        return decode.chat_ids(self.base_.tokenizer, list(prompt))

    def generate(
        self,
        prompt,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop=None,
        n: int = 1,
        base: bool = False,
        raw: bool = False,
        on_delta=None,
        cancelled=None,
        schema: dict | None = None,
        regex: str | None = None,
        choices: list[str] | None = None,
    ) -> decode.Generation:
        """Generate for one prompt (a user message, or a list of chat messages; ``raw``: plain text,
        no chat template). ``base=True`` answers with the base model, the adapter off. At most one
        of ``schema`` (a JSON Schema the answer follows), ``regex`` (a pattern it matches whole) and
        ``choices`` (strings it is one of) constrains the answer (:mod:`aimass.llm.structured`)."""
        self.check_fitted()
        tokenizer = self.base_.tokenizer
        ids = decode.text_ids(tokenizer, prompt) if raw else self._prompt_ids(prompt)
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        params = decode.SamplingParams(
            max_tokens=self.max_new_tokens if max_tokens is None else max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stops,
            n=n,
            constraint=self._constraint(schema, regex, choices),
        )
        decode.set_threads(self.threads if isinstance(self.threads, int) else None)
        with self.base_.using(None if base else self.adapter_) as model:
            return decode.generate(model, tokenizer, ids, params, on_delta=on_delta, cancelled=cancelled)

    def _constraint(self, schema: dict | None, regex: str | None, choices: list[str] | None):
        asked = [
            (build, value)
            for build, value in (("json_schema", schema), ("regex", regex), ("choice", choices))
            if value is not None
        ]
        if not asked:
            return None
        if len(asked) > 1:
            raise ConfigError("Give one of schema, regex and choices.", hint="They are alternatives.")
        from aimass.llm import structured  # llguidance: the llm extra

        tokenizer = self.base_.tokenizer
        build, value = asked[0]
        return getattr(structured, build)(tokenizer, decode.eos_ids(self.base_.model, tokenizer), value)

    def predict(self, inputs, *, base: bool = False) -> list[str]:
        """The greedy answer to each prompt (a string or a list of chat messages), decoded
        :data:`PREDICT_BATCH` at a time, prompts of similar length together
        (:func:`aimass.llm.decode.generate_batch`; the same prompts always give the same answers)."""
        self.check_fitted()
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        prompts = [self._prompt_ids(item) for item in items]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        params = decode.SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0)
        answers = [""] * len(prompts)
        decode.set_threads(self.threads if isinstance(self.threads, int) else None)
        for start in range(0, len(order), PREDICT_BATCH):
            rows = order[start : start + PREDICT_BATCH]
            with self.base_.using(
                None if base else self.adapter_
            ) as model:  # the base's lock, a batch at a time
                found = decode.generate_batch(model, self.base_.tokenizer, [prompts[i] for i in rows], params)
            for i, choice in zip(rows, found, strict=True):
                answers[i] = choice.text.strip()
        return answers

    # ------------------------------------------------------------ evaluate
    def loss(self, conversations: list[list[dict]], batch_size: int = 8, *, base: bool = False) -> float:
        """Mean next-token loss on the answer tokens of ``conversations`` (teacher forcing);
        ``base=True``: of the base model, the adapter off."""
        return self.token_scores(conversations, batch_size, base=base)[0]

    def token_scores(
        self, conversations: list[list[dict]], batch_size: int = 8, *, base: bool = False
    ) -> tuple[float, float]:
        """(mean next-token loss, mean token accuracy) on the answer tokens of ``conversations``:
        each assistant turn's content and its end-of-turn token, pooled over every conversation
        (a long answer weighs more than a short one), each scored whole up to :meth:`eval_length`."""
        examples, _ = self.held_out_examples(conversations)
        return self._scores(examples, batch_size, base)

    def eval_length(self) -> int:
        """The most tokens of a conversation evaluation scores: the backbone's context length (the
        training ``max_length_`` when longer); a longer conversation loses its start."""
        self.check_fitted()
        return max(get_llm_backbone(self.backbone_).context_length, int(self.max_length_))

    def held_out_examples(self, conversations: list[list[dict]]) -> tuple[list, int]:
        """(the encoded examples evaluation scores, how many were longer than :meth:`eval_length`
        and lost their start). Not cut to the training ``max_length_``: a 356-token prompt's answer,
        scored on the last 48 tokens (a fit on short examples), read perplexity 5.43, not 2.38."""
        length = self.eval_length()
        tokenizer = self.base_.tokenizer
        whole = [encode_example(tokenizer, c, None, trailing=False) for c in conversations]
        cut = sum(len(ids) > length for ids, _ in whole)
        return [(ids[-length:], labels[-length:]) for ids, labels in whole], cut

    @torch.inference_mode()
    def _scores(self, examples: list, batch_size: int, base: bool) -> tuple[float, float]:
        """(mean loss, mean token accuracy) over the labelled tokens of ``examples``, in
        length-sorted batches of at most ``batch_size * max_length_`` tokens (a training batch's)."""
        self.check_fitted()
        pad_id = self.base_.tokenizer.pad_token_id
        budget = batch_size * int(self.max_length_)
        total, count, right = 0.0, 0, 0
        decode.set_threads(self.threads if isinstance(self.threads, int) else None)
        with self.base_.using(None if base else self.adapter_) as model:
            for rows in _token_batches([len(ids) for ids, _ in examples], budget):
                batch = _collate([examples[i] for i in rows], pad_id)
                loss, n, r = _token_loss(model, batch, labelled_only=True)
                total, count, right = total + float(loss), count + n, right + r
        return total / max(count, 1), right / max(count, 1)

    def score(self, data, split: str = "test") -> float:
        """Mean log-likelihood per answer token (minus :meth:`loss`; higher is better, as
        scikit-learn's ``score``): of ``(prompts, answers)``, conversations or a Dataset's split."""
        convs, _ = _conversations(data, split)
        return -self.loss(convs)

    def evaluate(self, data, split: str = "test", top_k: int = 3, *, max_scored: int | None = None) -> dict:
        """Held-out loss and perplexity (of the fine-tune and of the base model), ROUGE-L and exact
        match of greedy answers, a table of base vs fine-tuned answers for ``top_k`` prompts, and
        the fit's training loss per step (drawn by ``TextGeneration.plots``).

        Loss and perplexity are per answer token, pooled over the conversations scored: at most
        ``max_scored`` of them (default ``AIMASS_MAX_EVAL_CONVERSATIONS``, else
        :data:`MAX_EVAL_CONVERSATIONS`), a seeded sample (``seed``) when there are more (``n`` is
        how many there are, ``n_scored`` how many were scored). ``eval_examples`` of those, drawn
        the same way, are answered greedily for ROUGE-L and exact match (``n_generated``). A
        conversation longer than :meth:`eval_length` loses its start: ``truncated`` counts them,
        with a warning in ``warnings``."""
        convs, _ = _conversations(data, split)
        if not convs:
            raise DataError(
                f"There are no examples in the '{split}' split to evaluate on.",
                hint="Evaluate on another split or pass --data FILE.",
            )
        began = time.monotonic()
        most = int(limit(EVAL_LIMIT, MAX_EVAL_CONVERSATIONS, max_scored, param="max_scored"))
        scored, shown = sample_held_out(len(convs), most, int(self.eval_examples), self.seed)
        examples, cut = self.held_out_examples([convs[i] for i in scored])
        (loss, accuracy), (base_loss, _) = self._scores(examples, 8, False), self._scores(examples, 8, True)
        shown = [convs[i] for i in shown]
        refs = [c[-1]["content"] for c in shown]
        tuned = self.predict([c[:-1] for c in shown])
        base = self.predict([c[:-1] for c in shown], base=True)
        table = [
            {"prompt": c[-2]["content"][:200], "reference": r, "base": b, "fine_tuned": t}
            for c, r, b, t in list(zip(shown, refs, base, tuned))[:top_k]
        ]
        report = {
            "n": len(convs),
            "n_scored": len(scored),
            "truncated": cut,
            "loss": round(loss, 4),
            "perplexity": round(math.exp(min(loss, 50)), 3),
            "mean_token_accuracy": round(accuracy, 4),
            "loss_base": round(base_loss, 4),
            "perplexity_base": round(math.exp(min(base_loss, 50)), 3),
            "n_generated": len(shown),
            "rouge_l": round(rouge_l(tuned, refs), 4),
            "rouge_l_base": round(rouge_l(base, refs), 4),
            "exact_match": round(exact_match(tuned, refs), 4),
            "side_by_side": table,
            "training_loss": list(getattr(self, "history_", []))[-MAX_CURVE:],
            "validation": list(getattr(self, "valid_history_", [])),
            "seconds": round(time.monotonic() - began, 2),
        }
        if cut:
            report["warnings"] = [_cut_warning(cut, len(scored), self.eval_length())]
            log.warning("%s", report["warnings"][0])
        return report

    # ---------------------------------------------------------- save/load
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The LoRA weights: from the peft model after a fit, as read from disk after a load."""
        if not self.base_.peft:
            return self.loaded_state_
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.base_.model, adapter_name=self.adapter_)

    def save(self, path: str | Path) -> Path:
        """Write ``adapter.safetensors`` (the LoRA weights only) and ``model.json`` (lineage)."""
        self.check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.adapter_state().items()}
        save_file(tensors, str(path / "adapter.safetensors"), metadata={"base": self.backbone_})
        (path / "adapter.safetensors").chmod(0o644)
        meta = {
            "format": FORMAT,
            "task": self.task,
            "aimass_version": __version__,
            "params": self.get_params(),
            "fitted": {
                k: getattr(self, k)
                for k in (
                    *FITTED,
                    "history_",
                    "train_accuracy_",
                    "valid_history_",
                    "checkpoints_",
                    "train_stats_",
                )
                if hasattr(self, k)
            },
            "lineage": {"base_model": self.backbone_, "data_digest": self.data_digest_},
        }
        (path / "model.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        for step, state in getattr(self, "snapshots_", {}).items():
            (path / CHECKPOINTS).mkdir(exist_ok=True)
            save_file(
                state, str(path / CHECKPOINTS / f"step-{step}.safetensors"), metadata={"base": self.backbone_}
            )
        return path

    @classmethod
    def load(cls, path: str | Path, checkpoint: int | None = None) -> TextGenerator:
        """Attach the saved adapter to the shared base (loaded once per process); ``checkpoint``:
        the one kept at that step (an earlier epoch's end, :attr:`checkpoints_`) instead."""
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        if meta.get("format") != FORMAT:
            raise VersionError(
                f"{path} was written by aimass {meta.get('aimass_version')} (format "
                f"{meta.get('format')}); this is aimass {__version__} (format {FORMAT}).",
                hint="Retrain the model with this version, or install the version that wrote it.",
            )
        model = cls(**meta["params"])
        for key, value in meta["fitted"].items():
            setattr(model, key, value)
        weights = path / "adapter.safetensors"
        if checkpoint is not None:
            weights = path / CHECKPOINTS / f"step-{int(checkpoint)}.safetensors"
            if not weights.is_file():
                kept = [c["step"] for c in getattr(model, "checkpoints_", [])]
                raise NotFoundError(
                    f"{path} keeps no checkpoint at step {checkpoint}.",
                    hint=f"Its checkpoints are at steps {kept}; the final adapter is the version itself.",
                )
        state = load_file(str(weights))
        name = "a" + hashlib.sha1(str(weights.resolve()).encode()).hexdigest()[:12]
        model.base_ = HUB.base(model.backbone_)
        model.base_.attach(name, model.lora_, state)
        model.adapter_, model.loaded_state_ = name, state
        return model

    def release(self) -> None:
        """Detach this model's adapter from the shared base (the base stays for the others)."""
        if getattr(self, "base_", None) is not None and self.base_ is not None:
            self.base_.detach(self.adapter_)


CHECKPOINT_SECONDS = 60.0  # the least time between two checkpoints of a LoRA fit
SNAPSHOT = "snapshot."  # a checkpoint's tensors of the adapters kept so far: snapshot.STEP.KEY


@dataclass
class _State:
    """What the training loop carries from step to step: the JSON part of a checkpoint."""

    rng: random.Random
    step: int = 0
    tokens: int = 0
    history: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # each step's token accuracy
    valid: list[dict] = field(default_factory=list)  # the validation scores so far
    queue: list[list[int]] = field(default_factory=list)  # the batches left of this epoch
    seconds_before: float = 0.0  # training time of the interrupted processes before this one
    resumed_at: int | None = None

    def meta(self, seconds: float) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {
            "step": self.step,
            "tokens": self.tokens,
            "history": self.history,
            "accuracy": self.accuracy,
            "valid": self.valid,
            "queue": self.queue,
            "rng": [version, list(internal), gauss],
            "seconds": round(self.seconds_before + seconds, 3),
        }

    def load(self, meta: dict) -> None:
        version, internal, gauss = meta["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.step, self.tokens, self.resumed_at = meta["step"], meta["tokens"], meta["step"]
        self.history, self.queue = list(meta["history"]), [list(b) for b in meta["queue"]]
        self.accuracy, self.valid = list(meta.get("accuracy", [])), list(meta.get("valid", []))
        self.seconds_before = meta["seconds"]


def _check_resumable(folder: Path, guard: dict) -> None:
    """A checkpoint in ``folder``, if any, was written for this data, these settings and steps."""
    meta = checkpoint_meta(folder)
    if meta is not None and meta.get("guard") != json.loads(json.dumps(guard)):
        raise ConfigError(
            f"The checkpoint in {folder} was written for other data or settings.",
            hint="Train without --resume, or resume with the settings and data of that run.",
        )


def _checkpoint_entry(step: int, valid: list[dict]) -> dict:
    """A kept checkpoint's step and the validation scores measured there, if any."""
    scores = next((v for v in valid if v["step"] == step), {})
    return {"step": step, **{k: v for k, v in scores.items() if k != "step"}}


def warm_up(steps: int) -> float:
    """The one-cycle's warm-up share: 10% of a long run, 30% of a short one. The warm-up must end
    on a step other than the first (``pct * steps - 1 != 0``), which 10% of 10 steps would not.

    >>> [warm_up(n) for n in (2, 10, 19, 20, 300)]
    [0.3, 0.3, 0.3, 0.1, 0.1]
    """
    return 0.1 if steps >= 20 else 0.3


class _Loop:
    """The LoRA training loop: AdamW + one-cycle on length-sorted batches, with checkpoints."""

    def __init__(self, model, cfg: Config, steps: int, guard: dict, per_epoch: int = 0):
        self.model, self.cfg, self.steps, self.guard = model, cfg, steps, guard
        self.per_epoch = per_epoch  # steps in a pass over the data: validation at each pass's end
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}  # step -> adapter, the last passes' ends
        self.every = max(1, steps // METRIC_EVENTS)  # steps between two published metrics
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=0.0)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=warm_up(steps)
        )
        self.state = _State(random.Random(cfg.seed))
        self.mixed = bf16_enabled()  # training forwards in bfloat16 autocast; validation in float32

    def restore(self, folder: Path) -> None:
        """Continue from ``folder``'s checkpoint, if there is one (:func:`_check_resumable`)."""
        found = read_checkpoint(folder, self.model, self.optimizer, self.schedule)
        if found is not None:
            meta, tensors = found
            self.state.load(meta["loop"])
            for name, value in tensors.items():  # the adapters kept at earlier passes' ends
                if name.startswith(SNAPSHOT):
                    step, key = name[len(SNAPSHOT) :].split(".", 1)
                    self.snapshots.setdefault(int(step), {})[key] = value

    def save(self, folder: Path, seconds: float) -> None:
        meta = {"guard": self.guard, "loop": self.state.meta(seconds)}
        kept = {
            f"{SNAPSHOT}{step}.{k}": v for step, adapter in self.snapshots.items() for k, v in adapter.items()
        }
        write_checkpoint(folder, self.model, self.optimizer, self.schedule, meta=meta, tensors=kept)

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        """One optimizer step: (the batch's mean token loss, its token accuracy)."""
        with low_precision(enabled=self.mixed):
            loss_sum, count, right = _token_loss(self.model, batch)
        loss = loss_sum / max(count, 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.schedule.step()
        return loss.item(), right / max(count, 1)

    @torch.inference_mode()
    def validate(self, held: list, pad_id: int) -> dict:
        """Loss and mean token accuracy on the validation examples, at this step."""
        self.model.eval()
        total = count = right = 0
        size = self.cfg.batch_size
        for start in range(0, len(held), size):
            loss, n, r = _token_loss(self.model, _collate(held[start : start + size], pad_id))
            total, count, right = total + float(loss), count + n, right + r
        self.model.train()
        return {
            "step": self.state.step,
            "valid_loss": round(total / max(count, 1), 4),
            "valid_mean_token_accuracy": round(right / max(count, 1), 4),
        }

    def run(self, examples, pad_id: int, deadline, folder: Path | None, bar, held=()) -> None:
        state, began = self.state, time.monotonic()
        saved = began
        lengths = [len(x) for x, _ in examples]
        self.model.train()
        while state.step < self.steps:
            if not state.queue:
                state.queue = _batches(lengths, self.cfg.batch_size, state.rng)
            batch = _collate([examples[i] for i in state.queue.pop(0)], pad_id)
            loss, accuracy = self.step(batch)
            state.step += 1
            state.tokens += int(batch["attention_mask"].sum())
            state.history.append(round(loss, 4))
            state.accuracy.append(round(accuracy, 4))
            bar(state.step, state.history[-1])
            now = time.monotonic()
            stop = deadline is not None and now > deadline
            self.publish(held, pad_id, stop)
            due = stop or state.step == self.steps or now - saved >= CHECKPOINT_SECONDS
            if folder is not None and (due or pause_requested()):
                self.save(folder, now - began)
                saved = time.monotonic()
                pause_point(f"at step {state.step} of {self.steps}")
            if stop:
                break
        bar(None, None)

    def publish(self, held: list, pad_id: int, stop: bool) -> None:
        """Every :attr:`every` steps, the step's metrics to the observers (a job's log); at the
        end of a pass over the data and of the fit, the validation scores too."""
        state = self.state
        last = stop or state.step == self.steps
        epoch_end = bool(self.per_epoch) and state.step % self.per_epoch == 0
        scores = {}
        if held and (last or epoch_end):
            scores = self.validate(held, pad_id)
            state.valid.append(scores)
        if epoch_end and not last:
            self.snapshot()
        if scores or last or state.step % self.every == 0:
            metrics = {"step": state.step, "total_steps": self.steps, "train_loss": state.history[-1]}
            metrics["train_mean_token_accuracy"] = state.accuracy[-1]
            publish_metrics("LoRA", {**metrics, **scores})

    def snapshot(self) -> None:
        """Keep a copy of the adapter at this step (the last :data:`EPOCH_CHECKPOINTS` are kept)."""
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.model, adapter_name="default")
        self.snapshots[self.state.step] = {k: v.detach().clone().contiguous() for k, v in state.items()}
        while len(self.snapshots) > EPOCH_CHECKPOINTS:
            self.snapshots.pop(min(self.snapshots))

    def stats(self, n_examples: int, seconds: float) -> dict:
        state = self.state
        return {
            "steps": state.step,
            "planned_steps": self.steps,
            "examples": n_examples,
            "tokens": state.tokens,
            "seconds": round(seconds, 2),
            "steps_per_s": round(state.step / seconds, 4) if seconds else None,
            "tokens_per_s": round(state.tokens / seconds, 1) if seconds else None,
            "stopped_by_budget": state.step < self.steps,
            "precision": "bf16" if self.mixed else "fp32",
            **({"resumed_at_step": state.resumed_at} if state.resumed_at is not None else {}),
        }


def measure_speed(conversations: list[list[dict]], **params) -> dict:
    """How fast this machine trains and decodes with ``params`` (a :class:`TextGenerator`'s), timed on
    real examples: ``load_s`` (the backbone), ``step_s`` (a LoRA step on a batch of median-length
    conversations, the second of two: the first warms the allocator), ``decode_tok_s`` (greedy
    tokens per second, prompt included) and ``tokens`` (per example, mean). The LoRA weights are
    thrown away; ``aimass auto`` sizes its run from these figures."""
    from peft import LoraConfig, get_peft_model

    cfg = parse_config(Config, {**TextGenerator().get_params(), **params}, "TextGenerator")
    decode.set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    began = time.monotonic()
    tokenizer, model = get_llm_backbone(cfg.backbone).load()
    loaded = time.monotonic()
    examples = sorted(
        (encode_example(tokenizer, c, cfg.max_length) for c in conversations), key=lambda e: len(e[0])
    )
    middle = max(0, len(examples) // 2 - cfg.batch_size // 2)
    batch = _collate(examples[middle : middle + cfg.batch_size], tokenizer.pad_token_id)
    model = get_peft_model(model, LoraConfig(**lora_settings(cfg)), adapter_name="default")
    loop = _Loop(model, cfg, 10, {})
    model.train()
    loop.step(batch)
    warm = time.monotonic()
    loop.step(batch)
    stepped = time.monotonic()
    model.eval()
    prompt = decode.chat_ids(tokenizer, conversations[0][:-1])
    generated = decode.generate(model, tokenizer, prompt, decode.SamplingParams(max_tokens=16))
    decoded = time.monotonic()
    return {
        "load_s": round(loaded - began, 2),
        "step_s": round(stepped - warm, 3),
        "decode_tok_s": round(max(1, generated.completion_tokens) / max(decoded - stepped, 1e-3), 2),
        "tokens": round(sum(len(e[0]) for e in examples) / max(1, len(examples)), 1),
        "batch_tokens": int(batch["attention_mask"].sum()),
    }


def _progress(enabled: bool, total: int):
    """A rich progress bar with ETA (no-op when off or not a terminal): ``bar(step, loss)``."""
    progress = make_progress(enabled)
    task = progress.add_task("LoRA", total=total, info="")
    progress.start()

    def update(step, loss):
        if step is None:
            progress.stop()
            return
        progress.update(task, completed=step, info=f"loss {loss:.3f}")

    return update


# ------------------------------------------------------------------ serving
class GenerateRequest(BaseModel):
    """``{"inputs": ["prompt", ...]}``: each prompt is answered greedily (the OpenAI routes take more)."""

    inputs: str | list[str] = Field(..., description=f"One prompt or a list of at most {MAX_ITEMS}.")

    @field_validator("inputs")
    @classmethod
    def _check(cls, value):
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError('send at least one prompt, e.g. {"inputs": ["Write a headline: ..."]}')
        if len(items) > MAX_ITEMS:
            raise ValueError(f"send at most {MAX_ITEMS} prompts per request (got {len(items)})")
        for i, text in enumerate(items):
            if not text.strip():
                raise ValueError(f"inputs[{i}] is empty; send non-empty text")
            if len(text) > MAX_CHARS:
                raise ValueError(f"inputs[{i}] has {len(text)} characters; the limit is {MAX_CHARS}")
            check_encodable(text, f"inputs[{i}]")
        return items


class Generated(BaseModel):
    text: str


class GenerateResponse(BaseModel):
    predictions: list[Generated]


class Handler:
    """LitServe-style handler; the OpenAI routes use ``handler.model`` (a :class:`TextGenerator`)."""

    def __init__(self, model_dir: Path | None = None, model: TextGenerator | None = None):
        self.model_dir = model_dir
        self.model = model

    def setup(self, device: str = "cpu", backend: str = "torch") -> None:
        if self.model is None:
            self.model = TextGenerator.load(self.model_dir)

    def decode_request(self, request: GenerateRequest) -> list[str]:
        return request.inputs

    def predict(self, prompts: list[str]) -> list[str]:
        """Served, each prompt joins the base's continuous batch (:mod:`aimass.llm.batcher`) beside
        the chat requests in flight, rather than taking the base for a batch of its own and
        stalling their streams; with ``AIMASS_LLM_BATCHING=0``, :meth:`TextGenerator.predict`."""
        model = self.model
        if not batcher.enabled() and getattr(model.base_, "int4", None) is None:
            return model.predict(prompts)
        shared = batcher.scheduler(model.base_, model.adapter_)
        params = decode.SamplingParams(max_tokens=model.max_new_tokens, temperature=0.0)

        def answer(prompt) -> str:
            return shared.submit(model._prompt_ids(prompt), params, model.adapter_).choices[0].text.strip()

        if len(prompts) == 1:
            return [answer(prompts[0])]
        with ThreadPoolExecutor(max_workers=min(len(prompts), batcher.MAX_BATCH)) as pool:
            return list(pool.map(answer, prompts))

    def encode_response(self, texts: list[str]) -> dict[str, Any]:
        return {"predictions": [{"text": t} for t in texts]}


def headline_pairs(n: int = 32, chars: int = 300, skip: int = 0) -> tuple[list[str], list[str]]:
    """``n`` real (article opening, headline) pairs from BBC News, round-robin over the topics."""
    folders = [sorted(f.glob("*.txt")) for f in sorted(bbc_news_path().iterdir())]
    prompts, answers = [], []
    for i in range(skip, skip + n):
        text = bbc_news_text(folders[i % len(folders)][i // len(folders)]).strip()
        headline, _, body = text.partition("\n")
        prompts.append(" ".join(body.split())[:chars])
        answers.append(headline.strip())
    return prompts, answers


@register_task("text-generation")
class TextGeneration(Task):
    """The task spec the CLI, server and registry look up."""

    estimator = TextGenerator
    config = Config
    data_kind = "chat"
    item_noun = "prompts"
    request = GenerateRequest
    response = GenerateResponse
    handler = Handler
    sample_request = {"inputs": ["Say hello in three words."]}
    tuner = "aimass.autolearn.generation:GenerationTuner"
    sniff_order = 40  # before text classification: a chat JSONL or a source/target CSV is a table too
    compress_instead = (
        "A language model is quantised where it is served: aimass serve --llm-quant int8 (or int4), "
        "and its version stays the LoRA adapter; for llama.cpp or ollama, aimass export REF --format gguf "
        "writes it merged with its projections in 8 bits."
    )
    fast_params = {
        "max_steps": 2,
        "batch_size": 2,
        "max_length": 64,
        "max_new_tokens": 8,
        "eval_examples": 2,
    }

    @classmethod
    def sniff(cls, path: Path) -> str | None:
        """Chat JSONL (``messages``), prompt/completion JSONL, or a source/target CSV/TSV."""
        return (
            "conversations (chat or prompt/completion JSONL, or source/target columns)"
            if looks_like_pairs(path)
            else None
        )

    @classmethod
    def eval_data(cls, path: Path, import_dataset=None) -> tuple[list, list] | None:
        """``(conversations, answers)``: every usable conversation of a chat or prompt/completion
        JSONL file or a source/target CSV/TSV and its last answer
        (:func:`aimass.data.pairs_import.read_held_out`: not imported, no split,
        no least number of rows); None for anything else. The conversations
        are whole, as a chat Dataset's ``inputs`` are, so ``overlap_with_train`` finds rows that
        trained the version."""
        if not looks_like_pairs(path):
            return None
        return read_held_out(path)

    @staticmethod
    def sample_data(per_class: int = 1) -> tuple[list[str], list[str]]:
        """Article -> headline pairs (``per_class`` per BBC topic), for checks and demos. One per
        topic by default: the contract checks compare greedy answers prompt by prompt (about 1.4 s
        each on a busy CPU, three times over), where a classifier answers its whole sample in one
        batch."""
        return headline_pairs(5 * per_class, chars=240)

    @staticmethod
    def plots(report: dict, folder: Path) -> list[Path]:
        """The training loss curve against the held-out losses (``training_loss.png``) and the base
        vs fine-tuned table as Markdown (``side_by_side.md``), next to ``evaluation.json``."""
        from aimass.evaluation.plots import loss_curve_png

        pictures = []
        if report.get("training_loss"):
            pictures.append(loss_curve_png(report, Path(folder) / "training_loss.png"))
        rows = report.get("side_by_side") or []
        if not rows:
            return pictures
        lines = ["| prompt | reference | base | fine-tuned |", "|---|---|---|---|"]
        cell = lambda s: " ".join(str(s).split()).replace("|", "\\|")[:160]  # noqa: E731
        lines += [
            f"| {cell(r['prompt'])} | {cell(r['reference'])} | {cell(r['base'])} | {cell(r['fine_tuned'])} |"
            for r in rows
        ]
        out = Path(folder) / "side_by_side.md"
        out.write_text("\n".join(lines) + "\n")
        return [*pictures, out]

    @staticmethod
    def cli_inputs(values: list[str]) -> list[str]:
        return list(values)

    @staticmethod
    def latency_inputs(texts: list[str]) -> list[str]:
        return [" ".join(t.split()[:22]) for t in texts]
