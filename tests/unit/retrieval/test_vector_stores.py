"""Vector stores through the official ``openai`` client against a live server: documents in, chunks
embedded in the background, hybrid search with filters; errors, durability and access."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import httpx
import openai
import pytest
from tests.conftest import live_server

from aimass.access import directory
from aimass.backbones.embeddings import EMBEDDERS
from aimass.data.bundled import pdf_bytes
from aimass.llm.hub import HUB
from aimass.retrieval import chunks, files, lexical, stores
from aimass.retrieval.filters import matches
from aimass.serve import auth, metering
from aimass.serve import openai_file_search as file_search
from aimass.serve.app import create_app

DOCS = {
    "leave.md": "# Leave\n\nEvery employee is entitled to twenty-five days of paid annual leave each year, "
    "plus public holidays. Unused days may be carried over until March.",
    "expenses.txt": "Claim travel costs within thirty days on form EXP-4471, with the receipts attached. "
    "Finance pays approved claims with the next salary.",
    "zh.txt": "员工每年享有二十五天带薪年假。未休完的年假可以顺延到次年三月。",
}
PDF_TEXT = (
    "Opening hours. The office opens at 8 am and closes at 6 pm on Fridays; the car park shuts at 7 pm."
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AIMASS_HOME", str(tmp_path_factory.mktemp("vector-stores")))
    record, key = auth.create_key("docs", ["manage"])
    app = create_app([])
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
        uploaded = {
            name: client.files.create(file=(name, text.encode()), purpose="assistants").id
            for name, text in DOCS.items()
        }
        pdf = client.files.create(file=("hours.pdf", pdf_bytes(PDF_TEXT)), purpose="assistants")
        uploaded["hours.pdf"] = pdf.id
        store = client.vector_stores.create(name="handbook", file_ids=list(uploaded.values()))
        yield SimpleNamespace(
            base=base, key=key, key_id=record.id, client=client, app=app, files=uploaded, store=store
        )
    mp.undo()


def wait(srv, store_id: str) -> dict:
    assert srv.app.state.vector_stores.idle.wait(120)
    return srv.client.vector_stores.retrieve(store_id)


def names(page) -> list[str]:
    return [hit.filename for hit in page.data]


def test_documents_are_embedded_and_found_by_meaning_by_words_and_in_chinese(srv):
    store = wait(srv, srv.store.id)
    assert store.status == "completed" and store.file_counts.completed == 4 and store.usage_bytes > 0
    first = srv.client.vector_stores.search(srv.store.id, query="How much holiday do staff get per year?")
    assert names(first)[0] == "leave.md"
    assert 0 < first.data[-1].score <= first.data[0].score <= 1
    assert names(srv.client.vector_stores.search(srv.store.id, query="年假能顺延吗"))[0] == "zh.txt"
    friday = srv.client.vector_stores.search(srv.store.id, query="When does the office shut on a Friday?")
    assert names(friday)[0] == "hours.pdf" and "6 pm" in friday.data[0].content[0].text
    # the form number is a keyword: BM25 alone ranks its document first, and nothing without the word
    words = srv.client.vector_stores.search(
        srv.store.id,
        query="EXP-4471",
        extra_body={"ranking_options": {"hybrid_search": {"embedding_weight": 0, "text_weight": 1}}},
    )
    # searched by words only, the score is the rank alone: first is 1
    assert names(words) == ["expenses.txt"] and words.data[0].score == pytest.approx(1.0)
    hybrid = srv.client.vector_stores.search(srv.store.id, query="EXP-4471", max_num_results=2)
    assert names(hybrid)[0] == "expenses.txt" and len(hybrid.data) == 2
    top = srv.client.vector_stores.search(
        srv.store.id, query="EXP-4471", ranking_options={"score_threshold": 0.9}
    )
    assert names(top) == ["expenses.txt"]  # first in both rankings: 1.0; the rest at most about 0.5


def test_the_score_says_whether_the_store_answers_the_query_at_all(srv):
    """A question the handbook answers scores high; one it does not is low for every result, so a
    score_threshold leaves a RAG answer nothing unrelated to build on."""
    wait(srv, srv.store.id)
    answered = srv.client.vector_stores.search(srv.store.id, query="How many days of paid leave do I get?")
    unrelated = srv.client.vector_stores.search(srv.store.id, query="How do I bake sourdough bread at home?")
    assert names(answered)[0] == "leave.md" and answered.data[0].score > 0.7
    assert unrelated.data and max(hit.score for hit in unrelated.data) < 0.1  # ranked, but far
    kept = {"score_threshold": 0.3}
    assert (
        names(srv.client.vector_stores.search(srv.store.id, query="年假能顺延吗", ranking_options=kept))[0]
        == "zh.txt"
    )
    assert (
        srv.client.vector_stores.search(
            srv.store.id, query="How do I bake sourdough bread at home?", ranking_options=kept
        ).data
        == []
    )
    # where the annual party is held: near the leave policy (cosine 0.857, which in English would
    # be a likely answer), but Chinese questions sit closer to Chinese passages
    party = srv.client.vector_stores.search(srv.store.id, query="公司的年会在哪里举办", ranking_options=kept)
    assert party.data == []


def test_relevance_weighs_the_best_cosine_or_the_words_found_whole():
    from aimass.retrieval.search import relevance

    # the encoder's midpoint is even odds; a cosine nobody calibrated leaves the ranking alone
    assert relevance("multilingual-e5-small", 0.83, None) == pytest.approx(0.5)
    assert (
        relevance("multilingual-e5-small", 0.78, 0.2)
        < 0.01
        < 0.99
        < relevance("multilingual-e5-small", 0.88, 0.2)
    )
    assert relevance("multilingual-e5-small", 0.78, 1.0) > 0.9  # a code found whole: its words decide
    assert relevance("reviews:3", 0.2, 0.0) == 1.0
    assert relevance("multilingual-e5-small", None, 0.2) == 1.0  # by words only: the rank alone
    # Chinese questions sit closer to Chinese passages: the same cosine is weaker evidence
    e5 = "multilingual-e5-small"
    assert relevance(e5, 0.86, 0.0, "zh") < 0.2 < 0.9 < relevance(e5, 0.86, 0.0)
    assert relevance("minilm-l6", 0.5, 0.0, "zh") == relevance("minilm-l6", 0.5, 0.0)  # English only
    index = lexical.Index(["form EXP-4471 for travel", "travel costs", "年假顺延"])
    assert index.coverage("EXP-4471").tolist() == [1.0, 0.0, 0.0]
    share = index.coverage("travel form")  # "form" is rarer than "travel": it weighs more
    assert share[0] == pytest.approx(1.0) and 0 < share[1] < 0.5 and share[2] == 0
    assert index.coverage("顺延").tolist()[2] == pytest.approx(1.0)


def test_a_chunk_is_the_document_s_own_text_and_the_content_route_returns_them_in_order(srv):
    content = srv.client.vector_stores.files.content(
        file_id=srv.files["leave.md"], vector_store_id=srv.store.id
    )
    assert [c.text for c in content.data] == [DOCS["leave.md"]]
    tokenizer = EMBEDDERS.backbone("e5-small").tokenizer
    text = " ".join(f"Clause {i}: the tenant keeps the garden tidy and pays rent monthly." for i in range(60))
    pieces = chunks.split(text, tokenizer, 100, 40)
    sizes = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in pieces]
    assert (
        all(p in text for p in pieces)
        and pieces[0].startswith("Clause 0")
        and pieces[-1].endswith("monthly.")
    )
    assert max(sizes) <= 100 and len(pieces) == pytest.approx(len(tokenizer(text)["input_ids"]) / 60, abs=2)
    assert pieces[1][:30] in pieces[0]  # neighbours share their overlap
    long = srv.client.files.create(file=("lease.txt", text.encode()), purpose="assistants")
    added = srv.client.vector_stores.files.create(
        vector_store_id=srv.store.id,
        file_id=long.id,
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 40},
        },
    )
    assert added.status == "in_progress"
    wait(srv, srv.store.id)
    stored = srv.client.vector_stores.files.content(file_id=long.id, vector_store_id=srv.store.id)
    assert [c.text for c in stored.data] == pieces
    srv.client.vector_stores.files.delete(file_id=long.id, vector_store_id=srv.store.id)


def test_attribute_filters_select_files_and_a_missing_attribute_matches_nothing(srv):
    sid = srv.store.id
    srv.client.vector_stores.files.update(
        file_id=srv.files["zh.txt"], vector_store_id=sid, attributes={"lang": "zh", "year": 2024}
    )
    srv.client.vector_stores.files.update(
        file_id=srv.files["leave.md"], vector_store_id=sid, attributes={"lang": "en", "year": 2022}
    )
    query = "annual leave"
    only = srv.client.vector_stores.search(
        sid, query=query, filters={"type": "eq", "key": "lang", "value": "zh"}
    )
    assert names(only) == ["zh.txt"] and only.data[0].attributes == {"lang": "zh", "year": 2024}
    recent = {
        "type": "and",
        "filters": [
            {"type": "gte", "key": "year", "value": 2023},
            {"type": "in", "key": "lang", "value": ["en", "zh"]},
        ],
    }
    assert names(srv.client.vector_stores.search(sid, query=query, filters=recent)) == ["zh.txt"]
    either = {
        "type": "or",
        "filters": [
            {"type": "eq", "key": "lang", "value": "en"},
            {"type": "lt", "key": "year", "value": 2023},
        ],
    }
    assert names(srv.client.vector_stores.search(sid, query=query, filters=either)) == ["leave.md"]
    # "ne" on files without the attribute selects none of them (nothing is chosen by what was not set)
    other = srv.client.vector_stores.search(
        sid, query=query, filters={"type": "ne", "key": "lang", "value": "en"}
    )
    assert names(other) == ["zh.txt"]
    assert matches({"type": "nin", "key": "lang", "value": ["en"]}, {}) is False
    assert matches({"type": "gt", "key": "year", "value": "2020"}, {"year": 2024}) is False  # no mixed types


def test_bm25_counts_chinese_by_characters_and_pairs():
    assert lexical.words("Rates rose 0.5% — 利率上调") == [
        *("rates", "rose", "0", "5"),
        *("利", "利率", "率", "率上", "上", "上调", "调"),
    ]
    index = lexical.Index(["利率上调", "股市下跌", "interest rates rise"])
    scores = index.scores("上调利率")
    assert scores[0] > 0 and scores[1] == 0 and scores[2] == 0
    assert index.scores("nothing in common").tolist() == [0, 0, 0]


def errors(srv, method: str, path: str, **kwargs) -> tuple[int, dict]:
    answer = httpx.request(method, srv.base + path, headers={"Authorization": f"Bearer {srv.key}"}, **kwargs)
    return answer.status_code, answer.json().get("error", {})


def test_bad_requests_are_400s_naming_the_field_and_nothing_is_kept(srv, monkeypatch):
    sid = srv.store.id
    before = len(srv.client.vector_stores.list().data)
    too_big = {"type": "static", "static": {"max_chunk_size_tokens": 4096, "chunk_overlap_tokens": 0}}
    status, error = errors(srv, "POST", "/v1/vector_stores", json={"name": "x", "chunking_strategy": too_big})
    assert status == 400 and error["param"] == "chunking_strategy"
    assert f"from 100 to {stores.most_tokens('e5-small')} " in error["message"]
    overlap = {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150}}
    status, error = errors(srv, "POST", "/v1/vector_stores", json={"chunking_strategy": overlap})
    assert status == 400 and "half" in error["message"]
    status, error = errors(srv, "POST", "/v1/vector_stores", json={"file_ids": ["file-" + "0" * 24]})
    assert status == 404
    assert len(srv.client.vector_stores.list().data) == before  # none of these made a store
    status, error = errors(
        srv,
        "POST",
        f"/v1/vector_stores/{sid}/search",
        json={"query": "x", "filters": {"type": "like", "key": "a", "value": 1}},
    )
    assert status == 400 and error["param"] == "filters.type"
    status, error = errors(
        srv, "POST", f"/v1/vector_stores/{sid}/search", json={"query": "x", "rewrite_query": True}
    )
    assert status == 400 and error["param"] == "rewrite_query"
    status, error = errors(srv, "POST", f"/v1/vector_stores/{sid}/search", json={"query": "x " * 600})
    assert status == 400 and error["param"] == "query"
    status, _ = errors(srv, "POST", "/v1/vector_stores/vs_nope/search", json={"query": "x"})
    assert status == 404
    with pytest.raises(openai.BadRequestError, match="not a document"):
        srv.client.files.create(file=("tool.exe", b"MZ\x90\x00"), purpose="assistants")
    with pytest.raises(openai.BadRequestError, match="not UTF-8"):
        srv.client.files.create(file=("notes.txt", "年假".encode("gb18030")), purpose="assistants")
    with pytest.raises(openai.BadRequestError, match="OCR"):  # a scanned PDF: no text layer
        srv.client.files.create(file=("scan.pdf", pdf_bytes("")), purpose="assistants")
    monkeypatch.setattr(files, "MAX_BYTES", 64)
    with pytest.raises(openai.APIStatusError, match="at most 64") as big:  # refused before it is read
        srv.client.files.create(file=("big.txt", b"x" * 65), purpose="assistants")
    assert big.value.status_code == 413
    monkeypatch.undo()
    assert not [
        f
        for f in srv.client.files.list().data
        if f.filename in ("tool.exe", "notes.txt", "scan.pdf", "big.txt")
    ]
    status, error = errors(
        srv,
        "POST",
        f"/v1/vector_stores/{sid}/files",
        json={"file_id": srv.files["zh.txt"], "attributes": {"k": "v" * 600}},
    )
    assert status == 400 and error["param"] == "attributes.k"
    batch_input = srv.files["leave.md"]  # a document is not a batch's requests
    status, error = errors(
        srv, "POST", "/v1/batches", json={"input_file_id": batch_input, "endpoint": "/v1/embeddings"}
    )
    assert status == 400 and error["param"] == "input_file_id"


def test_file_batches_deleting_a_file_takes_it_out_and_usage_is_metered(srv):
    extra = srv.client.files.create(
        file=("faq.txt", b"Parking permits are renewed every January."), purpose="assistants"
    )
    store = srv.client.vector_stores.create(name="faq")
    batch = srv.client.vector_stores.file_batches.create(
        vector_store_id=store.id, file_ids=[extra.id, srv.files["zh.txt"]], attributes={"team": "hr"}
    )
    assert batch.object == "vector_store.files_batch" and batch.file_counts.total == 2
    wait(srv, store.id)
    done = srv.client.vector_stores.file_batches.retrieve(batch_id=batch.id, vector_store_id=store.id)
    assert done.status == "completed" and done.file_counts.completed == 2
    listed = srv.client.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=store.id)
    assert {f.id for f in listed.data} == {extra.id, srv.files["zh.txt"]}
    assert {f.attributes["team"] for f in listed.data} == {"hr"}
    assert (
        names(srv.client.vector_stores.search(store.id, query="When are parking permits renewed?"))[0]
        == "faq.txt"
    )
    srv.client.files.delete(extra.id)  # the upload goes, and with it its chunks in every store
    assert srv.client.vector_stores.retrieve(store.id).file_counts.total == 1
    assert "faq.txt" not in names(srv.client.vector_stores.search(store.id, query="parking permits"))
    assert srv.client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        srv.client.vector_stores.retrieve(store.id)
    assert srv.client.files.retrieve(srv.files["zh.txt"]).purpose == "assistants"  # files stay
    srv.app.state.meter.flush()
    used = {u["model"]: u["items"] for u in metering.usage(srv.key_id)}
    assert used.get("multilingual-e5-small", 0) > 50  # the documents' and the queries' tokens


def test_a_file_left_in_progress_by_a_stopped_server_is_embedded_by_the_next(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path))
    source = tmp_path / "note.txt"
    source.write_text("The library closes early on public holidays.")
    document = files.store(source, "note.txt")
    store = stores.create("left", [document["id"]])  # added, never processed: a server stopped here
    assert stores.get(store["id"])["status"] == "in_progress"
    app = create_app([])
    with live_server(app):
        assert app.state.vector_stores.idle.wait(120)
    found = stores.get(store["id"])
    assert found["status"] == "completed" and found["file_counts"]["completed"] == 1
    assert stores.file_content(store["id"], document["id"])["content"][0]["text"].startswith("The library")


def test_the_python_api_builds_a_store_of_more_documents_than_one_request_may_name(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path))
    monkeypatch.setattr(stores, "MAX_FILE_IDS", 2)  # 500 in use: three documents stand for 501
    paths = []
    for i, fact in enumerate(
        ["The canteen opens at eight.", "Parking is free on Sundays.", "Badges are blue."]
    ):
        paths.append(tmp_path / f"fact-{i}.txt")
        paths[-1].write_text(fact)
    with pytest.raises(Exception, match="at most 2 files"):
        stores.create("too-many", [files.add(p)["id"] for p in paths])
    built = stores.build("facts", paths)
    assert built["status"] == "completed" and built["file_counts"]["completed"] == 3
    assert {f["status"] for f in stores.listed_files(built["id"])} == {"completed"}


def test_search_is_its_own_action_that_a_predict_key_is_granted_by_a_policy(srv):
    record, reader = auth.create_key("app", ["predict"])
    app_key_id = record.id
    client = openai.OpenAI(base_url=f"{srv.base}/v1", api_key=reader, max_retries=0)
    with pytest.raises(openai.NotFoundError):  # a store the key may not read is no store to it
        client.vector_stores.search(srv.store.id, query="annual leave")
    with pytest.raises(openai.PermissionDeniedError, match="vector_store:Create"):
        client.vector_stores.create(name="mine")
    other = srv.client.vector_stores.create(name="private")
    arn = directory.arn("vector_store", srv.store.id)
    directory.put_policy(
        "SearchHandbook",
        {"Statement": [{"Effect": "Allow", "Action": "vector_store:Search", "Resource": arn}]},
    )
    directory.attach("SearchHandbook", "key", app_key_id)
    assert names(client.vector_stores.search(srv.store.id, query="annual leave"))[0] in ("leave.md", "zh.txt")
    with pytest.raises(openai.NotFoundError):  # only the store it was granted
        client.vector_stores.search(other.id, query="annual leave")
    with pytest.raises(openai.NotFoundError):  # searching is not reading the documents whole
        client.vector_stores.files.content(file_id=srv.files["leave.md"], vector_store_id=srv.store.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(srv.files["leave.md"])


@pytest.fixture(scope="module")
def base_model():
    """SmolLM2-135M, loaded in this process (the live server's): served by name as a base model."""
    HUB.base("smollm2-135m")
    return "smollm2-135m"


def test_a_response_with_file_search_answers_from_the_passages_and_cites_their_files(srv, base_model):
    tool = {"type": "file_search", "vector_store_ids": [srv.store.id], "max_num_results": 2}
    question = "How many days of annual leave does an employee get?"
    ask = {"model": "smollm2-135m", "input": question, "max_output_tokens": 16, "temperature": 0}
    answer = srv.client.responses.create(**ask, tools=[tool], include=["file_search_call.results"])
    call, message = answer.output
    assert call.type == "file_search_call" and call.queries == [question] and len(call.results) == 2
    assert call.results[0].filename == "leave.md" and call.results[0].text == DOCS["leave.md"]
    text = message.content[0]
    assert [(a.type, a.filename) for a in text.annotations] == [
        ("file_citation", r.filename) for r in call.results
    ]
    # what the model read: the passages, numbered, in a system message before the question
    passages = "".join(f"[{i}] {r.filename}\n{r.text}\n\n" for i, r in enumerate(call.results, 1))
    chat = srv.client.chat.completions.create(
        model="smollm2-135m",
        messages=[
            {"role": "system", "content": (file_search.PROMPT + passages).rstrip()},
            {"role": "user", "content": question},
        ],
        max_tokens=16,
        temperature=0,
    )
    assert text.text == chat.choices[0].message.content
    assert answer.usage.input_tokens == chat.usage.prompt_tokens
    events = list(srv.client.responses.create(**ask, tools=[tool], stream=True))
    kinds = [e.type for e in events]
    assert kinds[2:7] == [
        "response.output_item.added",
        *(f"response.file_search_call.{s}" for s in ("in_progress", "searching", "completed")),
        "response.output_item.done",
    ]
    streamed = events[-1].response.output
    assert streamed[0].results is None  # results only when "include" asks for them
    assert streamed[1].content[0].text == text.text
    assert [a.filename for a in streamed[1].content[0].annotations] == [r.filename for r in call.results]


def test_passages_go_in_best_first_while_they_fit_and_a_store_the_key_may_not_search_is_a_404(
    srv, base_model
):
    hits = [
        {"filename": name, "content": [{"type": "text", "text": "word " * n}], "score": 1 / (i + 1)}
        for i, (name, n) in enumerate([("a.txt", 50), ("b.txt", 500), ("c.txt", 30)])
    ]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]
    grounded, used = file_search.grounded(messages, hits, room=200, tokens=lambda t: len(t.split()))
    assert [h["filename"] for h in used] == ["a.txt", "c.txt"]  # b.txt does not fit and is not cut
    assert [m["role"] for m in grounded] == ["system", "system", "user"]
    assert "[2] c.txt" in grounded[1]["content"] and "b.txt" not in grounded[1]["content"]
    record, key = auth.create_key("chat-only", ["predict"])
    client = openai.OpenAI(base_url=f"{srv.base}/v1", api_key=key, max_retries=0)
    tool = {"type": "file_search", "vector_store_ids": [srv.store.id]}
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model="smollm2-135m", input="annual leave?", tools=[tool], max_output_tokens=4
        )
    with pytest.raises(openai.BadRequestError, match="vector_store_ids"):
        srv.client.responses.create(model="smollm2-135m", input="q", tools=[{"type": "file_search"}])


def test_the_command_line_builds_lists_searches_and_deletes_a_store(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from aimass.cli import app

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    runner = CliRunner()
    made = runner.invoke(app, ["stores", "create", "handbook", *(str(tmp_path / n) for n in DOCS), "--json"])
    assert made.exit_code == 0, made.output
    store = json.loads(made.output)
    assert store["status"] == "completed" and store["file_counts"]["completed"] == 3
    found = runner.invoke(app, ["stores", "search", store["id"], "年假能顺延吗", "-n", "2", "--json"])
    assert [h["filename"] for h in json.loads(found.output)["data"]][0] == "zh.txt"
    assert [s["id"] for s in json.loads(runner.invoke(app, ["stores", "list", "--json"]).output)] == [
        store["id"]
    ]
    missing = runner.invoke(app, ["stores", "create", "x", str(tmp_path / "nope.pdf")])
    assert missing.exit_code == 2 and "No file" in missing.output
    assert runner.invoke(app, ["stores", "delete", store["id"]]).exit_code == 0
    gone = runner.invoke(app, ["stores", "search", store["id"], "leave"])
    assert gone.exit_code == 2 and "aimass stores list" in gone.output


def test_a_store_exported_here_is_imported_elsewhere_and_answers_the_same_without_embedding(
    tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from aimass.cli import app
    from aimass.retrieval import search

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "here"))
    made = stores.build("handbook", [_doc(tmp_path, name, text) for name, text in DOCS.items()])
    zh = next(f["id"] for f in stores.listed_files(made["id"]) if files.info(f["id"])["filename"] == "zh.txt")
    stores.set_attributes(made["id"], zh, {"lang": "zh", "year": 2024})
    asked = search.search(made["id"], "年假能顺延吗")["data"]
    runner = CliRunner()
    done = runner.invoke(app, ["stores", "export", made["id"], str(tmp_path / "out"), "--json"])
    assert done.exit_code == 0 and json.loads(done.output)["files"] == 3, done.output

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "there"))
    monkeypatch.setattr(stores, "_embed", lambda *a: pytest.fail("an imported chunk was embedded again"))
    tampered = tmp_path / "tampered"
    shutil.copytree(tmp_path / "out", tampered)
    lines = (tampered / "chunks.jsonl").read_text(encoding="utf-8").splitlines()
    (tampered / "chunks.jsonl").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    short = runner.invoke(app, ["stores", "import", str(tampered)])
    assert short.exit_code == 2 and "where store.json says" in " ".join(short.output.split())
    manifest = json.loads((tampered / "store.json").read_text())
    manifest["files"][0]["filename"] = "../../escape.txt"
    (tampered / "store.json").write_text(json.dumps(manifest))
    (tampered / "chunks.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    escape = runner.invoke(app, ["stores", "import", str(tampered)])
    assert escape.exit_code == 2 and "no plain file name" in " ".join(escape.output.split())
    manifest["files"][0]["filename"] = "blank.txt"  # a document with no text: read when it is added
    (tampered / "store.json").write_text(json.dumps(manifest))
    (tampered / "documents" / "0").write_bytes(b"   ")
    blank = runner.invoke(app, ["stores", "import", str(tampered)])
    assert blank.exit_code == 2 and "holds no text" in " ".join(blank.output.split())
    nowhere = runner.invoke(app, ["stores", "import", str(tmp_path / "nowhere")])
    assert nowhere.exit_code == 2 and "store.json cannot be read" in " ".join(nowhere.output.split())
    assert stores.listed() == []  # none left a store behind

    back = runner.invoke(app, ["stores", "import", str(tmp_path / "out"), "--name", "moved", "--json"])
    assert back.exit_code == 0, back.output
    moved = json.loads(back.output)
    assert (
        moved["name"] == "moved" and moved["status"] == "completed" and moved["file_counts"]["completed"] == 3
    )
    again = search.search(moved["id"], "年假能顺延吗")["data"]
    assert [(h["filename"], h["score"]) for h in again] == [(h["filename"], h["score"]) for h in asked]
    assert again[0]["attributes"] == {"lang": "zh", "year": 2024}
    recent = search.search(moved["id"], "leave", filters={"type": "gte", "key": "year", "value": 2024})[
        "data"
    ]
    assert [h["filename"] for h in recent] == ["zh.txt"]


def _doc(folder, name: str, text: str):
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def test_a_key_past_its_quota_cannot_add_files_or_search(srv):
    record, key = auth.create_key("small", ["manage"], quota=20, quota_period="day")
    client = openai.OpenAI(base_url=f"{srv.base}/v1", api_key=key, max_retries=0)
    store = client.vector_stores.create(name="quota")
    client.vector_stores.files.create(vector_store_id=store.id, file_id=srv.files["leave.md"])
    wait(srv, store.id)
    srv.app.state.meter.flush()
    assert sum(u["items"] for u in metering.usage(record.id)) > 20  # the file's tokens, metered to the key
    with pytest.raises(openai.RateLimitError, match="quota"):
        client.vector_stores.files.create(vector_store_id=store.id, file_id=srv.files["zh.txt"])
    with pytest.raises(openai.RateLimitError, match="quota"):
        client.vector_stores.search(store.id, query="annual leave")
    assert client.vector_stores.files.list(store.id).data[0].id == srv.files["leave.md"]  # nothing added


def test_files_added_at_once_are_each_held_to_the_quota_before_they_are_embedded(srv):
    """The route's quota check passes every file added at once (nothing is embedded yet); each one
    is checked again, once chunked and before it is embedded, against what the key's files before
    it used: the one that crosses the quota is embedded, the rest fail (``rate_limit_exceeded``)."""
    record, key = auth.create_key("batchy", ["manage"], quota=20, quota_period="day")
    client = openai.OpenAI(base_url=f"{srv.base}/v1", api_key=key, max_retries=0)
    store = client.vector_stores.create(name="held")
    file_ids = [srv.files[name] for name in ("leave.md", "zh.txt", "hours.pdf")]
    client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=file_ids)
    wait(srv, store.id)
    files = {f.id: f for f in client.vector_stores.files.list(store.id).data}
    done = [i for i in file_ids if files[i].status == "completed"]
    refused = [files[i] for i in file_ids if files[i].status == "failed"]
    assert len(done) == 1 and len(refused) == 2, {i: (f.status, f.last_error) for i, f in files.items()}
    assert all(f.last_error.code == "rate_limit_exceeded" for f in refused)
    assert all("quota" in f.last_error.message for f in refused)
    srv.app.state.meter.flush()
    used = sum(u["items"] for u in metering.usage(record.id))
    embedder = EMBEDDERS.backbone(stores.get(store.id)["embedding_model"])
    pieces = [c["text"] for c in stores.file_content(store.id, done[0])["content"]]
    assert used == sum(embedder.token_counts(embedder.prepare(pieces, "passage")))  # that file's, alone
    assert not srv.app.state.meter._holds.get(record.id)  # every hold let go
