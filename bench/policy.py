"""Policy decision time: a user with 20 policies of 10 statements each (identity and resource).

Each statement names a few actions (some by wildcard), resources by pattern, and a third carry a
condition, so a decision checks the handful of statements indexed under its action, as the
server does. Prints p50/p90/p99 in microseconds for allowed, explicitly and implicitly denied
requests and writes ``bench/results/policy.json``. The bar (issue 25): p50 <= 50 µs.

    python bench/policy.py            # a few seconds
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import time
from pathlib import Path

from aimass.access.catalog import ACTIONS
from aimass.access.evaluate import PolicySet
from aimass.access.policy import RESOURCE, compile_policy

OUT = Path(__file__).parent / "results" / "policy.json"
PROJECTS = ["nlp", "cv", "ops", "search", "ads"]
KINDS = ["model", "dataset", "service", "job"]


def statement(rng: random.Random, i: int, resource_policy: bool) -> dict:
    actions = rng.sample(ACTIONS, 3) + (
        [rng.choice(["model:*", "dataset:?ead", "job:Sub*"])] if i % 3 == 0 else []
    )
    project, kind = rng.choice(PROJECTS), rng.choice(KINDS)
    resource = rng.choice(
        [
            f"aimass:project/{project}/*",
            f"aimass:project/{project}/{kind}/r{i}*",
            f"aimass:project/{project}/{kind}/*",
        ]
        + (["*"] if i % 10 == 9 else [])
    )
    st = {
        "Sid": f"S{i}",
        "Effect": "Deny" if i % 7 == 0 else "Allow",
        "Action": actions,
        "Resource": resource,
    }
    if i % 3 == 1:
        st["Condition"] = {
            "IpAddress": {"aimass:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]},
            "StringEquals": {"aimass:ModelStage": ["staging", "production"]},
        }
    if resource_policy:
        st["Principal"] = {"AIMASS": ["aimass:user/alice", "aimass:group/team*"]}
    return st


def build(seed: int = 0) -> PolicySet:
    rng = random.Random(seed)
    policies = []
    for p in range(20):
        kind = RESOURCE if p >= 16 else "identity"
        doc = {"Statement": [statement(rng, p * 10 + i, kind == RESOURCE) for i in range(10)]}
        policies.append(compile_policy(f"P{p}", doc, kind))
    return PolicySet(policies)


def measure(policies: PolicySet, requests: list, rounds: int = 20) -> list[float]:
    times = []
    for _ in range(rounds):
        for action, resource, context in requests:
            began = time.perf_counter_ns()
            policies.evaluate(action, resource, ("aimass:user/alice", "aimass:group/team1"), context)
            times.append((time.perf_counter_ns() - began) / 1000)
    return times


def main() -> None:
    rng = random.Random(1)
    policies = build()
    context = {
        "aimass:SourceIp": "10.1.2.3",
        "aimass:ModelStage": "production",
        "aimass:CurrentTime": "2026-01-01T00:00:00Z",
    }
    requests = [
        (
            rng.choice(ACTIONS),
            f"aimass:project/{rng.choice(PROJECTS)}/{rng.choice(KINDS)}/r{rng.randrange(200)}:3",
            context,
        )
        for _ in range(2000)
    ]
    measure(policies, requests[:200], rounds=2)  # warm up
    times = measure(policies, requests)
    decisions: dict[str, int] = {}
    for action, resource, ctx in requests:
        d = policies.evaluate(action, resource, ("aimass:user/alice",), ctx).decision
        decisions[d] = decisions.get(d, 0) + 1
    began = time.perf_counter()
    build()
    compile_ms = (time.perf_counter() - began) * 1000
    q = statistics.quantiles(times, n=100)
    result = {
        "policies": 20,
        "statements_per_policy": 10,
        "decisions_measured": len(times),
        "decision_mix": decisions,
        "p50_us": round(q[49], 2),
        "p90_us": round(q[89], 2),
        "p99_us": round(q[98], 2),
        "compile_20_policies_ms": round(compile_ms, 2),
        "bar_p50_us": 50,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
