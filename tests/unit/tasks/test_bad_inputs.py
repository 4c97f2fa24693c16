"""Bad in-memory inputs to the Python API: each is a DataError or ConfigError that says what is wrong,
where (the item's index) and how to fix it, never a bare TypeError from deep inside; and the Python
API refuses the texts the REST API refuses."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

import aimass
from aimass.errors import ConfigError, DataError
from aimass.tasks.text_classification import PredictRequest, TextClassification, TextClassifier, check_labels

TEXTS, LABELS = TextClassification.sample_data(per_class=4)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (None, "texts must be a string or a list of strings. Got None"),
        (5, r"texts must be a string or a list of strings. Got 5 \(int\)"),
        ([None], r"texts\[0\] is None \(NoneType\), not text"),
        (["fine", 123], r"texts\[1\] is 123 \(int\), not text"),
        ([["a", "b"]], r"texts\[0\] is \['a', 'b'\] \(list\), not text"),
        (["fine", ""], r"texts\[1\] is empty"),
        (["   "], r"texts\[0\] is empty"),
    ],
)
def test_predict_refuses_what_is_not_text(small_model, bad, message):
    with pytest.raises(DataError, match=message) as err:
        small_model.predict(bad)
    assert err.value.hint


def test_predict_refuses_the_texts_rest_refuses(small_model):
    for texts in (["fine", ""], ["fine", " \n"]):
        with pytest.raises(ValidationError, match=r"inputs\[1\] is empty"):
            PredictRequest(inputs=texts)
        with pytest.raises(DataError, match=r"texts\[1\] is empty"):
            small_model.predict(texts)
    assert small_model.predict("one text") == small_model.predict(["one text"])
    assert small_model.predict([]) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (([], []), "There are no texts to train on"),
        ((TEXTS, [None] + LABELS[1:]), r"labels\[0\] is None \(NoneType\), not a label"),
        ((TEXTS, [1] + LABELS[1:]), r"labels mix strings and whole numbers: labels\[1\] is 'business'"),
        ((TEXTS, LABELS[:-1] + [" "]), rf"labels\[{len(LABELS) - 1}\] is empty"),
        (([None] + TEXTS[1:], LABELS), r"texts\[0\] is None"),
        (([123] * len(TEXTS), LABELS), r"texts\[0\] is 123 \(int\)"),
        ((TEXTS[:2] + [""] + TEXTS[3:], LABELS), r"texts\[2\] is empty"),
        ((TEXTS, None), "labels must be a list with one label per text"),
        (None, r"must be a Dataset or a \(texts, labels\) pair. Got a NoneType"),
        ((TEXTS,), r"must be a Dataset or a \(texts, labels\) pair. Got a tuple"),
    ],
)
def test_fit_refuses_bad_rows_before_loading_anything(data, message):
    with pytest.raises(DataError, match=message) as err:
        TextClassifier(backbone="minilm-l6").fit(data, progress=False)
    assert err.value.hint


def test_fit_checks_the_valid_pair_too():
    with pytest.raises(DataError, match=r"valid_texts\[1\] is None"):
        TextClassifier(backbone="minilm-l6").fit((TEXTS, LABELS), (["ok", None], ["a", "b"]), progress=False)


def test_labels_of_one_kind_pass_and_numpy_scalars_become_python_ones():
    assert check_labels(np.array([1, 0, 1])) == [1, 0, 1]
    assert type(check_labels(np.array([1, 0]))[0]) is int
    assert check_labels(("a", "b")) == ["a", "b"]
    with pytest.raises(DataError, match=r"labels\[1\] is True \(bool\)"):
        check_labels([0, True])


def test_finetune_takes_in_memory_data_as_a_tuple_only():
    with pytest.raises(DataError, match="Got a list instead") as err:
        aimass.finetune("text-classification", [TEXTS, LABELS])
    assert "(texts, labels)" in err.value.hint


def test_finetune_refuses_an_option_the_task_does_not_take():
    with pytest.raises(ConfigError, match="Task 'text-classification' has no option 'epochs'") as err:
        aimass.finetune("text-classification", (TEXTS, LABELS), epochs=3)
    assert "epochs_top" in err.value.hint
