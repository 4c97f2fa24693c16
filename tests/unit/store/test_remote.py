"""Model versions through S3-compatible storage, against a real S3 API server on 127.0.0.1 (moto's
server: boto3 speaks HTTP to it as to MinIO): push on one home, pull on another, and every way a
store can hand back something other than what was pushed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aimass import api
from aimass.errors import ConfigError, DataError, IntegrityError, NotFoundError
from aimass.store import registry, remote
from aimass.testing import require

BUCKET = "models"
TEXTS = ["The striker scored twice in the final.", "Shares fell after the profit warning."]


@pytest.fixture(scope="module")
def store():
    """An S3 API on a free port, one bucket; the endpoint and credentials as a user sets them."""
    require("boto3", "s3")
    server = require("moto.server", "dev").ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "aimass-test",
        "AWS_SECRET_ACCESS_KEY": "aimass-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    remote.client().create_bucket(Bucket=BUCKET)
    yield env
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    server.stop()


@pytest.fixture(scope="module")
def pushed(store, small_model):
    """small_model registered here and pushed to s3://models/team-a."""
    record = api.register(small_model, "news-remote")
    return record.ref, api.push_model(record.ref, f"s3://{BUCKET}/team-a")


def other_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "other-home"))


def test_a_pushed_version_pulls_elsewhere_and_predicts_alike(pushed, small_model, monkeypatch, tmp_path):
    ref, sent = pushed
    name, version = ref.split(":")
    assert sent["url"] == f"s3://{BUCKET}/team-a/{name}/v{version}" and not sent["unchanged"]
    assert sent["bytes"] > 1_000_000 and api.push_model(ref, f"s3://{BUCKET}/team-a")["unchanged"]
    listed = api.remote_models(f"s3://{BUCKET}/team-a")
    assert [(v["name"], v["version"], v["task"]) for v in listed] == [
        (name, int(version), "text-classification")
    ]

    other_machine(monkeypatch, tmp_path)
    got = api.pull_model(f"s3://{BUCKET}/team-a/{name}")  # the newest version of that name
    assert got["model"] == f"{name}:1" and got["from"] == sent["url"]
    here = registry.get_version(got["model"])
    assert here.metrics["pulled_from"] == sent["url"] and here.params == small_model.get_params()
    assert api.load(got["model"]).predict(TEXTS) == small_model.predict(TEXTS)
    again = api.pull_model(sent["url"], name="news-copy")
    assert again["model"] == "news-copy:1"
    at_root = api.push_model(again["model"], f"s3://{BUCKET}")  # a store at the bucket's root
    assert (
        [v["url"] for v in api.remote_models(f"s3://{BUCKET}")]
        == [at_root["url"]]
        == [f"s3://{BUCKET}/news-copy/v1"]
    )


def copy_version(s3, key: str, prefix: str) -> str:
    """The pushed version copied under another prefix, inside the store; returns its key."""
    copied = f"{prefix}/{key.split('/', 1)[1]}"
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=key + "/")["Contents"]:
        rel = obj["Key"][len(key) + 1 :]
        s3.copy_object(Bucket=BUCKET, Key=f"{copied}/{rel}", CopySource=f"{BUCKET}/{obj['Key']}")
    return copied


def test_a_changed_or_an_extra_file_in_the_store_is_refused(pushed, monkeypatch, tmp_path):
    _, sent = pushed
    s3 = remote.client()
    _, key = remote.parse_url(sent["url"])
    meta = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{key}/version.json")["Body"].read())
    weights = next(rel for rel in meta["files"] if rel.endswith(".safetensors"))
    changed = copy_version(s3, key, "changed")
    s3.put_object(Bucket=BUCKET, Key=f"{changed}/{weights}", Body=b"not the weights")
    extra = copy_version(s3, key, "extra")
    s3.put_object(Bucket=BUCKET, Key=f"{extra}/exploit.pkl", Body=b"cos\nsystem\n(S'id'\ntR.")
    malformed = copy_version(s3, key, "malformed")
    s3.put_object(Bucket=BUCKET, Key=f"{malformed}/version.json", Body=json.dumps({**meta, "metrics": [1]}))
    for copied, named in ((changed, weights), (extra, "exploit.pkl"), (malformed, "malformed (metrics)")):
        other_machine(monkeypatch, tmp_path / copied.split("/")[0])
        with pytest.raises(IntegrityError, match=re.escape(named)) as refused:
            api.pull_model(f"s3://{BUCKET}/{copied}")
        assert "Push the version again" in refused.value.hint
        assert api.list_models() == []  # nothing registered, no staging folder left
        assert not list((tmp_path / copied.split("/")[0] / "other-home" / "models").glob(".pulling-*"))


def test_a_store_that_lists_small_and_sends_more_is_cut_off(pushed, monkeypatch, tmp_path):
    """The pull limit is checked on the sizes the listing gives; a store that lists 10 bytes and
    sends megabytes is refused at the 11th byte, not after the disk has filled."""
    _, sent = pushed
    listed = remote._objects
    monkeypatch.setattr(
        remote, "_objects", lambda *a: [{**o, "size": min(o["size"], 10)} for o in listed(*a)]
    )
    other_machine(monkeypatch, tmp_path)
    with pytest.raises(IntegrityError, match="sends more than the 10 bytes its listing gave"):
        api.pull_model(sent["url"])
    assert api.list_models() == [] and not list((tmp_path / "other-home" / "models").glob(".pulling-*"))


def test_a_pulled_version_cannot_name_a_folder_of_this_machine_as_its_base(
    small_model, store, monkeypatch, tmp_path
):
    """A fine-tune's base is loaded from where its ``model.json`` says, not shipped with it: a store's
    writer naming a folder of the pulling machine (here the bundled encoder's own folder, which loads
    fine) would have the puller serve a model it was never given. Refused before loading."""
    from aimass.backbones import get_backbone
    from aimass.errors import PermissionDenied
    from aimass.store import artifacts

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "writer"))
    record = api.register(small_model, "borrowed")
    folder = registry.open_folder(record)
    meta = json.loads((folder / "model.json").read_text())
    meta["fitted"]["backbone_"] = get_backbone("minilm-l6").locate()  # a folder outside the data roots
    (folder / "model.json").write_text(json.dumps(meta))
    artifacts.seal(folder)
    remote.client().create_bucket(Bucket="writers")  # apart from the store the other tests list
    sent = api.push_model(record.ref, "s3://writers/team-b")
    other_machine(monkeypatch, tmp_path)
    with pytest.raises(PermissionDenied, match=r"fitted\.backbone_ .*a folder of this machine") as refused:
        api.pull_model(sent["url"])
    assert "AIMASS_DATA_ROOTS" in refused.value.hint
    assert api.list_models() == [] and not list((tmp_path / "other-home" / "models").glob(".pulling-*"))
    monkeypatch.setenv("AIMASS_DATA_ROOTS", str(Path(meta["fitted"]["backbone_"]).parent))
    assert api.pull_model(sent["url"])["model"] == "borrowed:1"  # the operator granted that folder


def test_versions_are_immutable_and_urls_are_checked(pushed, small_model, tmp_path, monkeypatch):
    ref, sent = pushed
    other_machine(monkeypatch, tmp_path)
    clone = api.register(small_model, ref.split(":")[0])  # the same number here, other files
    (registry.open_folder(clone) / "extra.txt").write_text("different files")
    from aimass.store import artifacts

    artifacts.seal(registry.open_folder(clone))
    with pytest.raises(ConfigError, match="already holds another") as refused:
        api.push_model(clone.ref, f"s3://{BUCKET}/team-a")
    assert "immutable" in refused.value.hint
    for bad in ("http://example.com/models", "s3://Bad_Bucket/x", "models/team-a"):
        with pytest.raises(ConfigError, match="not an s3:// URL"):
            remote.parse_url(bad)
    with pytest.raises(DataError, match=r"'\.\.'"):
        remote.parse_url("s3://models/team-a/../other")
    with pytest.raises(NotFoundError, match="no pushed version"):
        api.pull_model(f"s3://{BUCKET}/team-a/nobody")


def test_the_command_line_lists_a_store(pushed, store):
    ref, sent = pushed
    env = {**os.environ, **store, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "aimass", "models", "remote", f"s3://{BUCKET}/team-a", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [row["url"] for row in json.loads(done.stdout)] == [sent["url"]]
    env["AWS_ENDPOINT_URL_S3"] = "http://127.0.0.1:9"  # nothing listens there
    down = subprocess.run(
        [sys.executable, "-m", "aimass", "models", "remote", f"s3://{BUCKET}/team-a"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode != 0 and "remote_error" in down.stdout + down.stderr
    assert "AWS_ENDPOINT_URL_S3" in down.stdout + down.stderr


def test_named_stores_push_and_pull_as_jobs_over_rest(store, small_model, monkeypatch, tmp_path):
    """Push and pull are jobs any REST key may submit within its rights: only the stores the operator
    named (AIMASS_STORES), a push is decided as an export of the version (model:Export, with the
    request's own context, so a Deny outside the office network holds), and a pull writes only
    into the job's project (here alice's nlp: a new name joins it; bob's model name is refused)."""
    from fastapi.testclient import TestClient

    from aimass import jobs
    from aimass.access import directory
    from aimass.serve import auth
    from aimass.serve.app import create_app

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIMASS_STORES", f"team-a=s3://{BUCKET}/jobs")
    assert api.push_model(api.register(small_model, "shared").ref, "team-a")["url"].startswith(
        f"s3://{BUCKET}/jobs/shared/v1"
    )
    api.register(small_model, "faces")
    every = {"Effect": "Allow", "Action": "*", "Resource": "aimass:project/nlp/*"}
    no_export = {"Effect": "Deny", "Action": "model:Export", "Resource": "*"}
    office_only = {**no_export, "Condition": {"NotIpAddress": {"aimass:SourceIp": "10.0.0.0/8"}}}
    headers = {}
    for user, statements in (
        ("alice", [every]),
        ("erin", [every, no_export]),
        ("frank", [every, office_only]),
    ):
        directory.create_user(user)
        directory.put_policy(f"{user}-policy", {"Statement": statements})
        directory.attach(f"{user}-policy", "user", user)
        record, key = auth.create_key(user, ["predict"])
        directory.bind_key(record.id, user=user)
        headers[user] = {"Authorization": f"Bearer {key}"}
    directory.create_project("nlp")
    directory.create_project("cv")
    directory.assign("model", "shared", "nlp")
    directory.assign("model", "faces", "cv")
    push = {"kind": "push", "params": {"model": "shared:1", "store": "team-a"}, "project": "nlp"}
    with TestClient(create_app([], job_runner=0)) as client:
        queued = client.post("/v1/jobs", json=push, headers=headers["alice"])
        assert queued.status_code == 202, queued.text
        raw = {**push, "params": {"model": "shared:1", "store": f"s3://{BUCKET}/mine"}}
        anywhere = client.post("/v1/jobs", json=raw, headers=headers["alice"])
        assert anywhere.status_code == 404 and "team-a" in anywhere.json()["error"]["message"]
        denied = client.post("/v1/jobs", json=push, headers=headers["erin"])
        assert denied.status_code == 403 and "model:Export" in denied.json()["error"]["message"]
        # decided as GET /v1/versions/shared:1/export with this request's context: not from the office
        outside = client.post("/v1/jobs", json=push, headers=headers["frank"])
        assert outside.status_code == 403 and "model:Export" in outside.json()["error"]["message"]
        pulls = {
            name: client.post(
                "/v1/jobs",
                json={
                    "kind": "pull",
                    "params": {"store": "team-a", "remote": "shared", "name": name},
                    "project": "nlp",
                },
                headers=headers["alice"],
            )
            for name in ("shared-copy", "faces")
        }
        # a pull adds a version to the model it names: model:Train on cv's faces, refused before it queues
        assert pulls["faces"].status_code == 404, pulls["faces"].text
    assert jobs.run_foreground(queued.json()["id"])["status"] == "succeeded"
    copied = jobs.run_foreground(pulls["shared-copy"].json()["id"])
    assert copied["status"] == "succeeded" and copied["result"]["model"] == "shared-copy:1", copied
    assert directory.project_of("model", "shared-copy") == "nlp"
    assert api.load("shared-copy:1").predict(TEXTS) == small_model.predict(TEXTS)
    assert [v.ref for v in registry.list_versions("faces")] == ["faces:1"]
    # the operator's own calls take a store's name wherever they take a URL
    assert [v["name"] for v in api.remote_models("team-a")] == ["shared"]
    assert api.pull_model("team-a/shared/v1", name="by-name")["model"] == "by-name:1"


def test_named_stores_are_checked(monkeypatch):
    from aimass.sharing import store_url, stores

    monkeypatch.setenv("AIMASS_STORES", " team-a = s3://models/team-a/ , backup=s3://backup")
    assert stores() == {"team-a": "s3://models/team-a", "backup": "s3://backup"}
    assert store_url("s3://other/x") == "s3://other/x"
    with pytest.raises(NotFoundError, match=r"\['backup', 'team-a'\]"):
        store_url("s3://other/x", named_only=True)
    for bad in ("team-a", "team-a=http://x", "../x=s3://models"):
        monkeypatch.setenv("AIMASS_STORES", bad)
        with pytest.raises(ConfigError, match="AIMASS_STORES|s3://"):
            stores()


HANDBOOK = {
    "leave.md": "Annual leave: every employee has 25 days of paid holiday a year. Unused days carry over "
    "to March.",
    "it.txt": "To reset your password, open the staff portal and choose 'forgot password'. The IT desk is "
    "on the second floor.",
}


def test_a_vector_store_pushed_here_is_pulled_elsewhere_and_answers_the_same(store, monkeypatch, tmp_path):
    """``aimass stores push`` seals the export and uploads it beside the model versions (not listed
    among them); pushing it unchanged sends nothing, changed makes v2; ``stores pull`` on another
    home checks every file and answers with the same scores; a changed object is refused."""
    from typer.testing import CliRunner

    from aimass.cli import app
    from aimass.retrieval import files, search, stores

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "here"))
    for name, text in HANDBOOK.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    made = stores.build("handbook", [tmp_path / name for name in HANDBOOK])
    question = "How many days of holiday do I get?"
    runner, url = CliRunner(), f"s3://{BUCKET}/team-b"
    first = runner.invoke(app, ["stores", "push", made["id"], url, "--json"])
    assert first.exit_code == 0, first.output
    sent = json.loads(first.output)
    assert (
        sent["url"] == f"{url}/vector-stores/{made['id']}/v1"
        and not sent["unchanged"]
        and sent["chunks"] >= 2
    )
    again = json.loads(runner.invoke(app, ["stores", "push", made["id"], url, "--json"]).output)
    assert again["unchanged"] and again["url"] == sent["url"] and again["bytes"] == 0
    assert api.remote_models(url) == []  # stores are not model versions
    leave = next(
        f["id"] for f in stores.listed_files(made["id"]) if files.info(f["id"])["filename"] == "leave.md"
    )
    stores.set_attributes(made["id"], leave, {"team": "hr"})
    asked = search.search(made["id"], question)["data"]
    changed = json.loads(runner.invoke(app, ["stores", "push", made["id"], url, "--json"]).output)
    assert changed["url"].endswith("/v2") and not changed["unchanged"]

    other_machine(monkeypatch, tmp_path)
    pulled = runner.invoke(
        app, ["stores", "pull", f"{url}/vector-stores/{made['id']}", "--name", "moved", "--json"]
    )
    assert pulled.exit_code == 0, pulled.output
    moved = json.loads(pulled.output)
    assert moved["name"] == "moved" and moved["pulled_from"] == changed["url"]  # the newest version
    answer = search.search(moved["id"], question)["data"]
    assert [(h["filename"], h["score"]) for h in answer] == [(h["filename"], h["score"]) for h in asked]
    assert answer[0]["attributes"] == {"team": "hr"}

    bucket_key = f"team-b/vector-stores/{made['id']}/v1/chunks.jsonl"
    remote.client().put_object(Bucket=BUCKET, Key=bucket_key, Body=b'{"file_id": "x", "text": "changed"}\n')
    refused = runner.invoke(app, ["stores", "pull", sent["url"]])
    assert refused.exit_code == 1 and "does not match its sha256" in " ".join(refused.output.split())
    assert [s["id"] for s in stores.listed()] == [moved["id"]]  # nothing imported from v1


def test_vector_stores_push_and_pull_as_jobs_over_rest(store, monkeypatch, tmp_path):
    """``store-push`` and ``store-pull`` jobs: only the operator's named stores, a push only of a
    store the caller may read (404 otherwise, like a missing one), and a pulled store belongs to
    the job's project and answers like the one pushed."""
    from fastapi.testclient import TestClient
    from tests.conftest import user_with_key

    from aimass import jobs
    from aimass.access import directory
    from aimass.retrieval import search, stores
    from aimass.serve.app import create_app

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIMASS_STORES", f"team-a=s3://{BUCKET}/store-jobs")
    for name, text in HANDBOOK.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    made = stores.build("handbook", [tmp_path / name for name in HANDBOOK])
    directory.create_project("hr")
    directory.create_project("cv")
    directory.assign("vector_store", made["id"], "hr")
    listing = {"Effect": "Allow", "Action": "vector_store:List", "Resource": "aimass:project/*"}
    keys = {
        user: user_with_key(
            user,
            f"{user}-policy",
            [{"Effect": "Allow", "Action": "*", "Resource": f"aimass:project/{project}/*"}, listing],
        )
        for user, project in (("hana", "hr"), ("carl", "cv"))
    }
    headers = {user: {"Authorization": f"Bearer {key}"} for user, key in keys.items()}
    push = {"kind": "store-push", "params": {"vector_store": made["id"], "store": "team-a"}}
    with TestClient(create_app([], job_runner=0)) as client:
        hidden = client.post("/v1/jobs", json={**push, "project": "cv"}, headers=headers["carl"])
        assert hidden.status_code == 404 and "vector store" in hidden.json()["error"]["message"], hidden.text
        raw = {**push, "params": {**push["params"], "store": f"s3://{BUCKET}/mine"}, "project": "hr"}
        assert client.post("/v1/jobs", json=raw, headers=headers["hana"]).status_code == 404
        queued = client.post("/v1/jobs", json={**push, "project": "hr"}, headers=headers["hana"])
        assert queued.status_code == 202, queued.text
        bad = {"kind": "store-pull", "params": {"store": "team-a", "remote": "../x"}, "project": "hr"}
        assert client.post("/v1/jobs", json=bad, headers=headers["hana"]).status_code == 422
        long = {**bad, "params": {"store": "team-a", "remote": made["id"], "name": "x" * 300}}
        assert client.post("/v1/jobs", json=long, headers=headers["hana"]).status_code == 422
        pull = {"kind": "store-pull", "params": {"store": "team-a", "remote": made["id"], "name": "copy"}}
        pulled_id = client.post("/v1/jobs", json={**pull, "project": "hr"}, headers=headers["hana"]).json()[
            "id"
        ]
    pushed = jobs.run_foreground(queued.json()["id"])
    assert pushed["status"] == "succeeded", pushed
    assert pushed["result"]["url"] == f"s3://{BUCKET}/store-jobs/vector-stores/{made['id']}/v1"
    done = jobs.run_foreground(pulled_id)
    assert done["status"] == "succeeded", done
    copy = done["result"]["vector_store_id"]
    assert copy != made["id"] and stores.get(copy)["name"] == "copy"
    assert directory.project_of("vector_store", copy) == "hr"  # the job's project
    question = "How many days of holiday do I get?"
    before, after = search.search(made["id"], question)["data"], search.search(copy, question)["data"]
    assert [(h["filename"], h["score"]) for h in after] == [(h["filename"], h["score"]) for h in before]

    # the console: hana's store page pushes it, the Documents page pulls it into a project she may use
    import re

    with TestClient(create_app([], job_runner=0)) as client:
        form = client.get("/console/signin").text
        client.post(
            "/console/signin",
            data={"csrf": re.search(r'name="csrf" value="([^"]+)"', form)[1], "key": keys["hana"]},
        )
        page = client.get(f"/console/stores/{made['id']}").text
        assert '<option value="team-a">' in page and "Push to a store" in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]
        pushed = client.post(
            f"/console/stores/{made['id']}/push",
            data={"csrf": csrf, "store": "team-a"},
            follow_redirects=False,
        )
        assert pushed.status_code == 303, pushed.text[-300:]
        listing = client.get("/console/stores").text
        assert re.findall(r'<option value="([^"]+)">\1</option>', listing.split('name="project"')[-1]) == [
            "hr"
        ]
        asked = {"csrf": csrf, "store": "team-a", "remote": made["id"], "name": "again", "project": "hr"}
        queued = client.post("/console/stores/pull", data=asked, follow_redirects=False)
        assert queued.status_code == 303, queued.text[-300:]
        elsewhere = client.post("/console/stores/pull", data={**asked, "project": "cv"})
        assert elsewhere.status_code == 403
    unchanged = jobs.run_foreground(pushed.headers["location"].rsplit("/", 1)[1])
    assert unchanged["status"] == "succeeded" and unchanged["result"]["unchanged"], unchanged
    again = jobs.run_foreground(queued.headers["location"].rsplit("/", 1)[1])
    assert (
        again["status"] == "succeeded"
        and directory.project_of("vector_store", again["result"]["vector_store_id"]) == "hr"
    )


def objects_under(s3, key: str) -> set[str]:
    return {
        o["Key"][len(key) + 1 :]
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=key + "/").get("Contents", [])
    }


def test_a_push_sends_the_sealed_set_and_repairs_a_push_cut_short(store, small_model, monkeypatch, tmp_path):
    """What a served version's folder gained (the ONNX runtime's cache) is not pushed, and a second
    push is then ``unchanged``; objects a push cut short left under NAME/vN (no version.json, or
    not listed in it) are deleted by the next push, which is then pullable."""
    from aimass.store import artifacts

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "here"))
    record = api.register(small_model, "news-sealed")
    folder = registry.open_folder(record)
    sealed = set(artifacts.read_sums(folder)) | {artifacts.SUMS}
    (folder / "onnx").mkdir()
    (folder / "onnx" / "cache.onnx").write_bytes(b"a runtime's cache, written when served")
    s3, key = remote.client(), "sealed/news-sealed/v1"
    sent = api.push_model(record.ref, f"s3://{BUCKET}/sealed")
    assert objects_under(s3, key) == sealed | {"version.json"}
    (folder / "onnx" / "more.onnx").write_bytes(b"served again")
    assert api.push_model(record.ref, f"s3://{BUCKET}/sealed")["unchanged"]

    s3.put_object(Bucket=BUCKET, Key=f"{key}/leftover.bin", Body=b"a stray object")  # listed nowhere
    again = api.push_model(record.ref, f"s3://{BUCKET}/sealed")
    assert not again["unchanged"] and objects_under(s3, key) == sealed | {"version.json"}
    cut = "cut/news-sealed/v1"  # a push cut short: files, one not the version's, and no version.json
    s3.put_object(Bucket=BUCKET, Key=f"{cut}/model.json", Body=b"{}")
    s3.put_object(Bucket=BUCKET, Key=f"{cut}/partial/weights.tmp", Body=b"half")
    assert not api.push_model(record.ref, f"s3://{BUCKET}/cut")["unchanged"]
    assert objects_under(s3, cut) == sealed | {"version.json"}
    other_machine(monkeypatch, tmp_path)
    assert api.pull_model(f"s3://{BUCKET}/{cut}")["model"] == "news-sealed:1"
    assert api.pull_model(sent["url"], name="from-sealed")["model"] == "from-sealed:1"


def move_version(s3, key: str, to: str, meta: dict | None = None, extra: dict | None = None) -> str:
    """The pushed version copied to ``to`` (a key), with ``extra`` files added and listed in its
    version.json (``meta`` merged in): what a writer of the store can make."""
    import hashlib

    meta = {
        **json.loads(s3.get_object(Bucket=BUCKET, Key=f"{key}/version.json")["Body"].read()),
        **(meta or {}),
    }
    for rel in meta["files"]:  # get and put: moto's copy_object keeps a checksum a GET then fails
        body = s3.get_object(Bucket=BUCKET, Key=f"{key}/{rel}")["Body"].read()
        s3.put_object(Bucket=BUCKET, Key=f"{to}/{rel}", Body=body)
    for rel, body in (extra or {}).items():
        s3.put_object(Bucket=BUCKET, Key=f"{to}/{rel}", Body=body)
        meta["files"][rel] = hashlib.sha256(body).hexdigest()
    s3.put_object(Bucket=BUCKET, Key=f"{to}/version.json", Body=json.dumps(meta))
    return f"s3://{BUCKET}/{to}"


def test_a_pull_checks_the_name_the_files_and_their_names(pushed, monkeypatch, tmp_path):
    """A store's writer cannot have a pull register under another name or number than the URL's
    NAME/vN, nor add pickle-type files (listed and summed in version.json), nor more files than the
    bound; a key with '..' is the store's fault (IntegrityError naming it), not the caller's."""
    _, sent = pushed
    s3 = remote.client()
    _, key = remote.parse_url(sent["url"])
    v = key.rsplit("/", 1)[1]  # v1 in a fresh session home
    pickle = b"cos\nsystem\n(S'id'\ntR."
    cases = {
        f"names 'news-remote' version '{v[1:]}', not the 'victim'": move_version(
            s3, key, f"renamed/victim/{v}"
        ),
        f"version '{v[1:]}', not the 'news-remote' version 'v7'": move_version(
            s3, key, "renumbered/news-remote/v7"
        ),
        f"version 'v0{v[1:]}'": move_version(s3, key, f"zero/news-remote/v0{v[1:]}"),
        "pytorch_model.bin": move_version(
            s3, key, f"bin/news-remote/{v}", extra={"pytorch_model.bin": pickle}
        ),
        "sub/evil.pkl": move_version(s3, key, f"pkl/news-remote/{v}", extra={"sub/evil.pkl": pickle}),
        "a bad name 'sub/../x'": move_version(s3, key, f"dots/news-remote/{v}", extra={"sub/../x": b"1"}),
    }
    other_machine(monkeypatch, tmp_path)
    for named, url in cases.items():
        with pytest.raises(IntegrityError, match=re.escape(named)) as refused:
            api.pull_model(url)
        assert url in refused.value.message and "Push the version again" in refused.value.hint
    monkeypatch.setenv("AIMASS_MAX_PULL_FILES", "3")
    with pytest.raises(DataError, match="holds .* files; the limit is 3") as refused:
        api.pull_model(sent["url"])
    assert "AIMASS_MAX_PULL_FILES" in refused.value.hint
    assert api.list_models() == [] and not list((tmp_path / "other-home" / "models").glob(".pulling-*"))


def test_a_pull_sweeps_the_staging_folders_of_pulls_that_died(pushed, monkeypatch, tmp_path):
    """A pull killed with -9 (or a cancelled job) leaves ``models/.pulling-*``: the next pull removes
    those whose owner process is gone, and those with no pid older than an hour; a live pull's stays."""
    _, sent = pushed
    other_machine(monkeypatch, tmp_path)
    models = tmp_path / "other-home" / "models"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    names = {
        "dead": f".pulling-{int(dead.stdout)}-0123456789ab",
        "alive": f".pulling-{os.getpid()}-0123456789ab",
        "old": ".pulling-0123456789ab",
        "young": ".pulling-ba9876543210",
    }
    for name in names.values():
        (models / name).mkdir(parents=True)
        (models / name / "model.safetensors").write_bytes(b"x" * 1000)
    os.utime(models / names["old"], (0, 0))
    assert api.pull_model(sent["url"])["model"].endswith(":1")
    assert sorted(p.name for p in models.glob(".pulling-*")) == sorted([names["alive"], names["young"]])
