"""Registering a task or a backbone under a name that is taken: an error unless asked to replace,
while the same entry again (a module reloaded) takes its place quietly."""

from __future__ import annotations

import importlib

import pytest

import aimass.tasks.text_classification as text_classification
from aimass.backbones import Backbone, get_backbone, register_backbone, unregister_backbone
from aimass.errors import ConfigError
from aimass.tasks import get_task, register_task, unregister_task
from aimass.tasks.base import Task

BUILT_IN = get_task("text-classification")


def test_a_second_task_under_a_taken_name_is_refused():
    class Mine(Task):
        pass

    with pytest.raises(ConfigError, match=r"task 'text-classification' is already registered") as err:
        register_task("text-classification")(Mine)
    assert "aimass.tasks.text_classification" in str(err.value)
    assert "replace=True" in err.value.hint
    assert get_task("text-classification") is BUILT_IN


def test_replace_true_replaces_a_task_on_purpose():
    class First(Task):
        pass

    class Second(Task):
        pass

    register_task("clash-example")(First)
    try:
        assert register_task("clash-example", replace=True)(Second) is Second
        assert get_task("clash-example") is Second
        assert register_task("clash-example")(Second) is Second  # the same class again is fine
    finally:
        unregister_task("clash-example")


def test_reloading_a_built_in_task_module_registers_it_again():
    saved = dict(vars(text_classification))
    try:
        importlib.reload(text_classification)  # defines TextClassification again, same module and name
        assert get_task("text-classification") is text_classification.TextClassification
    finally:  # the rest of the session keeps the classes it imported
        vars(text_classification).update(saved)
        register_task("text-classification", replace=True)(BUILT_IN)
    assert get_task("text-classification") is BUILT_IN


def test_a_second_backbone_under_a_taken_name_is_refused():
    built_in = get_backbone("minilm-l6")
    with pytest.raises(ConfigError, match=r"backbone 'minilm-l6' is already registered \(by module aimass"):
        register_backbone(Backbone("minilm-l6", lambda: "/nowhere", description="mine"))
    assert get_backbone("minilm-l6") is built_in
    assert register_backbone(built_in) is built_in  # the same entry again is fine
    again = Backbone("minilm-l6", built_in.locate, description=built_in.description)  # a module reloaded
    try:
        assert register_backbone(again) is again
    finally:
        register_backbone(built_in, replace=True)
    assert get_backbone("minilm-l6") is built_in


def test_replace_true_replaces_a_backbone_on_purpose():
    register_backbone(Backbone("clash-example", lambda: "/a", description="first"))
    mine = Backbone("clash-example", lambda: "/b", description="second")
    try:
        with pytest.raises(ConfigError, match="already registered"):
            register_backbone(mine)
        assert register_backbone(mine, replace=True) is mine
        assert get_backbone("clash-example").description == "second"
    finally:
        unregister_backbone("clash-example")
