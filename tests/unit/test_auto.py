"""``aimass auto``: task detection, the up-front budget check, a real small run and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import bbc_sample
from typer.testing import CliRunner

from aimass import api
from aimass.autolearn import auto, dataset_task, detect_task
from aimass.errors import ConfigError, DataError
from aimass.store import registry


def write_csv(path: Path, texts: list[str], labels: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return path


@pytest.fixture(scope="module")
def three_topics(tmp_path_factory) -> Path:
    """40 BBC articles (300 characters) of each of 3 topics: enough per class for a validation
    split, so auto searches (fewer than 24 per class would be few-shot data)."""
    texts, labels = bbc_sample(per_class=40, chars=300)
    keep = [i for i, label in enumerate(labels) if label in ("business", "politics", "sports")]
    path = tmp_path_factory.mktemp("auto") / "three_topics.csv"
    return write_csv(path, [texts[i] for i in keep], [labels[i] for i in keep])


@pytest.fixture(scope="module")
def ran(three_topics, tmp_path_factory):
    """One real auto run (search included) on the small CSV; the report and the progress calls."""
    calls = []
    run_dir = tmp_path_factory.mktemp("auto-run")
    report = auto(
        three_topics,
        time_budget="60s",
        name="auto-news",
        progress=False,
        on_progress=lambda fraction, message: calls.append((fraction, message)),
        run_dir=run_dir,
    )
    return report, calls, run_dir


def test_a_table_is_text_and_a_folder_of_images_is_image(bbc_csv, tmp_path):
    from PIL import Image

    assert detect_task(bbc_csv)[0] == "text-classification"
    for label in ("cat", "dog"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((16, 16, 3), 40 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / label / f"{i}.png")
    task, why = detect_task(tmp_path / "pets")
    assert task == "image-classification" and "images" in why


def test_a_folder_or_archive_of_documents_is_text(tmp_path):
    import shutil

    from aimass.data import bbc_news_documents

    folder = bbc_news_documents(tmp_path / "news", per_class=2, formats=("pdf", "docx"))
    task, why = detect_task(folder)
    assert task == "text-classification" and "documents" in why
    archive = shutil.make_archive(str(tmp_path / "news"), "zip", tmp_path, "news")
    task, why = detect_task(archive)
    assert task == "text-classification" and "archive" in why and "documents" in why


@pytest.mark.parametrize("kind", ["binary file", "empty folder", "missing"])
def test_a_layout_that_names_no_task_is_a_clear_error(tmp_path, kind):
    target = tmp_path / "thing"
    if kind == "binary file":
        target = tmp_path / "weights.bin"
        target.write_bytes(b"\x00\x01")
    elif kind == "empty folder":
        target.mkdir()
    with pytest.raises(DataError) as caught:
        detect_task(target)
    assert caught.value.hint
    assert "exist" in caught.value.message or "Cannot tell the task" in caught.value.message


def test_a_budget_too_small_is_refused_before_any_work(bbc_csv):
    datasets, versions = len(api.list_datasets()), len(registry.list_versions())
    with pytest.raises(ConfigError) as caught:
        auto(bbc_csv, time_budget="2s", progress=False)
    assert "too small" in caught.value.message and "--time-budget" in caught.value.hint
    assert len(api.list_datasets()) == datasets, "nothing may be imported"
    assert len(registry.list_versions()) == versions, "nothing may be trained"


def test_a_stored_dataset_is_read_not_imported_again_and_checked_up_front(bbc_csv):
    """``data=`` names an imported dataset (what the console's wizard has): its task comes from its
    kind of items, nothing is imported again, and a budget too small is refused before any work."""
    ds = api.import_dataset(bbc_csv, name="auto-stored")
    assert dataset_task(ds)[0] == "text-classification" and ds.name in dataset_task(ds)[1]
    datasets, versions = len(api.list_datasets()), len(registry.list_versions())
    with pytest.raises(ConfigError) as small:
        auto(data=ds.id, time_budget="2s", progress=False)
    assert "too small" in small.value.message
    for both_or_none in ({"path": bbc_csv, "data": ds.id}, {}):
        with pytest.raises(ConfigError) as caught:
            auto(time_budget="60s", progress=False, **both_or_none)
        assert "one of the two" in caught.value.message
    assert len(api.list_datasets()) == datasets and len(registry.list_versions()) == versions


def test_a_real_run_searches_trains_registers_and_reports(ran):
    report, calls, run_dir = ran
    assert report["task"] == "text-classification"
    assert report["dataset"]["rows"] + report["dataset"]["rejects"] == 120
    whats = [c["what"] for c in report["choices"]]
    assert {"task", "backbone", "hyper-parameters", "final fit"} <= set(whats)
    assert all(c["why"] for c in report["choices"])
    search = report["search"]
    if search["skipped"] is None:  # the search ran (a machine busy with other work may cut it short)
        assert search["lr_range_test"]["steps"] >= 1 and len(search["lr_range_test"]["points"]) >= 1
        assert search["trials"] == 0 or search["table"][0]["origin"] == "default"
        assert set(search["best_params"]) == {"lr_body", "lr_head"}
    else:
        assert "budget" in search["skipped"]
    assert report["metrics"]["accuracy"] > 0.7 and report["metrics"]["n"] > 0
    portfolio = report["portfolio"]  # the final fit's floor: the network against TF-IDF + LogReg
    assert set(portfolio["candidates"]) == {"network", "tfidf-logreg"}
    assert portfolio["chosen"] in portfolio["candidates"] and "model" in whats
    record = registry.get_version(report["model"])
    assert record.name == "auto-news" and record.run_id
    assert report["compression"]["method"] == "onnx-int8" and report["compression"]["reason"]
    assert report["deployed"] is None and report["endpoint"].endswith("/v1/models/auto-news/predict")
    assert report["curl"].startswith("curl -s ") and "$AIMASS_API_KEY" in report["curl"]
    assert report["wall_s"] <= 60 * 1.3, report["timings"]
    json.dumps(report)  # JSON-able as it is
    assert (Path(record.path) / "auto_report.json").exists()
    assert json.loads((run_dir / "auto_state.json").read_text())["model"] == report["model"]
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_the_search_keeps_the_default_unless_a_trial_beats_it_beyond_the_noise():
    import optuna

    from aimass.autolearn import _pick

    defaults = {"lr_body": 1e-4, "lr_head": 3e-3}
    for gain, expected in ((0.2, defaults), (0.3, None)):
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
        study.enqueue_trial(defaults, user_attrs={"origin": "default"})

        def objective(trial, gain=gain):
            body = trial.suggest_float("lr_body", 1e-5, 1e-3, log=True)
            trial.suggest_float("lr_head", 1e-3, 1e-2, log=True)
            return 0.7 if body == 1e-4 else 0.7 + gain

        study.optimize(objective, n_trials=3)
        # noise sqrt(2 * 0.7 * 0.3 / 20) = 0.145, times sqrt(2 ln 3) = 1.48 for the best of 3: 0.215
        params, search = _pick(study, defaults, n_valid=20)
        assert search["trials"] == 3 and search["default_valid_macro_f1"] == 0.7
        assert params == defaults if expected else params != defaults, search["why"]
        assert search["best_valid_macro_f1"] >= search["default_valid_macro_f1"]


def test_a_resumed_run_reuses_its_search_and_never_registers_twice(three_topics, ran):
    report, _, run_dir = ran
    versions = len(registry.list_versions("auto-news"))
    again = auto(
        three_topics, time_budget="60s", name="auto-news", progress=False, run_dir=run_dir, resume=True
    )
    assert again["model"] == report["model"] and again["search"] == report["search"]
    assert len(registry.list_versions("auto-news")) == versions


def test_cli_prints_json_and_errors_follow_the_cli_rules(bbc_csv, ran):
    from aimass.cli import app
    from aimass.cli.auto import render

    failed = CliRunner().invoke(app, ["auto", str(bbc_csv), "--time-budget", "2s", "--json"])
    assert failed.exit_code == 2
    assert json.loads(failed.stdout)["error"]["code"] == "config_error"
    shown = CliRunner().invoke(app, ["auto", "--help"])
    assert shown.exit_code == 0 and "--time-budget" in shown.stdout and "--deploy" in shown.stdout
    render(ran[0])  # the rich summary of a real report renders without error
