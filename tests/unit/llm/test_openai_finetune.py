"""OpenAI's Files and Fine-tuning APIs through the official ``openai`` client: a fine-tuning script
written for OpenAI runs here unchanged, from the upload to a chat with the fine-tuned model."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time

import httpx
import openai
import pytest
from tests.conftest import live_server
from tests.unit.llm.conftest import bbc_pairs, chat_line

from aimass import api, jobs
from aimass.errors import InUseError, NotFoundError
from aimass.serve import auth
from aimass.serve.app import create_app

ASK = [{"role": "user", "content": "Shares in the carmaker rose 5% after record quarterly profits."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _, key = auth.create_key("fine-tuning", ["manage"])
    with live_server(create_app([])) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """12 short BBC pairs and one line with no answer: 9 train, 1 valid and 2 test examples."""
    path = tmp_path_factory.mktemp("ft") / "ft-headlines.jsonl"
    lines = [chat_line(a, h) for a, h in bbc_pairs(12, chars=120, skip=300)]
    lines.append(json.dumps({"messages": [{"role": "user", "content": "no answer here"}]}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    """10 other BBC pairs: a validation file."""
    path = tmp_path_factory.mktemp("ft") / "ft-valid.jsonl"
    path.write_text("".join(chat_line(a, h) + "\n" for a, h in bbc_pairs(10, chars=120, skip=400)))
    return path


def test_an_openai_fine_tuning_script_runs_unchanged(server, small_file, valid_file):
    client = server
    file = client.files.create(file=small_file.open("rb"), purpose="fine-tune")
    valid = client.files.create(file=valid_file.open("rb"), purpose="fine-tune")
    assert file.object == "file" and file.purpose == "fine-tune" and file.status == "processed"
    assert file.status_details.startswith("12 examples kept, 1 rejected"), file.status_details
    assert client.files.retrieve(file.id).filename == "ft-headlines.jsonl"
    assert file.id in [f.id for f in client.files.list().data]

    job = client.fine_tuning.jobs.create(
        model="smollm2-135m",
        training_file=file.id,
        validation_file=valid.id,
        suffix="small headlines",
        hyperparameters={"n_epochs": 2, "batch_size": 4},
        seed=3,
        metadata={"team": "news-desk"},
    )
    assert job.object == "fine_tuning.job" and job.status == "queued" and job.fine_tuned_model is None
    assert job.validation_file == valid.id and job.result_files == []
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (2, 4)
    assert job.model == "smollm2-135m" and job.training_file == file.id and job.seed == 3
    # paused once it runs (its LoRA loop stops right after the step it is on), then resumed
    pauser = threading.Thread(target=_pause_when_running, args=(client, job.id))
    pauser.start()
    held = jobs.run_foreground(job.id)  # what `aimass serve --jobs 1` runs; it returns when paused
    pauser.join()
    assert held["status"] == "paused", held["events"]
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert "right after its checkpoint was written" in held["events"][-1]["message"]
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    ran = jobs.run_foreground(job.id)
    assert ran["status"] == "succeeded", ran["error"]
    assert [e["kind"] for e in ran["events"]][-3:] == ["resume_requested", "resumed", "succeeded"]

    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.finished_at >= done.created_at
    assert done.fine_tuned_model.startswith("ft-small-headlines:"), done.fine_tuned_model
    # with a validation file, all 12 training conversations train: 3 steps of 4 a pass, 2 passes
    assert done.trained_tokens > 2 * 12 * 20
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=5).data]
    assert done.metadata == {"team": "news-desk"}
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "news-desk"}).data] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "sports-desk"}).data == []
    events = client.fine_tuning.jobs.list_events(job.id, limit=50).data
    assert events and all(e.object == "fine_tuning.job.event" and e.message for e in events)
    first = client.fine_tuning.jobs.list_events(job.id, limit=3)
    following = client.fine_tuning.jobs.list_events(job.id, limit=3, after=first.data[-1].id)
    assert first.has_more and [e.id for e in first.data + following.data] == [e.id for e in events[:6]]
    metrics = sorted((e.data for e in events if e.type == "metrics"), key=lambda d: d["step"])
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6] and metrics[0]["total_steps"] == 6
    assert all(m["train_loss"] > 0 and 0 <= m["train_mean_token_accuracy"] <= 1 for m in metrics)
    stamps = [
        e.created_at for e in sorted((e for e in events if e.type == "metrics"), key=lambda e: e.data["step"])
    ]
    assert stamps == sorted(stamps) and done.created_at <= stamps[0] <= stamps[-1] <= done.finished_at + 1
    validated = [m for m in metrics if "valid_loss" in m]
    assert [m["step"] for m in validated] == [3, 6]  # the end of each pass over the 12
    assert validated[-1]["valid_loss"] < validated[0]["valid_loss"] * 1.5

    # the result file: a CSV of the steps, read as OpenAI's is
    (results,) = done.result_files
    assert client.files.retrieve(results).purpose == "fine-tune-results"
    table = list(csv.DictReader(io.StringIO(client.files.content(results).text)))
    assert [int(r["step"]) for r in table] == [1, 2, 3, 4, 5, 6]
    assert [float(r["train_loss"]) for r in table] == [m["train_loss"] for m in metrics]
    assert [r["step"] for r in table if r["valid_loss"]] == ["3", "6"]
    assert float(table[-1]["valid_loss"]) == validated[-1]["valid_loss"]
    final, first = client.fine_tuning.jobs.checkpoints.list(job.id).data  # newest first
    assert final.fine_tuned_model_checkpoint == done.fine_tuned_model and final.step_number == 6
    assert final.metrics.valid_loss == validated[-1]["valid_loss"]
    assert final.metrics.full_valid_loss > 0  # the evaluation on all 10 validation conversations
    assert first.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-3"
    assert first.step_number == 3 and first.metrics.valid_loss == validated[0]["valid_loss"]
    # the first epoch's adapter answers by its checkpoint name, and differs from the final one
    early = client.chat.completions.create(
        model=first.fine_tuned_model_checkpoint, messages=ASK, max_tokens=8, temperature=0, logprobs=True
    )
    late = client.chat.completions.create(
        model=done.fine_tuned_model, messages=ASK, max_tokens=8, temperature=0, logprobs=True
    )
    assert early.model == first.fine_tuned_model_checkpoint and early.choices[0].message.content
    first_token = [c.choices[0].logprobs.content[0].logprob for c in (early, late)]
    assert first_token[0] != first_token[1], first_token
    with pytest.raises(openai.NotFoundError):  # no checkpoint kept at step 2
        client.chat.completions.create(
            model=f"{done.fine_tuned_model}:ckpt-step-2", messages=ASK, max_tokens=2
        )
    # the version's page: the validation table names the kept checkpoint (and its REST twin does)
    base = str(client.base_url).removesuffix("/").removesuffix("/v1")
    with httpx.Client(base_url=base, timeout=60) as web:
        auth_header = {"Authorization": f"Bearer {client.api_key}"}
        twin = web.get(f"/v1/versions/{done.fine_tuned_model}", headers=auth_header).json()
        assert [c["model"] for c in twin["checkpoints"]] == [first.fine_tuned_model_checkpoint]
        form = web.get("/console/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        assert web.post("/console/signin", data={"csrf": csrf, "key": client.api_key}).status_code in (
            200,
            303,
        )
        page = web.get(f"/console/models/{done.fine_tuned_model}", follow_redirects=True).text
        assert "Validation while training" in page and first.fine_tuned_model_checkpoint in page
    # the uploaded file reads back as its kept conversations
    lines = client.files.content(file.id).text.splitlines()
    assert len(lines) == 12 and json.loads(lines[0])["messages"][-1]["role"] == "assistant"

    # the fine-tuned model answers by name at once, without a deployment
    answer = client.chat.completions.create(
        model=done.fine_tuned_model, messages=ASK, max_tokens=8, temperature=0
    )
    assert answer.model == done.fine_tuned_model and answer.choices[0].message.content
    with pytest.raises(openai.UnprocessableEntityError):  # ended: nothing to cancel (422, as /v1/jobs)
        client.fine_tuning.jobs.cancel(job.id)

    # deleting the files: the pair made of them (and holding their rows) goes too, the model stays
    pair = jobs.show(job.id)["result"]["dataset"]
    with pytest.raises(InUseError, match=done.fine_tuned_model):  # the CLI's delete asks for --force
        api.delete_dataset(file.id)
    assert client.files.delete(valid.id).deleted is True
    with pytest.raises(openai.NotFoundError) as gone:
        client.files.retrieve(valid.id)
    assert "was deleted on" in gone.value.body["message"]
    assert client.files.delete(file.id).deleted is True  # nothing trained on it alone: no refusal
    with pytest.raises(NotFoundError, match="was deleted on"):
        api.load_dataset(pair)
    with pytest.raises(openai.BadRequestError):  # a result file goes with its job
        client.files.delete(results)
    again = client.chat.completions.create(
        model=done.fine_tuned_model, messages=ASK, max_tokens=4, temperature=0
    )
    assert again.choices[0].message.content


def test_what_cannot_be_fine_tuned_is_a_4xx_naming_the_field(server, small_file):
    client = server
    file = client.files.create(file=small_file.open("rb"), purpose="fine-tune")

    def refused(error=openai.BadRequestError, **body):
        with pytest.raises(error) as caught:
            client.fine_tuning.jobs.create(**{"model": "smollm2-135m", "training_file": file.id, **body})
        return caught.value.body

    refused(openai.NotFoundError, validation_file="0123456789ab")
    assert refused(hyperparameters={"n_epochs": 0})["param"] == "hyperparameters.n_epochs"
    assert refused(method={"type": "dpo"})["param"] == "method"
    refused(openai.NotFoundError, training_file="0123456789ab")
    # a base named by a server path outside the data folders: 403 whether or not it exists
    for folder in ("/etc", "/no/such/folder"):
        assert "outside the data folders" in refused(openai.PermissionDeniedError, model=folder)["message"]
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=small_file.open("rb"), purpose="vision")
    assert purpose.value.body["param"] == "purpose"
    with pytest.raises(openai.UnprocessableEntityError) as labels:
        client.fine_tuning.jobs.create(
            model="smollm2-135m", training_file=file.id, metadata={"k" * 65: "too long a key"}
        )
    assert "too long" in labels.value.body["message"]
    queued = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=file.id)
    assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"  # queued: cancelled at once


def _pause_when_running(client, job_id: str) -> None:
    deadline = time.monotonic() + 300
    while client.fine_tuning.jobs.retrieve(job_id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    asked = client.fine_tuning.jobs.pause(job_id)
    assert asked.status == "running"  # until its next checkpoint is written


def test_a_running_job_estimates_its_finish_from_its_last_heartbeat():
    import time

    from aimass.serve.openai_finetune import _job

    params = {"task": "text-generation", "data": "0123456789ab", "backbone": "smollm2-135m"}
    job = {"id": "j", "kind": "train", "status": "running", "params": params, "eta_s": 120.0}
    job.update(created="2026-12-05T10:00:00+00:00", finished=None, result={}, error=None)
    assert abs(_job(job)["estimated_finish"] - (time.time() + 120)) < 5
    assert _job({**job, "status": "queued", "eta_s": None})["estimated_finish"] is None
