"""``aimass export``: folders that run without aimass, the ONNX ones checked in a clean virtual
environment that has only onnxruntime, numpy, tokenizers and pillow."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aimass import api
from aimass.cli import app
from aimass.errors import ConfigError
from aimass.exporters import export
from aimass.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
CLEAN_PACKAGES = ("onnxruntime", "numpy", "tokenizers", "pillow")
TEXTS = [
    "The striker scored twice as United won the cup final.",
    "Parliament voted on the budget bill after a long debate.",
    "The new phone has a faster chip and a better camera.",
    "Shares fell after the bank cut its profit forecast.",
]


def _env() -> dict:
    """This environment less anything that would let the clean Python find aimass."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONNOUSERSITE": "1"}


@pytest.fixture(scope="session")
def clean_python(tmp_path_factory) -> Path:
    """A virtual environment with only the ONNX exports' packages, at aimass's pins."""
    pins = dict(
        d.split("==") for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    folder = tmp_path_factory.mktemp("clean-venv")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300, env=_env())
    python = folder / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", *[f"{p}=={pins[p]}" for p in CLEAN_PACKAGES]]
    subprocess.run(install, check=True, timeout=600, env=_env(), capture_output=True)
    return python


def _predict(python: Path, folder: Path, args: list[str]) -> list[dict]:
    done = subprocess.run(
        [str(python), "predict.py", *args],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def _without_aimass(folder: Path, args: list[str]) -> list[dict]:
    """predict.py run by this Python (torch is here) with ``import aimass`` made to fail."""
    code = (
        "import runpy, sys; sys.modules['aimass'] = None; "
        f"sys.argv = ['predict.py', *{args!r}]; runpy.run_path('predict.py', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def _assert_same(lines: list[dict], ref: str, inputs: list) -> None:
    """Labels as ``api.predict`` gives them, probabilities within 1e-4 of the estimator's."""
    model = api.load(ref)
    assert [line["input"] for line in lines] == inputs
    assert [line["label"] for line in lines] == api.predict(ref, inputs)
    got = np.array([[line["scores"][c] for c in model.classes_] for line in lines])
    assert np.abs(got - model.predict_proba(inputs)).max() < 1e-4


@pytest.fixture(scope="module")
def text_ref(small_model):
    return api.register(small_model, "export-text").ref


@pytest.fixture(scope="module")
def image_ref():
    spec = get_task("image-classification")
    images, labels = spec.sample_data(per_class=8)
    model = spec.estimator(**spec.fast_params).fit((images, labels), progress=False)
    return api.register(model, "export-image").ref


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[str]:
    images, _ = get_task("image-classification").sample_data(per_class=8)
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in (0, 9, 17):
        paths.append(folder / f"digit{i}.png")
        paths[-1].write_bytes(images[i])
    y, x = np.mgrid[0:120, 0:200]
    photo = np.stack([x % 256, y * 2 % 256, (x + y) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=85)
    paths.append(folder / "photo.jpg")
    paths[-1].write_bytes(buffer.getvalue())
    return [str(p) for p in paths]


def test_text_onnx_runs_in_a_clean_venv(text_ref, clean_python, tmp_path):
    result = export(text_ref, "onnx", tmp_path / "text-onnx")
    folder = Path(result["out"])
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "labels.json", "preprocessing.json"} <= set(
        result["files"]
    )
    assert {"lexical.json", "lexical_idf.npy", "lexical_weight.npy", "predict.py", "README.md"} <= set(
        result["files"]
    )
    assert not list(folder.glob("*.safetensors")) and not list(folder.glob(".*"))
    assert result["check"]["predict_py_max_abs_diff_proba"] < 1e-4
    _assert_same(_predict(clean_python, folder, TEXTS), text_ref, TEXTS)
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS[:2]))
    int8 = _predict(clean_python, folder, ["--int8", "--file", str(tmp_path / "texts.json")])
    assert [line["input"] for line in int8] == TEXTS[:2]
    clean = subprocess.run(
        [str(clean_python), "-c", "import aimass"], cwd=folder, env=_env(), capture_output=True
    )
    assert clean.returncode != 0 and b"No module named 'aimass'" in clean.stderr
    readme = (folder / "README.md").read_text()
    assert "pip install onnxruntime==" in readme and "tokenizers==" in readme and "torch" not in readme


def test_image_onnx_runs_in_a_clean_venv(image_ref, image_files, clean_python, tmp_path):
    result = export(image_ref, "onnx", tmp_path / "image-onnx")
    folder = Path(result["out"])
    assert {"model.onnx", "model.int8.onnx", "labels.json", "preprocessing.json", "predict.py"} <= set(
        result["files"]
    )
    assert result["check"]["max_abs_diff_proba"] < 1e-4
    assert result["check"]["predict_py_max_abs_diff_proba"] < 1e-4
    _assert_same(_predict(clean_python, folder, image_files), image_ref, image_files)
    for banned in ("aimass", "torch", "sklearn"):
        done = subprocess.run([str(clean_python), "-c", f"import {banned}"], env=_env(), capture_output=True)
        assert done.returncode != 0


def test_safetensors_exports_run_without_aimass(text_ref, image_ref, image_files, tmp_path):
    text = export(text_ref, "safetensors", tmp_path / "text-st")
    assert {"model.safetensors", "config.json", "tokenizer.json", "lexical_idf.npy"} <= set(text["files"])
    assert text["check"]["predict_py_max_abs_diff_proba"] < 1e-4
    _assert_same(_without_aimass(Path(text["out"]), TEXTS), text_ref, TEXTS)
    runner = CliRunner()
    done = runner.invoke(
        app, ["export", image_ref, "--format", "safetensors", "--out", str(tmp_path / "img-st"), "--json"]
    )
    assert done.exit_code == 0, done.output
    image = json.loads(done.output)
    assert image["check"]["predict_py_max_abs_diff_proba"] < 1e-4
    _assert_same(_without_aimass(Path(image["out"]), image_files), image_ref, image_files)


def test_refusals(image_ref, tmp_path):
    with pytest.raises(ConfigError, match="Unknown export format 'tflite'; available: onnx, safetensors"):
        export(image_ref, "tflite", tmp_path / "a")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export(image_ref, "onnx", busy)
    with pytest.raises(ConfigError, match="not a folder that `aimass export` wrote"):
        export(image_ref, "onnx", busy, force=True)
    assert (busy / "notes.txt").read_text() == "mine"
    done = CliRunner().invoke(app, ["export", image_ref, "--out", str(busy), "--json"])
    assert done.exit_code == 2 and json.loads(done.output)["error"]["code"] == "config_error"
    earlier = export(image_ref, "safetensors", tmp_path / "earlier")
    with pytest.raises(ConfigError) as refused:
        export(image_ref, "safetensors", earlier["out"])
    assert "--force" in refused.value.hint
    again = export(image_ref, "safetensors", earlier["out"], force=True)
    assert again["out"] == earlier["out"] and not list(tmp_path.glob(".earlier*"))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_predict_py_tfidf_matches_scikit_learn(language, tmp_path):
    """The TF-IDF branch both text scripts re-implement gives scikit-learn's scores (word and
    character n-grams), from files numpy reads without pickle."""
    import importlib.util

    from aimass import standalone
    from aimass.tfidf import settings_for
    from aimass.tfidf.branch import Lexical

    texts = (
        TEXTS
        + ["这家酒店的服务很好，房间也很干净。", "质量太差了，用了两天就坏了。", "服务  很好 very good"] * 2
    )
    lexical = Lexical(settings_for(language)).fit(texts)
    meta, tensors = lexical.state()
    (tmp_path / "lexical.json").write_text(json.dumps(meta, ensure_ascii=False))
    np.save(tmp_path / "lexical_idf.npy", tensors["lexical.idf"].numpy(), allow_pickle=False)
    weight = np.random.default_rng(0).normal(size=(3, lexical.size)).astype(np.float32)
    np.save(tmp_path / "lexical_weight.npy", weight, allow_pickle=False)
    queries = texts + ["nothing known here", "The STRIKER scored; the striker scored!"]
    want = lexical.transform(queries).to_dense().numpy() @ weight.T
    for script in ("text_onnx.py", "text_torch.py"):
        spec = importlib.util.spec_from_file_location(script[:-3], Path(standalone.__file__).parent / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        tfidf = module.Tfidf(tmp_path) if script == "text_onnx.py" else module.Tfidf(tmp_path, weight)
        assert np.abs(tfidf.scores(queries) - want).max() < 1e-5, script


@pytest.mark.parametrize("name", ["text_onnx.py", "text_torch.py", "image_onnx.py", "image_torch.py"])
def test_exported_scripts_stand_alone_with_the_shared_code_written_in(name):
    """The scripts share image_prep.py / text_prep.py from one source; the exported text has
    that code written in and imports nothing of aimass."""
    from aimass import standalone

    text = standalone.script(name)
    compile(text, name, "exec")
    assert not re.search(r"^\s*(from|import) aimass", text, re.MULTILINE), name
    shared = "def read_image(" if name.startswith("image") else "class Tfidf:"
    assert text.count(shared) == 1 and "# end shared" not in text
