"""ONNX export of a text model: same answers as torch, int8 close, and a runtime without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from aimass.runtime.text import TextRuntime

TEXTS = [
    "The striker scored twice as United won the cup final.",
    "Parliament voted on the budget bill after a long debate.",
    "The new phone has a faster chip and a better camera.",
    "ok",
]


@pytest.fixture(scope="module")
def exported(small_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return folder, small_model.export_onnx(folder)


def test_export_matches_torch_and_reports_the_difference(exported, small_model):
    folder, report = exported
    assert report["max_abs_diff_logits"] < 1e-4 and report["max_abs_diff_proba"] < 1e-4
    assert report["int8_same_label"] >= 0.8 and report["int8_max_abs_diff_proba"] < 0.2
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "runtime.json", "lexical.json"} <= set(
        report["files"]
    )
    assert report["files"]["model.int8.onnx"] < 0.4 * report["files"]["model.onnx"]
    runtime = TextRuntime(folder)
    want = small_model.predict_proba(TEXTS)
    assert np.abs(runtime.predict_proba(TEXTS) - want).max() < 1e-4
    assert runtime.predict(TEXTS) == small_model.predict(TEXTS)
    assert runtime.classes_ == small_model.classes_
    assert (
        json.loads((folder / "export.json").read_text())["max_abs_diff_logits"]
        == report["max_abs_diff_logits"]
    )


def test_tokenizer_json_gives_the_same_ids_as_transformers(exported, small_model):
    folder, _ = exported
    runtime = TextRuntime(folder)
    enc = small_model.tokenizer_(TEXTS, truncation=True, max_length=small_model.max_length_, padding=True)
    got = runtime.tokenizer.encode_batch(TEXTS)
    assert [e.ids for e in got] == enc["input_ids"]


def test_runtime_imports_neither_torch_nor_transformers(exported):
    folder, _ = exported
    code = (
        "import sys; from aimass.runtime.text import TextRuntime; "
        f"r = TextRuntime({str(folder)!r}); r.predict_proba(['hello']); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
