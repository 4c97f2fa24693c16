"""What an audit of evaluation found: class names holding ``$``, confusion matrices of hundreds of
classes, macro-F1 on test data that lacks some of the model's classes, Rich markup in evaluated data,
data of another kind than the model's task, and ROUGE-L on Chinese."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from tests.conftest import bbc_sample, shared_backbones, write_csv
from typer.testing import CliRunner

from aimass import api, workflow
from aimass.cli import app
from aimass.cli.shell import table
from aimass.errors import DataError
from aimass.evaluation import classification_report, plots
from aimass.llm.metrics import rouge_l, words
from aimass.tasks import get_task

DOLLARS = ["tax $^$ x", "$10-$20", "a_b $x_1$"]  # a TeX parse error, and two that drew as math


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bbc_csv):
    """A quick BBC classifier registered in its own AIMASS_HOME: (model, dataset, ref)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIMASS_HOME", str(shared_backbones(tmp_path_factory.mktemp("gaps") / "home")))
        ds = api.import_dataset(bbc_csv, name="bbc-gaps")
        spec = get_task("text-classification")
        model = spec.estimator(**spec.fast_params, baselines=False, seed=0).fit(ds, progress=False)
        record = api.register(model, "gaps", report=model.evaluate(ds, "test"))
        yield model, ds, record.ref


def _matrix_report(labels: list[str], matrix) -> dict:
    return {"accuracy": 0.5, "confusion_matrix": {"labels": labels, "matrix": np.asarray(matrix).tolist()}}


# ------------------------------------------------------------------ 1. "$" in class names
def test_class_names_with_dollars_are_drawn_as_written(tmp_path):
    report = _matrix_report(DOLLARS, np.eye(3, dtype=int))
    assert plots.confusion_png(report, tmp_path / "cm.png").stat().st_size > 0  # was a ParseSyntaxException
    fig = plots.confusion_figure(report)
    ticks = fig.axes[0].get_xticklabels()
    assert [t.get_text() for t in ticks] == DOLLARS and not any(t.get_parse_math() for t in ticks)
    fig.canvas.draw()  # a caller drawing the figure itself gets the names literally too
    plt.close(fig)

    per_label = {
        "micro_f1": 0.5,
        "per_class": {c: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for c in DOLLARS},
    }
    assert plots.per_label_png(per_label, tmp_path / "per_label.png").stat().st_size > 0
    losses = [{"image": str(tmp_path / "gone.png"), "predicted": DOLLARS[0], "actual": DOLLARS[1]}]
    losses[0].update(probability=0.9, loss=2.3)
    assert plots.top_losses_png(losses, tmp_path / "top.png", classes=DOLLARS).stat().st_size > 0


def test_a_plot_that_fails_is_logged_and_the_version_keeps_its_report(trained, caplog):
    model, ds, _ = trained
    report = model.evaluate(ds, "test")
    labels = report["confusion_matrix"]["labels"]
    broken = {**report, "confusion_matrix": {"labels": labels, "matrix": [[1, 2], [3]]}}  # ragged: no picture
    with caplog.at_level(logging.WARNING, logger="aimass.workflow"):
        record = api.register(model, "gaps-unplotted", report=broken)  # was: raised after registering
    folder = Path(record.path)
    assert json.loads((folder / "evaluation.json").read_text())["accuracy"] == report["accuracy"]
    assert not list(folder.glob("*.png")) and not list(folder.glob(".*.tmp"))
    assert "were not drawn" in caplog.text and "ValueError" in caplog.text
    assert api.show_model(record.ref)["evaluation"]["n"] == report["n"]
    assert api.load(record.ref).predict(ds.texts("test")[:2])  # the version is whole and loads


# ------------------------------------------------------------------ 2. many classes
def test_a_confusion_matrix_of_300_classes_draws_in_bounded_size(tmp_path):
    n = 300
    matrix = np.eye(n, dtype=int) * 5
    matrix[7, 123] = matrix[250, 7] = 3  # the most confused: 7, 123 and 250
    report = _matrix_report([f"class {i}" for i in range(n)], matrix)
    fig = plots.confusion_figure(report)
    width, height = fig.get_size_inches() * 100  # the PNG's dpi
    assert width <= 2000 and height <= 2000
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert len(shown) == 40 and {"class 7", "class 123", "class 250"} <= set(shown)
    assert "the 40 most confused of 300 classes" in ax.get_title() and len(ax.texts) == 40 * 40
    plt.close(fig)

    with Image.open(plots.confusion_png(report, tmp_path / "cm.png")) as png:
        assert png.size[0] <= 2000 and png.size[1] <= 2000


def test_a_per_label_chart_of_300_labels_draws_in_bounded_size(tmp_path):
    scores = {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    report = {"micro_f1": 0.5, "per_class": {f"tag {i}": {**scores, "support": i} for i in range(300)}}
    with Image.open(plots.per_label_png(report, tmp_path / "per_label.png")) as png:
        assert png.size[1] <= 3000  # was 13,650 pixels high


# ------------------------------------------------------------------ 3. macro-F1
def test_macro_f1_leaves_out_classes_the_test_data_lacks_as_sklearn_does():
    from sklearn.metrics import f1_score

    classes = ["business", "entertainment", "politics", "sport", "tech"]
    truth, predicted = ["tech"] * 8, ["tech"] * 7 + ["sport"]
    report = classification_report(truth, predicted, classes)
    assert report["accuracy"] == 0.875
    assert report["macro_f1"] == round(f1_score(truth, predicted, average="macro"), 4) == 0.4667  # was 0.1867
    assert list(report["per_class"]) == classes and report["per_class"]["business"]["support"] == 0

    truth[0] = "weather"  # a label the model never saw: a class it always misses, as in sklearn
    report = classification_report(truth, predicted, classes)
    assert report["macro_f1"] == round(f1_score(truth, predicted, average="macro", zero_division=0), 4)


# ------------------------------------------------------------------ 4. Rich markup in data
MARKUP = "[/] [link=file:///etc/passwd]click[/link] [bold]x"


def test_a_table_prints_markup_in_cells_headers_and_title_as_written():
    console = Console(record=True, width=300)
    console.print(table([{"text": MARKUP, MARKUP: 1.5}], ["text", MARKUP], title=MARKUP))
    shown = console.export_text()
    assert shown.count(MARKUP) == 3 and "1.5000" in shown


def test_evaluate_prints_data_holding_markup(trained, tmp_path):
    _, _, ref = trained
    texts, labels = bbc_sample(per_class=2)
    rows = [(f"[/][i] {t}", "[red]x[/]" if i == 0 else y) for i, (t, y) in enumerate(zip(texts, labels))]
    result = CliRunner().invoke(app, ["evaluate", ref, "--data", write_csv(tmp_path / "markup.csv", rows)])
    assert result.exit_code == 0, result.output  # was: Error (internal): MarkupError
    assert "[/][i]" in result.output and "[red]x[/]" in result.output, result.output


# ------------------------------------------------------------------ 5. data of another kind
def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _other_kinds(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """kind -> (a file of it, the words its refusal uses)."""
    texts, labels = bbc_sample(per_class=8, chars=200)
    ner = [{"text": t, "entities": [[0, 4, "ORG"]]} for t in texts[:20]]
    multi = [
        {"text": t, "labels": sorted({y, labels[(i + 9) % len(labels)]})}
        for i, (t, y) in enumerate(zip(texts, labels))
    ]
    chat = [
        {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]}
        for t in texts[:10]
    ]
    return {
        "token-classification": (_jsonl(tmp_path / "ner.jsonl", ner), "texts with entity spans"),
        "text-multilabel": (_jsonl(tmp_path / "multi.jsonl", multi), "several labels each"),
        "text-generation": (_jsonl(tmp_path / "chat.jsonl", chat), "conversations"),
    }


def test_data_of_another_kind_than_the_models_task_is_a_data_error(trained, tmp_path):
    _, _, ref = trained
    for task, (path, _) in _other_kinds(tmp_path).items():
        with pytest.raises(
            DataError
        ) as caught:  # a file: was "No usable rows", a silent score, "which column"
            api.evaluate(ref, path)
        error = caught.value
        assert f"data for a {task} model" in error.message and "texts with one label each" in error.message
        assert f"--task {task}" in error.hint and "leave out --data" in error.hint

    for task, (path, words_) in _other_kinds(tmp_path).items():
        stored = api.import_dataset(path, name=f"gaps-{task}")
        with pytest.raises(DataError) as caught:  # stored: was a TypeError, a silent score, "Use inputs()"
            api.evaluate(ref, stored.name)
        assert words_ in caught.value.message and task in caught.value.message

    result = CliRunner().invoke(app, ["evaluate", ref, "--data", "gaps-token-classification"])
    assert result.exit_code == 2 and "Error (data_error)" in result.output and "internal" not in result.output


def test_a_multi_label_model_is_still_scored_on_single_label_data():
    tags = SimpleNamespace(task="text-multilabel", ref="tags:1")
    workflow._check_kind(tags, "text", "a CSV table")  # one label is a set of one
    workflow._check_kind(SimpleNamespace(task="image-multilabel", ref="photos:1"), "image", "a folder")
    with pytest.raises(DataError, match="data for a token-classification model"):
        workflow._check_kind(tags, "entities", "a JSONL file")


# ------------------------------------------------------------------ 6. ROUGE-L
def test_rouge_l_counts_each_chinese_or_japanese_character_as_a_word():
    assert rouge_l(["北京是中国的首都"], ["北京是中国的首都"]) == 1.0  # was 0.0
    assert rouge_l(["今天天气很好"], ["今天天气不错"]) == pytest.approx(4 / 6)
    assert words("東京タワーへ行った") == list("東京タワーへ行った")
    assert words("2024年GDP") == ["2024", "年", "gdp"]


def test_rouge_l_of_english_is_unchanged():
    """The figures of the tokeniser before Chinese was counted (``[a-z0-9]+`` runs)."""
    pairs = {
        ("the cat sat on the mat", "the cat is on the mat"): 0.8333333333333334,
        ("police arrest man", "man arrested by police"): 0.28571428571428575,
        (
            "Profits at US media giant TimeWarner jumped 76% to $1.13bn",
            "TimeWarner profits jump 76%",
        ): 0.26666666666666666,
        ("Don't stop-believing, 2024 edition", "dont stop believing 2024"): 0.6,
        ("café naïve résumé", "cafe naive resume"): 0.0,
        ("Hello!", "hello"): 1.0,
    }
    for (prediction, reference), score in pairs.items():
        assert rouge_l([prediction], [reference]) == pytest.approx(score, abs=1e-12)
