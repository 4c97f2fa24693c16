"""Structured outputs (``response_format: json_schema``): how often an answer follows its schema, and
what the token mask costs, against the same model decoding without it in the same run.

SmolLM2-135M-Instruct (fp32, 1 thread, greedy, up to 64 new tokens) answers eight prompts three ways:
told the schema in the prompt only (what a client does without structured outputs), under JSON mode,
and under the schema (``aimass.llm.structured``). Each answer is checked with ``jsonschema``.

    python bench/structured.py [--output bench/results/structured.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jsonschema

from aimass.llm import decode, json_mode, structured
from aimass.llm.hub import HUB

RESULTS = Path(__file__).parent / "results" / "structured.json"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "maxLength": 24},
        "population": {"type": "integer", "minimum": 0},
        "capital": {"type": "boolean"},
        "kind": {"enum": ["city", "town", "village"]},
    },
    "required": ["name", "country", "population", "capital", "kind"],
    "additionalProperties": False,
}
PLACES = ["Paris", "Lyon", "Tokyo", "Osaka", "Nairobi", "Bergen", "Cusco", "Hallstatt"]


def prompt(place: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": f"Describe {place} as JSON following this JSON Schema, and nothing else: "
            + json.dumps(SCHEMA),
        }
    ]


def run(base, constraint, max_tokens: int) -> dict:
    tokenizer = base.tokenizer
    valid, tokens, seconds = 0, 0, 0.0
    for place in PLACES:
        params = decode.SamplingParams(max_tokens=max_tokens, temperature=0, constraint=constraint)
        ids = decode.chat_ids(tokenizer, prompt(place))
        began = time.perf_counter()
        with base.using(None) as model:
            out = decode.generate(model, tokenizer, ids, params)
        seconds += time.perf_counter() - began
        choice = out.choices[0]
        tokens += len(choice.token_ids)
        try:
            jsonschema.validate(json.loads(choice.text), SCHEMA)
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            pass
    return {
        "valid": valid,
        "of": len(PLACES),
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tok_s": round(tokens / seconds, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    decode.set_threads()
    base = HUB.base("smollm2-135m")
    eos = decode.eos_ids(base.model, base.tokenizer)
    began = time.perf_counter()
    schema = structured.json_schema(base.tokenizer, eos, SCHEMA)
    first = time.perf_counter() - began
    began = time.perf_counter()
    structured.json_schema(base.tokenizer, eos, SCHEMA)
    again = time.perf_counter() - began
    rows = {}
    for name, constraint in [
        ("prompt only", None),
        ("json_object", json_mode.json_object(base.tokenizer, eos)),
        ("json_schema", schema),
    ]:
        rows[name] = run(base, constraint, args.max_tokens)
        print(f"{name:12s} {json.dumps(rows[name])}", flush=True)
    ratio = rows["json_schema"]["tok_s"] / rows["prompt only"]["tok_s"]
    bars = {
        "every schema answer valid": rows["json_schema"]["valid"] == len(PLACES),
        "schema decode >= 0.8x unconstrained tok/s": ratio >= 0.8,
    }
    result = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": "smollm2-135m fp32, 1 thread, greedy",
        "max_tokens": args.max_tokens,
        "compile_s": {"first (tokenizer + schema)": round(first, 3), "next schema": round(again, 3)},
        "rows": rows,
        "schema_vs_unconstrained_tok_s": round(ratio, 3),
        "bars": bars,
    }
    print(json.dumps({k: result[k] for k in ("compile_s", "schema_vs_unconstrained_tok_s", "bars")}))
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(bars.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
