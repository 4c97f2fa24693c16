"""The compression workflow: child versions measured against their parent, the gate, serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch import nn
from typer.testing import CliRunner

from aimass import api
from aimass.compressors import available_compressors, get_compressor
from aimass.errors import ConfigError, NotFoundError
from aimass.serve.engine import _backend
from aimass.store import registry
from aimass.tasks import get_task


@pytest.fixture(scope="module")
def parent(bbc_csv):
    """A small BBC model trained on an imported dataset (so its test split is known)."""
    from aimass.tasks.text_classification import TextClassifier

    ds = api.import_dataset(bbc_csv, name="bbc-compress")
    params = {"max_length": 64, "unfreeze": 1, "epochs_top": 2, "pair_steps": 20, "seed": 0}
    model = TextClassifier(backbone="minilm-l6", **params).fit(ds, progress=False)
    return api.register(model, "cmp", report=model.evaluate(ds, "test"))


@pytest.fixture(scope="module")
def int8_child(parent):
    return api.compress(parent.ref, "onnx-int8")


def test_registry_lists_every_method_and_refuses_unknown_ones():
    assert {"int8-dynamic", "onnx", "onnx-int8"} <= set(available_compressors())
    with pytest.raises(NotFoundError, match="available: .*onnx-int8"):
        get_compressor("zip")


def test_onnx_int8_child_is_a_measured_version_of_its_parent(parent, int8_child):
    child = registry.get_version(int8_child["model"])
    assert child.name == parent.name and child.version > parent.version and child.parent == parent.ref
    info = child.metrics["compression"]
    assert info["method"] == "onnx-int8" and info["parent"] == parent.ref
    parent_row, child_row = info["table"]
    for row in (parent_row, child_row):
        assert 0.0 <= row["accuracy"] <= 1.0 and row["size_mb"] > 0 and row["p50_ms_b1"] > 0
        assert row["items_per_s_b32"] > 0 and row["load_s"] > 0
    assert parent_row["accuracy"] == pytest.approx(parent.metrics["accuracy"])  # same test split
    assert child_row["size_mb"] < 0.5 * parent_row["size_mb"]  # int8 weights
    assert child.metrics["gate"]["status"] in ("accepted", "rejected")
    stored = json.loads((Path(child.path) / "compression_report.json").read_text())
    assert stored["compression"]["table"][1]["method"] == "onnx-int8"
    assert [r["model"] for r in info["table"]] == [parent.ref, child.ref]  # the record said "(new)"


def test_each_row_is_timed_on_the_backend_its_version_is_served_on(parent, int8_child):
    """The parent was timed on torch (spinning OpenMP threads) and the child on onnxruntime: a
    lossless ONNX conversion came out 72.9x faster at p50. The server runs this parent on ONNX."""
    parent_row, child_row = int8_child["table"]
    assert (parent_row["backend"], child_row["backend"]) == ("onnx", "onnx-int8")
    folder = Path(parent.path) / "onnx"  # the very folder the server will run it from
    assert (folder / "SHA256SUMS").is_file() and parent_row["size_mb"] * 1e6 == pytest.approx(
        (folder / "model.onnx").stat().st_size + sum(p.stat().st_size for p in folder.glob("lexical.*")),
    )
    assert _backend(get_task("text-classification"), "auto", parent) == parent_row["backend"]


def test_the_child_predicts_on_onnx_runtime_like_its_parent(parent, int8_child, bbc_csv):
    child = api.load(int8_child["model"])
    assert child.runtime_ is not None and child.runtime_.int8
    texts = [t for t, _ in zip(*_rows(bbc_csv))][:12]
    agree = np.mean(np.array(child.predict(texts)) == np.array(api.load(parent.ref).predict(texts)))
    assert agree >= 0.75


def test_gate_rejects_a_drop_over_max_drop_and_blocks_production(parent):
    from aimass.workflow import _gate

    assert _gate(1.5, 1.0)["status"] == "rejected" and _gate(1.0, 1.0)["status"] == "accepted"
    result = api.compress(parent.ref, "onnx", max_drop=0)  # a lossless conversion: a drop of 0 or next to it
    drop = result["comparison"]["accuracy_drop_points"]
    assert result["gate"]["status"] == ("rejected" if drop > 0 else "accepted")
    child = registry.get_version(result["model"])
    registry.update_metrics(child.ref, {**child.metrics, "gate": _gate(0.5, 0.0)})  # as a lossy method's
    assert registry.get_version(parent.name).ref != result["model"]  # "latest" skips it
    with pytest.raises(ConfigError, match="rejected by the compression gate"):
        registry.set_alias(result["model"], "production")
    assert registry.set_alias(result["model"], "production", force=True).ref == result["model"]
    assert registry.set_alias(result["model"], "staging").ref == result["model"]


def test_int8_dynamic_child_quantises_linear_layers_and_serves_on_torch_only(parent):
    result = api.compress(parent.ref, "int8-dynamic", max_drop=100)
    model = api.load(result["model"])
    quantised = [m for m in model.net_.modules() if isinstance(m, nn.quantized.dynamic.Linear)]
    assert quantised and all("lexical" in n for n, m in model.net_.named_modules() if type(m) is nn.Linear)
    record, spec = registry.get_version(result["model"]), get_task("text-classification")
    assert _backend(spec, "auto", record) == "torch"
    with pytest.raises(ConfigError, match="runs on torch only"):
        _backend(spec, "onnx", record)


def test_server_defaults_to_the_childs_own_backend(parent, int8_child):
    spec = get_task("text-classification")
    assert _backend(spec, "auto", registry.get_version(int8_child["model"])) == "onnx-int8"
    assert _backend(spec, "auto", parent) == "onnx"


def test_cli_compress_and_models_show(parent, int8_child):
    from aimass.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["models", "show", int8_child["model"]])
    assert shown.exit_code == 0 and "onnx-int8" in shown.output and "gate" in shown.output
    bad = runner.invoke(app, ["compress", parent.ref, "--method", "onnx", "--set", "oops"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output
    unknown = runner.invoke(app, ["compress", parent.ref, "--method", "zip", "--json"])
    assert unknown.exit_code == 2 and json.loads(unknown.output)["error"]["code"] == "not_found"


def _rows(path: Path) -> tuple[list[str], list[str]]:
    import csv

    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def test_image_models_compress_to_onnx_int8_too(tmp_path):
    spec = get_task("image-classification")
    images, labels = spec.sample_data(per_class=12)
    for i, (data, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "digits" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(data)
    ds = api.import_dataset(tmp_path / "digits", name="digits-compress")
    model = spec.estimator(**spec.fast_params).fit(ds, progress=False)
    parent = api.register(model, "digits-cmp", report=model.evaluate(ds, "test"))
    result = api.compress(parent.ref, "onnx-int8", max_drop=100)
    child = api.load(result["model"])
    assert type(child.runtime_).__name__ == "ImageRuntime" and child.runtime_.int8
    parent_row, child_row = result["table"]
    assert child_row["size_mb"] < 0.5 * parent_row["size_mb"]
    test = ds.inputs("test")
    same = np.mean(np.array(child.predict(test)) == np.array(model.predict(test)))
    assert same >= 0.75
    assert _backend(spec, "auto", registry.get_version(result["model"])) == "onnx-int8"
    quantised = api.load(api.compress(parent.ref, "int8-dynamic", max_drop=100)["model"])
    assert any(isinstance(m, nn.quantized.dynamic.Linear) for m in quantised.net_.modules())
    same = np.mean(np.array(quantised.predict(test)) == np.array(model.predict(test)))
    assert same >= 0.75


def test_the_server_deploys_a_child_version(int8_child):
    from fastapi.testclient import TestClient

    from aimass.serve.app import create_app

    with TestClient(create_app([int8_child["model"]], open_predict=True)) as client:
        name = int8_child["model"].partition(":")[0]
        response = client.post(f"/v1/models/{name}/predict", json={"inputs": ["Shares rose after profits."]})
        assert response.status_code == 200 and response.json()["model"] == int8_child["model"]
        info = client.get("/v1/models").json()["models"][0]
        assert info["backend"] == "onnx-int8"


def test_a_training_method_never_learns_from_the_evaluation_data(small_model, bbc_csv):
    record = api.register(small_model, "cmp-no-dataset")  # fitted on texts, not on a stored dataset
    with pytest.raises(NotFoundError, match="is gone"):
        api.compress(record.ref, "distill", data=bbc_csv)


def test_exporting_an_onnx_child_ships_the_graphs_it_serves(int8_child, tmp_path, monkeypatch):
    from aimass.exporters import export
    from aimass.tasks.text_classification import TextClassifier

    def no_second_export(*args, **kwargs):
        raise AssertionError("the child's stored ONNX folder should have been reused")

    monkeypatch.setattr(TextClassifier, "export_onnx", no_second_export)
    child = registry.get_version(int8_child["model"])
    manifest = export(child.ref, "onnx", tmp_path / "out")
    for name in ("model.onnx", "model.int8.onnx", "tokenizer.json"):
        assert (tmp_path / "out" / name).read_bytes() == (Path(child.path) / "onnx" / name).read_bytes()
    assert manifest["check"]["int8_same_label"] >= 0.75  # the compressor's own check, carried over
    assert manifest["check"]["predict_py_max_abs_diff_proba"] < 0.5


def test_the_onnx_staging_folder_goes_away_with_the_model(parent):
    import gc

    model = get_compressor("onnx").compress(api.load(parent.ref), None, get_task("text-classification"))
    staging = Path(model.onnx_staged_).parent
    assert (staging / "onnx").is_dir() and model.predict(["stocks fell sharply"])
    del model
    gc.collect()
    assert not staging.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -5, 1e308, "lots", True, None])
def test_max_drop_must_be_a_number_0_to_100_before_any_work(bad):
    """NaN passed every gate (a 50-point drop was "accepted"), and "lots" failed with a TypeError
    only after the whole export: each is refused before the model is even looked up."""
    from aimass import jobs

    with pytest.raises(ConfigError, match="max_drop .* must be a number 0-100"):
        api.compress("no-such-model", "onnx", max_drop=bad)
    with pytest.raises(ConfigError, match="max_drop"):
        jobs.submit("compress", {"model": "no-such-model", "method": "onnx", "max_drop": bad})


def test_max_drop_given_as_text_is_read_as_a_number():
    from aimass import jobs

    queued = jobs.submit("compress", {"model": "cmp:1", "method": "onnx", "max_drop": " 2.5"})
    assert queued["params"]["max_drop"] == 2.5
    jobs.cancel(queued["id"])


def test_cli_refuses_a_max_drop_of_nan():
    from aimass.cli import app

    result = CliRunner().invoke(
        app, ["compress", "no-such-model", "--method", "onnx", "--max-drop", "nan", "--json"]
    )
    assert result.exit_code == 2 and json.loads(result.output)["error"]["code"] == "config_error"


def test_the_served_onnx_folder_is_sealed_and_exported_again_when_changed(parent, int8_child):
    """The cache ``models/NAME/vN/onnx`` was written after the version was sealed and trusted as it
    was: a runtime.json with its classes reordered changed every answer, with no error."""
    from aimass.errors import IntegrityError
    from aimass.serve.engine import exported

    spec = get_task("text-classification")
    exported(parent, spec)
    runtime = Path(parent.path) / "onnx" / "runtime.json"
    assert (runtime.parent / "SHA256SUMS").is_file()
    meta = json.loads(runtime.read_text())
    runtime.write_text(json.dumps({**meta, "classes": meta["classes"][::-1]}))
    exported(parent, spec)  # a cache: exported again, not refused
    assert json.loads(runtime.read_text())["classes"] == meta["classes"]
    child = registry.get_version(int8_child["model"])
    theirs = Path(child.path) / "onnx" / "runtime.json"  # part of the child's own seal: refused
    original = theirs.read_text()
    theirs.write_text(json.dumps({**json.loads(original), "classes": meta["classes"][::-1]}))
    try:
        with pytest.raises(IntegrityError, match="runtime.json"):
            exported(child, spec)
    finally:
        theirs.write_text(original)
