"""``aimass evaluate`` on data a user brings: labels the model never saw, its own training rows, and
the top-losses table the command line prints."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import PAIR_STEPS, bbc_sample, shared_backbones, write_csv
from typer.testing import CliRunner

from aimass import api
from aimass.cli import app
from aimass.errors import DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bbc_csv):
    """A small BBC model trained on an imported dataset, in its own AIMASS_HOME: (ref, dataset)."""
    from aimass.tasks.text_classification import TextClassifier

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIMASS_HOME", str(shared_backbones(tmp_path_factory.mktemp("eval") / "home")))
        ds = api.import_dataset(bbc_csv, name="bbc-eval")
        params = {"max_length": 64, "unfreeze": 1, "epochs_top": 2, "pair_steps": PAIR_STEPS, "seed": 0}
        model = TextClassifier(backbone="minilm-l6", **params).fit(ds, progress=False)
        record = api.register(model, "news-eval", report=model.evaluate(ds, "test"))
        yield record.ref, ds


def test_labels_none_of_the_models_classes_are_a_data_error(trained, tmp_path):
    ref, _ = trained
    texts, _ = bbc_sample(per_class=2)
    other = write_csv(tmp_path / "zh.csv", [(t, "好评" if i % 2 else "差评") for i, t in enumerate(texts)])
    with pytest.raises(DataError) as caught:
        api.evaluate(ref, other)
    message = caught.value.message
    assert "好评, 差评" in message and "business, entertainment, politics" in message
    assert "relabel" in caught.value.hint

    result = CliRunner().invoke(app, ["evaluate", ref, "--data", other])
    assert result.exit_code == 2, result.output
    assert "Error (data_error)" in result.output and "Traceback" not in result.output


def test_labels_partly_unknown_are_listed(trained, tmp_path):
    ref, _ = trained
    texts, labels = bbc_sample(per_class=2)
    rows = [(t, "weather" if i == 0 else label) for i, (t, label) in enumerate(zip(texts, labels))]
    report = api.evaluate(ref, write_csv(tmp_path / "mixed.csv", [*rows, ("", "business")]))
    assert report["unknown_labels"] == ["weather"] and report["n"] == len(rows)
    assert report["rejected"] == 1 and "mixed.csv" in report["warnings"][0]  # the empty text, said


def test_rows_the_model_trained_on_are_counted_and_warned_about(trained, bbc_csv):
    ref, ds = trained
    seen = len(ds.texts("train")) + len(ds.texts("valid"))
    assert api.evaluate(ref)["overlap_with_train"] == 0  # its own held-out split
    assert api.evaluate(ref, str(bbc_csv))["overlap_with_train"] == seen  # the file it was trained on

    result = CliRunner().invoke(app, ["evaluate", ref, "--data", str(bbc_csv)])
    assert result.exit_code == 0, result.output
    assert "Warning:" in result.stderr and "overlap_with_train" in result.stderr
    clean = CliRunner().invoke(app, ["evaluate", ref])
    assert clean.exit_code == 0 and "overlap_with_train" not in clean.output


def test_top_losses_table_shows_ten_rows_with_loss_and_both_probabilities(trained):
    ref, _ = trained
    result = CliRunner().invoke(app, ["evaluate", ref])
    assert result.exit_code == 0, result.output
    table = result.stdout.split("Top losses")[1].split("Candidates")[0]
    header = next(line for line in table.splitlines() if "actual" in line)
    assert [h.strip() for h in header.strip("┃ ").split("┃")][:4] == [
        "actual",
        "p(actual)",
        "predicted (p)",
        "loss",
    ]
    rows = [line for line in table.splitlines() if re.match(r"│ [a-z]+ +│ [01]\.\d{4} ", line)]
    assert len(rows) == 10  # a row's first line (a long text wraps onto more)


def test_a_held_out_image_folder_of_one_class_is_scored_and_its_training_images_counted(
    tmp_path, monkeypatch
):
    """``aimass evaluate pets --data FOLDER``: a folder of 4 images of one class is scored (training
    data needs 10 and two classes); the 2 that trained the model count in ``overlap_with_train``
    though they are read from the user's folder, not the stored dataset; nothing new is stored."""
    from aimass.tasks.image_classification import ImageClassification, ImageClassifier

    monkeypatch.setenv("AIMASS_HOME", str(shared_backbones(tmp_path / "home")))
    images, labels = ImageClassification.sample_data(per_class=8)
    for i, (data, label) in enumerate(zip(images, labels)):
        (tmp_path / "digits" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "digits" / label / f"{i}.png").write_bytes(data)
    ds = api.import_dataset(tmp_path / "digits", name="digits")
    model = ImageClassifier(**ImageClassification.fast_params).fit(ds, progress=False)
    ref = api.register(model, "digits").ref
    trained = ds.inputs("train")[:2]
    held_out = tmp_path / "more" / ds.labels("train")[0]
    held_out.mkdir(parents=True)
    for i, stored in enumerate(trained):
        (held_out / f"seen{i}.png").write_bytes(Path(stored).read_bytes())
    noise = np.random.default_rng(0).integers(0, 255, (2, 8, 8), dtype=np.uint8)
    for i, pixels in enumerate(noise):  # two the model never saw
        Image.fromarray(pixels).save(held_out / f"new{i}.png")
    (held_out / "broken.png").write_bytes(b"not an image")  # left out, and said
    report = api.evaluate(ref, str(tmp_path / "more"))
    assert report["n"] == 4 and report["overlap_with_train"] == 2
    assert report["rejected"] == 1 and "broken.png" in report["warnings"][0]
    assert [d.name for d in api.list_datasets()] == ["digits"]
