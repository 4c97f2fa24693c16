"""One contract for every registered task (sklearn's check_estimator, for aimass): the checks live
in :func:`aimass.testing.check_task`, so a new task gets them all by being registered."""

from __future__ import annotations

import pytest

from aimass.errors import NotFoundError
from aimass.tasks import available_tasks, get_task, register_task, unregister_task
from aimass.testing import CHECKS, check_task

TASKS = available_tasks()
# the fitted checks below are about classifiers (classes_, predict_proba); text-generation has its own
CLASSIFIERS = [t for t in TASKS if t.endswith("classification")]


def test_registry_lists_tasks_and_explains_unknown():
    assert "text-classification" in TASKS
    with pytest.raises(NotFoundError, match="available: .*text-classification"):
        get_task("img-cls")


@pytest.mark.parametrize("task", TASKS)
def test_task_meets_the_contract(task, tmp_path):
    results = check_task(get_task(task), workdir=tmp_path)
    assert list(results) == list(CHECKS)


def test_check_task_names_the_broken_check():
    @register_task("broken-example")
    class Broken(get_task("text-classification")):
        sample_request = {"inputs": []}  # the request model refuses it

    try:
        with pytest.raises(AssertionError, match="task 'broken-example' fails check 'spec'"):
            check_task(Broken, checks=("spec",))
    finally:
        unregister_task("broken-example")


def test_a_task_must_subclass_the_contract():
    with pytest.raises(TypeError, match="not a subclass of aimass.tasks.base.Task"):
        register_task("not-a-task")(type("Plain", (), {}))
