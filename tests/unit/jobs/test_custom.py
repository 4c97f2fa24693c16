"""Custom training jobs: code is uploaded into AIMASS_HOME (safely, by content digest) and runs
from there; every check has a stable code; the script runs with the data and an output folder,
and a model it saves there becomes a registered version."""

from __future__ import annotations

import io
import json
import os
import stat
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aimass import api, jobs, paths
from aimass.cli import app
from aimass.errors import JobError, TooLargeError
from aimass.jobs import KINDS
from aimass.serve import auth


@pytest.fixture(scope="module")
def news(bbc_csv):
    return api.import_dataset(bbc_csv, name="news-jobs")


@pytest.fixture()
def code(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    (folder / "notes.txt").write_text("not python\n")
    (tmp_path / "outside.py").write_text("print('outside')\n")
    return jobs.upload_code(folder)["code"]


def zipped(members: dict[str, str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"code": None}, "code_missing"),
        ({"code": "0" * 32}, "code_not_found"),
        ({"code": "../../etc"}, "code_not_found"),
        ({"code_dir": sysconfig.get_paths()["stdlib"]}, "code_dir_not_accepted"),
        ({"entry": "notes.txt"}, "entry_not_python"),
        ({"entry": "../outside.py"}, "entry_outside_code_dir"),
        ({"entry": "/etc/outside.py"}, "entry_outside_code_dir"),
        ({"entry": "missing.py"}, "entry_not_found"),
        ({"data": "no-such-dataset"}, "dataset_not_found"),
        ({"data": None}, "data_missing"),
        ({"args": "--epochs 3"}, "args_invalid"),
    ],
)
def test_each_check_has_a_stable_code_and_a_hint(code, news, change, expected):
    params = {"code": code, "entry": "train.py", "data": news.id, "args": []}
    params.update(change)
    with pytest.raises(JobError) as err:
        jobs.submit("custom", params)
    assert err.value.code == expected
    assert err.value.hint


def test_hints_list_files_of_the_uploaded_copy_only(code, news):
    with pytest.raises(JobError) as err:
        jobs.submit("custom", {"code": code, "entry": "missing.py", "data": news.id})
    assert err.value.hint == "Python files in it: train.py."
    stdlib = sysconfig.get_paths()["stdlib"]
    with pytest.raises(JobError) as err:
        jobs.submit("custom", {"code_dir": stdlib, "entry": "missing.py", "data": news.id})
    assert "timeit" not in err.value.hint and "os.py" not in str(err.value)


def test_a_valid_submission_is_queued_with_the_code_id(code, news):
    job = jobs.submit("custom", {"code": code, "entry": "train.py", "data": "news-jobs", "args": ["-v"]})
    assert job["status"] == "queued"
    assert job["params"]["code"] == code and job["params"]["data"] == news.id
    assert "code_dir" not in job["params"]
    jobs.cancel(job["id"])


def test_a_folder_is_packed_without_links_hidden_files_or_caches(tmp_path):
    folder = tmp_path / "src"
    (folder / "pkg" / "__pycache__").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / "train.py").write_text("import pkg.util\n")
    (folder / "pkg" / "util.py").write_text("X = 1\n")
    (folder / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"\0")
    (folder / ".git" / "config").write_text("[core]\n")
    (folder / "secrets").symlink_to("/etc/passwd")
    (folder / "linked").symlink_to(tmp_path)
    info = jobs.upload_code(folder)
    stored = paths.home() / "code" / info["code"]
    files = sorted(p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file())
    assert files == ["pkg/util.py", "train.py"] and info["files"] == 2
    assert info["scripts"] == ["pkg/util.py", "train.py"]
    assert not any(p.is_symlink() for p in stored.rglob("*"))
    assert stat.S_IMODE((stored / "train.py").stat().st_mode) == 0o444
    assert jobs.upload_code(folder)["code"] == info["code"]  # same content, same id
    (folder / "train.py").write_text("import pkg.util  # changed\n")
    assert jobs.upload_code(folder)["code"] != info["code"]


def test_archives_are_accepted_and_get_the_folders_id(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("print('x')\n")
    from_folder = jobs.upload_code(folder)["code"]
    packed = tmp_path / "code.tar.gz"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(folder / "train.py", arcname="train.py")
    assert jobs.upload_code(packed)["code"] == from_folder
    assert jobs.upload_code(zipped({"train.py": "print('x')\n"}))["code"] == from_folder


@pytest.mark.parametrize(
    "members",
    [{"../evil.py": "print(1)"}, {"/tmp/evil.py": "print(1)"}, {"ok/../../evil.py": "print(1)"}],
)
def test_archives_that_escape_are_refused(tmp_path, members):
    before = sorted(p.name for p in (paths.home() / "code").iterdir())
    with pytest.raises(JobError) as err:
        jobs.upload_code(zipped(members))
    assert err.value.code == "code_archive_refused" and "refused" in err.value.message
    assert not (paths.home() / "evil.py").exists() and not Path("/tmp/evil.py").exists()
    assert sorted(p.name for p in (paths.home() / "code").iterdir()) == before  # staging is gone


def test_links_and_non_archives_are_refused(tmp_path):
    linked = tmp_path / "link.tar"
    with tarfile.open(linked, "w") as tar:
        info = tarfile.TarInfo("train.py")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(JobError, match="symbolic link") as err:
        jobs.upload_code(linked)
    assert err.value.code == "code_archive_refused"
    with pytest.raises(JobError) as err:
        jobs.upload_code(io.BytesIO(b"#!/bin/sh\nid\n"))
    assert err.value.code == "code_archive_refused" and "upload" not in err.value.message
    with pytest.raises(JobError) as err:
        jobs.upload_code(zipped({".hidden": "x"}))
    assert err.value.code == "code_archive_empty"
    with pytest.raises(JobError) as err:
        jobs.upload_code(tmp_path / "nowhere")
    assert err.value.code == "code_dir_not_found"


def test_uploads_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_MAX_CODE_UPLOAD_BYTES", "4096")
    with pytest.raises(TooLargeError, match="over"):
        jobs.upload_code(io.BytesIO(os.urandom(10_000)))
    monkeypatch.setenv("AIMASS_MAX_CODE_FILES", "3")
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(5):
        (folder / f"m{i}.py").write_text("x = 1\n")
    with pytest.raises(TooLargeError) as err:
        jobs.upload_code(folder)
    assert "aimass data import" in err.value.hint


def test_custom_jobs_need_the_code_scope():
    assert KINDS["custom"].scope == auth.CODE_SCOPE
    assert {kind.scope for name, kind in KINDS.items() if name != "custom"} == {"manage"}
    assert all(kind.scope in auth.SCOPES for kind in KINDS.values())


def test_the_script_runs_in_the_uploaded_copy(tmp_path, news):
    folder = tmp_path / "where"
    folder.mkdir()
    (folder / "job.py").write_text("import os\nprint('cwd=' + os.getcwd())\n")
    job = jobs.submit(
        "custom", {"code": jobs.upload_code(folder)["code"], "entry": "job.py", "data": news.id}
    )
    (folder / "job.py").write_text("raise SystemExit('the original folder ran')\n")
    done = jobs.run_foreground(job["id"])
    assert done["status"] == "succeeded", done
    cwd = jobs.logs(job["id"]).split("cwd=")[1].split()[0]
    assert Path(cwd) == paths.home() / "code" / job["params"]["code"]


def test_cli_submit_packs_uploads_and_names_the_model_after_the_folder(tmp_path, news):
    folder = tmp_path / "sentiment"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    runner = CliRunner()
    done = runner.invoke(
        app,
        ["jobs", "submit", "--code-dir", str(folder), "--entry", "train.py", "--data", news.id, "--json"]
        + ["--", "--epochs", "3"],
    )
    assert done.exit_code == 0, done.output
    job = json.loads(done.output)
    assert job["params"]["name"] == "sentiment" and job["params"]["args"] == ["--epochs", "3"]
    assert (paths.home() / "code" / job["params"]["code"] / "train.py").is_file()
    jobs.cancel(job["id"])
    uploaded = runner.invoke(app, ["jobs", "upload", str(folder), "--json"])
    assert uploaded.exit_code == 0 and json.loads(uploaded.output)["code"] == job["params"]["code"]


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
    code = jobs.upload_code(tmp_path)["code"]
    job = jobs.submit("custom", {"code": code, "entry": "fit.py", "data": news.id, "name": "mine"})
    done = jobs.run_foreground(job["id"])
    assert done["status"] == "succeeded", done
    ref = done["result"]["model"]
    assert ref.startswith("mine:")
    record = api.show_model(ref)
    assert record["run_id"] == f"job-{job['id']}"
    assert api.load(ref).predict(["Shares fell as the bank cut its forecast"])
