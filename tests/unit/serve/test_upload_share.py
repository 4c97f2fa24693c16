"""A project's share of upload bytes: one key could fill the disk every project shares with
uploads it never imported (only the server-wide free-space floor stopped it, for everyone). Uploads
now belong to a project, count against its share as they are written, and can be listed and deleted."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from tests.conftest import user_with_key

from aimass import paths
from aimass.access import directory
from aimass.data import uploads
from aimass.errors import TooLargeError
from aimass.serve.app import create_app


def team(project: str) -> list[dict]:
    return [{"Effect": "Allow", "Action": "*", "Resource": f"aimass:project/{project}/*"}]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIMASS_MAX_PROJECT_UPLOAD_BYTES", str(3 << 20))  # 3 MiB a project
    monkeypatch.setenv("AIMASS_MIN_FREE_BYTES", "1")
    return tmp_path / "home"


def test_a_project_holds_its_share_and_no_more(home):
    first = uploads.store_upload(io.BytesIO(b"x" * (2 << 20)), "a.csv", "nlp")
    assert first["project"] == "nlp" and first["project_bytes"] == 2 << 20
    with pytest.raises(TooLargeError) as refused:
        uploads.store_upload(io.BytesIO(b"y" * (2 << 20)), "b.csv", "nlp")
    message = str(refused.value) + refused.value.hint
    assert "'nlp'" in message and first["upload"] in message and "DELETE /v1/uploads" in message
    assert "at most 3.0 MiB" in message and "would make 4.0 MiB" in message  # its second MiB did not fit
    assert [u["upload"] for u in uploads.uploads("nlp")] == [first["upload"]]  # nothing half-kept
    assert len(list((home / "uploads").iterdir())) == 1
    other = uploads.store_upload(io.BytesIO(b"z" * (2 << 20)), "c.csv", "cv")  # another project's share
    assert other["project_bytes"] == 2 << 20
    uploads.delete_upload(first["upload"])
    again = uploads.store_upload(io.BytesIO(b"y" * (2 << 20)), "b.csv", "nlp")
    assert again["project_bytes"] == 2 << 20


def test_uploads_written_at_once_share_the_room(home):
    """Two uploads started together each saw the whole share free; they now take it chunk by chunk."""
    one, two = uploads._Room("nlp"), uploads._Room("nlp")
    one.take(2 << 20)
    with pytest.raises(TooLargeError):
        two.take(2 << 20)
    two.take(1 << 20)  # what is left
    one.drop()
    assert uploads._Room("nlp")._held() == 1 << 20


def test_an_archive_counts_what_it_unpacks_to(home, monkeypatch):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rows.csv", "text,label\n" + "a,b\n" * 400_000)  # 1.6 MB, a few KiB zipped
    monkeypatch.setenv("AIMASS_MAX_PROJECT_UPLOAD_BYTES", str(1 << 20))
    with pytest.raises(TooLargeError, match="at most 1.0 MiB"):
        uploads.store_upload(io.BytesIO(buffer.getvalue()), "rows.zip", "nlp")
    assert list((home / "uploads").iterdir()) == []


def test_over_rest_a_key_lists_and_deletes_only_its_projects_uploads(home):
    for project in ("nlp", "cv"):
        directory.create_project(project)
    alice = {"Authorization": "Bearer " + user_with_key("alice", "nlpTeam", team("nlp"))}
    bob = {"Authorization": "Bearer " + user_with_key("bob", "cvTeam", team("cv"))}
    client = TestClient(create_app(refs=[]))
    rows = {"file": ("a.csv", b"text,label\na,b\n")}
    sent = client.post("/v1/uploads?project=nlp", headers=alice, files=rows)
    assert sent.status_code == 201, sent.text
    upload = sent.json()["upload"]
    listed = client.get("/v1/uploads?project=nlp", headers=alice).json()
    assert [u["upload"] for u in listed["uploads"]] == [upload]
    assert listed["bytes"] == 15 and listed["limit"] == 3 << 20
    assert client.get("/v1/uploads?project=nlp", headers=bob).status_code == 403
    assert client.delete(f"/v1/uploads/{upload}", headers=bob).status_code == 403
    assert (paths.home() / "uploads" / upload).is_dir()
    over = client.post("/v1/uploads?project=nlp", headers=alice, files={"file": ("b.csv", b"x" * (4 << 20))})
    assert over.status_code == 413 and "'nlp'" in over.json()["error"]["message"]
    gone = client.delete(f"/v1/uploads/{upload}", headers=alice)
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert not (paths.home() / "uploads" / upload).exists()
    assert client.delete(f"/v1/uploads/{upload}", headers=alice).status_code == 404
    assert client.delete("/v1/uploads/..%2F..", headers=alice).status_code == 404
