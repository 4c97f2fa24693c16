"""The REST server on a real registered model, through FastAPI's TestClient."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from aimass import api
from aimass.serve import auth
from aimass.serve.app import create_app


@pytest.fixture(scope="module")
def client(small_model):
    record = api.register(small_model, "news-serve")
    with TestClient(create_app([record.ref], open_predict=True)) as c:
        yield c


def test_health_and_listing(client):
    assert client.get("/livez").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["news-serve"]
    listed = client.get("/v1/models").json()["models"]
    assert listed[0]["name"] == "news-serve" and "sports" in listed[0]["labels"]
    assert client.get("/openapi.json").json()["paths"]["/v1/models/{name}/predict"]


def test_health_names_services_only_to_a_key_that_may_read_them(client, small_model):
    """``/readyz`` answers anyone (a probe has no key) but names the services only to a key that
    may read them; ``/metrics``, whose series name every service, needs ``usage:Read``."""
    predict_only = {"Authorization": f"Bearer {auth.create_key('reader', ['predict'])[1]}"}
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    with TestClient(create_app(["news-serve"])) as closed:
        anyone = closed.get("/readyz").json()
        assert anyone == {"status": "ready", "services": 1, "models": []}
        assert closed.get("/readyz", headers=admin).json()["models"] == ["news-serve"]
        assert [closed.get("/metrics", headers=h).status_code for h in ({}, predict_only)] == [401, 403]
        scraped = closed.get("/metrics", headers=admin)
        assert scraped.status_code == 200 and 'aimass_queue_depth{model="news-serve"}' in scraped.text


def test_a_versions_pictures_are_inert_pngs(client):
    """A pulled version's folder holds whatever its store sent: an ``.svg`` there was served as an
    image with its script live in the console's origin. Only PNGs are pictures, sent so that a
    browser never sniffs one as another type nor runs anything in it."""
    from pathlib import Path

    from aimass.store import registry

    folder = Path(registry.get_version("news-serve").path)
    (folder / "evil.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    )
    (folder / "evil.png").write_text("<html><script>alert(1)</script></html>")
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    assert client.get("/v1/versions/news-serve:1/files/evil.svg", headers=admin).status_code == 404
    sent = client.get("/v1/versions/news-serve:1/files/evil.png", headers=admin)
    assert sent.status_code == 200 and sent.headers["content-type"] == "image/png"
    assert sent.headers["x-content-type-options"] == "nosniff"
    assert sent.headers["content-security-policy"] == "default-src 'none'"
    listed = client.get("/v1/versions/news-serve:1", headers=admin).json()["pictures"]
    assert "evil.svg" not in listed


def test_json_nested_thousands_deep_is_a_400_not_a_500(client):
    """Python's parser raises RecursionError, not a ValueError, past ~1,000 levels: the access
    rules' parse and the OpenAI routes' let it through as a 500."""
    admin = {"Authorization": f"Bearer {auth.admin_token()}", "Content-Type": "application/json"}
    deep = b'{"model": "news-serve", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for route in ("/v1/chat/completions", "/v1/embeddings", "/v1/vector_stores"):
        answer = client.post(route, headers=admin, content=deep)
        assert answer.status_code == 400 and "nested too deeply" in answer.text, (route, answer.text[:300])


def test_the_try_it_box_keeps_the_models_body_limit(client):
    """The console's try-it box took 64 MiB of files for any model; it reads the body within the
    model's own limit, as ``POST /v1/models/{name}/predict`` does (16 MiB of documents here)."""
    import re

    page = client.get("/console/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    client.post("/console/signin", data={"csrf": csrf, "key": auth.admin_token()})
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/try/news-serve").text).group(1)
    big = {"files": ("report.txt", b"x" * (17 * 1024 * 1024), "text/plain")}
    answer = client.post("/console/try/news-serve", data={"csrf": csrf}, files=big)
    assert answer.status_code == 413, answer.text[:300]
    small = {"files": ("report.txt", b"Shares fell after the bank cut its forecast.", "text/plain")}
    assert client.post("/console/try/news-serve", data={"csrf": csrf}, files=small).status_code == 200


def test_predict_list_and_single_string(client, small_model):
    texts = ["The striker scored twice as United won the cup final.", "Parliament voted on the budget bill."]
    body = client.post("/v1/models/news-serve/predict", json={"inputs": texts}).json()
    # the served labels are the model's own (how well a 150 s budget trains under load is not this test's)
    assert [p["label"] for p in body["predictions"]] == small_model.predict(texts)
    scores = body["predictions"][0]["scores"]
    assert set(scores) == {"business", "entertainment", "politics", "sports", "tech"}
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)
    single = client.post("/v1/models/news-serve/predict", json={"inputs": texts[0]})
    assert single.status_code == 200 and len(single.json()["predictions"]) == 1
    assert single.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"inputs": []}, "at least one text"),
        ({"inputs": [""]}, "inputs[0] is empty"),
        ({"inputs": 5}, "inputs"),
        ({"text": ["x"]}, "inputs"),
        ({"inputs": ["x"] * 257}, "at most 256"),
        ({"inputs": ["x" * 20001]}, "limit is 20000"),
    ],
)
def test_bad_requests_say_what_to_send(client, payload, fragment):
    response = client.post("/v1/models/news-serve/predict", json=payload)
    assert response.status_code == 422
    error = response.json()["error"]
    assert fragment in error["message"]
    assert "inputs" in error["hint"]


def test_not_json_and_unknown_model(client):
    response = client.post(
        "/v1/models/news-serve/predict", content=b"not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    missing = client.post("/v1/models/nope/predict", json={"inputs": ["x"]})
    assert missing.status_code == 404
    error = missing.json()["error"]  # no list of the served ones: a key may not read them all
    assert "news-serve" not in error["message"] and "GET /v1/models" in error["hint"]


def test_documents_upload_and_answer_as_their_text(client, small_model):
    """Multipart uploads of a PDF, a Word file and an HTML page get the prediction of their text."""
    from aimass.data.bundled import docx_bytes, html_bytes, pdf_bytes

    texts = [
        "Shares in the bank rose after profits beat forecasts and the dividend was raised.",
        "The striker scored twice in the second half as the champions won the derby.",
        "The minister told MPs the election would be held in May.",
    ]
    files = [
        ("inputs", ("a.pdf", pdf_bytes(texts[0]), "application/pdf")),
        ("inputs", ("b.docx", docx_bytes(texts[1]), "application/octet-stream")),
        ("inputs", ("c.html", html_bytes("Headline\n" + texts[2]), "text/html")),
    ]
    response = client.post("/v1/models/news-serve/predict", files=files)
    assert response.status_code == 200, response.text
    want = client.post(
        "/v1/models/news-serve/predict", json={"inputs": texts[:2] + ["Headline\n" + texts[2]]}
    )
    assert response.json()["predictions"] == want.json()["predictions"]
    png = client.post(
        "/v1/models/news-serve/predict",
        files=[("inputs", ("x.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"))],
    )
    assert png.status_code == 422 and "inputs[0] is neither text" in png.json()["error"]["message"]
    broken = client.post(
        "/v1/models/news-serve/predict", files=[("inputs", ("x.pdf", b"%PDF-1.7 cut", "application/pdf"))]
    )
    assert broken.status_code == 422 and "not a readable PDF" in broken.json()["error"]["message"]


def test_body_limit(client):
    response = client.post(
        "/v1/models/news-serve/predict",
        content=b"x" * (3 * 1024 * 1024),  # JSON: 2 MiB (multipart document uploads: 16 MiB)
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]
    big = ("inputs", ("long.txt", b"word " * (600 * 1024), "text/plain"))  # 3 MiB: fine as an upload
    assert client.post("/v1/models/news-serve/predict", files=[big]).status_code == 200
    huge = ("inputs", ("huge.txt", b"word " * (3500 * 1024), "text/plain"))  # 17 MiB: over 16 MiB
    assert client.post("/v1/models/news-serve/predict", files=[huge]).status_code == 413


def test_many_calls_at_once_cannot_all_slip_under_a_quota(client):
    """Twenty one-text calls sent at once with a key whose quota is 5 a day: each call in flight
    holds its inputs, so exactly 5 are answered and 15 refused, however they interleave."""
    import asyncio

    import httpx
    from tests.conftest import live_server

    from aimass.serve import metering

    record, key = auth.create_key("burst", ["predict"], quota=5, quota_period="day")

    async def burst(base: str) -> list[int]:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
            calls = [
                http.post(
                    "/v1/models/news-serve/predict", json={"inputs": [f"Shares rose {i}%."]}, timeout=60
                )
                for i in range(20)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    app = create_app(["news-serve"])
    with live_server(app) as base:
        codes = asyncio.run(burst(base))
        app.state.meter.flush()
    assert sorted(codes) == [200] * 5 + [429] * 15, codes
    assert sum(u["items"] for u in metering.usage(record.id)) == 5


def test_a_key_held_to_a_quota_is_refused_once_it_is_spent_and_until_it_is_raised(client):
    """A key with a quota of 3 items a day: two calls of two texts are answered (the second
    crosses it: its size is not refused ahead), the third is a 429 ``insufficient_quota`` with
    the reset in Retry-After and ``x-should-retry: false``; the listing shows 4 used; raising the
    quota over REST applies to the next call; the count survives a restart of the server; a key
    held to a quota cannot mint a key without one."""
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    made = client.post("/v1/keys", json={"name": "capped", "quota": 3, "quota_period": "day"}, headers=admin)
    assert made.status_code == 200, made.text
    assert (made.json()["quota"], made.json()["quota_period"]) == (3, "day")
    capped = {"Authorization": f"Bearer {made.json()['key']}"}
    two = {"inputs": ["A late goal won the cup final.", "Shares fell on the news."]}
    for _ in range(2):
        assert client.post("/v1/models/news-serve/predict", json=two, headers=capped).status_code == 200
    refused = client.post("/v1/models/news-serve/predict", json=two, headers=capped)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("insufficient_quota", "insufficient_quota")
    assert "used 4 of the 3 items its quota allows this day" in error["message"]
    assert f"aimass keys update {made.json()['id']} --quota" in error["hint"]
    assert refused.headers["x-should-retry"] == "false"
    assert 1 <= int(refused.headers["retry-after"]) <= 86_400
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=admin).json()["keys"]}
    assert listed[made.json()["id"]]["quota_used"] == 4
    key_path = f"/v1/keys/{made.json()['id']}"
    assert client.patch(key_path, json={"quota_period": "week"}, headers=admin).status_code == 422
    raised = client.patch(key_path, json={"quota": 6}, headers=admin)
    assert (
        raised.status_code == 200 and raised.json()["quota"] == 6 and raised.json()["quota_period"] == "day"
    )
    assert client.post("/v1/models/news-serve/predict", json=two, headers=capped).status_code == 200
    assert client.get("/v1/usage", headers=admin).status_code == 200  # written now, not in 2 s
    with TestClient(create_app(["news-serve"])) as restarted:  # 6 used: stored, and read again
        again = restarted.post("/v1/models/news-serve/predict", json=two, headers=capped)
        assert again.status_code == 429 and "used 6 of the 6" in again.json()["error"]["message"]
    manager = client.post(
        "/v1/keys", json={"scopes": ["manage", "predict"], "quota": 10}, headers=admin
    ).json()
    minted = client.post(
        "/v1/keys", json={"name": "escape"}, headers={"Authorization": f"Bearer {manager['key']}"}
    )
    assert minted.status_code == 403 and "held to a quota" in minted.json()["error"]["message"]
    # a rate limit too: a limited manager minted a key without one, or lifted its own (200 before)
    limited = client.post(
        "/v1/keys", json={"scopes": ["manage", "predict"], "rate_limit": 50}, headers=admin
    ).json()
    as_limited = {"Authorization": f"Bearer {limited['key']}"}
    minted = client.post("/v1/keys", json={"name": "free", "scopes": ["predict"]}, headers=as_limited)
    assert minted.status_code == 403 and "held to a rate limit" in minted.json()["error"]["message"]
    own = client.patch(f"/v1/keys/{limited['id']}", json={"rate_limit": None}, headers=as_limited)
    assert own.status_code == 403, own.text
    lifted = client.patch(key_path, json={"quota": None}, headers=admin).json()
    assert lifted["quota"] is None and lifted["quota_period"] is None
    assert client.post("/v1/models/news-serve/predict", json=two, headers=capped).status_code == 200


def test_a_predict_job_is_metered_to_its_key_and_held_to_its_quota(client, tmp_path, monkeypatch):
    """A key past its quota was refused by the predict route, yet a predict job of 400 rows ran and
    was never metered. Now the job's rows are metered to the key that submitted it (a ``caller`` in
    the params cannot bill another key), and a key past its quota cannot submit one."""
    from aimass import jobs, paths
    from aimass.serve import metering

    monkeypatch.delenv("AIMASS_DATA_ROOTS", raising=False)
    record, key = auth.create_key("bulk", ["manage", "predict"], quota=5, quota_period="day")
    other, _ = auth.create_key("victim", ["predict"])
    table = paths.subdir("uploads") / "0a0b0c0d0e0f" / "rows.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("text\n" + "".join(f"The match ended {i}-0 after extra time.\n" for i in range(8)))
    headers = {"Authorization": f"Bearer {key}"}
    job = {"kind": "predict", "params": {"model": "news-serve", "path": str(table), "caller": other.id}}
    made = client.post("/v1/jobs", json=job, headers=headers)
    assert made.status_code == 202, made.text
    assert jobs.run_foreground(made.json()["id"])["status"] == "succeeded"
    assert sum(u["items"] for u in metering.usage(record.id)) == 8  # every row, to the submitter
    assert metering.usage(other.id) == []
    again = client.post("/v1/jobs", json=job, headers=headers)
    assert again.status_code == 429 and again.json()["error"]["code"] == "insufficient_quota", again.text


def test_a_project_holds_at_most_its_share_of_loaded_versions(client, monkeypatch):
    """Each loaded version keeps its weights in the server's memory, which every project shares: a
    key could deploy one service after another until the server ran out of it."""
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    monkeypatch.setenv("AIMASS_MAX_PROJECT_MODELS", "1")
    refused = client.post("/v1/services", json={"model": "news-serve", "service": "second"}, headers=admin)
    assert refused.status_code == 409, refused.text
    assert "has 1 versions loaded" in refused.json()["error"]["message"]
    assert "AIMASS_MAX_PROJECT_MODELS" in refused.json()["error"]["hint"]
    again = client.post("/v1/services", json={"model": "news-serve"}, headers=admin)
    assert again.status_code == 200, again.text  # loaded already: nothing more is held
    monkeypatch.setenv("AIMASS_MAX_PROJECT_MODELS", "2")
    second = client.post("/v1/services", json={"model": "news-serve", "service": "second"}, headers=admin)
    assert second.status_code == 200, second.text
    assert client.delete("/v1/services/second", headers=admin).status_code == 200
