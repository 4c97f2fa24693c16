"""Vector stores under abuse: embedding work metered whatever becomes of the file, a restarted
server's files metered to the key that added them, uploads deleted while they are added, and
requests that are not what the API takes (400s naming the field, never 500s)."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
from tests.conftest import live_server

from aimass import paths
from aimass.errors import ConfigError, NotFoundError, QuotaExceeded
from aimass.retrieval import files, filters, search, stores, tables
from aimass.retrieval.worker import Worker
from aimass.serve import auth, metering
from aimass.serve import openai_file_search as file_search
from aimass.serve.app import create_app
from aimass.serve.openai_errors import OpenAIError
from aimass.store import db as registry_db

LONG = " ".join(f"Clause {i}: the tenant keeps the garden tidy and pays the rent monthly." for i in range(80))
SMALL = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path))
    return tmp_path


def _document(home, name: str, text: str) -> str:
    source = home / f"source-{name}"
    source.write_text(text, encoding="utf-8")
    return files.store(source, name)["id"]


def _delete_upload(file_id: str) -> None:
    """What DELETE /v1/files/{id} does to a document, without forgetting it in the stores."""
    folder = files.folder(file_id)
    folder.rename(folder.with_name(f".deleted-{file_id}"))


class Recorder:
    def __init__(self):
        self.metered, self.admitted = [], []

    def done(self, key_id, model, tokens, ms):
        self.metered.append((key_id, model, tokens))

    def admit(self, key_id, tokens):
        self.admitted.append((key_id, tokens))
        return SimpleNamespace(release=lambda: None)


def _run(worker: Worker, store_id: str, file_id: str, key_id: str | None) -> None:
    worker.submit(store_id, file_id, key_id)
    assert worker.idle.wait(120)


# ------------------------------------------------------------------ metering
@pytest.mark.parametrize("how", ["file taken out", "store deleted"])
def test_a_file_stopped_halfway_is_metered_for_the_groups_already_embedded(home, monkeypatch, how):
    file_id = _document(home, "lease.txt", LONG)
    store = stores.create("lease", chunking_strategy=SMALL)
    stores.add_file(store["id"], file_id, added_by="k1")
    monkeypatch.setattr(stores, "EMBED_GROUP", 2)
    asked, real = [], stores._still_wanted

    def wanted(store_id, file_id):
        asked.append(1)
        if len(asked) == 3:  # two groups embedded, then it goes
            if how == "store deleted":
                stores.remove(store_id)
            else:
                stores.remove_file(store_id, file_id)
        return real(store_id, file_id)

    monkeypatch.setattr(stores, "_still_wanted", wanted)
    seen = Recorder()
    _run(Worker(seen.done, seen.admit), store["id"], file_id, "k1")
    assert len(asked) == 3
    (key, model, tokens), *more = seen.metered
    assert not more and key == "k1" and model == "multilingual-e5-small"
    assert 0 < tokens < seen.admitted[0][1]  # two groups' tokens, not the whole file's


def test_a_file_ended_by_an_error_halfway_is_metered_and_its_reason_names_no_server_path(home, monkeypatch):
    file_id = _document(home, "lease.txt", LONG)
    store = stores.create("lease", [file_id], chunking_strategy=SMALL, added_by="k1")
    monkeypatch.setattr(stores, "EMBED_GROUP", 2)
    embedder = stores.EMBEDDERS.backbone("multilingual-e5-small")
    calls, real = [], type(embedder).embed

    def embed(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError(f"onnx failed reading {home}/models/x.onnx")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(embedder), "embed", embed)
    seen = Recorder()
    _run(Worker(seen.done, seen.admit), store["id"], file_id, "k1")
    assert [m[:2] for m in seen.metered] == [("k1", "multilingual-e5-small")] and seen.metered[0][2] > 0
    error = stores.get_file(store["id"], file_id)["last_error"]
    assert error["code"] == "server_error" and str(home) not in error["message"]


def test_a_file_a_stopped_server_left_is_metered_to_the_key_that_added_it(home):
    first, second = _document(home, "a.txt", "The canteen opens at eight."), _document(home, "b.txt", LONG)
    store = stores.create("left", [first], added_by="k1")  # added, never processed: a server stopped
    stores.add_file(store["id"], second, added_by="k2")
    seen = Recorder()
    worker = Worker(seen.done, seen.admit)
    assert worker.resume() == 2 and worker.idle.wait(120)
    assert [a[0] for a in seen.admitted] == ["k1", "k2"]  # each held to its own key's quota
    assert [m[0] for m in seen.metered] == ["k1", "k2"] and all(m[2] > 0 for m in seen.metered)
    assert {f["status"] for f in stores.listed_files(store["id"])} == {"completed"}


def test_a_resumed_file_of_a_key_past_its_quota_fails_and_embeds_nothing(home):
    file_id = _document(home, "a.txt", "The canteen opens at eight.")
    store = stores.create("left", [file_id], added_by="k1")

    def refuse(key_id, tokens):
        raise QuotaExceeded(f"Key {key_id} has used its quota.")

    seen = Recorder()
    worker = Worker(seen.done, refuse)
    assert worker.resume() == 1 and worker.idle.wait(120)
    assert stores.get_file(store["id"], file_id)["last_error"]["code"] == "rate_limit_exceeded"
    assert seen.metered == []


def test_a_home_made_before_the_adding_key_was_kept_gains_its_column(home):
    """An older home's vector_store_files has no added_by: it is added when the database is opened,
    and its files left in progress resume unmetered, as they were added."""
    file_id = _document(home, "a.txt", "The canteen opens at eight.")
    with sqlite3.connect(paths.home() / "aimass.db") as db:
        db.execute(
            "CREATE TABLE vector_store_files (store_id VARCHAR(40) NOT NULL, file_id VARCHAR(40) NOT NULL,"
            " status VARCHAR(16) NOT NULL, last_error JSON, attributes JSON NOT NULL, chunking JSON NOT NULL,"
            " usage_bytes INTEGER NOT NULL, tokens INTEGER NOT NULL, created INTEGER NOT NULL,"
            " PRIMARY KEY (store_id, file_id))"
        )
    store = stores.create("old")
    with sqlite3.connect(paths.home() / "aimass.db") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(vector_store_files)")]
        db.execute(
            "INSERT INTO vector_store_files (store_id, file_id, status, attributes, chunking, usage_bytes,"
            " tokens, created) VALUES (?, ?, 'in_progress', '{}', ?, 0, 0, 1)",
            (store["id"], file_id, '{"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 200}'),
        )
    assert "added_by" in columns
    assert stores.pending() == [(store["id"], file_id, None)]
    registry_db._created.cache_clear()  # a second process opening it finds the column there
    with tables.session() as s:
        assert s.get(tables.StoreFileRecord, (store["id"], file_id)).added_by is None


# ------------------------------------------------------- deleted while added
def test_an_upload_deleted_before_it_is_added_is_a_404_and_leaves_nothing(home):
    file_id = _document(home, "a.txt", "The canteen opens at eight.")
    store = stores.create("s")
    _delete_upload(file_id)
    with pytest.raises(NotFoundError):
        stores.add_file(store["id"], file_id)
    with pytest.raises(NotFoundError):
        stores.create("t", [file_id])
    assert stores.listed_files(store["id"]) == [] and len(stores.listed()) == 1


def test_an_upload_deleted_between_the_first_check_and_the_add_is_not_added(home, monkeypatch):
    """add_file reads the upload again once it holds the write lock: a delete that came in between
    the route's check and the add is seen there."""
    file_id = _document(home, "a.txt", "The canteen opens at eight.")
    store = stores.create("s")
    real, reads = files.info, []

    def info(found):
        reads.append(found)
        if len(reads) == 1:
            answer = real(found)
            _delete_upload(found)  # deleted right after the first check
            return answer
        return real(found)

    monkeypatch.setattr(files, "info", info)
    with pytest.raises(NotFoundError):
        stores.add_file(store["id"], file_id)
    assert stores.listed_files(store["id"]) == []


def test_a_deleted_upload_fails_its_file_without_a_server_path_and_is_forgotten(home):
    file_id = _document(home, "a.txt", "The canteen opens at eight.")
    store = stores.create("s", [file_id])
    _delete_upload(file_id)  # gone before the worker read its text
    assert stores.process(store["id"], file_id) == 0
    error = stores.get_file(store["id"], file_id)["last_error"]
    assert error == {"code": "invalid_file", "message": stores.UNREADABLE}
    assert stores.forget_file(file_id) == [store["id"]]
    assert stores.listed_files(store["id"]) == []


def test_a_store_holding_chunks_of_a_deleted_upload_still_answers_from_the_rest(home):
    kept = _document(home, "kept.txt", "Parking permits are renewed every January.")
    lost = _document(home, "lost.txt", "The canteen opens at eight.")
    built = stores.create("s", [kept, lost])
    for file_id in (kept, lost):
        stores.process(built["id"], file_id)
    _delete_upload(lost)  # deleted, and its chunks not (yet) taken out
    found = search.search(built["id"], "canteen parking")
    assert [hit["filename"] for hit in found["data"]] == ["kept.txt"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AIMASS_HOME", str(tmp_path_factory.mktemp("hardened-stores")))
    record, key = auth.create_key("docs", ["manage"])
    app = create_app([])
    with live_server(app) as base:
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        store = http.post("/v1/vector_stores", json={"name": "race"}).json()
        yield SimpleNamespace(base=base, key=key, key_id=record.id, app=app, http=http, store=store["id"])
        http.close()
    mp.undo()


def _upload(http, name: str, text: str) -> str:
    answer = http.post("/v1/files", files={"file": (name, text.encode())}, data={"purpose": "assistants"})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def test_uploads_deleted_while_they_are_added_leave_no_file_behind_and_searches_answer(srv):
    store, http = srv.store, srv.http
    kept = _upload(http, "kept.txt", "Parking permits are renewed every January.")
    assert http.post(f"/v1/vector_stores/{store}/files", json={"file_id": kept}).status_code == 200
    gate = threading.Barrier(2)

    def add(file_id):
        gate.wait()
        return http.post(f"/v1/vector_stores/{store}/files", json={"file_id": file_id})

    def remove(file_id):
        gate.wait()
        return http.delete(f"/v1/files/{file_id}")

    deleted = []
    with ThreadPoolExecutor(2) as pool:
        for i in range(25):
            file_id = _upload(http, f"tiny-{i}.txt", f"Tiny note {i}: the canteen opens at eight.")
            added, gone = pool.submit(add, file_id), pool.submit(remove, file_id)
            assert added.result().status_code in (200, 404), added.result().text
            assert gone.result().status_code == 200, gone.result().text
            deleted.append(file_id)
    assert srv.app.state.vector_stores.idle.wait(120)
    listed = http.get(f"/v1/vector_stores/{store}/files", params={"limit": 100}).json()["data"]
    assert [f["id"] for f in listed] == [kept] and listed[0]["status"] == "completed"
    found = http.post(
        f"/v1/vector_stores/{store}/search", json={"query": "When are parking permits renewed?"}
    )
    assert found.status_code == 200, found.text
    assert {hit["file_id"] for hit in found.json()["data"]} == {kept}


@pytest.mark.parametrize("how", ["file taken out", "store deleted"])
def test_a_key_that_stops_its_file_halfway_is_still_metered_for_it(srv, monkeypatch, how):
    """The route's meter names the encoder captured when the file was started: a deleted store
    (whose encoder can no longer be looked up) meters as a kept one."""
    record, key = auth.create_key(f"stopper-{how}", ["manage"])
    mine = {"Authorization": f"Bearer {key}"}
    store = srv.http.post("/v1/vector_stores", json={"name": "mine"}, headers=mine).json()["id"]
    file_id = _upload(srv.http, "lease.txt", LONG)
    monkeypatch.setattr(stores, "EMBED_GROUP", 2)
    asked, real = [], stores._still_wanted

    def wanted(store_id, found):
        asked.append(1)
        if len(asked) == 2:  # one group embedded, then the key stops it
            path = f"/v1/vector_stores/{store_id}" + (f"/files/{found}" if how == "file taken out" else "")
            assert srv.http.delete(path, headers=mine).status_code == 200
        return real(store_id, found)

    monkeypatch.setattr(stores, "_still_wanted", wanted)
    body = {"file_id": file_id, "chunking_strategy": SMALL}
    assert srv.http.post(f"/v1/vector_stores/{store}/files", json=body, headers=mine).status_code == 200
    assert srv.app.state.vector_stores.idle.wait(120)
    assert len(asked) == 2
    srv.app.state.meter.flush()
    used = {u["model"]: u["items"] for u in metering.usage(record.id)}
    assert used.get("multilingual-e5-small", 0) > 0, used


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("hybrid", [[1], "x", 1, True])
def test_hybrid_search_that_is_no_object_is_a_400_naming_it(srv, hybrid):
    answer = srv.http.post(
        f"/v1/vector_stores/{srv.store}/search",
        json={"query": "leave", "ranking_options": {"hybrid_search": hybrid}},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "ranking_options.hybrid_search"


@pytest.mark.parametrize(
    "weights",
    [
        {"embedding_weight": float("inf")},
        {"text_weight": 1e308},
        {"embedding_weight": 1e308, "text_weight": 1e308},
        {"embedding_weight": float("nan")},
        {"embedding_weight": 10**400},
        {"embedding_weight": -1},
        {"embedding_weight": 0, "text_weight": 0},
        {"embedding_weight": "1"},
    ],
)
def test_hybrid_search_weights_are_finite_numbers_in_range(weights):
    with pytest.raises(ConfigError) as refused:
        search._ranking({"hybrid_search": weights})
    assert refused.value.where == "ranking_options.hybrid_search"


def test_only_the_weights_ratio_counts():
    assert search._ranking({"hybrid_search": {"embedding_weight": 1e-300, "text_weight": 0}})[0] == (1.0, 0.0)
    assert search._ranking({"hybrid_search": {"embedding_weight": 30, "text_weight": 60}})[0] == (0.5, 1.0)
    assert search._ranking({"hybrid_search": None})[0] == (1.0, 1.0)


def test_tiny_weights_still_find_passages(srv):
    file_id = _upload(srv.http, "permits.txt", "Parking permits are renewed every January.")
    store = srv.http.post("/v1/vector_stores", json={"file_ids": [file_id]}).json()["id"]
    assert srv.app.state.vector_stores.idle.wait(120)
    answer = srv.http.post(
        f"/v1/vector_stores/{store}/search",
        json={
            "query": "parking permits",
            "ranking_options": {"hybrid_search": {"embedding_weight": 1e-300, "text_weight": 1e-300}},
        },
    )
    assert answer.status_code == 200 and answer.json()["data"], answer.text


@pytest.mark.parametrize("store_id", ["vs_abc/x", "vs_abc%2Fsearch", "../files", "vs_", "VS_ABC", "vs_abc\n"])
def test_a_file_search_tool_naming_no_store_id_is_a_400_naming_the_field(store_id):
    tools = [{"type": "function", "name": "f"}, {"type": "file_search", "vector_store_ids": [store_id]}]
    with pytest.raises(OpenAIError) as refused:
        file_search.tool_of(tools)
    assert refused.value.http_status == 400 and refused.value.param == "tools[1].vector_store_ids"
    assert file_search.tool_of([{"type": "file_search", "vector_store_ids": ["vs_" + "0f" * 12]}])


def test_a_file_search_tool_naming_a_path_is_a_400_not_a_500(srv):
    answer = srv.http.post(
        "/v1/responses",
        json={
            "model": "x",
            "input": "q",
            "tools": [{"type": "file_search", "vector_store_ids": ["vs_51f9/x"]}],
        },
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "tools[0].vector_store_ids"


def test_a_file_batch_naming_a_path_is_a_404_not_a_500(srv):
    answer = srv.http.post(
        f"/v1/vector_stores/{srv.store}/file_batches", json={"file_ids": ["file-abc/content/x"]}
    )
    assert answer.status_code == 404, answer.text


# ------------------------------------------------------------------ filters
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "eq", "key": "flag", "value": 1}, False),
        ({"type": "ne", "key": "flag", "value": 1}, True),
        ({"type": "eq", "key": "flag", "value": True}, True),
        ({"type": "in", "key": "flag", "value": [1, "x"]}, False),
        ({"type": "nin", "key": "flag", "value": [1]}, True),
        ({"type": "in", "key": "flag", "value": [True]}, True),
        ({"type": "nin", "key": "flag", "value": [True]}, False),
        ({"type": "eq", "key": "n", "value": True}, False),
        ({"type": "in", "key": "n", "value": [True]}, False),
        ({"type": "eq", "key": "n", "value": 1.0}, True),  # numbers are numbers: 1 is 1.0
        ({"type": "in", "key": "n", "value": [0, 1]}, True),
        ({"type": "eq", "key": "off", "value": 0}, False),
        ({"type": "eq", "key": "off", "value": False}, True),
        ({"type": "gt", "key": "flag", "value": 0}, False),  # as the ordered comparisons already were
    ],
)
def test_a_boolean_attribute_equals_only_a_boolean(spec, expected):
    assert filters.matches(spec, {"flag": True, "off": False, "n": 1}) is expected
