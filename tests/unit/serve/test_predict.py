"""The predict path (:mod:`aimass.serve.predict`) on a real registered model."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from aimass import api
from aimass.serve import auth, metering
from aimass.serve.app import create_app
from aimass.serve.batching import BatchSettings


def test_a_request_answered_504_is_metered_for_the_pass_that_ran_for_it(small_model):
    """A request whose deadline passed while its forward pass ran on was answered 504 and never
    metered: a key held to a quota could burn model time uncharged (unmetered_504.sh: 256 long
    texts, 5 s deadline, three 504s and no usage). The pass is metered when it ends, once."""
    api.register(small_model, "news-late")
    record, key = auth.create_key("late", ["predict"])
    texts = [f"Shares in the bank fell {i}% after it cut its forecast for the year. " * 4 for i in range(32)]
    app = create_app(["news-late"], BatchSettings(timeout_s=0.05))  # far less than 32 texts take
    with TestClient(app) as client:
        answer = client.post(
            "/v1/models/news-late/predict", json={"inputs": texts}, headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 504, answer.text
        deadline, used = time.monotonic() + 60, []
        while not used and time.monotonic() < deadline:  # the pass runs on after the 504
            time.sleep(0.1)
            app.state.meter.flush()
            used = metering.usage(record.id)
        time.sleep(0.5)
        app.state.meter.flush()
        used = metering.usage(record.id)
    assert sum(u["items"] for u in used) == 32  # the pass's inputs, once
    assert sum(u["requests"] for u in used) == 1 and sum(u["compute_ms"] for u in used) > 50


def test_a_malformed_request_is_hinted_with_json_a_client_can_send(small_model):
    """The hint was the sample's Python repr (single quotes): not JSON, so not copyable."""
    import json

    api.register(small_model, "news-hint")
    with TestClient(create_app(["news-hint"], open_predict=True)) as client:
        said = client.post("/v1/models/news-hint/predict", json={"inputs": [1, 2]})
    assert said.status_code == 422, said.text
    hint = said.json()["error"]["hint"]
    example = json.loads(hint.removeprefix("Send JSON like "))  # a Python repr would not parse
    assert isinstance(example["inputs"], list) and all(isinstance(t, str) for t in example["inputs"])
