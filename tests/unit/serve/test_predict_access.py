"""A Deny on a version holds whatever name reaches it: the service's name, a service of another
name that serves it, or a canary's share of its service's traffic (decisions used to read only the
name in the URL, so ``/v1/models/reviews/predict`` passed a Deny on ``reviews:1``)."""

from __future__ import annotations

import httpx
import pytest
from tests.conftest import live_server, user_with_key

from aimass import api
from aimass.serve import auth
from aimass.serve.app import create_app

ADMIN = {"Authorization": f"Bearer {auth.admin_token()}"}
TEXTS = ["The striker scored twice as United won the cup final."]
ANY = {"Effect": "Allow", "Action": "*", "Resource": "*"}


@pytest.fixture(scope="module")
def served(small_model):
    first = api.register(small_model, "guarded-news").ref
    second = api.register(small_model, "guarded-news").ref
    with live_server(create_app([first])) as base:
        moved = httpx.post(
            f"{base}/v1/services", json={"model": first, "service": "relabelled"}, headers=ADMIN, timeout=120
        )
        assert moved.status_code == 200, moved.text
        yield base, first, second


def _deny(user: str, ref: str) -> dict:
    deny = {"Effect": "Deny", "Action": "model:Predict", "Resource": f"aimass:project/*/model/{ref}"}
    key = user_with_key(user, f"{user}-policy", [ANY, deny], scopes=("predict",))
    return {"Authorization": f"Bearer {key}"}


def _status(base: str, name: str, headers: dict) -> int:
    said = httpx.post(f"{base}/v1/models/{name}/predict", json={"inputs": TEXTS}, headers=headers, timeout=60)
    return said.status_code


def test_a_denied_version_is_denied_by_its_service_name_and_by_another_service(served):
    base, first, _ = served
    headers = _deny("no-first", first)
    assert _status(base, first, headers) == 403
    assert _status(base, "guarded-news", headers) == 403  # the service answers with the denied version
    assert _status(base, "relabelled", headers) == 403  # a service of another name serving it
    assert _status(base, "guarded-news:", headers) == 404  # an empty version names no version
    allowed = _deny("no-other", "someone-else:1")
    assert {_status(base, n, allowed) for n in (first, "guarded-news", "relabelled")} == {200}


def test_a_canary_of_a_denied_version_denies_the_service_every_time(served):
    base, first, second = served
    canary = httpx.post(
        f"{base}/v1/services", json={"model": second, "weight": 50}, headers=ADMIN, timeout=120
    )
    assert canary.status_code == 200, canary.text
    headers = _deny("no-second", second)
    assert {_status(base, "guarded-news", headers) for _ in range(8)} == {403}  # not a coin toss
    assert _status(base, first, headers) == 200  # the allowed version by its own name
