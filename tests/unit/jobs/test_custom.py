"""Custom training jobs: every check has a stable code; the script runs with the data and an
output folder, and a model it saves there becomes a registered version."""

from __future__ import annotations

import textwrap

import pytest

from aimass import api, jobs
from aimass.errors import JobError


@pytest.fixture(scope="module")
def news(bbc_csv):
    return api.import_dataset(bbc_csv, name="news-jobs")


@pytest.fixture()
def code(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "notes.txt").write_text("not python\n")
    return tmp_path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"code_dir": "/nonexistent/aimass-code"}, "code_dir_not_found"),
        ({"code_dir": "FILE"}, "code_dir_not_directory"),
        ({"entry": "notes.txt"}, "entry_not_python"),
        ({"entry": "../outside.py"}, "entry_outside_code_dir"),
        ({"entry": "missing.py"}, "entry_not_found"),
        ({"data": "no-such-dataset"}, "dataset_not_found"),
        ({"data": None}, "data_missing"),
        ({"args": "--epochs 3"}, "args_invalid"),
    ],
)
def test_each_check_has_a_stable_code_and_a_hint(code, news, change, expected):
    (code.parent / "outside.py").write_text("print('outside')\n")
    params = {"code_dir": str(code), "entry": "train.py", "data": news.id, "args": []}
    params.update({k: (str(code / "train.py") if v == "FILE" else v) for k, v in change.items()})
    with pytest.raises(JobError) as err:
        jobs.submit("custom", params)
    assert err.value.code == expected
    assert err.value.hint


def test_a_valid_submission_is_queued_with_absolute_paths(code, news):
    job = jobs.submit(
        "custom", {"code_dir": str(code), "entry": "train.py", "data": "news-jobs", "args": ["-v"]}
    )
    assert job["status"] == "queued"
    assert job["params"]["code_dir"] == str(code.resolve()) and job["params"]["data"] == news.id


def test_a_model_the_script_saves_is_registered(tmp_path, news):
    script = textwrap.dedent(
        """
        import os
        from aimass.data import load_dataset
        from aimass.tasks.text_classification import TextClassifier

        ds = load_dataset(os.environ["AIMASS_DATA_ID"])
        assert os.path.samefile(ds.path, os.environ["AIMASS_DATA_DIR"])
        model = TextClassifier(backbone="minilm-l6", max_length=32, unfreeze=0, time_budget=60)
        model.fit(ds, progress=False).save(os.environ["AIMASS_OUTPUT_DIR"])
        print("saved")
        """
    )
    (tmp_path / "fit.py").write_text(script)
    job = jobs.submit(
        "custom", {"code_dir": str(tmp_path), "entry": "fit.py", "data": news.id, "name": "mine"}
    )
    done = jobs.run_foreground(job["id"])
    assert done["status"] == "succeeded", done
    ref = done["result"]["model"]
    assert ref.startswith("mine:")
    record = api.show_model(ref)
    assert record["run_id"] == f"job-{job['id']}"
    assert api.load(ref).predict(["Shares fell as the bank cut its forecast"])
