"""The text-generation tuner: ``aimass auto`` on conversations (chat or prompt/completion JSONL, or
source/target columns) fine-tunes a language model with LoRA.

There is no hyper-parameter search: on a CPU a trial costs as much as the fit itself. The run is
sized to the data and to this machine instead, and every choice is reported with its reason:

* ``max_length`` covers the longest training example (the import counted its tokens), and
  ``batch_size`` keeps a batch near 2,048 tokens (the logits of longer batches are the memory bill);
* ``max_new_tokens`` covers the longest answer with a margin, so neither evaluation nor the served
  model cuts an answer the data says is normal;
* one LoRA step is timed on a batch of median-length examples, and ``max_steps`` is what the
  budget fits after evaluation, registration and deployment are costed, at most
  :attr:`GenerationTuner.max_epochs` passes. The one-cycle schedule is planned for those steps, so it
  ends annealed instead of being cut at its peak learning rate by the time limit.

torch and the task file are imported inside the methods (see :mod:`aimass.autolearn.tuners`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from aimass.autolearn.plan import Plan
from aimass.autolearn.run import _Run
from aimass.autolearn.tuners import Count

REGISTER_S = 3.0  # writing the adapter and the evaluation
BATCH_TOKENS = 2048  # what a batch is sized for (8 examples of 256 tokens, the default)
WHY_NO_SEARCH = (
    "LoRA fine-tuning is not searched: on a CPU a trial costs as much as the fit, so the run is "
    "sized to the data and to this machine instead"
)


class GenerationTuner:
    """Text generation: LoRA on SmolLM2-135M (the bundled backbone), planned rather than searched."""

    items = "conversations"
    searches = False
    least_work = "loading the language model, timing and running a few LoRA steps and evaluating"
    more_time = "for a whole pass over the conversations"
    fixed: dict = {}
    train_tok_s = 110.0  # LoRA tokens/s, 1 thread on 2 cores (bench/results/generation.md: 109)
    decode_tok_s = 14.0  # greedy tokens/s, 1 thread (bench/results/structured.json: 14.6-16)
    load_s = 4.0
    max_epochs = 3  # 80 headline pairs: 3 passes ROUGE-L 0.229, 1 pass 0.181 (results/generation_epochs.json)
    eval_examples = 8

    def count(self, source: Path) -> Count:
        """Examples and characters per example, from the file's lines (no tokenizer is loaded)."""
        with open(source, encoding="utf-8", errors="replace") as fh:
            lines = [line for line in fh if line.strip()]
        rows = len(lines) - (0 if Path(source).suffix.lower() in (".jsonl", ".ndjson") else 1)
        chars = sum(len(line) for line in lines) / max(1, len(lines))
        return Count(max(0, rows), chars, tokens=chars / 3.5)

    def count_dataset(self, ds) -> Count:
        train = ds.manifest["tokens"]["by_split"].get("train", {})
        tokens = train.get("prompt", {}).get("mean", 0.0) + train.get("completion", {}).get("mean", 0.0)
        return Count(ds.manifest["counts"]["total"], 0.0, "smollm2-135m", tokens=tokens)

    def _step_s(self, count: Count, batch: int = 8) -> float:
        return batch * max(count.tokens, 16.0) / self.train_tok_s

    def _evaluate_s(
        self,
        n_test: int,
        tokens: float,
        examples: int,
        new_tokens: int,
        step_s: float,
        batch_tokens: float,
        decode_tok_s: float,
    ) -> float:
        """The held-out loss of the fine-tune and of the base (a forward pass each, a third of a step
        per batch's tokens) and greedy answers of both for ``examples`` prompts."""
        per_token = step_s / max(batch_tokens, 1.0) / 3
        return 2 * n_test * tokens * per_token + 2 * examples * (new_tokens / decode_tok_s + 0.3) + 3.0

    def minimum_seconds(self, count: Count) -> float:
        """Loading twice (the timing and the fit), the two timed steps and two more, a two-answer
        evaluation and registration."""
        step = self._step_s(count)
        return (
            2 * self.load_s
            + 4 * step
            + self._evaluate_s(
                max(2, count.items // 5), count.tokens, 2, 24, step, 8 * count.tokens, self.decode_tok_s
            )
            + REGISTER_S
        )

    def useful_seconds(self, count: Count) -> float:
        epoch = math.ceil(count.items * 0.7 / 8) * self._step_s(count)
        return self.minimum_seconds(count) + epoch * 1.15 + 2 * self.eval_examples * 24 / self.decode_tok_s

    def default_params(self) -> dict:
        return {}

    def describe_backbone(self, ds) -> tuple[str, str]:
        from aimass.data.pairs_import import language_warnings
        from aimass.llm.backbone import get_llm_backbone

        name = ds.manifest.get("tokens", {}).get("tokenizer") or "smollm2-135m"
        spec = get_llm_backbone(name)
        why = f"the backbone whose tokenizer counted the data at import: {spec.description}"
        return name, "; ".join([why, *language_warnings(spec, ds.manifest.get("language") or "en")])

    # ------------------------------------------------------------------ the plan
    def shape(self, ds) -> dict:
        """``max_length``, ``max_new_tokens`` and ``batch_size`` from the training split's token counts."""
        train = ds.manifest["tokens"]["by_split"]["train"]
        prompt, answer = train["prompt"], train["completion"]
        longest = min(2048, _round_up(prompt["max"] + answer["max"], 16))
        typical = max(16, prompt["p95"] + answer["p95"])
        return {
            "max_length": max(64, longest),
            "max_new_tokens": min(512, max(16, _round_up(math.ceil(1.25 * answer["max"]), 8))),
            "batch_size": max(1, min(8, BATCH_TOKENS // typical)),
            "why": (
                f"training examples: prompt p95 {prompt['p95']} / max {prompt['max']} tokens, answer p95 "
                f"{answer['p95']} / max {answer['max']} tokens"
            ),
        }

    def reserve(self, run: _Run, ds) -> Plan:
        """The phases after the fit, from calibrated rates (a resumed run times nothing)."""
        count, shape = self.count_dataset(ds), self.shape(ds)
        step = self._step_s(count, shape["batch_size"])
        n_test = len(ds.rows("test"))
        examples = min(self.eval_examples, n_test)
        evaluate = self._evaluate_s(
            n_test,
            count.tokens,
            examples,
            shape["max_new_tokens"],
            step,
            shape["batch_size"] * count.tokens,
            self.decode_tok_s,
        )
        return Plan(evaluate + REGISTER_S, 0.0, compress_reserved=False)

    def settle(self, run: _Run, ds) -> dict:
        """Time a step and decoding on this machine, then size the run: the final fit's parameters."""
        from aimass.tasks.text_generation import measure_speed

        shape = self.shape(ds)
        convs = [row["messages"] for row in ds.rows("train")]
        n_test = len(ds.rows("test"))
        settings = {k: shape[k] for k in ("max_length", "max_new_tokens", "batch_size")}
        run.choose("sequence lengths", settings, shape["why"])
        with run.phase("calibrate", 0.08, "timing a LoRA step and decoding on this machine"):
            speed = measure_speed(convs, **settings, seed=run.seed)
        # the fit loads the backbone again, from the converted copy (a first load may have converted it)
        reload = min(speed["load_s"], self.load_s) * 1.5
        most = min(self.eval_examples, n_test)
        per_epoch = math.ceil(len(convs) / shape["batch_size"])
        for examples in sorted({most, min(2, most)}, reverse=True):
            evaluate = self._evaluate_s(
                n_test,
                speed["tokens"],
                examples,
                shape["max_new_tokens"],
                speed["step_s"],
                speed["batch_tokens"],
                speed["decode_tok_s"],
            )
            room = run.left() - evaluate - REGISTER_S - run.deploy_s - run.margin_s - reload
            fits = int(room / (speed["step_s"] * 1.05))
            if fits >= per_epoch:  # a whole pass with a full evaluation; else evaluate on fewer
                break
        steps = max(1, min(fits, self.max_epochs * per_epoch))
        run.plan = Plan(evaluate + REGISTER_S, 0.0, final_s=steps * speed["step_s"], compress_reserved=False)
        epochs = steps / per_epoch
        run.search = {
            "trials": 0,
            "pruned": 0,
            "best_params": None,
            "best_valid_macro_f1": None,
            "lr_range_test": None,
            "skipped": WHY_NO_SEARCH,
            "calibration": speed,
        }
        why = (
            f"a LoRA step on {shape['batch_size']} examples ({speed['batch_tokens']} tokens) took "
            f"{speed['step_s']:.1f}s here; the budget leaves ~{max(0, room):.0f}s for training after "
            f"~{evaluate:.0f}s of evaluation, which fits {max(0, fits)} steps: {steps} steps are "
            f"{epochs:.2f} pass(es) over {len(convs)} examples (at most {self.max_epochs})"
        )
        if fits < per_epoch:
            why += "; a larger budget would train on every example"
        params = {**settings, "max_steps": steps, "eval_examples": examples, "seed": run.seed}
        run.choose("training steps", {"max_steps": steps, "epochs": round(epochs, 2)}, why)
        return params

    def fit_note(self, model) -> tuple[dict, str]:
        stats = model.train_stats_
        loss = model.history_[-1] if model.history_ else None
        value = {k: stats[k] for k in ("steps", "planned_steps", "tokens", "seconds")}
        why = f"{stats['steps']} of {stats['planned_steps']} steps in {stats['seconds']:.0f}s"
        why += f", last training loss {loss:.3f}" if loss is not None else ""
        if stats["stopped_by_budget"]:
            why += "; the time limit stopped it early (this machine ran slower than timed)"
        return value, why


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def sample_chat(ds, name: str, max_tokens: int) -> dict:
    """One held-out conversation, less its answer, as an OpenAI chat request to ``name``."""
    messages = ds.rows("test")[0]["messages"] if ds.rows("test") else ds.rows()[0]["messages"]
    return {"model": name, "messages": messages[:-1], "max_tokens": max_tokens}


def chat_curl(url: str, body: dict) -> str:
    data = json.dumps(body, ensure_ascii=False).replace("'", "")
    return (
        f"curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' "
        f"-H \"Authorization: Bearer $AIMASS_API_KEY\" -d '{data}'"
    )
