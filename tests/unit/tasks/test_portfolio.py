"""The portfolio with a baseline floor (:mod:`aimass.tasks.portfolio`): a fit keeps the baseline
when it beats the network on validation, and the kept baseline predicts, saves, loads and exports
like any model; the candidates and the choice are in ``evaluate()``'s report."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from aimass import exporters
from aimass.errors import ConfigError
from aimass.tasks import get_task
from aimass.tasks.image_classification import ImageClassifier
from aimass.tasks.portfolio import NETWORK, pick
from aimass.workflow import _check_network


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def one_pixel_images(n: int, seed: int = 0) -> tuple[list[bytes], list[str]]:
    """8x8 grey noise whose class is one pixel (dark or bright): a linear model on the pixels
    reads it at once; the pooled features of a frozen backbone barely see it."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        array = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        array[3, 5] = 255 if i % 2 else 0
        images.append(_png(array))
        labels.append("bright" if i % 2 else "dark")
    return images, labels


@pytest.fixture(scope="module")
def pixel_model():
    images, labels = one_pixel_images(240)
    model = ImageClassifier(image_size=64, unfreeze=0, time_budget=None).fit(
        (images[:200], labels[:200]), progress=False
    )
    return model, images[200:], labels[200:]


def test_pick_takes_the_best_and_the_network_on_a_tie():
    low, high = {"accuracy": 0.8, "macro_f1": 0.8}, {"accuracy": 0.9, "macro_f1": 0.85}
    assert pick({NETWORK: low, "pixels-logreg": high}) == "pixels-logreg"
    assert pick({NETWORK: high, "pixels-logreg": dict(high)}) == NETWORK
    assert pick({NETWORK: {"accuracy": 0.9, "macro_f1": 0.8}, "b": high}) == "b"  # macro-F1 breaks ties


def test_each_classification_task_declares_its_baselines():
    assert list(get_task("image-classification").baselines) == ["pixels-logreg"]
    assert list(get_task("text-classification").baselines) == ["tfidf-logreg"]


def test_the_pixel_baseline_wins_where_the_network_cannot_see(pixel_model):
    model, images, labels = pixel_model
    assert model.chosen_ == "pixels-logreg"
    assert set(model.candidates_) == {NETWORK, "pixels-logreg"}
    assert model.candidates_["pixels-logreg"]["accuracy"] > model.candidates_[NETWORK]["accuracy"]
    assert model.image_size_ == model.resize_ == 8  # the native size, no crop
    assert np.mean(np.array(model.predict(images)) == np.array(labels)) >= 0.95


def test_evaluate_shows_the_candidates_and_the_choice(pixel_model):
    model, images, labels = pixel_model
    report = model.evaluate((images, labels))
    assert report["portfolio"]["chosen"] == "pixels-logreg"
    assert report["portfolio"]["candidates"] == model.candidates_


def test_the_kept_baseline_saves_loads_and_exports(pixel_model, tmp_path):
    model, images, _ = pixel_model
    model.save(tmp_path / "saved")
    assert not list((tmp_path / "saved").glob("*.pkl"))
    again = ImageClassifier.load(tmp_path / "saved")
    assert again.chosen_ == "pixels-logreg" and again.candidates_ == model.candidates_
    np.testing.assert_allclose(again.predict_proba(images), model.predict_proba(images), atol=1e-6)
    report = again.export_onnx(tmp_path / "onnx", int8=True, images=images[:16])
    assert report["max_abs_diff_proba"] < 1e-5
    assert report["int8_same_label"] == 1.0
    for fmt in ("onnx", "safetensors"):  # predict.py without aimass agrees too
        check = exporters.write_folder(again, fmt, tmp_path / f"export-{fmt}")["check"]
        assert check["predict_py_same_label"] == 1.0 and check["predict_py_max_abs_diff_proba"] < 1e-4


def test_the_onnx_handler_serves_the_kept_baseline(pixel_model, tmp_path):
    model, images, _ = pixel_model
    spec = get_task("image-classification")
    model.save(tmp_path)
    model.export_onnx(tmp_path / "onnx", int8=False)
    handler = spec.handler(tmp_path)
    handler.setup("cpu", "onnx")
    request = spec.request.model_validate({"inputs": [images[0]]})
    proba = handler.predict(handler.decode_request(request))
    np.testing.assert_allclose(proba, model.predict_proba(images[:1]), atol=1e-5)


def test_a_network_compressor_refuses_a_baseline_version(pixel_model):
    from aimass.compressors import get_compressor

    model, *_ = pixel_model
    with pytest.raises(ConfigError, match="pixels-logreg"):
        _check_network(model, get_compressor("distill"), "ones:1")
    _check_network(model, get_compressor("onnx-int8"), "ones:1")  # whole-graph methods are fine


@pytest.mark.slow
def test_the_tfidf_baseline_is_the_regression_and_exports(tmp_path):
    from aimass.data.split import holdout
    from aimass.tasks.baselines import TfidfLogReg
    from aimass.tasks.text_classification import TextClassification, TextClassifier

    texts, labels = TextClassification.sample_data(per_class=30)  # enough for a validation split
    params = dict(TextClassification.fast_params, time_budget=None, pair_steps=0)
    model = TextClassifier(**params).fit((texts, labels), progress=False)
    assert set(model.candidates_) == {NETWORK, "tfidf-logreg"}
    assert model.evaluate((texts, labels))["portfolio"]["chosen"] == model.chosen_
    train, valid = holdout((texts, labels), 0)
    baseline = TfidfLogReg(seed=0).fit(model, train, valid)
    baseline.install(model, train, valid)  # as the portfolio does when the baseline wins
    x = model.lexical_.vectorizer.transform(texts)  # the head is the regression: the same probabilities
    np.testing.assert_allclose(model.predict_proba(texts), baseline.regression_.predict_proba(x), atol=1e-5)
    model.save(tmp_path / "saved")
    again = TextClassifier.load(tmp_path / "saved")
    np.testing.assert_allclose(again.predict_proba(texts), model.predict_proba(texts), atol=1e-6)
    assert again.export_onnx(tmp_path / "onnx", int8=False)["max_abs_diff_proba"] < 1e-5
