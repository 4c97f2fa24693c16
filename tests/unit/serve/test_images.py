"""Serving an image model: base64 JSON and multipart uploads, and the limits as 413/422."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aimass import api
from aimass.serve.app import create_app
from aimass.serve.batching import BatchSettings
from aimass.tasks import get_task


@pytest.fixture(scope="module")
def digits():
    spec = get_task("image-classification")
    images, labels = spec.sample_data(per_class=12)
    model = spec.estimator(**spec.fast_params).fit((images, labels), progress=False)
    return model, images, labels


@pytest.fixture(scope="module")
def client(digits):
    record = api.register(digits[0], "digits-serve")
    with TestClient(create_app([record.ref], open_predict=True)) as c:
        yield c


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_base64_json_one_and_many(client, digits):
    model, images, labels = digits
    encoded = [base64.b64encode(b).decode() for b in images[:3]]
    body = client.post("/v1/models/digits-serve/predict", json={"inputs": encoded}).json()
    assert [p["label"] for p in body["predictions"]] == model.predict(images[:3])
    assert set(body["predictions"][0]["scores"]) == {"0", "1", "7"}
    single = client.post("/v1/models/digits-serve/predict", json={"inputs": encoded[0]})
    assert single.status_code == 200 and len(single.json()["predictions"]) == 1
    data_url = client.post(
        "/v1/models/digits-serve/predict", json={"inputs": ["data:image/png;base64," + encoded[0]]}
    )
    assert data_url.json()["predictions"] == single.json()["predictions"]


def test_multipart_upload(client, digits):
    model, images, _ = digits
    files = [("inputs", (f"d{i}.png", images[i], "image/png")) for i in (0, 12, 24)]
    response = client.post("/v1/models/digits-serve/predict", files=files)
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == model.predict(
        [images[i] for i in (0, 12, 24)]
    )


def test_corrupt_and_not_base64_are_422(client, digits):
    truncated = digits[1][0][:40]
    response = client.post(
        "/v1/models/digits-serve/predict", files=[("inputs", ("bad.png", truncated, "image/png"))]
    )
    assert response.status_code == 422 and "inputs[0]" in response.json()["error"]["message"]
    response = client.post("/v1/models/digits-serve/predict", json={"inputs": ["not base64 at all!"]})
    assert response.status_code == 422 and "base64" in response.json()["error"]["message"]
    assert client.get("/livez").status_code == 200  # the server stays up


def test_pixel_limit_is_413_with_the_limit(client, monkeypatch):
    monkeypatch.setenv("AIMASS_MAX_PIXELS", "10000")
    big = _png(np.zeros((200, 200), dtype=np.uint8))  # 40,000 pixels, tiny file
    response = client.post(
        "/v1/models/digits-serve/predict", files=[("inputs", ("big.png", big, "image/png"))]
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]
    monkeypatch.setenv("AIMASS_MAX_IMAGE_BYTES", "100")
    response = client.post(
        "/v1/models/digits-serve/predict", files=[("inputs", ("big.png", big, "image/png"))]
    )
    assert response.status_code == 413 and "100" in response.json()["error"]["message"]
    assert client.get("/readyz").status_code == 200


@pytest.fixture(scope="module")
def zero_36mp() -> bytes:
    """A 6000 x 6000 all-black PNG: 36 MP (under the 40 MP per-image limit) in ~105 KB."""
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_request_of_many_large_pngs_is_413_naming_the_cap_before_decoding(client, digits, zero_36mp):
    encoded = base64.b64encode(zero_36mp).decode()
    response = client.post("/v1/models/digits-serve/predict", json={"inputs": [encoded] * 64})  # ~9 MB
    assert response.status_code == 413, response.text[:200]
    error = response.json()["error"]
    assert "inputs[5]" in error["message"] and "192.0 MP" in error["message"]  # 6 x 36 MP > 192 MP
    assert "AIMASS_MAX_REQUEST_PIXELS" in error["hint"]
    small = base64.b64encode(digits[1][0]).decode()
    assert client.post("/v1/models/digits-serve/predict", json={"inputs": [small] * 3}).status_code == 200


def test_request_pixel_cap_is_a_setting(client, digits, monkeypatch):
    files = [("inputs", (f"d{i}.png", digits[1][i], "image/png")) for i in range(3)]  # 3 x 8x8 pixels
    monkeypatch.setenv("AIMASS_MAX_REQUEST_PIXELS", "150")
    response = client.post("/v1/models/digits-serve/predict", files=files)
    assert response.status_code == 413
    assert (
        "inputs[2]" in response.json()["error"]["message"]
        and "150 pixels" in response.json()["error"]["message"]
    )
    monkeypatch.setenv("AIMASS_MAX_REQUEST_PIXELS", "192")
    assert client.post("/v1/models/digits-serve/predict", files=files).status_code == 200


def test_decoding_past_the_deadline_is_504(digits, zero_36mp):
    record = api.register(digits[0], "digits-deadline")
    with TestClient(create_app([record.ref], BatchSettings(timeout_s=0.05), open_predict=True)) as c:
        upload = [("inputs", ("black.png", zero_36mp, "image/png"))]  # 108 MB of pixels to inflate
        response = c.post("/v1/models/digits-deadline/predict", files=upload)
        assert response.status_code == 504, response.text[:200]
        assert "Decoding the inputs took longer than 0.05s" in response.json()["error"]["message"]
        assert c.get("/livez").status_code == 200


def test_a_text_model_cannot_be_a_canary_of_an_image_service(client, digits, small_model):
    """It was taken: half the service's image requests then got 422 "not base64" from the text model."""
    from aimass.serve import auth

    text = api.register(small_model, "text-beside-digits").ref
    admin = {"Authorization": f"Bearer {auth.admin_token()}"}
    said = client.post(
        "/v1/services", json={"model": text, "service": "digits-serve", "weight": 50}, headers=admin
    )
    assert said.status_code == 422, said.text
    assert "image-classification" in said.json()["error"]["message"]
    assert "text-classification" in said.json()["error"]["message"]
    served = client.get("/v1/services/digits-serve", headers=admin).json()
    assert [v["ref"].split(":")[0] for v in served["versions"]] == ["digits-serve"]
