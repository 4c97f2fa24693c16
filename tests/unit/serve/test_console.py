"""The web console over HTTP (no browser, no training): sessions, CSRF, scopes, relative links,
and the REST read routes its pages mirror (uploads, datasets, versions, paginated jobs)."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import user_with_key

from aimass import api, jobs, paths
from aimass.access import audit, directory
from aimass.serve import auth, metering
from aimass.serve.app import create_app
from aimass.serve.console.sessions import COOKIE

STATIC = Path(__file__).parents[3] / "src" / "aimass" / "serve" / "console" / "static"
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"


@pytest.fixture(scope="module")
def app():
    return create_app(refs=[])


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def signed_in(app, key: str) -> TestClient:
    client = TestClient(app)
    form = client.get("/console/signin")
    answer = client.post("/console/signin", data={"csrf": csrf_of(form.text), "key": key})
    assert answer.status_code == 200, answer.text
    return client


@pytest.fixture(scope="module")
def admin(app):
    with signed_in(app, auth.admin_token()) as client:
        yield client


@pytest.fixture(scope="module")
def manage_headers():
    _, key = auth.create_key("console-ops", ["manage"])
    return {"Authorization": f"Bearer {key}"}


def test_htmx_is_the_pinned_file():
    assert hashlib.sha256((STATIC / "htmx.min.js").read_bytes()).hexdigest() == HTMX_SHA256
    assert HTMX_SHA256 in (STATIC / "README.md").read_text()


def test_pages_need_a_session_and_redirect_relatively(app):
    client = TestClient(app)
    for path, to in [
        ("/console/", "./signin"),
        ("/console/jobs", "./signin"),
        ("/console/jobs/x", "../signin"),
    ]:
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == to, path
    assert client.get("/console", follow_redirects=False).headers["location"] == "console/"


def test_sign_in_sets_a_strict_http_only_cookie_without_the_key(app):
    client = TestClient(app)
    form = client.get("/console/signin")
    key = auth.admin_token()
    answer = client.post(
        "/console/signin", data={"csrf": csrf_of(form.text), "key": key}, follow_redirects=False
    )
    assert answer.status_code == 303
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and key not in cookie
    assert "Path=/" not in cookie  # the browser's default path: works under a proxy's prefix
    policy = form.headers["content-security-policy"]  # a string past the escaping runs no script
    assert (
        "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    assert "frame-ancestors 'none'" in policy and form.headers["x-frame-options"] == "DENY"


def test_sign_in_refuses_a_wrong_key_and_a_missing_token(app):
    client = TestClient(app)
    form = client.get("/console/signin")
    wrong = client.post("/console/signin", data={"csrf": csrf_of(form.text), "key": "am_nobody_x"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
    assert client.post("/console/signin", data={"key": auth.admin_token()}).status_code == 403


def test_every_form_needs_the_csrf_token(admin):
    page = admin.get("/console/keys")
    assert page.status_code == 200
    assert admin.post("/console/keys", data={"name": "x", "scopes": "predict"}).status_code == 403
    wrong = admin.post("/console/keys", data={"name": "x", "scopes": "predict", "csrf": "forged"})
    assert wrong.status_code == 403 and "CSRF" in wrong.text
    made = admin.post("/console/keys", data={"name": "x", "scopes": "predict", "csrf": csrf_of(page.text)})
    assert made.status_code == 200 and "shown only this once" in made.text
    assert "shown only this once" not in admin.get("/console/keys").text  # once


def test_a_predict_only_key_sees_no_management_and_cannot_forge_it(app):
    _, key = auth.create_key("viewer", ["predict"])
    with signed_in(app, key) as client:
        home = client.get("/console/")
        assert home.url.path == "/console/try"
        assert ">Jobs<" not in home.text and ">Keys<" not in home.text and "Deploy" not in home.text
        csrf = csrf_of(home.text)
        for path in ("/console/models/x:1/deploy", "/console/keys"):
            assert client.post(path, data={"csrf": csrf}).status_code == 403, path
        # as DELETE /v1/services/x answers: a service the key may not even read is not there (404)
        assert client.post("/console/services/x/undeploy", data={"csrf": csrf}).status_code == 404
        rest = TestClient(app).delete("/v1/services/x", headers={"Authorization": f"Bearer {key}"})
        assert rest.status_code == 404
        assert client.get("/console/jobs").status_code == 403


def test_a_revoked_key_ends_its_sessions(app):
    record, key = auth.create_key("short-lived", ["manage"])
    with signed_in(app, key) as client:
        assert client.get("/console/jobs").status_code == 200
        auth.revoke_key(record.id)
        assert client.get("/console/jobs", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(app):
    with signed_in(app, auth.admin_token()) as client:
        page = client.get("/console/jobs")
        client.post("/console/signout", data={"csrf": csrf_of(page.text)})
        assert client.get("/console/jobs", follow_redirects=False).status_code == 303


def test_every_page_renders_with_relative_links(admin, bbc_csv):
    ds = api.import_dataset(bbc_csv, name="news-console-http")
    job = jobs.submit("import", {"path": str(bbc_csv)})
    for path in [
        "/console/",
        "/console/jobs",
        "/console/jobs?status=queued",
        f"/console/jobs/{job['id']}",
        "/console/models",
        "/console/services",
        "/console/datasets",
        f"/console/datasets/{ds.id}",
        f"/console/start/{ds.id}",
        "/console/keys",
        "/console/try",
        "/console/playground",
    ]:
        page = admin.get(path)
        assert page.status_code == 200, (path, page.text[-500:])
        assert not re.search(r'(href|src|action|hx-get|hx-post)="/', page.text), path
    assert "business" in admin.get(f"/console/datasets/{ds.id}").text
    live = admin.get(f"/console/jobs/{job['id']}", headers={"HX-Request": "true"})
    assert live.text.startswith('<div id="progress"') or 'id="progress"' in live.text[:200]
    assert "<html" not in live.text  # htmx polls the same URL and gets only the live part


def test_errors_are_pages_with_the_cause_and_hint(admin):
    page = admin.get("/console/jobs/nope")
    assert page.status_code == 404 and "No job" in page.text and "text/html" in page.headers["content-type"]


def test_upload_keeps_files_under_the_uploads_root(admin, manage_headers, bbc_csv):
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as zf:
        zf.writestr("news/news.csv", bbc_csv.read_text())
    client = TestClient(admin.app)
    stored = client.post(
        "/v1/uploads", headers=manage_headers, files={"file": ("../../evil name.zip", packed.getvalue())}
    )
    assert stored.status_code == 201, stored.text
    body = stored.json()
    assert body["archive"] == "zip" and body["file"] == "evilname.zip"
    report = client.post("/v1/datasets", headers=manage_headers, json={"path": body["path"]})
    assert report.status_code == 201, report.text
    assert report.json()["rows"] > 0
    refused = client.post("/v1/datasets", headers=manage_headers, json={"path": str(bbc_csv)})
    assert refused.status_code == 403


def test_an_upload_that_would_fill_the_disk_is_a_507_and_keeps_nothing(admin, manage_headers, monkeypatch):
    """A full disk made an upload a bare 500, and the next user's too; now an upload leaves
    AIMASS_MIN_FREE_BYTES free (the database, jobs and new versions need room) or is refused whole."""
    from aimass import paths

    before = sorted(paths.subdir("uploads").iterdir())
    free = shutil.disk_usage(paths.subdir("uploads")).free
    monkeypatch.setenv("AIMASS_MIN_FREE_BYTES", str(free - 512 * 1024))  # half a MiB of room left
    client = TestClient(admin.app)
    refused = client.post(
        "/v1/uploads", headers=manage_headers, files={"file": ("big.csv", b"x" * (2 << 20))}
    )
    assert refused.status_code == 507, refused.text
    error = refused.json()["error"]
    assert error["code"] == "insufficient_storage" and "AIMASS_MIN_FREE_BYTES" in error["hint"]
    assert sorted(paths.subdir("uploads").iterdir()) == before  # nothing half-written is kept
    monkeypatch.setenv("AIMASS_MIN_FREE_BYTES", "1")
    small = client.post("/v1/uploads", headers=manage_headers, files={"file": ("small.csv", b"text,label\n")})
    assert small.status_code == 201  # the server goes on


def test_an_uploaded_archive_of_documents_imports_as_text(admin, manage_headers, tmp_path):
    import shutil

    from aimass.data import bbc_news_documents

    bbc_news_documents(tmp_path / "letters", per_class=4, formats=("pdf", "docx"))
    archive = Path(shutil.make_archive(str(tmp_path / "letters"), "zip", tmp_path, "letters"))
    client = TestClient(admin.app)
    stored = client.post(
        "/v1/uploads", headers=manage_headers, files={"file": ("letters.zip", archive.read_bytes())}
    )
    assert stored.status_code == 201, stored.text
    report = client.post("/v1/datasets", headers=manage_headers, json={"path": stored.json()["path"]})
    assert report.status_code == 201, report.text
    assert report.json()["rows"] == 20 and report.json()["documents"] == {"pdf": 10, "docx": 10}


def test_rest_twins_page_on_the_server(admin, manage_headers, bbc_csv):
    client = TestClient(admin.app)
    for _ in range(3):
        jobs.submit("import", {"path": str(bbc_csv)})
    first = client.get("/v1/jobs?limit=2", headers=manage_headers).json()
    second = client.get("/v1/jobs?limit=2&offset=2", headers=manage_headers).json()
    assert len(first["jobs"]) == 2 and first["total"] >= 3
    assert not {j["id"] for j in first["jobs"]} & {j["id"] for j in second["jobs"]}
    listed = client.get("/v1/datasets?limit=1", headers=manage_headers).json()
    assert listed["total"] >= 1 and len(listed["datasets"]) == 1
    ds_id = listed["datasets"][0]["id"]
    assert client.get(f"/v1/datasets/{ds_id}", headers=manage_headers).json()["id"] == ds_id
    assert "rejects" in client.get(f"/v1/datasets/{ds_id}/rejects", headers=manage_headers).json()
    assert client.get("/v1/versions", headers=manage_headers).json()["total"] >= 0
    assert client.get("/v1/versions").status_code == 401


NO_DEPLOYS = {
    "Statement": [
        {"Sid": "EverythingElse", "Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Sid": "NoConsoleDeploys", "Effect": "Deny", "Action": "model:Deploy", "Resource": "*"},
    ]
}


def test_the_console_obeys_the_access_policies_not_only_the_key_scopes(app):
    """A user-bound key that has the ``manage`` scope, but whose user's policy denies model:Deploy,
    cannot deploy from the console either: 403 naming the Sid, and the audit log keeps it."""
    directory.create_user("dora")
    directory.put_policy("DoraNoDeploys", NO_DEPLOYS)
    directory.attach("DoraNoDeploys", "user", "dora")
    record, key = auth.create_key("dora", ["manage"])
    directory.bind_key(record.id, user="dora")
    with signed_in(app, key) as client:
        page = client.get("/console/models")
        assert page.status_code == 200  # the rest of what `manage` would do is allowed by her Allow
        answer = client.post("/console/models/reviews:3/deploy", data={"csrf": csrf_of(page.text)})
        assert answer.status_code == 403, answer.text[-500:]
        assert "text/html" in answer.headers["content-type"]
        assert "NoConsoleDeploys" in answer.text and "DoraNoDeploys" in answer.text
        alias = client.post(
            "/console/models/reviews:3/alias", data={"csrf": csrf_of(page.text), "alias": "x"}
        )
        assert alias.status_code == 403 and "NoConsoleDeploys" in alias.text  # an alias moves what serves
    rows = audit.query(principal="dora", action="model:Deploy")
    assert [r["decision"] for r in rows] == ["explicitDeny", "explicitDeny"]
    assert all(r["source"] == "console" for r in rows) and rows[-1]["resource"].endswith("/model/reviews:3")
    assert rows[-1]["matched"][0]["sid"] == "NoConsoleDeploys"
    listed = audit.query(principal="dora", action="model:List")
    assert listed and listed[0]["decision"] == "allowed" and listed[0]["source"] == "console"


def test_the_wizard_trains_in_a_project_the_user_may_submit_to(app, bbc_csv):
    """A user whose policy covers only project ``ml`` is offered ``ml`` (not ``default``), and the
    wizard's ``auto`` job (on the stored dataset) lands there; asking for ``default`` is a 403, as
    POST /v1/auto would answer, with the same audit row."""
    ds = api.import_dataset(bbc_csv, name="news-wizard-project")
    directory.create_project("ml")
    own = {"Effect": "Allow", "Action": "*", "Resource": "aimass:project/ml/*"}
    read = {"Effect": "Allow", "Action": "dataset:Read", "Resource": "aimass:project/default/dataset/*"}
    key = user_with_key("erin", "ErinML", [own, read])
    with signed_in(app, key) as client:
        page = client.get(f"/console/start/{ds.id}")
        assert page.status_code == 200, page.text[-500:]
        assert "text-classification" in page.text and "POST /v1/auto" in page.text
        offered = re.findall(r'<option value="([^"]+)">\1</option>', page.text.split('name="project"')[1])
        assert offered == ["ml"]
        form = {"csrf": csrf_of(page.text), "budget": "10", "name": "wizard-auto"}
        denied = client.post(f"/console/start/{ds.id}/train", data={**form, "project": "default"})
        assert denied.status_code == 403, denied.text[-300:]
        answer = client.post(
            f"/console/start/{ds.id}/train", data={**form, "project": "ml"}, follow_redirects=False
        )
        assert answer.status_code == 303, answer.text[-500:]
    job_id = re.search(r"jobs/([^?]+)\?wizard=1", answer.headers["location"]).group(1)
    assert directory.project_of("job", job_id) == "ml"
    job = jobs.show(job_id)
    assert job["kind"] == "auto" and job["params"] == {
        "data": ds.id,
        "time_budget": "10s",
        "name": "wizard-auto",
        "deploy": False,
    }
    decided = audit.query(principal="erin", action="job:Submit")  # newest first
    assert [r["decision"] for r in decided[:2]] == ["allowed", "implicitDeny"]
    assert decided[0]["source"] == "console" and decided[0]["resource"] == "aimass:project/ml/job/*"
    jobs.cancel(job_id)


def test_a_project_only_user_uploads_into_their_project(app):
    """A user whose policy covers only project ``vision`` is offered ``vision`` on the Start page;
    the upload lands there (the dataset is vision's), and asking for ``default`` is a 403, decided
    as POST /v1/uploads would be, before the file is kept."""
    directory.create_project("vision")
    directory.create_user("fay")
    directory.put_policy(
        "FayVision",
        {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "aimass:project/vision/*"}]},
    )
    directory.attach("FayVision", "user", "fay")
    record, key = auth.create_key("fay", ["manage"])
    directory.bind_key(record.id, user="fay")
    rows = "text,label\n" + "\n".join(f"vision note {i} on {w},{w}" for i in range(12) for w in "ab")
    with signed_in(app, key) as client:
        start = client.get("/console/")
        offered = re.findall(r'<option value="([^"]+)">\1</option>', start.text.split('name="project"')[1])
        assert offered == ["vision"]
        form = {"csrf": csrf_of(start.text), "name": "fay-notes"}
        upload = {"file": ("notes.csv", rows.encode(), "text/csv")}
        kept = len(list(paths.subdir("uploads").glob("*")))
        denied = client.post("/console/start/upload", data={**form, "project": "default"}, files=upload)
        assert denied.status_code == 403, denied.text[-300:]
        assert len(list(paths.subdir("uploads").glob("*"))) == kept
        answer = client.post(
            "/console/start/upload", data={**form, "project": "vision"}, files=upload, follow_redirects=False
        )
        assert answer.status_code == 303, answer.text[-300:]
        report = client.get("/console/" + answer.headers["location"].lstrip("./"))
        assert report.status_code == 200 and "fay-notes" in report.text, report.text[-300:]
    assert directory.project_of("dataset", "fay-notes") == "vision"


def test_keys_page_creates_a_key_with_a_quota_and_changes_it(admin):
    """The create form's quota and period, the row's use of it, and the row's form to change or
    remove it (decided as PATCH /v1/keys/{id}); a quota that is not a number is a 422 naming it."""
    page = admin.get("/console/keys")
    form = {
        "name": "capped-ui",
        "scopes": "predict",
        "quota": "5",
        "quota_period": "day",
        "csrf": csrf_of(page.text),
    }
    made = admin.post("/console/keys", data=form)
    assert made.status_code == 200 and "shown only this once" in made.text
    key_id = re.search(r"New key <strong>([0-9a-f]{8})</strong>", made.text).group(1)
    assert "0 of 5 this day" in made.text
    changed = admin.post(f"/console/keys/{key_id}/quota", data={"quota": "7", "csrf": csrf_of(made.text)})
    assert changed.status_code == 200 and f"Key {key_id}: quota 7 items." in changed.text
    assert "0 of 7 this day" in changed.text
    odd = admin.post(f"/console/keys/{key_id}/quota", data={"quota": "many", "csrf": csrf_of(made.text)})
    assert odd.status_code == 422 and "The quota must be a number" in odd.text
    lifted = admin.post(f"/console/keys/{key_id}/quota", data={"quota": "", "csrf": csrf_of(made.text)})
    assert f"Key {key_id}: no quota." in lifted.text
    listed = {k["id"]: k for k in auth.list_keys()}
    assert listed[key_id]["quota"] is None


def test_documents_added_in_the_console_are_decided_as_their_rest_twin(app):
    """Adding documents to a store reads each one (``dataset:Read``, as
    ``POST /v1/vector_stores/{id}/files`` decides it). A user denied that read gets the REST twin's
    404 and keeps nothing: the upload is taken away and the store is unchanged."""
    from aimass.retrieval import stores

    directory.create_project("library")
    own = {"Effect": "Allow", "Action": "*", "Resource": "aimass:project/library/*"}
    unread = {"Effect": "Deny", "Action": "dataset:Read", "Resource": "aimass:project/library/dataset/*"}
    key = user_with_key("gus", "GusNoReads", [own, unread])
    made = stores.create("gus-shelf", [])
    directory.assign("vector_store", made["id"], "library")
    documents = paths.home() / "files"
    kept = sorted(documents.glob("file-*")) if documents.exists() else []
    with signed_in(app, key) as client:
        page = client.get(f"/console/stores/{made['id']}")
        assert page.status_code == 200 and "Add documents" in page.text, page.text[-300:]
        doc = {"documents": ("rules.md", b"Library books go back within three weeks.", "text/markdown")}
        form = {"csrf": csrf_of(page.text)}
        denied = client.post(f"/console/stores/{made['id']}/files", data=form, files=doc)
        # a read denied is a 404, as over REST: the document is hidden from the one who sent it
        assert denied.status_code == 404 and "no dataset" in denied.text.lower(), denied.text[-300:]
    assert (sorted(documents.glob("file-*")) if documents.exists() else []) == kept
    assert stores.listed_files(made["id"]) == [] and stores.get(made["id"])["file_counts"]["total"] == 0


def test_a_console_form_value_never_takes_its_rest_twin_off_the_access_rules(app):
    """A form's id fills one segment of the REST twin it is decided as; an id holding ``/`` (or none)
    made a path no rule names, decided by the key's scope alone: it reached the store of a project
    the user may not read ("vs_... has no file 'x/y'", a 404 that a missing store answers otherwise)."""
    from aimass.retrieval import stores

    directory.create_project("vault")
    hidden = stores.create("vault-shelf", [])["id"]
    directory.assign("vector_store", hidden, "vault")
    key = user_with_key(
        "hal", "HalOwnOnly", [{"Effect": "Allow", "Action": "*", "Resource": "aimass:project/lab/*"}]
    )
    with signed_in(app, key) as client:
        page = client.get("/console/")
        assert page.status_code == 200, page.text[-300:]
        csrf = csrf_of(page.text)
        for file_id in ("file-1/x", "", "..", "file-1"):
            for action in ("files/attributes", "files/remove"):
                answers = {
                    store: client.post(
                        f"/console/stores/{store}/{action}",
                        data={"csrf": csrf, "file_id": file_id, "attributes": "a=1"},
                    )
                    for store in (hidden, "vs_000000000000000000000000")
                }
                shown = {a.status_code for a in answers.values()}
                text = {re.sub(r"vs_\w+", "vs_", a.text) for a in answers.values()}
                assert shown == {404} and len(text) == 1, (
                    file_id,
                    action,
                    shown,
                )  # the same as a missing store
    assert stores.get(hidden)["file_counts"]["total"] == 0


def test_the_console_spends_the_key_s_rate_limit_as_rest_does(app):
    """A page is a request of the signed-in key: past its rate limit, a 429 as its REST twin answers."""
    _, key = auth.create_key("slow-console", ["manage"], rate_limit=0.01)
    with signed_in(app, key) as client:  # signing in lands on a page: the one request its burst allows
        again = client.get("/console/jobs")
        assert again.status_code == 429 and "limited to 0.01 requests/s" in again.text, again.text[-300:]
    rest = TestClient(app).get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert rest.status_code == 429  # one bucket for both


def test_a_document_is_labelled_in_the_console_and_search_filters_read_it(app, admin, tmp_path):
    """The attributes form replaces a document's attributes as ``POST
    /v1/vector_stores/{id}/files/{file_id}`` does; a wrong line is a 422 naming it, and a user
    whose policies deny ``vector_store:Update`` gets the twin's 403 and changes nothing."""
    from aimass.retrieval import files, search, stores

    doc = tmp_path / "rules.md"
    doc.write_text("Library books go back within three weeks; reference books stay in the room.")
    file_id = files.add(doc)["id"]
    made = stores.create("shelf", [file_id])
    stores.process(made["id"], file_id)
    page = admin.get(f"/console/stores/{made['id']}")
    assert "Set the attributes" in page.text
    form = {
        "csrf": csrf_of(page.text),
        "file_id": file_id,
        "attributes": 'lang = en\nyear = 2024\ncode = "007"',
    }
    done = admin.post(f"/console/stores/{made['id']}/files/attributes", data=form)
    assert done.status_code == 200 and "rules.md now has the attributes" in done.text
    assert "year = 2024" in done.text and 'code = "007"' in done.text  # shown under its name
    assert stores.get_file(made["id"], file_id)["attributes"] == {"lang": "en", "year": 2024, "code": "007"}
    recent = {"type": "gte", "key": "year", "value": 2020}
    assert search.search(made["id"], "When do books go back?", filters=recent)["data"]
    assert not search.search(made["id"], "When do books go back?", filters={**recent, "value": 2025})["data"]

    wrong = admin.post(
        f"/console/stores/{made['id']}/files/attributes", data={**form, "attributes": "lang = en\nyear 2024"}
    )
    assert wrong.status_code == 422 and "Line 2 of the attributes is not name = value" in wrong.text
    assert stores.get_file(made["id"], file_id)["attributes"]["year"] == 2024  # unchanged

    directory.create_project("archive")
    directory.assign("vector_store", made["id"], "archive")
    own = {"Effect": "Allow", "Action": "*", "Resource": "aimass:project/archive/*"}
    frozen = {"Effect": "Deny", "Action": "vector_store:Update", "Resource": "*"}
    key = user_with_key("ivy", "IvyReadsOnly", [own, frozen])
    with signed_in(app, key) as client:
        seen = client.get(f"/console/stores/{made['id']}")
        assert seen.status_code == 200 and "Set the attributes" not in seen.text
        form = {"csrf": csrf_of(seen.text), "file_id": file_id, "attributes": "lang = fr"}
        denied = client.post(f"/console/stores/{made['id']}/files/attributes", data=form)
        assert denied.status_code == 403 and "IvyReadsOnly" in denied.text, denied.text[-300:]
        # her search embeds the question: metered to her key, as its REST twin (it was not)
        searched = client.get(f"/console/stores/{made['id']}", params={"q": "When do books go back?"})
        assert searched.status_code == 200 and "rules.md" in searched.text
    assert stores.get_file(made["id"], file_id)["attributes"]["lang"] == "en"
    app.state.meter.flush()
    used = metering.usage(key.split("_")[1])  # am_<id>_<secret>
    assert used and used[0]["requests"] == 1 and used[0]["items"] >= 5, used
