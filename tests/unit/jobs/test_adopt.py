"""A job in a project puts what it creates (a new model or dataset name) in that project, claims
nothing that existed before it, and writes no version into another project's names."""

from __future__ import annotations

import time

import pytest

from aimass import jobs
from aimass.access import directory
from aimass.errors import PermissionDenied
from aimass.jobs.adopt import adopt, confine
from aimass.store.db import ModelVersionRecord, session


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    for project in ("nlp", "cv"):
        directory.create_project(project)
    return tmp_path


def _job_in(project: str, kind: str = "train", **params) -> str:
    job = jobs.submit(kind, params or {"data": "d"})
    directory.assign("job", job["id"], project)
    return job["id"]


def _version(name: str, version: int) -> None:
    with session() as s, s.begin():
        s.add(ModelVersionRecord(name=name, version=version, task="text-classification", path=f"/x/{name}"))


def test_an_import_job_in_a_project_puts_its_new_dataset_there(home, bbc_csv):
    job_id = _job_in("nlp", "import", path=str(bbc_csv), name="news")
    assert jobs.run_foreground(job_id)["status"] == "succeeded"
    assert directory.project_of("dataset", "news") == "nlp"
    # the same import from a job in cv would make it cv's "news" too: refused, it stays nlp's
    again = jobs.run_foreground(_job_in("cv", "import", path=str(bbc_csv), name="news"))
    assert again["status"] == "failed" and again["error"]["code"] == "permission_denied", again
    message = again["error"]["message"]
    assert "belongs to another project" in message and "nlp" not in message  # the owner stays unnamed
    assert directory.project_of("dataset", "news") == "nlp"
    mine = _job_in("nlp", "import", path=str(bbc_csv), name="news")  # its own project's name: fine
    assert jobs.run_foreground(mine)["status"] == "succeeded"


def test_only_a_model_name_the_job_created_is_claimed(home):
    _version("old", 1)  # made before the job: a new version of it keeps its owner (default)
    _version("theirs", 1)
    directory.assign("model", "theirs", "cv")
    time.sleep(1.1)  # creation times have one-second resolution
    job_id = _job_in("nlp")
    _version("old", 2)
    _version("theirs", 2)
    _version("fresh", 1)
    assert adopt(job_id, {"model": "old:2"}) == []
    assert adopt(job_id, {"model": "theirs:2"}) == []
    assert [m["arn"] for m in adopt(job_id, {"model": "fresh:1"})] == ["aimass:project/nlp/model/fresh"]
    assert directory.project_of("model", "old") == "default"
    assert directory.project_of("model", "theirs") == "cv"


def test_a_job_in_default_assigns_nothing(home):
    job_id = jobs.submit("train", {"data": "d"})["id"]
    _version("fresh", 1)
    assert adopt(job_id, {"model": "fresh:1"}) == []
    assert directory.owners("model") == {}


def test_a_job_writes_only_under_its_projects_names_or_new_ones(home):
    _version("old", 1)  # unassigned: the default project's
    _version("theirs", 1)
    _version("ours", 1)
    directory.assign("model", "theirs", "cv")
    directory.assign("model", "ours", "nlp")
    in_nlp, in_default = confine(_job_in("nlp")), confine(jobs.submit("train", {"data": "d"})["id"])
    for allowed in (("model", "ours"), ("model", "brand-new"), ("dataset", "brand-new")):
        in_nlp(*allowed)
    for refused, owner in ((("model", "theirs"), "cv"), (("model", "old"), "default")):
        with pytest.raises(PermissionDenied, match="belongs to another project") as denied:
            in_nlp(*refused)
        assert repr(owner) not in str(denied.value)
    in_default("model", "old")  # the operator's own jobs write the unassigned names
    in_default("model", "new-too")
    with pytest.raises(PermissionDenied, match="model 'theirs': the name belongs to another project"):
        in_default("model", "theirs")


def test_a_new_name_is_the_job_s_project_s_from_its_first_write(home):
    """A cancelled auto job had imported its dataset, which nothing adopted (adopting came at the
    job's success): it stayed in default, where the job's own retry in its project could not add
    to it. The name is now the project's when the job first writes under it."""
    in_nlp = confine(_job_in("nlp"))
    in_nlp("dataset", "fresh")
    in_nlp("model", "fresh-model")
    assert directory.project_of("dataset", "fresh") == "nlp"
    assert directory.project_of("model", "fresh-model") == "nlp"
    retried = confine(_job_in("nlp"))
    retried("dataset", "fresh")  # the retry writes it again
    confine(jobs.submit("train", {"data": "d"})["id"])("dataset", "loose")  # a default job assigns nothing
    assert "loose" not in directory.owners("dataset")


def test_an_evaluate_job_saves_its_report_only_on_its_projects_model(home):
    """Saving an evaluation rewrites the version's report and metrics: a write, confined as one."""
    _version("theirs", 1)
    directory.assign("model", "theirs", "cv")
    job = jobs.run_foreground(_job_in("nlp", "evaluate", model="theirs:1", save=True))
    assert job["status"] == "failed" and job["error"]["code"] == "permission_denied", job
    assert "model 'theirs': the name belongs to another project" in job["error"]["message"]


def test_the_command_line_submits_into_a_project(home, bbc_csv):
    """``aimass jobs submit --project P``: the operator's job works in P as a REST one would."""
    from typer.testing import CliRunner

    from aimass.cli import app

    directory.assign("dataset", "news", "nlp")
    submit = [
        "jobs",
        "submit",
        "--kind",
        "import",
        "--set",
        f"path={bbc_csv}",
        "--set",
        "name=news",
        "--json",
    ]
    done = CliRunner().invoke(app, [*submit, "--project", "nlp", "--foreground"])
    assert done.exit_code == 0 and '"status": "succeeded"' in done.output, done.output
    refused = CliRunner().invoke(app, [*submit, "--foreground"])  # in default: nlp's name is not its own
    assert '"code": "permission_denied"' in refused.output, refused.output
    missing = CliRunner().invoke(app, [*submit, "--project", "nope"])
    assert missing.exit_code != 0 and "nope" in missing.output


def test_an_auto_jobs_deploy_goes_only_into_its_projects_service_or_a_new_one(home):
    """``auto`` with ``deploy`` calls ``POST /v1/services`` with the server's own token: the job's
    project decides which service it may change, as the route decides a key's deploy. A job in nlp
    whose model shares a name with cv's service would otherwise move cv's traffic to nlp's model."""
    from aimass.autolearn.deploy import _deploy
    from aimass.store import claims

    directory.assign("service", "chat", "cv")
    directory.assign("service", "ours", "nlp")
    in_nlp = confine(_job_in("nlp"))
    in_nlp("service", "ours")
    in_nlp("service", "brand-new")  # the deploy makes it; the server gives it the model's project
    with pytest.raises(PermissionDenied, match="may not deploy into service 'chat': the name belongs"):
        in_nlp("service", "chat")

    class Run:  # what _deploy reports to: the refusal is reported, the version stays registered
        chosen = {}

        def phase(self, *args):
            import contextlib

            return contextlib.nullcontext()

        def choose(self, what, value, why):
            self.chosen[what] = (value, why)

    _version("chat", 1)
    claims.install(in_nlp)
    try:
        out = _deploy(Run(), "chat", "chat:1", None, None)
    finally:
        claims.install(None)
    assert out["error"]["code"] == "permission_denied" and "service 'chat'" in out["error"]["message"]
    assert Run.chosen["deployment"][0] is None and "failed" in Run.chosen["deployment"][1]
