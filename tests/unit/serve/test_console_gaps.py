"""The console's model and service tools and their REST twins, over HTTP (no browser): delete a
version (refused while deployed or aliased), compare two versions, compress as a job, export as a
zip, live service figures and the usage chart. Versions are tiny registered estimators, except the
one real export."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from aimass import api, jobs, paths
from aimass.serve import auth
from aimass.serve.app import create_app
from aimass.serve.engine import Deployment, Service
from aimass.store import registry
from aimass.store.db import UsageRecord, session


class Tiny:
    """Just enough of an estimator for the registry (no weights, no training)."""

    task = "text-classification"

    def __init__(self, lr: float = 0.01, epochs: int = 3):
        self.lr, self.epochs = lr, epochs
        self.backbone_, self.data_digest_ = "minilm-l6", "d" * 64

    def get_params(self) -> dict:
        return {"lr": self.lr, "epochs": self.epochs}

    def save(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.json").write_text(json.dumps(self.get_params()))


def tiny(name: str, f1s: dict, parent: str | None = None, **params) -> str:
    """A registered version with metrics and a stored per-class evaluation."""
    metrics = {"accuracy": sum(f1s.values()) / len(f1s), "macro_f1": sum(f1s.values()) / len(f1s)}
    record = registry.register(Tiny(**params), name, metrics=metrics, parent=parent)
    report = {"per_class": {c: {"precision": f, "recall": f, "f1": f, "support": 10} for c, f in f1s.items()}}
    (Path(record.path) / "evaluation.json").write_text(json.dumps(report))
    return record.ref


@pytest.fixture(scope="module")
def app():
    return create_app(refs=[])


@pytest.fixture(scope="module")
def manage():
    return {"Authorization": f"Bearer {auth.create_key('gaps-ops', ['manage'])[1]}"}


@pytest.fixture(scope="module")
def predict_key():
    return auth.create_key("gaps-viewer", ["predict"])[1]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def signed_in(app, key: str) -> TestClient:
    client = TestClient(app)
    form = client.get("/console/signin")
    assert client.post("/console/signin", data={"csrf": csrf_of(form.text), "key": key}).status_code == 200
    return client


@pytest.fixture(scope="module")
def admin(app):
    with signed_in(app, auth.admin_token()) as client:
        yield client


def serve_fake(app, ref: str, name: str, pending: int = 0) -> Service:
    """A service in the engine that 'serves' ``ref`` without loading anything."""
    batcher = SimpleNamespace(pending=pending, settings=SimpleNamespace(max_batch_size=8))
    deployment = Deployment(registry.get_version(ref), None, SimpleNamespace(model=None), batcher)
    service = app.state.engine.services[name] = Service(name, [deployment], state="ready")
    return service


# ------------------------------------------------------------------ delete
def test_delete_is_refused_while_deployed_or_aliased_then_done(app, manage, predict_key):
    client = TestClient(app)
    first = tiny("gaps-del", {"a": 0.8, "b": 0.6})
    child = tiny("gaps-del", {"a": 0.9, "b": 0.7}, parent=first)
    serve_fake(app, first, "gaps-del-svc")
    try:
        served = client.delete(f"/v1/versions/{first}", headers=manage)
        assert served.status_code == 409, served.text
        error = served.json()["error"]
        assert error["code"] == "in_use" and "gaps-del-svc" in error["message"]
        assert "Undeploy it first" in error["hint"]
    finally:
        del app.state.engine.services["gaps-del-svc"]
    registry.set_alias(first, "staging")
    aliased = client.delete(f"/v1/versions/{first}", headers=manage)
    assert aliased.status_code == 409 and "Move the alias first" in aliased.json()["error"]["hint"]
    viewer = client.delete(f"/v1/versions/{first}", headers={"Authorization": f"Bearer {predict_key}"})
    assert viewer.status_code == 403 and "model:Delete" in viewer.json()["error"]["message"]
    done = client.delete(f"/v1/versions/{first}?force=true", headers=manage)
    assert done.status_code == 200, done.text
    assert done.json() == {"ref": first, "aliases_removed": ["staging"], "children": [child]}
    gone = client.get(f"/v1/versions/{first}", headers=manage)
    assert gone.status_code == 404 and "was deleted on" in gone.json()["error"]["message"]
    kept = client.get(f"/v1/versions/{child}", headers=manage).json()
    assert kept["parent"] == first and kept["parent_deleted"]  # the lineage says the parent is gone


def test_the_console_deletes_only_after_the_confirm_box(admin):
    ref = tiny("gaps-del-ui", {"a": 0.5, "b": 0.5})
    page = admin.get(f"/console/models/{ref}")
    assert page.status_code == 200 and f"Delete {ref}" in page.text and 'name="confirm"' in page.text
    csrf = csrf_of(page.text)
    assert admin.post(f"/console/models/{ref}/delete", data={"confirm": ref}).status_code == 403  # no CSRF
    unconfirmed = admin.post(f"/console/models/{ref}/delete", data={"csrf": csrf})
    assert unconfirmed.status_code == 422 and "confirmation box" in unconfirmed.text
    done = admin.post(f"/console/models/{ref}/delete", data={"csrf": csrf, "confirm": ref})
    assert done.status_code == 200 and done.url.path == "/console/models"
    assert f"Deleted {ref}." in done.text


def test_a_predict_only_key_gets_no_delete_export_or_compress_and_a_forged_post_is_refused(app):
    ref = tiny("gaps-viewer", {"a": 0.5, "b": 0.5})
    _, key = auth.create_key("gaps-viewer-ui", ["predict"])
    with signed_in(app, key) as client:
        page = client.get(f"/console/models/{ref}")  # model:Read is theirs: they may look
        assert page.status_code == 200
        for offer in ("Delete", "Download export", "Compress", ">Deploy<"):
            assert offer not in page.text, offer
        csrf = csrf_of(page.text)
        forged = client.post(f"/console/models/{ref}/delete", data={"csrf": csrf, "confirm": ref})
        assert forged.status_code == 403 and "model:Delete" in forged.text
        compress = client.post(f"/console/models/{ref}/compress", data={"csrf": csrf, "method": "onnx-int8"})
        assert compress.status_code == 403
        assert client.get(f"/console/models/{ref}/export?format=onnx").status_code == 403
    assert registry.get_version(ref)


# ----------------------------------------------------------------- compare
def test_compare_marks_what_differs_in_rest_and_the_console(admin, manage):
    a = tiny("gaps-cmp", {"business": 0.8, "sport": 0.9}, lr=0.01)
    b = tiny("gaps-cmp", {"business": 0.85, "sport": 0.9}, parent=a, lr=0.02)
    client = TestClient(admin.app)
    found = client.get(f"/v1/versions/compare?a={a}&b={b}", headers=manage)
    assert found.status_code == 200, found.text
    body = found.json()
    assert (body["a"]["ref"], body["b"]["ref"]) == (a, b)
    rows = {r["key"]: r for r in body["per_class_f1"]}
    assert rows["business"]["delta"] == pytest.approx(0.05) and not rows["business"]["same"]
    assert rows["sport"]["same"] and rows["sport"]["delta"] == 0
    params = {r["key"]: r for r in body["params"]}
    assert not params["lr"]["same"] and params["epochs"]["same"]
    lineage = {r["key"]: r for r in body["lineage"]}
    assert lineage["parent"]["b"] == a and lineage["task"]["same"]
    assert body["size"][0]["a"] > 0
    missing = client.get(f"/v1/versions/compare?a={a}&b=gaps-cmp:99", headers=manage)
    assert missing.status_code == 404
    page = admin.get(f"/console/models/compare?v={a}&v={b}")
    assert page.status_code == 200, page.text[-500:]
    assert page.text.count('class="differs"') >= 3  # accuracy, macro-F1, business F1, lr, parent ...
    assert "+0.0500" in page.text and not re.search(r'(href|src|action)="/', page.text)
    listed = admin.get("/console/models?name=gaps-cmp")
    assert 'action="../console/models/compare"' in listed.text or 'action="./models/compare"' in listed.text
    assert f'name="v" value="{a}"' in listed.text and "Compare the two ticked" in listed.text
    one = admin.get(f"/console/models/compare?v={a}")
    assert one.status_code == 422 and "Tick two versions" in one.text


# --------------------------------------------------------------- compress
def test_compress_from_the_console_queues_a_compress_job(admin):
    ref = tiny("gaps-cmp-job", {"a": 0.5, "b": 0.5})
    page = admin.get(f"/console/models/{ref}")
    methods = re.findall(r'<option value="([a-z0-9-]+)">\1</option>', page.text)
    assert "onnx-int8" in methods, methods
    answer = admin.post(
        f"/console/models/{ref}/compress",
        data={"csrf": csrf_of(page.text), "method": "onnx-int8", "max_drop": "2"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text[-400:]
    job_id = answer.headers["location"].rsplit("/", 1)[-1]
    job = jobs.show(job_id)
    assert job["kind"] == "compress" and job["params"] == {
        "model": ref,
        "method": "onnx-int8",
        "max_drop": 2.0,
    }
    jobs.cancel(job_id)
    bad = admin.post(f"/console/models/{ref}/compress", data={"csrf": csrf_of(page.text), "method": "zip-it"})
    assert bad.status_code == 404 and "Unknown compression method" in bad.text


def test_a_projects_model_compresses_and_pushes_in_its_project(admin, monkeypatch):
    """From a model's page, compress and push are jobs in the model's project (a compression's
    child is a version of that model, which only a job there may write); push and the models
    list's pull offer only the operator's named stores."""
    from aimass.access import directory

    ref = tiny("gaps-team", {"a": 0.5, "b": 0.5})
    if "team" not in {p["name"] for p in directory.list_projects()}:
        directory.create_project("team")
    directory.assign("model", "gaps-team", "team")
    assert f'{ref}/push"' not in admin.get(f"/console/models/{ref}").text  # no store named yet
    monkeypatch.setenv("AIMASS_STORES", "team-a=s3://models/team-a,backup=s3://backup")
    page = admin.get(f"/console/models/{ref}")
    assert '<option value="backup">backup</option><option value="team-a">team-a</option>' in page.text
    assert f'{ref}/push"' in page.text
    for action, data in (("compress", {"method": "onnx"}), ("push", {"store": "team-a"})):
        answer = admin.post(
            f"/console/models/{ref}/{action}",
            data={"csrf": csrf_of(page.text), **data},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text[-400:]
        job_id = answer.headers["location"].rsplit("/", 1)[-1]
        assert jobs.show(job_id)["params"] == {"model": ref, **data}
        assert directory.project_of("job", job_id) == "team"
        jobs.cancel(job_id)
    elsewhere = admin.post(
        f"/console/models/{ref}/push", data={"csrf": csrf_of(page.text), "store": "s3://mine/x"}
    )
    assert elsewhere.status_code == 404 and "team-a" in elsewhere.text
    listed = admin.get("/console/models")
    assert 'action="models/pull"' in listed.text or 'models/pull"' in listed.text
    assert '<option value="team">team</option>' in listed.text
    pulled = admin.post(
        "/console/models/pull",
        data={"csrf": csrf_of(listed.text), "store": "team-a", "remote": "news:3", "project": "team"},
        follow_redirects=False,
    )
    assert pulled.status_code == 303, pulled.text[-400:]
    job_id = pulled.headers["location"].rsplit("/", 1)[-1]
    assert jobs.show(job_id)["params"] == {"store": "team-a", "remote": "news:3"}
    assert directory.project_of("job", job_id) == "team"
    jobs.cancel(job_id)
    bad = admin.post(
        "/console/models/pull", data={"csrf": csrf_of(listed.text), "store": "team-a", "remote": "../x"}
    )
    assert bad.status_code == 422 and "NAME:VERSION" in bad.text


# ------------------------------------------------------------------ export
def test_export_refuses_unknown_formats_predict_keys_and_oversized_folders(
    app, manage, predict_key, monkeypatch
):
    ref = tiny("gaps-exp", {"a": 0.5, "b": 0.5})
    client = TestClient(app)
    unknown = client.get(f"/v1/versions/{ref}/export?format=pickle", headers=manage)
    assert unknown.status_code == 422 and "Unknown export format" in unknown.text
    viewer = client.get(f"/v1/versions/{ref}/export", headers={"Authorization": f"Bearer {predict_key}"})
    assert viewer.status_code == 403 and "model:Export" in viewer.text

    def fake_export(source, fmt, out):
        Path(out).mkdir(parents=True)
        (Path(out) / "model.onnx").write_bytes(b"x" * 4096)

    monkeypatch.setattr(api, "export", fake_export)
    monkeypatch.setenv("AIMASS_MAX_EXPORT_BYTES", "1024")
    over = client.get(f"/v1/versions/{ref}/export", headers=manage)
    assert over.status_code == 413 and "AIMASS_MAX_EXPORT_BYTES" in over.json()["error"]["hint"]
    monkeypatch.delenv("AIMASS_MAX_EXPORT_BYTES")
    fine = client.get(f"/v1/versions/{ref}/export", headers=manage)
    assert fine.status_code == 200
    assert 'filename="gaps-exp-v1-onnx.zip"' in fine.headers["content-disposition"]
    names = zipfile.ZipFile(io.BytesIO(fine.content)).namelist()
    assert names == ["gaps-exp-v1-onnx/model.onnx"]
    left = list((paths.home() / "tmp").glob("export-*"))
    assert left == []  # the zip's folder is removed once it is sent


@pytest.mark.slow
def test_a_real_export_downloads_as_a_zip_that_holds_predict_py(admin, small_model):
    ref = api.register(small_model, "gaps-real-export").ref
    page = admin.get(f"/console/models/{ref}")
    assert "Download export" in page.text
    answer = admin.get(f"/console/models/{ref}/export?format=onnx")
    assert answer.status_code == 200, answer.text[-400:]
    assert answer.headers["content-type"] == "application/zip"
    names = set(zipfile.ZipFile(io.BytesIO(answer.content)).namelist())
    stem = ref.replace(":", "-v") + "-onnx"
    assert {f"{stem}/predict.py", f"{stem}/export.json", f"{stem}/labels.json"} <= names


# ---------------------------------------------------------- live metrics
def test_live_service_figures_in_rest_and_the_polled_fragment(admin, manage):
    ref = tiny("gaps-live", {"a": 0.5, "b": 0.5})
    engine = admin.app.state.engine
    serve_fake(admin.app, ref, "gaps-live", pending=3)
    try:
        for ms in (10, 20, 30, 40, 200):
            engine.metrics.recent.observe("gaps-live", ms / 1000)
        engine.metrics.recent.observe("gaps-live", 0.001, error=True)
        figures = TestClient(admin.app).get("/v1/services/gaps-live/metrics", headers=manage).json()
        assert figures["requests"] == 6 and figures["errors"] == 1 and figures["queue_depth"] == 3
        assert figures["p50_ms"] == 20.0 and figures["p95_ms"] == 200.0 and figures["requests_per_s"] > 0
        assert figures["queued"] == {ref: 3}
        page = admin.get("/console/services/gaps-live")
        assert page.status_code == 200 and 'id="live"' in page.text and "every 2s" in page.text
        live = admin.get("/console/services/gaps-live", headers={"HX-Request": "true"})
        assert live.status_code == 200 and live.text.lstrip().startswith('<div id="live"')
        assert "<html" not in live.text and "200.0 ms" in live.text and "1 of 6" in live.text
    finally:
        del engine.services["gaps-live"]
    assert TestClient(admin.app).get("/v1/services/gaps-live/metrics", headers=manage).status_code == 404


# ------------------------------------------------------------ usage chart
def test_usage_series_and_the_keys_page_chart(admin, manage):
    from datetime import UTC, datetime, timedelta

    hour = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    with session() as s, s.begin():
        for back, n in ((0, 7), (2, 3)):
            minute = (hour - timedelta(hours=back)).strftime("%Y-%m-%dT%H:%M")
            s.add(
                UsageRecord(key_id="gapskey1", model="m", minute=minute, requests=n, items=n, compute_ms=1.0)
            )
    series = TestClient(admin.app).get("/v1/usage/series?hours=6", headers=manage).json()
    assert len(series["hours"]) == 6 and series["keys"]["gapskey1"] == [0, 0, 0, 3, 0, 7]
    bad = TestClient(admin.app).get("/v1/usage/series?hours=0", headers=manage)
    assert bad.status_code == 422
    page = admin.get("/console/keys")
    assert page.status_code == 200 and "<svg" in page.text and "<polyline" in page.text
    assert 'role="img"' in page.text and "key gapskey1: 10 requests" in page.text


# --------------------------------------------------------------------- CLI
def test_the_cli_refuses_a_version_serving_json_names_then_deletes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from aimass.cli.main import app as cli

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    ref = tiny("cli-del", {"a": 0.5, "b": 0.5})
    state = {"services": {"cli-del": [{"ref": ref, "weight": 100, "settings": {}}]}}
    (tmp_path / "home" / "serving.json").write_text(json.dumps(state))
    refused = CliRunner().invoke(cli, ["models", "delete", ref])
    assert refused.exit_code != 0 and "served by cli-del" in refused.output
    (tmp_path / "home" / "serving.json").write_text(json.dumps({"services": {}}))
    done = CliRunner().invoke(cli, ["models", "delete", ref, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["ref"] == ref


# ------------------------------------------------------------------ delete a dataset
def own_dataset(tmp_path, name: str):
    """A dataset of its own content (a shared one could be another test's, by digest)."""
    from tests.conftest import bbc_sample

    texts, labels = bbc_sample(per_class=4, chars=200)
    path = tmp_path / f"{name}.csv"
    rows = [f'"{name} {t.replace(chr(34), "")}",{label}' for t, label in zip(texts, labels)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return api.import_dataset(path, name=name)


def test_a_dataset_is_deleted_from_its_page_after_the_confirm_box_and_over_rest(app, admin, manage, tmp_path):
    ds = own_dataset(tmp_path, "gaps-del-data")
    page = admin.get(f"/console/datasets/{ds.id}")
    assert page.status_code == 200 and "Delete gaps-del-data" in page.text and 'name="confirm"' in page.text
    csrf = csrf_of(page.text)
    unconfirmed = admin.post(f"/console/datasets/{ds.id}/delete", data={"csrf": csrf})
    assert unconfirmed.status_code == 422 and "confirmation box" in unconfirmed.text
    done = admin.post(f"/console/datasets/{ds.id}/delete", data={"csrf": csrf, "confirm": ds.id})
    assert done.status_code == 200 and done.url.path == "/console/datasets"
    assert f"Deleted dataset {ds.id}" in done.text and not ds.path.exists()

    other = own_dataset(tmp_path, "gaps-del-rest")
    client = TestClient(app)
    assert client.delete(f"/v1/datasets/{other.id}", headers=manage).json()["id"] == other.id
    gone = client.get(f"/v1/datasets/{other.id}", headers=manage)
    assert gone.status_code == 404 and "was deleted on" in gone.json()["error"]["message"]
    listed = client.get("/v1/datasets", headers=manage, params={"limit": 500}).json()["datasets"]
    assert not {ds.id, other.id} & {d["id"] for d in listed}  # gone from the list too


def test_a_predict_only_key_cannot_delete_a_dataset(app, predict_key, tmp_path):
    """It may not even read one: 404, as for a dataset that does not exist."""
    ds = own_dataset(tmp_path, "gaps-del-viewer")
    headers = {"Authorization": f"Bearer {predict_key}"}
    assert TestClient(app).delete(f"/v1/datasets/{ds.id}", headers=headers).status_code == 404
    with signed_in(app, predict_key) as client:
        csrf = csrf_of(client.get("/console/").text)
        forged = client.post(f"/console/datasets/{ds.id}/delete", data={"csrf": csrf, "confirm": ds.id})
        assert forged.status_code == 404, forged.text
    assert ds.path.is_dir()


def test_a_job_is_paused_resumed_and_cancelled_from_its_page(admin):
    ref = tiny("gaps-pause-job", {"a": 0.5, "b": 0.5})
    job = jobs.submit("evaluate", {"model": ref})
    page = admin.get(f"/console/jobs/{job['id']}")
    assert "Pause job" in page.text and "Resume job" not in page.text
    paused = admin.post(f"/console/jobs/{job['id']}/pause", data={"csrf": csrf_of(page.text)})
    assert paused.status_code == 200 and jobs.show(job["id"])["status"] == "paused"
    assert "Resume job" in paused.text and "Pause job" not in paused.text
    assert 'data-status="paused"' in paused.text and "hx-trigger" not in paused.text  # no polling
    resumed = admin.post(f"/console/jobs/{job['id']}/resume", data={"csrf": csrf_of(paused.text)})
    assert resumed.status_code == 200 and jobs.show(job["id"])["status"] == "queued"
    forged = admin.post(f"/console/jobs/{job['id']}/pause", data={"csrf": "forged"})
    assert forged.status_code == 403 and jobs.show(job["id"])["status"] == "queued"
    admin.post(f"/console/jobs/{job['id']}/cancel", data={"csrf": csrf_of(resumed.text)})
    assert jobs.show(job["id"])["status"] == "cancelled"


def test_the_cli_removes_an_alias_and_says_what_it_named(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from aimass.cli.main import app as cli
    from aimass.store import registry

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    ref = tiny("cli-unalias", {"a": 0.5, "b": 0.5})
    assert CliRunner().invoke(cli, ["models", "alias", ref, "staging"]).exit_code == 0
    listed = json.loads(CliRunner().invoke(cli, ["models", "list", "--json"]).output)
    assert [(r["ref"], r["aliases"], r["gate"]) for r in listed] == [(ref, ["staging"], None)]
    other = CliRunner().invoke(cli, ["models", "unalias", "cli-unalias:9", "staging"])
    assert other.exit_code != 0 and f"names {ref}, not cli-unalias:9" in other.output
    done = CliRunner().invoke(cli, ["models", "unalias", "cli-unalias", "staging", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"alias": "cli-unalias@staging", "ref": ref, "removed": True}
    assert registry.aliases("cli-unalias") == {}
    gone = CliRunner().invoke(cli, ["models", "unalias", "cli-unalias", "staging"])
    assert gone.exit_code != 0 and "has no alias 'staging'" in gone.output


def test_the_console_removes_an_alias(admin):
    ref = tiny("gaps-unalias-ui", {"a": 0.5, "b": 0.5})
    registry.set_alias(ref, "staging")
    page = admin.get(f"/console/models/{ref}")
    assert page.status_code == 200 and "Remove @staging" in page.text
    forged = admin.post(f"/console/models/{ref}/unalias", data={"alias": "staging"})
    assert forged.status_code == 403 and registry.aliases("gaps-unalias-ui") == {"staging": 1}  # no CSRF
    done = admin.post(f"/console/models/{ref}/unalias", data={"csrf": csrf_of(page.text), "alias": "staging"})
    assert done.status_code == 200 and "Removed gaps-unalias-ui@staging." in done.text
    assert registry.aliases("gaps-unalias-ui") == {} and "Remove @staging" not in done.text
