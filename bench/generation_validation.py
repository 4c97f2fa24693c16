"""What validation while training costs, and whether its curve points at the epoch that is best.

One run, 1 torch thread, nothing from a hub. BBC News article -> headline pairs (the bundled
corpus, round-robin over the five topics): ``--train`` pairs to train on, ``--valid`` other pairs
to validate on, ``--test`` pairs from pair 1,000 on to test on (never trained or validated on).

* cost: the same seeded LoRA fit (``--epochs`` passes, batch 8) twice, taking turns: without a
  validation set, and with one (its loss and token accuracy at the end of each pass, on the first
  few validation pairs: one per 8 training pairs, 8 to 32); the ratio of their wall times is what
  validating costs.
* use: the fit with validation keeps the adapters at the ends of the two passes before the last
  (``checkpoints_``); each of them and the final adapter is scored on the test pairs (loss per
  headline token). Reported: the validation loss and the test loss of each, and whether the pass
  with the lowest validation loss is the one with the lowest test loss.

    python bench/generation_validation.py              # ~8 min on an idle 2-core machine

Prints a table and writes ``bench/results/generation_validation.json``; exits 0 (a report).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--valid", type=int, default=32)
    parser.add_argument("--test", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--chars", type=int, default=200)
    parser.add_argument("--output", default="generation_validation.json")
    args = parser.parse_args()
    os.environ.setdefault("AIMASS_HOME", tempfile.mkdtemp(prefix="aimass-bench-"))
    from aimass.tasks.text_generation import TextGenerator, headline_pairs

    train = headline_pairs(args.train, chars=args.chars)
    valid = headline_pairs(args.valid, chars=args.chars, skip=args.train)
    prompts, answers = headline_pairs(args.test, chars=args.chars, skip=1000)
    test = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
        for p, a in zip(prompts, answers)
    ]
    params = {"epochs": args.epochs, "batch_size": 8, "max_length": 160, "time_budget": None, "seed": 0}

    TextGenerator(**{**params, "epochs": 0.01}).fit(train, progress=False)  # load and convert once
    times = {}
    for label, held in (("without", None), ("with", valid)):
        began = time.perf_counter()
        model = TextGenerator(**params).fit(train, held, progress=False)
        times[label] = round(time.perf_counter() - began, 2)
    steps = model.train_stats_["steps"]
    folder = Path(tempfile.mkdtemp(prefix="ckpt-")) / "model"
    model.save(folder)
    valid_at = {v["step"]: v["valid_loss"] for v in model.valid_history_}
    rows = []
    for step in [c["step"] for c in model.checkpoints_] + [steps]:
        loaded = TextGenerator.load(folder, checkpoint=None if step == steps else step)
        rows.append(
            {"step": step, "valid_loss": valid_at.get(step), "test_loss": round(loaded.loss(test), 4)}
        )
        loaded.release()
    best_valid = min(rows, key=lambda r: r["valid_loss"])["step"]
    best_test = min(rows, key=lambda r: r["test_loss"])["step"]
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "settings": {**vars(args), **params},
        "fit_s": times,
        "validation_cost_ratio": round(times["with"] / times["without"], 3),
        "steps": steps,
        "validations": len(model.valid_history_),
        "checkpoints": rows,
        "best_by_validation": best_valid,
        "best_by_test": best_test,
        "validation_picks_the_best_test_epoch": best_valid == best_test,
    }
    print(
        f"fit without validation {times['without']} s, with {times['with']} s "
        f"(ratio {report['validation_cost_ratio']}; {report['validations']} validations, {steps} steps)"
    )
    print("step | valid loss | test loss")
    for r in rows:
        print(f"{r['step']:>4} | {r['valid_loss']} | {r['test_loss']}")
    print(f"lowest validation loss at step {best_valid}, lowest test loss at step {best_test}")
    (RESULTS / args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
