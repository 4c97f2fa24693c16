"""``aimass auto``: task detection, the up-front budget check, a real small run and the CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import bbc_sample
from typer.testing import CliRunner

from aimass import api, paths, workflow
from aimass.autolearn import auto, dataset_task, detect_task
from aimass.autolearn.deploy import _deploy, _note_pid, _start_server
from aimass.autolearn.final import _compress
from aimass.autolearn.plan import Plan
from aimass.autolearn.run import _Run
from aimass.cli.auto import Terminated, stopped_by_sigterm
from aimass.errors import ConfigError, DataError, Unavailable
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


def test_data_with_no_test_rows_is_refused_right_after_the_import(tmp_path):
    """200 labels of 2 rows each: the split keeps every row in train, so nothing could be evaluated;
    auto stops after the import (a path) or the load (a stored dataset), before any training."""
    labels = [f"topic-{i // 2:03d}" for i in range(400)]
    texts = [f"text {i} about {label} and its own words {i * 7}" for i, label in enumerate(labels)]
    path = write_csv(tmp_path / "many_labels.csv", texts, labels)
    versions, calls = len(registry.list_versions()), []
    with pytest.raises(DataError) as imported:
        auto(path, time_budget="60s", progress=False, on_progress=lambda *call: calls.append(call))
    assert calls[-1] == (0.03, "importing and validating the data"), "nothing embedded or trained"
    ds = api.import_dataset(path, name="many-labels")
    with pytest.raises(DataError) as stored:
        auto(data=ds.id, time_budget="60s", progress=False, on_progress=lambda *call: calls.append(call))
    assert calls[-1] == (0.0, "reading the stored dataset")
    for caught in (imported, stored):
        assert "no rows in the test split" in caught.value.message
        assert "200 of its 200 classes have too few rows" in caught.value.message
        assert "split column" in caught.value.hint and "--test-file" in caught.value.hint
    assert len(registry.list_versions()) == versions


def test_compression_leaves_deployment_its_seconds():
    """A 60 s budget with --deploy keeps 30 s for deployment: a 40 s compression does not fit, though
    it would without deployment (then it is tried: on a ref that does not exist it fails)."""
    for deploy_s, outcome in ((30.0, "skipped"), (0.0, "failed")):
        run = _Run(60.0, None, False, 0, deploy_s)
        run.plan = Plan(evaluate_s=3.0, compress_s=40.0)
        reason = _compress(run, "no-such-model:1", "text-classification")["reason"]
        assert reason.startswith(outcome), reason
        assert deploy_s == 0 or "after 30s kept for deployment, it needs ~40s" in reason


def test_sigterm_during_the_cli_run_raises_and_the_old_handler_comes_back():
    """The CLI's run turns SIGTERM into an exception its cleanup handles (exit 143); after it, the
    handler set before answers again. (tests/e2e/test_auto_cli.py sends it to a real run.)"""
    seen = []

    def before(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, before)
    try:
        with pytest.raises(Terminated) as caught, stopped_by_sigterm():
            signal.raise_signal(signal.SIGTERM)
        assert caught.value.code == 143 and str(caught.value) == "stopped by SIGTERM"
        assert seen == [] and signal.getsignal(signal.SIGTERM) is before
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_failed_deployment_leaves_production_where_it_was(small_model, monkeypatch):
    first = workflow.register(small_model, "auto-deployed")
    second = workflow.register(small_model, "auto-deployed")
    registry.set_alias(first.ref, "production")
    monkeypatch.setenv("AIMASS_SERVER", "http://127.0.0.2:9")  # nothing answers; not one to start
    run = _Run(60.0, None, False, 0, 30.0)
    served = _deploy(run, "auto-deployed", second.ref, None, None)
    assert served["error"]["code"] == Unavailable.code
    assert registry.aliases("auto-deployed")["production"] == first.version
    assert f"still names {first.ref}" in run.choices[-1]["why"]
    # a model that had no production: the alias goes again (it named a version nothing served)
    registry.remove_alias("auto-deployed", "production")
    assert _deploy(run, "auto-deployed", second.ref, None, None)["error"]["code"] == Unavailable.code
    assert registry.aliases("auto-deployed") == {}
    assert "was removed" in run.choices[-1]["why"]


def test_a_server_that_fails_to_start_leaves_server_pid_alone(tmp_path, monkeypatch):
    """server.pid names what ``make stop`` stops: a server that never became ready is not written
    over the pid of one still running (this test's process stands in for it)."""
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))  # a bare home: the server starts fast
    pid_file = paths.home() / "server.pid"
    pid_file.write_text(str(os.getpid()))
    with socket.socket() as busy:  # the port is taken: the server cannot bind and exits
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(Unavailable) as caught:
            _start_server(f"http://127.0.0.1:{busy.getsockname()[1]}", wait_s=60)
    assert "exited early" in caught.value.message
    assert pid_file.read_text() == str(os.getpid())
    _note_pid(12345)  # a ready server: still not over a live pid
    assert pid_file.read_text() == str(os.getpid())
    gone = subprocess.Popen(["true"])
    gone.wait()
    pid_file.write_text(str(gone.pid))
    _note_pid(12345)  # the recorded server is gone: the new one is recorded
    assert pid_file.read_text() == "12345"
