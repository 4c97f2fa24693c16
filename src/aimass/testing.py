"""The task contract as a library (scikit-learn's ``check_estimator``, for aimass tasks).

``check_task(spec)`` runs every check a task must pass; a new task gets them all by calling it
from one test::

    @register_task("my-task")
    class MyTask(Task): ...

    def test_my_task_meets_the_contract(tmp_path):
        check_task(MyTask, workdir=tmp_path)

The checks (:data:`CHECKS`, in order; each an ``AssertionError`` naming the task when it fails):

* ``spec``: a :class:`aimass.tasks.base.Task` subclass, registered under its name, with an estimator,
  request/response models, a handler and a sample request the request model accepts;
  ``options()`` match the estimator's ``__init__``.
* ``init``: ``__init__`` only stores its arguments (no learned state; bad values are kept as given
  and refused by ``fit`` with a ConfigError naming the parameter).
* ``params_json``: ``get_params()`` and ``options()`` are JSON-safe (what the registry stores) and
  survive a JSON round trip.
* ``not_fitted``: ``predict`` before ``fit`` raises NotFittedError.
* ``fit``: ``fit`` on ``sample_data()`` with ``fast_params`` returns the estimator itself, and it learns
  (training accuracy at least ``min_accuracy`` for a classifier; for a multi-label one, whose targets
  are lists, the share of rows given exactly their labels).
* ``clone``: a clone has the same params and no learned state.
* ``save_load``: ``save`` writes no pickle; ``load`` gives the same params and predictions (and the
  same ``score((X, y))`` where the estimator has one: a generative model's answer likelihood, which
  every weight moves, where a few greedy answers might not show a difference).
* ``evaluate``: the report holds ``n`` and the task's metrics; a confusion matrix adds up.
* ``handler``: the default handler answers the sample request with a body the response model accepts.
* ``reproducible``: the same data and seed give the same predictions (and ``score``).
* ``onnx_handler``: for a task that exports to ONNX, the handler on the ``onnx`` backend answers the
  sample request as the torch model does.
* ``export``: every export recipe writes a folder whose ``predict.py`` agrees with the model (a
  language model's: loaded back, its next tokens agree with the model's).

The checks fit with ``fast_params`` and, when the task has a ``time_budget``, none: a budgeted fit
plans by the clock, so two fits on a busy machine could differ.

:func:`require` imports a package the tests need (a model or data package of the ``models``,
``data`` or ``dev`` extras): a missing one fails the run, never skips silently.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from aimass import exporters
from aimass.errors import ConfigError, NotFittedError
from aimass.estimator import clone
from aimass.tasks import get_task
from aimass.tasks.base import Task

CHECKS = (
    "spec",
    "init",
    "params_json",
    "not_fitted",
    "fit",
    "clone",
    "save_load",
    "evaluate",
    "handler",
    "reproducible",
    "onnx_handler",
    "export",
)
ALLOW_MISSING = "AIMASS_ALLOW_MISSING"  # set to 1 to skip (not fail) tests whose packages are missing


def check_task(
    spec,
    *,
    workdir: str | Path | None = None,
    checks: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
    min_accuracy: float = 0.9,
) -> dict[str, str]:
    """Run the contract checks on task ``spec`` (a registered :class:`~aimass.tasks.base.Task`
    subclass); returns ``{check: "ok" | "n/a (why)"}`` and raises AssertionError at the first
    check that fails. ``checks`` picks some (default: all of :data:`CHECKS`), ``skip`` leaves some
    out; ``workdir`` holds saved models and exports (default: a temporary folder)."""
    unknown = set(checks or ()) | set(skip)
    unknown -= set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; available: {', '.join(CHECKS)}")
    wanted = [c for c in (checks or CHECKS) if c not in skip]
    with tempfile.TemporaryDirectory(prefix="aimass-check-") as tmp:
        run = _Run(spec, Path(workdir) if workdir else Path(tmp), min_accuracy)
        results = {}
        for name in wanted:
            try:
                results[name] = getattr(run, f"check_{name}")() or "ok"
            except AssertionError as exc:
                raise AssertionError(f"task '{spec.name}' fails check '{name}': {exc}") from exc
        return results


class _Run:
    """One check run: the fitted model is shared by the checks that need one."""

    def __init__(self, spec, workdir: Path, min_accuracy: float):
        self.spec, self.workdir, self.min_accuracy = spec, workdir, min_accuracy
        self._fitted, self._answers, self._score = None, None, None
        unbudgeted = {"time_budget": None} if "time_budget" in spec.options() else {}
        self.params = {**spec.fast_params, **unbudgeted}  # what the fits use (see the module docstring)

    @property
    def fitted(self):
        """``(model, X, y)``: the estimator fitted once on the sample data with ``fast_params``."""
        if self._fitted is None:
            X, y = self.spec.sample_data()
            model = self.spec.estimator(**self.params)
            returned = model.fit((X, y), progress=False)
            assert returned is model, "fit must return self"
            self._fitted = (model, X, y)
        return self._fitted

    @property
    def answers(self) -> np.ndarray:
        """The fitted model's answers to the sample inputs (computed once: a generative model
        answers one prompt at a time)."""
        if self._answers is None:
            model, X, _ = self.fitted
            self._answers = _scores(model, X)
        return self._answers

    @property
    def score(self) -> float:
        """The fitted model's ``score`` on the sample data (estimators that have one)."""
        if self._score is None:
            model, X, y = self.fitted
            self._score = model.score((X, y))
        return self._score

    def _folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ checks
    def check_spec(self):
        spec = self.spec
        assert isinstance(spec, type) and issubclass(spec, Task), (
            "a task spec subclasses aimass.tasks.base.Task"
        )
        assert spec.name and get_task(spec.name) is spec, f"'{spec.name}' is registered as this spec"
        for attr in ("estimator", "request", "response", "handler"):
            assert getattr(spec, attr, None) is not None, f"the spec sets '{attr}'"
        assert spec.sample_request, "the spec has a sample request"
        try:
            spec.request.model_validate(spec.sample_request)
        except ValueError as exc:  # pydantic's ValidationError
            raise AssertionError(f"the request model refuses the sample request: {exc}") from None
        sig = inspect.signature(spec.estimator.__init__)
        init = {k: p.default for k, p in sig.parameters.items() if k != "self"}
        assert spec.options() == init, f"options() {spec.options()} differ from __init__'s defaults {init}"
        assert getattr(spec.estimator, "task", None) == spec.name, "the estimator's `task` is the spec's name"
        for ref in filter(None, (spec.runtime, spec.tuner, *spec.compression.values())):
            assert ":" in ref, f"'{ref}' is 'module:Name'"

    def check_init(self):
        spec = self.spec
        model = spec.estimator(**spec.fast_params)
        assert model.get_params() == {**spec.options(), **spec.fast_params}, "__init__ stores its arguments"
        assert not [k for k in vars(model) if k.endswith("_")], "no learned state before fit"
        if "seed" not in spec.options():
            return "n/a (no seed parameter to give a bad value)"
        bad = spec.estimator(seed="not-a-number")
        assert bad.get_params()["seed"] == "not-a-number", "a bad value is stored as given"
        try:
            bad.fit(spec.sample_data(per_class=3), progress=False)
        except ConfigError as exc:
            assert "seed" in str(exc), f"the ConfigError names the parameter: {exc}"
        else:
            raise AssertionError("fit accepted seed='not-a-number'")
        return None

    def check_params_json(self):
        spec = self.spec
        for what, params in (("options()", spec.options()), ("get_params()", spec.estimator().get_params())):
            try:
                again = json.loads(json.dumps(params))
            except (TypeError, ValueError) as exc:
                raise AssertionError(f"{what} is not JSON-safe: {exc}") from None
            assert again == params, f"{what} changes in a JSON round trip: {params} -> {again}"

    def check_not_fitted(self):
        X, _ = self.spec.sample_data(per_class=1)
        try:
            self.spec.estimator().predict(X)
        except NotFittedError as exc:
            assert "not fitted" in str(exc), str(exc)
        else:
            raise AssertionError("predict before fit did not raise NotFittedError")

    def check_fit(self):
        model, X, y = self.fitted
        if hasattr(model, "classes_"):
            assert list(model.classes_) == sorted(_classes(y)), "classes_ are the sorted labels"
            right = [_same(a, b) for a, b in zip(model.predict(X), y, strict=True)]
            accuracy = float(np.mean(right))
            assert accuracy >= self.min_accuracy, f"training accuracy {accuracy:.3f} < {self.min_accuracy}"

    def check_clone(self):
        model, *_ = self.fitted
        copy = clone(model)
        assert copy.get_params() == model.get_params(), "a clone has the same params"
        assert not [k for k in vars(copy) if k.endswith("_")], "a clone has no learned state"

    def check_save_load(self):
        model, X, y = self.fitted
        folder = self._folder("saved")
        model.save(folder)
        pickles = [p.name for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".pth")]
        assert not pickles, f"save writes no pickle: {pickles}"
        again = self.spec.estimator.load(folder)
        assert again.get_params() == model.get_params(), "load keeps the params"
        _assert_same(_scores(again, X), self.answers, 1e-5)
        if hasattr(model, "score"):  # a generative model: the likelihood of the answers, all weights
            assert abs(again.score((X, y)) - self.score) < 1e-5, "load changes the score"

    def check_evaluate(self):
        model, X, y = self.fitted
        report = model.evaluate((X, y))
        assert report.get("n", len(y)) == len(y), f"n is {report.get('n')}, not {len(y)}"
        if "confusion_matrix" in report:
            assert {"accuracy", "macro_f1", "per_class"} <= set(report), f"metrics missing: {sorted(report)}"
            matrix = np.array(report["confusion_matrix"]["matrix"])
            assert matrix.sum() == len(y), "the confusion matrix counts every example"
            assert abs(np.trace(matrix) / len(y) - report["accuracy"]) < 1e-4, "accuracy = its diagonal"
        json.dumps(report, default=str)

    def _answer(self, backend: str) -> dict:
        model, *_ = self.fitted
        folder = self.workdir / "saved"
        if not (folder / "model.json").exists():
            model.save(self._folder("saved"))
        if backend != "torch" and not (folder / "onnx").exists():
            model.export_onnx(folder / "onnx", int8=False)
        handler = self.spec.handler(folder)
        handler.setup("cpu", backend)
        request = self.spec.request.model_validate(self.spec.sample_request)
        body = handler.encode_response(handler.predict(handler.decode_request(request)))
        self.spec.response.model_validate(body)
        json.dumps(body)
        return body

    def check_handler(self):
        model, *_ = self.fitted
        body = self._answer("torch")
        if hasattr(model, "classes_"):
            answered = _labels(body)[0]
            assert set(answered if isinstance(answered, list) else [answered]) <= set(model.classes_), body

    def check_onnx_handler(self):
        if not self.spec.supports_onnx():
            return "n/a (no ONNX export)"
        want, got = self._answer("torch"), self._answer("onnx")
        assert _labels(got) == _labels(want), f"ONNX answers {got}, torch {want}"
        return None

    def check_export(self):
        model, *_ = self.fitted
        recipes = exporters.recipes(self.spec.name)
        if not recipes:
            return "n/a (no export recipes)"
        writers = set()
        for fmt in recipes:
            writer = recipes[fmt].folder
            writer = getattr(writer, "func", writer)  # a writer's variants (partial, other settings): once
            if writer is not None and writer in writers:
                continue
            writers.add(writer)
            manifest = exporters.write_folder(model, fmt, self._folder(f"export-{fmt}"))
            check = manifest["check"]
            if recipes[fmt].folder is not None:  # a model that does not classify checks itself on writing
                assert check.get("check_inputs"), f"{fmt}: the export checked nothing: {check}"
                agreement = check.get("next_token_agreement", 1.0)
                assert agreement >= 0.9, f"{fmt}: the exported model answers otherwise: {check}"
                continue
            assert check["predict_py_same_label"] == 1.0, f"{fmt}: predict.py gives other labels: {check}"
            assert check["predict_py_max_abs_diff_proba"] < 1e-3, f"{fmt}: predict.py differs: {check}"
        return None

    def check_reproducible(self):
        model, X, y = self.fitted
        again = self.spec.estimator(**self.params).fit((X, y), progress=False)
        _assert_same(_scores(again, X), self.answers, 1e-6)
        if hasattr(model, "score"):
            assert abs(again.score((X, y)) - self.score) < 1e-6, "the same seed scores otherwise"
        if hasattr(model, "history_"):  # a step-by-step training loss, where kept
            assert again.history_ == model.history_, "the same seed trains otherwise"
        for stage, info in getattr(model, "stages_", {}).items():  # training curves, where kept
            if isinstance(info, dict) and "history" in info:
                assert again.stages_[stage]["history"] == info["history"], f"stage {stage} trains otherwise"


def _assert_same(got: np.ndarray, want: np.ndarray, atol: float) -> None:
    """Answers (:func:`_scores`) agree: scores within ``atol``, or the same answers when they are
    not numbers (generated text)."""
    if want.dtype.kind in "fiub":
        np.testing.assert_allclose(got, want, atol=atol)
    else:
        assert got.tolist() == want.tolist(), "the same inputs are answered otherwise"


def _scores(model, X) -> np.ndarray:
    """What a model's answers are compared on: probabilities when it has them."""
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X))
    answers = model.predict(X)
    if any(isinstance(a, list | tuple | dict) for a in answers):  # structured answers (entity spans)
        return np.array([json.dumps(a, sort_keys=True, ensure_ascii=False) for a in answers])
    answers = np.asarray(answers)
    return answers.astype(float) if answers.dtype.kind in "fiub" else answers


def _labels(body: dict) -> list:
    """Each prediction's label (a multi-label model's: its list of labels)."""
    return [p.get("labels", p.get("label")) for p in body.get("predictions", [])]


def _classes(targets: list) -> set:
    """The labels of ``targets``: one label per row, or a list of labels per row (multi-label)."""
    return {label for t in targets for label in (t if isinstance(t, list | tuple) else [t])}


def _same(predicted, target) -> bool:
    """A prediction is right: the same label, or (multi-label) the same set of labels."""
    if isinstance(target, list | tuple):
        return sorted(predicted) == sorted(target)
    return predicted == target


# ------------------------------------------------------------------ packages
def require(module: str, extra: str = "models,data,dev"):
    """Import ``module`` for a test; a missing package fails the test run (a model module skipped
    for a missing package would hide a broken install). With ``AIMASS_ALLOW_MISSING=1`` it is a
    skip instead, for a partial install on a laptop."""
    import pytest  # a test dependency, not one of aimass

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"'{module}' is missing ({exc}); install it with pip install -e '.[{extra}]'"
        if os.environ.get(ALLOW_MISSING) == "1":
            pytest.skip(message, allow_module_level=True)
        pytest.fail(f"{message} (or set {ALLOW_MISSING}=1 to skip these tests)", pytrace=False)


__all__ = ["CHECKS", "check_task", "require"]
