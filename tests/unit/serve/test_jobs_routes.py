"""Jobs over REST: submit (202), list, show, logs, cancel, retry and /v1/auto behind a manage key;
custom code is uploaded (POST /v1/jobs/code) and run only with a jobs:code key, never from a
host folder; failed checks are 4xx bodies with a stable code."""

from __future__ import annotations

import io
import json
import sysconfig
import tarfile
import threading
import time
import zipfile

import pytest
from fastapi.testclient import TestClient

from aimass import api, jobs, paths
from aimass.serve import auth
from aimass.serve.app import create_app


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(refs=[])) as c:
        yield c


@pytest.fixture(scope="module")
def headers():
    _, key = auth.create_key("ops", ["manage"])
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def coder():
    _, key = auth.create_key("ml-team", ["jobs:code"])
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def news(bbc_csv):
    return api.import_dataset(bbc_csv, name="news-rest")


def zipped(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def upload(client, headers, archive: bytes, name: str = "code.zip"):
    return client.post("/v1/jobs/code", files={"file": (name, archive)}, headers=headers)


def test_jobs_need_a_manage_key(client):
    assert client.get("/v1/jobs").status_code == 401
    _, predict_only = auth.create_key("app", ["predict"])
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {predict_only}"}).status_code == 403


def test_submit_run_show_logs_and_retry(client, headers, coder, news):
    script = "import os\nprint('hello from', os.getcwd())\nraise SystemExit(3)\n"
    uploaded = upload(client, coder, zipped({"go.py": script}))
    assert uploaded.status_code == 201, uploaded.text
    code = uploaded.json()["code"]
    body = {"kind": "custom", "params": {"code": code, "entry": "go.py", "data": news.id}}
    answer = client.post("/v1/jobs", json=body, headers=coder)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert answer.json()["status"] == "queued"
    assert any(
        j["id"] == job_id for j in client.get("/v1/jobs?status=queued", headers=headers).json()["jobs"]
    )

    jobs.run_foreground(job_id)
    shown = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert shown["status"] == "failed" and shown["error"]["cause"] == "script_failed"
    assert shown["events"][-1]["kind"] == "failed" and shown["events"][-1]["hint"]
    logs = client.get(f"/v1/jobs/{job_id}/logs?tail=50", headers=headers)
    assert logs.status_code == 200 and f"hello from {paths.home() / 'code' / code}" in logs.text

    ended = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert ended.status_code == 422 and ended.json()["error"]["code"] == "job_already_ended"
    refused = client.post(f"/v1/jobs/{job_id}/retry", headers=headers)  # would run the code again
    assert refused.status_code == 403 and "job:SubmitCode" in refused.json()["error"]["message"]
    again = client.post(f"/v1/jobs/{job_id}/retry", headers=coder)
    assert again.status_code == 202 and again.json()["retry_of"] == job_id
    cancelled = client.post(f"/v1/jobs/{again.json()['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


SLEEPER = """import os, pathlib, time
runs = pathlib.Path(os.environ["AIMASS_OUTPUT_DIR"]) / "runs.txt"
runs.write_text((runs.read_text() if runs.exists() else "") + "x")
if runs.read_text() == "x":
    time.sleep(30)  # the first run is paused in here (at once: the pause follows its first write)
print("done")
"""


def test_pause_and_resume(client, headers, coder, news):
    code = upload(client, coder, zipped({"sleep.py": SLEEPER})).json()["code"]
    body = {"kind": "custom", "params": {"code": code, "entry": "sleep.py", "data": news.id}}
    body["metadata"] = {"team": "pausers", "ticket": "AI-7"}
    job_id = client.post("/v1/jobs", json=body, headers=coder).json()["id"]
    listed = client.get("/v1/jobs", params={"metadata[team]": "pausers"}, headers=headers).json()
    assert [j["id"] for j in listed["jobs"]] == [job_id] and listed["total"] == 1
    assert listed["jobs"][0]["metadata"] == body["metadata"]
    too_many = {**body, "metadata": {f"k{i}": "v" for i in range(17)}}
    refused = client.post("/v1/jobs", json=too_many, headers=coder)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "metadata_invalid"
    held = client.post(f"/v1/jobs/{job_id}/pause", headers=headers)
    assert held.status_code == 200 and held.json()["status"] == "paused"  # queued: held at once
    assert jobs.run_foreground(job_id)["attempt"] == 0  # no runner starts a paused job
    _, predict_only = auth.create_key("app-pause", ["predict"])
    denied = client.post(f"/v1/jobs/{job_id}/resume", headers={"Authorization": f"Bearer {predict_only}"})
    assert denied.status_code == 404  # a job it may not read does not exist for it
    assert client.post(f"/v1/jobs/{job_id}/resume", headers=headers).json()["status"] == "queued"

    runner = threading.Thread(target=jobs.run_foreground, args=(job_id,))
    runner.start()
    runs = paths.home() / "jobs" / job_id / "output" / "runs.txt"
    deadline = time.monotonic() + 120
    while not runs.exists():
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.1)
    asked = client.post(f"/v1/jobs/{job_id}/pause", headers=headers).json()
    assert asked["status"] in ("running", "paused")
    runner.join(timeout=60)
    shown = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert shown["status"] == "paused" and not runner.is_alive()
    assert "a custom job is stopped at once" in shown["events"][-1]["message"]  # it has no checkpoints
    again = client.post(f"/v1/jobs/{job_id}/pause", headers=headers)
    assert again.status_code == 422 and again.json()["error"]["code"] == "job_not_pausable"

    assert client.post(f"/v1/jobs/{job_id}/resume", headers=headers).json()["status"] == "queued"
    done = jobs.run_foreground(job_id)
    assert done["status"] == "succeeded" and done["attempt"] == 2 and runs.read_text() == "xx"
    ended = client.post(f"/v1/jobs/{job_id}/resume", headers=headers)
    assert ended.status_code == 422 and ended.json()["error"]["code"] == "job_not_paused"


def test_a_manage_key_cannot_upload_or_run_code(client, headers, coder, news):
    archive = zipped({"train.py": "print('x')\n"})
    refused = upload(client, headers, archive)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert "may not job:SubmitCode" in error["message"] and "--scope jobs:code" in error["hint"]
    code = upload(client, coder, archive).json()["code"]
    before = len(jobs.list_jobs())
    for params in (
        {"code": code, "entry": "train.py", "data": news.id},
        {"code_dir": sysconfig.get_paths()["stdlib"], "entry": "timeit.py", "data": news.id},
    ):
        answer = client.post("/v1/jobs", json={"kind": "custom", "params": params}, headers=headers)
        assert answer.status_code == 403, answer.text
        assert "may not job:SubmitCode" in answer.json()["error"]["message"]
        # the body the route parses is the body the rule reads, whatever the header calls it
        for media in ("Application/JSON", "application/vnd.x+json", "text/plain", ""):
            sent = {**headers, "Content-Type": media}
            body = json.dumps({"kind": "custom", "params": params})
            answer = client.post("/v1/jobs", content=body, headers=sent)
            assert answer.status_code in (403, 422), (media, answer.text)
            assert answer.status_code == 422 or "job:SubmitCode" in answer.json()["error"]["message"]
    assert len(jobs.list_jobs()) == before
    batch = {"kind": "batch", "params": {"input": "file-x", "endpoint": "v1/chat/completions", "requests": 1}}
    refused = client.post("/v1/jobs", json=batch, headers=headers)  # its route checks each request's model
    assert refused.status_code == 422 and "POST /v1/batches" in refused.json()["error"]["message"]
    train = client.post("/v1/jobs", json={"kind": "train", "params": {"data": news.id}}, headers=coder)
    assert train.status_code == 403 and "may not job:Submit " in train.json()["error"]["message"]
    _, reader = auth.create_key("app", ["predict"])
    assert upload(client, {"Authorization": f"Bearer {reader}"}, archive).status_code == 403


def test_host_folders_are_never_run_nor_listed(client, coder, news):
    stdlib = sysconfig.get_paths()["stdlib"]
    params = {"code_dir": stdlib, "entry": "timeit.py", "data": news.id, "args": ["-s", "import os", "0"]}
    answer = client.post("/v1/jobs", json={"kind": "custom", "params": params}, headers=coder)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "code_dir_not_accepted"
    assert "/v1/jobs/code" in answer.json()["error"]["hint"]
    code = upload(client, coder, zipped({"src/train.py": "print(1)\n"})).json()["code"]
    for entry in ("timeit.py", f"../../../../../../../..{stdlib}/timeit.py", f"{stdlib}/timeit.py"):
        body = {"kind": "custom", "params": {"code": code, "entry": entry, "data": news.id}}
        answer = client.post("/v1/jobs", json=body, headers=coder)
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] in ("entry_not_found", "entry_outside_code_dir")
        assert "__future__" not in str(error) and "os.py" not in str(error)
    assert error["code"] == "entry_outside_code_dir"
    body = {"kind": "custom", "params": {"code": code, "entry": "x.py", "data": news.id}}
    missing = client.post("/v1/jobs", json=body, headers=coder)
    assert missing.json()["error"]["hint"] == "Python files in it: src/train.py."


def test_unsafe_or_oversized_uploads_are_refused(client, coder, monkeypatch):
    before = sorted(p.name for p in (paths.home() / "code").iterdir())
    escape = upload(client, coder, zipped({"../escape.py": "print(1)\n"}))
    assert escape.status_code == 422 and escape.json()["error"]["code"] == "code_archive_refused"
    assert "'..'" in escape.json()["error"]["message"]
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        link = tarfile.TarInfo("train.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    linked = upload(client, coder, packed.getvalue(), "code.tar.gz")
    assert linked.status_code == 422 and "symbolic link" in linked.json()["error"]["message"]
    assert not (paths.home() / "escape.py").exists()
    assert sorted(p.name for p in (paths.home() / "code").iterdir()) == before
    not_multipart = client.post("/v1/jobs/code", content=b"PK", headers=coder)
    assert not_multipart.status_code == 422 and "multipart" in not_multipart.json()["error"]["message"]
    monkeypatch.setenv("AIMASS_MAX_CODE_UPLOAD_BYTES", "100000")
    big = upload(client, coder, zipped({"train.py": "x = 1\n", "blob.txt": "y" * 300_000}))
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"


def test_bad_submissions_are_4xx_with_codes(client, headers, coder):
    missing = client.post(
        "/v1/jobs",
        json={"kind": "custom", "params": {"code": "0" * 32, "entry": "x.py", "data": "d"}},
        headers=coder,
    )
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "code_not_found"
    assert missing.json()["error"]["hint"]
    unknown = client.post("/v1/jobs", json={"kind": "teleport"}, headers=headers)
    assert unknown.status_code == 422 and "available" in unknown.json()["error"]["message"]
    assert client.get("/v1/jobs/doesnotexist", headers=headers).status_code == 404
    assert client.post("/v1/auto", json={}, headers=headers).status_code == 422


def test_a_manage_key_names_only_data_under_the_data_roots(client, headers, bbc_csv, monkeypatch):
    monkeypatch.delenv("AIMASS_DATA_ROOTS", raising=False)
    secret = sysconfig.get_paths()["stdlib"] + "/os.py"  # any host file the server can read
    probes = [
        ("/v1/jobs", {"kind": "import", "params": {"path": secret}}, "params.path"),
        ("/v1/jobs", {"kind": "import", "params": {"path": str(bbc_csv)}}, "params.path"),
        ("/v1/jobs", {"kind": "train", "params": {"data": "~/.ssh/id_rsa"}}, "params.data"),
        ("/v1/jobs", {"kind": "train", "params": {"data": "x", "backbone": "../../etc"}}, "params.backbone"),
        # transformers reads a folder given as a Hub id: hf:/path is a path too
        (
            "/v1/jobs",
            {"kind": "train", "params": {"data": "x", "backbone": f"hf:{bbc_csv.parent}"}},
            "params.backbone",
        ),
        ("/v1/jobs", {"kind": "evaluate", "params": {"model": "m", "data": [secret]}}, "params.data[0]"),
        ("/v1/auto", {"path": str(bbc_csv)}, "params.path"),
    ]
    before = len(jobs.list_jobs(None, 1000))
    for route, body, where in probes:
        answer = client.post(route, json=body, headers=headers)
        assert answer.status_code == 403, (body, answer.text)
        error = answer.json()["error"]
        assert where in error["message"] and "AIMASS_DATA_ROOTS" in error["hint"], error
    assert len(jobs.list_jobs(None, 1000)) == before  # nothing queued
    # the folder of every upload (each project's), or a file beside them, is no one's to name
    stray = paths.subdir("uploads") / "news.csv"
    stray.write_bytes(bbc_csv.read_bytes())
    for whole in (paths.subdir("uploads"), stray, paths.subdir("uploads") / "x" / ".."):
        body = {"kind": "import", "params": {"path": str(whole)}}
        assert client.post("/v1/jobs", json=body, headers=headers).status_code == 403, whole
        refused = client.post("/v1/datasets", json={"path": str(whole)}, headers=headers)
        assert refused.status_code == 403, (whole, refused.text)
    uploaded = paths.subdir("uploads") / "0123456789ab" / "news.csv"  # where an upload keeps it
    uploaded.parent.mkdir()
    uploaded.write_bytes(bbc_csv.read_bytes())
    inside = client.post(
        "/v1/jobs", json={"kind": "import", "params": {"path": str(uploaded)}}, headers=headers
    )
    assert inside.status_code == 202, inside.text
    client.post(f"/v1/jobs/{inside.json()['id']}/cancel", headers=headers)
    named = client.post("/v1/jobs", json={"kind": "train", "params": {"data": "news-rest"}}, headers=headers)
    assert named.status_code == 202, named.text  # a dataset name is not a path
    client.post(f"/v1/jobs/{named.json()['id']}/cancel", headers=headers)


def test_auto_is_queued_as_a_job(client, headers, bbc_csv, monkeypatch):
    monkeypatch.setenv("AIMASS_DATA_ROOTS", str(bbc_csv.parent))  # the operator grants that folder
    answer = client.post("/v1/auto", json={"path": str(bbc_csv), "time_budget": "2m"}, headers=headers)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["kind"] == "auto" and job["params"]["path"] == str(bbc_csv)
    client.post(
        f"/v1/jobs/{job['id']}/cancel", headers=headers
    )  # not run here: tests/unit/test_auto.py runs auto
    ds = api.import_dataset(bbc_csv, name="auto-rest")  # a stored dataset instead of a path
    stored = client.post("/v1/auto", json={"data": ds.id, "time_budget": "2m"}, headers=headers)
    assert stored.status_code == 202 and stored.json()["params"]["data"] == ds.id, stored.text
    client.post(f"/v1/jobs/{stored.json()['id']}/cancel", headers=headers)
    for neither_or_both in ({}, {"data": ds.id, "path": str(bbc_csv)}):
        refused = client.post("/v1/auto", json={"time_budget": "2m", **neither_or_both}, headers=headers)
        assert refused.status_code == 422 and "one of the two" in refused.json()["error"]["message"]


def test_auto_refuses_a_budget_the_cli_would_refuse(client, headers, bbc_csv, monkeypatch):
    """``time_budget`` is parsed as ``--time-budget`` is: a 422 naming the field, nothing queued
    (it was a 202 and a job that failed seconds later with a CLI hint)."""
    monkeypatch.setenv("AIMASS_DATA_ROOTS", str(bbc_csv.parent))
    queued = len(jobs.list_jobs(None, 1000))
    for budget in ("banana", "5s", "0", "-1m", "3"):
        body = {"path": str(bbc_csv), "time_budget": budget}
        refused = client.post("/v1/auto", json=body, headers=headers)
        assert refused.status_code == 422, (budget, refused.text)
        assert "time_budget" in refused.json()["error"]["message"], refused.text
    assert len(jobs.list_jobs(None, 1000)) == queued
    least = client.post("/v1/auto", json={"path": str(bbc_csv), "time_budget": "10s"}, headers=headers)
    assert least.status_code == 202, least.text
    client.post(f"/v1/jobs/{least.json()['id']}/cancel", headers=headers)


def test_a_job_whose_result_holds_a_nan_is_answered_with_null(client, headers):
    """A few-shot fit's validation score can be NaN; JSON has none: the job's page was a 500."""
    from aimass.jobs import state

    job = jobs.submit("import", {"path": "nowhere.csv"})
    claimed = state.claim(job["id"], runner_pid=0)
    state.finish(job["id"], claimed.attempt, "succeeded", result={"best_valid_macro_f1": float("nan")})
    answer = client.get(f"/v1/jobs/{job['id']}", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["best_valid_macro_f1"] is None


def test_a_project_holds_at_most_its_share_of_unfinished_jobs_and_the_runner_takes_turns(
    client, headers, monkeypatch
):
    """One key queued 30 jobs in 0.2 s and another project's job then waited 33 s behind them; a job
    asked for 1e12 s of timeout. Now a project has at most AIMASS_MAX_PROJECT_JOBS unfinished, a
    REST job at most AIMASS_MAX_JOB_HOURS, and the runner starts the oldest job of the project
    served longest ago."""
    from aimass.access import directory
    from aimass.jobs import state
    from aimass.jobs.runner import projects_of

    for name in ("flood", "calm"):
        directory.create_project(name)
    for job_id in state.unfinished_ids():  # what other tests left queued
        jobs.cancel(job_id)
    monkeypatch.setenv("AIMASS_MAX_PROJECT_JOBS", "3")
    job = {"kind": "import", "params": {"path": "nowhere.csv"}, "project": "flood", "timeout_s": 1e12}
    made = [client.post("/v1/jobs", json=job, headers=headers) for _ in range(4)]
    assert [m.status_code for m in made] == [202, 202, 202, 429], made[-1].text
    refused = made[-1].json()["error"]
    assert "'flood' has 3 jobs queued" in refused["message"] and "AIMASS_MAX_PROJECT_JOBS" in refused["hint"]
    assert made[-1].headers["Retry-After"] == "60"
    assert made[0].json()["timeout_s"] == 72 * 3600  # what was asked, at most the operator's cap
    calm = client.post("/v1/jobs", json={**job, "project": "calm"}, headers=headers)
    assert calm.status_code == 202  # another project still has room

    flood = [m.json()["id"] for m in made[:3]]
    state.claim(flood[0], runner_pid=0)  # flood has been served: calm's job goes before flood's others
    assert state.next_queued(projects_of) == calm.json()["id"]  # not flood's older ones
    for job_id in [*flood, calm.json()["id"]]:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
