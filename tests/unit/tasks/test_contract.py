"""One contract for every registered task (sklearn's check_estimator, for aimass)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from aimass.errors import ConfigError, NotFittedError, NotFoundError
from aimass.estimator import clone
from aimass.tasks import available_tasks, get_task

TASKS = available_tasks()
# the fitted checks below are about classifiers (classes_, predict_proba); text-generation has its own
CLASSIFIERS = [t for t in TASKS if t.endswith("classification")]


@pytest.fixture(scope="module", params=CLASSIFIERS)
def fitted(request):
    spec = get_task(request.param)
    X, y = spec.sample_data()
    model = spec.estimator(**spec.fast_params)
    returned = model.fit((X, y), progress=False)
    return spec, model, returned, X, y


def test_registry_lists_tasks_and_explains_unknown():
    assert "text-classification" in TASKS
    with pytest.raises(NotFoundError, match="available: .*text-classification"):
        get_task("img-cls")


@pytest.mark.parametrize("task", TASKS)
def test_init_only_stores_params(task):
    spec = get_task(task)
    sig = inspect.signature(spec.estimator.__init__)
    defaults = {k: p.default for k, p in sig.parameters.items() if k != "self"}
    model = spec.estimator(**spec.fast_params)
    assert model.get_params() == {**defaults, **spec.fast_params}
    assert not [k for k in vars(model) if k.endswith("_")], "no learned state before fit"
    # invalid values are stored as given and only rejected by fit
    bad = spec.estimator(seed="not-a-number")
    assert bad.get_params()["seed"] == "not-a-number"
    with pytest.raises(ConfigError, match="seed"):
        bad.fit(spec.sample_data(per_class=3))


@pytest.mark.parametrize("task", TASKS)
def test_predict_before_fit_raises(task):
    spec = get_task(task)
    with pytest.raises(NotFittedError, match="not fitted"):
        spec.estimator().predict(spec.sample_data(per_class=1)[0])


def test_fit_returns_self_and_learns(fitted):
    spec, model, returned, X, y = fitted
    assert returned is model
    assert model.classes_ == sorted(set(y))
    accuracy = np.mean(np.array(model.predict(X)) == np.array(y))
    assert accuracy >= 0.9, f"training accuracy {accuracy}"


def test_clone_has_same_params_and_no_state(fitted):
    _, model, *_ = fitted
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not [k for k in vars(copy) if k.endswith("_")]


def test_save_load_identical_predictions(fitted, tmp_path):
    spec, model, _, X, _ = fitted
    model.save(tmp_path / "m")
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))
    again = spec.estimator.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X), atol=1e-5)
    assert again.get_params() == model.get_params()


def test_evaluate_reports_metrics(fitted):
    _, model, _, X, y = fitted
    report = model.evaluate((X, y))
    assert set(report) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "top_losses"}
    matrix = np.array(report["confusion_matrix"]["matrix"])
    assert matrix.sum() == len(y) and np.trace(matrix) / len(y) == pytest.approx(report["accuracy"], abs=1e-4)


def test_default_handler_answers_sample_request(fitted, tmp_path):
    spec, model, *_ = fitted
    model.save(tmp_path / "h")
    handler = spec.handler(tmp_path / "h")
    handler.setup("cpu")
    request = spec.request.model_validate(spec.sample_request)
    body = handler.encode_response(handler.predict(handler.decode_request(request)))
    spec.response.model_validate(body)
    assert body["predictions"][0]["label"] in model.classes_


def test_same_data_and_seed_give_same_model(fitted):
    spec, model, _, X, y = fitted
    again = spec.estimator(**spec.fast_params).fit((X, y), progress=False)
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X), atol=1e-6)
    assert again.stages_["head"]["history"] == model.stages_["head"]["history"]
