"""The Files and Fine-tuning routes answer as OpenAI's do, through the official ``openai`` client:
a malformed ``method`` is a 400 naming its path, ``GET /v1/files`` filters and pages, a missing
file says "file", and a cancelled job is ``cancelled`` with no error."""

from __future__ import annotations

import json
import os

import openai
import pytest
from fastapi.testclient import TestClient
from tests.unit.llm.conftest import bbc_pairs, chat_line

from aimass.jobs import state
from aimass.serve import auth
from aimass.serve.app import create_app


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_HOME", str(tmp_path / "home"))
    _, key = auth.create_key("fine-tuning", ["manage"])
    with TestClient(create_app([])) as web:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=web, max_retries=0)


def _chat_file(client, tmp_path, name: str, skip: int):
    path = tmp_path / name
    path.write_text("".join(chat_line(a, h) + "\n" for a, h in bbc_pairs(12, chars=120, skip=skip)))
    return client.files.create(file=path.open("rb"), purpose="fine-tune")


def _batch_file(client, tmp_path, name: str, text: str):
    line = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": text}}
    line["body"]["model"] = "minilm-l6"
    path = tmp_path / name
    path.write_text(json.dumps(line) + "\n")
    return client.files.create(file=path.open("rb"), purpose="batch")


HYPER = "method.supervised.hyperparameters"


@pytest.mark.parametrize(
    ("method", "param"),
    [
        ({"supervised": {"hyperparameters": {"n_epochs": "x"}}}, HYPER + ".n_epochs"),
        ({"supervised": {"hyperparameters": {"batch_size": 1.5}}}, HYPER + ".batch_size"),
        ({"supervised": [1]}, "method.supervised"),
        ({"supervised": {"hyperparameters": [1]}}, HYPER),
        ({"supervised": {"hyperparameters": {"epochs": 3}}}, HYPER + ".epochs"),
    ],
)
def test_a_malformed_method_is_a_400_naming_its_path(client, method, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model="smollm2-135m", training_file="abc", method={"type": "supervised", **method}
        )
    error = caught.value.body
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert error["code"] == "invalid_value" and error["message"].endswith("."), error


def test_a_bad_hyperparameter_names_its_field_not_the_union_member(client):
    """``n_epochs`` is ``"auto" | int``: pydantic's path ran through the member's tag
    (``hyperparameters.n_epochs.literal['auto']``), which no client can map to a field."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model="smollm2-135m", training_file="abc", hyperparameters={"n_epochs": "x"}
        )
    assert caught.value.body["param"] == "hyperparameters.n_epochs", caught.value.body


def test_the_files_list_filters_by_purpose_and_pages(client, tmp_path):
    chats = [_chat_file(client, tmp_path, f"chat{i}.jsonl", skip=300 + 20 * i).id for i in range(2)]
    requests = [_batch_file(client, tmp_path, f"batch{i}.jsonl", f"text {i}").id for i in range(2)]

    assert sorted(f.id for f in client.files.list(purpose="fine-tune")) == sorted(chats)
    assert sorted(f.id for f in client.files.list(purpose="batch")) == sorted(requests)
    assert client.files.list(purpose="assistants").data == []

    everything = client.files.list().data  # newest first
    assert sorted(f.id for f in everything) == sorted(chats + requests)
    keys = [(f.created_at, f.id) for f in everything]
    assert keys == sorted(keys, reverse=True)
    assert [f.id for f in client.files.list(order="asc").data] == [f.id for f in reversed(everything)]

    first = client.files.list(limit=1)
    assert [f.id for f in first.data] == [everything[0].id] and first.has_more is True
    assert first.first_id == first.last_id == everything[0].id
    assert [f.id for f in client.files.list(limit=1)] == [f.id for f in everything]  # auto-paging
    last = client.files.list(after=everything[-2].id, limit=5)
    assert [f.id for f in last.data] == [everything[-1].id] and last.has_more is False
    assert client.files.list(after=everything[-1].id).data == []
    with pytest.raises(openai.UnprocessableEntityError):
        client.files.list(limit=0)


def test_a_missing_file_is_no_such_file(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.files.retrieve("zzz")
    assert caught.value.body["message"] == "No file 'zzz'."


def test_a_cancelled_job_is_cancelled_with_no_error(client, tmp_path):
    file = _chat_file(client, tmp_path, "chat.jsonl", skip=300)
    job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=file.id)
    assert state.claim(job.id, os.getpid()).status == "running"  # what a runner does first
    asked = client.fine_tuning.jobs.cancel(job.id)
    assert asked.status == "cancelled" and asked.error is None and asked.estimated_finish is None
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    # its runner then ends it as it ends any cancelled job
    error = {"cause": "cancelled", "message": "Cancelled by request.", "hint": None, "traceback": ""}
    state.finish(job.id, 1, "cancelled", error=error)
    ended = client.fine_tuning.jobs.retrieve(job.id)
    assert ended.status == "cancelled" and ended.error is None and ended.finished_at is not None
