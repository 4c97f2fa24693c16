"""Schemathesis against the live OpenAPI document of a real server: no 5xx, no undocumented status.

A real uvicorn server on 127.0.0.1 serves a registered text model (the session's ``small_model``,
default ONNX backend, model worker process) from an AIMASS_HOME of this module's own, so the
jobs that fuzzing queues are never picked up by another test's job runner (and the server runs
with ``job_runner=0``: queued jobs never run). The schema is fetched from the server's
``/openapi.json``; every operation in it is exercised, positive and negative data, with the
admin token on every case (it holds every scope, so each route's own logic is reached, custom
code upload included; it cannot be revoked, so ``DELETE /v1/keys/{key_id}`` needs no exclusion).

Nothing is excluded. Each operation runs twice: once with generated path parameters (mostly
unknown names: 404s) and once with the path parameters pointing at real things (the served
service, a queued job, a throw-away key), so predict, traffic, events, job and key routes are
fuzzed past their lookups too. The two destructive operations run last, in this order: revoking
keys (only the throw-away key is real), then ``DELETE /v1/services/{name}`` on the service under
test; after it the test deploys the version again and checks that it answers, so undeploy and
redeploy are covered as well.

Checks asserted: ``not_a_server_error`` and ``status_code_conformance`` (and the same two by hand,
should schemathesis skip one). ``response_schema_conformance`` and ``content_type_conformance``
run too and are printed, not asserted (most routes declare no response schema). Failures are
collected (not raised inside hypothesis, so there is no shrinking and the run time stays bounded)
and reported together: operation, status, the answer, the check that failed and a curl line that
reproduces the request (``$ADMIN``: the admin token). Bounded by ``EXAMPLES`` per operation,
generation mode and pass; the status codes each operation got are printed (``pytest -s``).
"""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.conftest import live_server

from aimass import api
from aimass.serve import auth
from aimass.serve.app import create_app

SERVICE = "st-news"
EXAMPLES = 15  # per operation, generation mode and pass (generated / real path params); 25 took 104 s in CI
TEXT = "The striker scored twice as United won the cup final."
DESTRUCTIVE = ("DELETE /v1/keys/{key_id}", "DELETE /v1/services/{name}")  # run last, in this order


@pytest.fixture(scope="module")
def srv(small_model, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIMASS_HOME", str(tmp_path_factory.mktemp("schemathesis-home")))
        record = api.register(small_model, SERVICE)
        admin = {"Authorization": f"Bearer {auth.admin_token()}"}
        throwaway, _ = auth.create_key("st-throwaway", ["predict"])
        with live_server(create_app([record.ref], job_runner=0)) as base:
            job = httpx.post(
                f"{base}/v1/jobs",
                json={"kind": "evaluate", "params": {"model": record.ref}},
                headers=admin,
                timeout=60,
            )
            job_id = job.json().get("id") if job.status_code == 202 else "no-job"
            yield SimpleNamespace(
                base=base,
                ref=record.ref,
                auth=admin,
                real={"name": SERVICE, "key_id": throwaway.id, "job_id": job_id},
            )


def exercise(srv, operation, mode: GenerationMode, path_parameters: dict | None, found, extra) -> list[int]:
    """Run ``EXAMPLES`` generated cases of ``operation``; append each failed check to ``found``
    (and each failed informational check to ``extra``). Returns the statuses it got."""
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    documented = {int(code) for code in operation.responses.status_codes if code.isdigit()}
    sent = []
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case):
        began = time.monotonic()
        try:
            response = case.call(base_url=srv.base, session=session, headers=srv.auth, timeout=60)
        except requests.RequestException as exc:  # a reset or a hang is a finding too
            found.append(describe(case, srv, f"no answer: {type(exc).__name__}: {exc}"))
            return
        status, seconds = response.status_code, time.monotonic() - began
        sent.append(status)
        answer = f"{status} in {seconds:.2f}s: {response.text[:300]}"
        try:
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
        except (FailureGroup, Failure) as exc:
            found.append(describe(case, srv, f"{answer}\n{exc}"))
        else:  # the same two checks by hand, should schemathesis ever skip one
            if status >= 500 or status not in documented:
                found.append(describe(case, srv, f"{answer}\n(documented: {sorted(documented)})"))
        try:  # informational (printed, not asserted): the answer's body and media type
            case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
        except (FailureGroup, Failure) as exc:
            extra.append(describe(case, srv, f"{answer}\n{exc}"))

    try:
        run()
    except Unsatisfiable:  # negative mode of an operation with nothing to make invalid (GET /livez)
        assert mode == GenerationMode.NEGATIVE, operation.label
    return sent


def describe(case, srv, what: str) -> str:
    curl = case.as_curl_command(headers={"Authorization": "Bearer $ADMIN"}, base_url=srv.base)
    return f"{case.operation.label} [{case.meta.generation.mode if case.meta else '?'}]: {what}\n  {curl}"


def ordered(schema) -> list:
    operations = [result.ok() for result in schema.get_all_operations()]
    rank = {label: i + 1 for i, label in enumerate(DESTRUCTIVE)}
    return sorted(operations, key=lambda op: rank.get(op.label, 0))


def test_every_operation_answers_without_5xx_or_undocumented_status(srv):
    schema = schemathesis.openapi.from_url(f"{srv.base}/openapi.json", timeout=60)
    operations = ordered(schema)
    labels = [op.label for op in operations]
    assert len(labels) >= 20 and labels[-2:] == list(DESTRUCTIVE), labels
    found: list[str] = []
    extra: list[str] = []
    statuses: dict[str, Counter] = {}
    for operation in operations:
        real = {k: v for k, v in srv.real.items() if k in operation.path_parameters}
        passes = [None, real] if real else [None]
        for path_parameters in passes:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                got = exercise(srv, operation, mode, path_parameters, found, extra)
                statuses.setdefault(operation.label, Counter()).update(got)
    print("\n".join(f"{label}: {dict(sorted(c.items()))}" for label, c in statuses.items()))
    print(f"{len(extra)} informational findings (body or media type):\n" + "\n\n".join(extra[:30]))
    calls = sum(c.total() for c in statuses.values())
    assert all(c.total() >= 1 for c in statuses.values()), statuses  # every operation was exercised
    redeployed = httpx.post(f"{srv.base}/v1/services", json={"model": srv.ref}, headers=srv.auth, timeout=120)
    assert redeployed.status_code == 200, redeployed.text
    answer = httpx.post(
        f"{srv.base}/v1/models/{SERVICE}/predict", json={"inputs": [TEXT]}, headers=srv.auth, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert not found, f"{len(found)} failed checks in {calls} requests:\n\n" + "\n\n".join(found)
