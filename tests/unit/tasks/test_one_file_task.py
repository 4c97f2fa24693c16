"""A new task is one file: this module defines a task (keyword tagging of short texts by hashed-word
centroids, numpy only), registers it, and trains, serves and exports it through aimass's own API,
CLI, REST app and exporter; no other file knows it exists.

The task reuses the shared classification pieces (:mod:`aimass.tasks.classification`) and declares
only what is its own: config, estimator, request, handler, sample data and one export recipe.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field, field_validator
from typer.testing import CliRunner

from aimass import api
from aimass.estimator import parse_config
from aimass.exporters import Recipe, export
from aimass.tasks import get_task, register_task, unregister_task
from aimass.tasks.classification import ClassificationTask, Classifier, check_items
from aimass.tasks.classification import Handler as ClassifierHandler
from aimass.testing import check_task

NAME = "keyword-tags"
DIM = 256
VOCAB = {  # a few words per tag; every sample text draws from its tag's words and shared filler
    "cooking": ["oven", "flour", "simmer", "garlic", "recipe", "bake"],
    "sailing": ["mast", "harbour", "tide", "anchor", "keel", "wind"],
    "music": ["guitar", "chord", "tempo", "melody", "drum", "choir"],
}
FILLER = ["the", "a", "today", "with", "and", "some"]


def features(texts: list[str], dim: int = 256) -> np.ndarray:
    """Hashed bag of lower-cased words, L2-normalised rows (also copied into the export)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, zlib.crc32(word.encode()) % dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class Config(BaseModel):
    temperature: float = Field(default=10.0, gt=0)
    seed: int = 0


class KeywordTagger(Classifier):
    """Tag a text with the class whose mean hashed-word vector it is closest to.

    Args:
        temperature: scale of the cosine similarities before the softmax.
        seed: kept for the contract (the fit is deterministic).
    """

    task = NAME

    def __init__(self, temperature=10.0, seed=0):
        self.temperature = temperature
        self.seed = seed

    def fit(self, data, valid=None, *, run_dir=None, resume=False, progress=True) -> KeywordTagger:
        cfg = parse_config(Config, self.get_params(), "KeywordTagger")
        began = time.perf_counter()
        texts, labels = (data.texts("train"), data.labels("train")) if hasattr(data, "texts") else data
        self.classes_ = sorted(set(labels))
        X, y = features(list(texts)), np.array(labels)
        centroids = np.stack([X[y == c].mean(0) for c in self.classes_])
        self.centroids_ = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        self.temperature_ = float(cfg.temperature)
        digest = getattr(data, "digest", None)
        self.data_digest_ = (
            digest or hashlib.sha256(json.dumps([list(texts), list(labels)]).encode()).hexdigest()
        )
        self.timings_ = {"fit": time.perf_counter() - began}
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.check_fitted()
        logits = features([texts] if isinstance(texts, str) else list(texts)) @ self.centroids_.T
        logits = logits * self.temperature_
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def evaluate(self, data, split: str = "test", top_k: int = 10) -> dict:
        texts, labels = (data.texts(split), data.labels(split)) if hasattr(data, "texts") else data
        return self._report(list(texts), list(labels), top_k)

    FITTED = ("classes_", "temperature_", "data_digest_")

    def save(self, path) -> Path:
        from safetensors.numpy import save_file

        self.check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"centroids": self.centroids_}, str(path / "model.safetensors"))
        self._write_meta(path)
        return path

    @classmethod
    def load(cls, path) -> KeywordTagger:
        from safetensors.numpy import load_file

        model, _ = cls._read_meta(Path(path))
        model.centroids_ = load_file(str(Path(path) / "model.safetensors"))["centroids"]
        return model


class Request(BaseModel):
    inputs: str | list[str] = Field(..., description="One text or a list of at most 64.")

    @field_validator("inputs")
    @classmethod
    def _check(cls, value):
        return check_items([value] if isinstance(value, str) else value, 64, "text", '{"inputs": ["..."]}')


class Handler(ClassifierHandler):
    estimator = KeywordTagger


# ------------------------------------------------------------------ export: numpy only
RUNNER = """

class KeywordModel:
    def __init__(self, folder):
        folder = Path(folder)
        self.classes_ = json.loads((folder / "labels.json").read_text())
        self.centroids = np.load(folder / "centroids.npy")
        self.temperature = json.loads((folder / "preprocessing.json").read_text())["temperature"]

    def predict_proba(self, texts):
        logits = features(list(texts)) @ self.centroids.T * self.temperature
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict(self, texts):
        return [self.classes_[i] for i in self.predict_proba(texts).argmax(1)]


if __name__ == "__main__":
    model = KeywordModel(Path(__file__).parent)
    texts = sys.argv[1:]
    for text, row in zip(texts, model.predict_proba(texts)):
        scores = {c: round(float(p), 6) for c, p in zip(model.classes_, row)}
        print(json.dumps({"input": text, "label": max(scores, key=scores.get), "scores": scores}))
"""


def write_export(model, folder: Path) -> dict:
    """centroids.npy, preprocessing.json and predict.py (the hashing function is this module's own)."""
    np.save(folder / "centroids.npy", model.centroids_, allow_pickle=False)
    (folder / "preprocessing.json").write_text(json.dumps({"temperature": model.temperature_}))
    header = "import json\nimport sys\nimport zlib\nfrom pathlib import Path\n\nimport numpy as np\n\n\n"
    (folder / "predict.py").write_text(header + inspect.getsource(features) + RUNNER)
    return {}


class KeywordTags(ClassificationTask):
    """The spec: everything aimass needs to train, serve and export the task."""

    estimator = KeywordTagger
    config = Config
    data_kind = "text"
    item_noun = "texts"
    request = Request
    handler = Handler
    sample_request = {"inputs": ["bake the bread with garlic and flour"]}

    @classmethod
    def sample_data(cls, per_class: int = 12) -> tuple[list[str], list[str]]:
        rng = np.random.default_rng(0)
        texts, labels = [], []
        for tag, words in VOCAB.items():
            for _ in range(per_class):
                picked = list(rng.choice(words, 4)) + list(rng.choice(FILLER, 2))
                texts.append(" ".join(rng.permutation(picked)))
                labels.append(tag)
        return texts, labels

    @classmethod
    def export_recipes(cls) -> dict:
        recipe = Recipe(
            write=write_export,
            script=None,  # write_export writes predict.py itself
            runner="KeywordModel",
            packages=("numpy",),
            samples=lambda: cls.sample_data(per_class=2)[0],
            unit="text",
            example=("bake the bread",),
            how="Hashed words, cosine to each tag's centroid, a softmax.",
        )
        return {"safetensors": recipe}


# ---------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def task():
    spec = register_task(NAME)(KeywordTags)
    yield spec
    unregister_task(NAME)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory) -> Path:
    texts, labels = KeywordTags.sample_data(per_class=30)
    path = tmp_path_factory.mktemp("tags") / "tags.csv"
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels)))
    return path


def test_the_one_file_task_meets_the_contract(task, tmp_path):
    assert get_task(NAME) is task
    results = check_task(task, workdir=tmp_path)
    assert results["onnx_handler"].startswith("n/a") and results["export"] == "ok"


def test_trained_from_the_cli_with_its_own_options_served_and_exported(task, csv_path, tmp_path):
    from aimass.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["tasks", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {"task": NAME, "options": {"temperature": 10.0, "seed": 0}} in json.loads(listed.output)
    helped = runner.invoke(app, ["train", "--help"], terminal_width=400)
    assert helped.exit_code == 0 and NAME in helped.output and "text-generation" in helped.output

    trained = runner.invoke(
        app,
        [
            "train",
            "--task",
            NAME,
            "--data",
            str(csv_path),
            "--name",
            "tags",
            "--set",
            "temperature=20",
            "--json",
        ],
    )
    assert trained.exit_code == 0, trained.output
    result = json.loads(trained.output)
    assert result["metrics"]["accuracy"] >= 0.9
    record = api.load(result["model"])
    assert record.get_params() == {"temperature": 20, "seed": 0} and record.task == NAME

    bad = runner.invoke(
        app, ["train", "--task", NAME, "--data", str(csv_path), "--set", "layers=2", "--json"]
    )
    assert bad.exit_code == 2 and "has no option 'layers'" in bad.output

    from aimass.serve.app import create_app

    with TestClient(create_app([result["model"]], open_predict=True)) as client:
        body = client.post("/v1/models/tags/predict", json={"inputs": ["the guitar and drum tempo"]}).json()
        assert body["predictions"][0]["label"] == "music" and body["model"] == result["model"]
        refused = client.post("/v1/models/tags/predict", json={"inputs": []})
        assert refused.status_code == 422 and "at least one text" in refused.json()["error"]["message"]

    manifest = export(result["model"], "safetensors", tmp_path / "out")
    assert manifest["task"] == NAME and manifest["check"]["predict_py_same_label"] == 1.0
    assert {"predict.py", "centroids.npy", "labels.json", "README.md"} <= set(manifest["files"])
