"""The text-generation task: LoRA on assistant tokens, adapter-only versions, evaluation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.unit.llm.conftest import GEN_PARAMS

import aimass
from aimass.errors import ConfigError
from aimass.llm import decode
from aimass.llm.decode import StopMatcher
from aimass.llm.metrics import rouge_l
from aimass.tasks.text_generation import TextGenerator, encode_example, headline_pairs
from aimass.train import progress


def test_only_assistant_tokens_are_labelled():
    from aimass.llm.backbone import get_llm_backbone, load_tokenizer

    tokenizer = load_tokenizer(get_llm_backbone("smollm2-135m"))
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
    ids, labels = encode_example(tokenizer, messages, 512)
    learned = tokenizer.decode([i for i, label in zip(ids, labels) if label != -100])
    assert learned == "Paris.<|im_end|>\nRome.<|im_end|>\n"
    assert len(encode_example(tokenizer, messages, 10)[0]) == 10


def test_stop_strings_across_token_boundaries_are_held_back():
    stops = StopMatcher(["###", "\n\n"])
    assert stops.scan("Title #") == (None, 6)
    assert stops.scan("Title ##") == (None, 6)
    assert stops.scan("Title ###x") == (6, 6)
    assert stops.scan("a\n") == (None, 1)


def test_registered_version_is_the_adapter_and_its_lineage(headlines_model):
    folder = Path(headlines_model["path"])
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert "adapter.safetensors" in names and "model.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    assert (folder / "adapter.safetensors").stat().st_size < 12_000_000  # 2.4M LoRA params, no base
    state = load_file(str(folder / "adapter.safetensors"))
    assert all("lora_" in k for k in state) and len(state) == 30 * 7 * 2
    meta = json.loads((folder / "model.json").read_text())
    assert meta["lineage"]["base_model"] == "smollm2-135m"
    assert meta["lineage"]["data_digest"] == aimass.load_dataset(headlines_model["dataset"]).digest
    assert meta["params"]["max_steps"] == 2 and meta["fitted"]["train_stats_"]["steps"] == 2
    report = json.loads((folder / "evaluation.json").read_text())
    assert report["perplexity"] > 1 and 0 <= report["rouge_l"] <= 1
    assert set(report["side_by_side"][0]) == {"prompt", "reference", "base", "fine_tuned"}
    assert (folder / "side_by_side.md").read_text().startswith("| prompt | reference | base | fine-tuned |")
    assert headlines_model["metrics"]["n"] == report["n"]


def test_loaded_adapter_answers_like_the_trained_model(headlines_model):
    model = aimass.load(headlines_model["model"])
    again = TextGenerator.load(headlines_model["path"])
    assert again.base_ is model.base_  # one base in memory
    prompt = headline_pairs(1, skip=100)[0][0]
    a = model.generate(prompt, temperature=0.9, seed=7, max_tokens=8)
    b = again.generate(prompt, temperature=0.9, seed=7, max_tokens=8)
    assert a.choices[0].token_ids == b.choices[0].token_ids
    assert a.completion_tokens == 8 or a.choices[0].finish_reason == "stop"


def test_prompts_decoded_side_by_side_answer_as_each_alone(headlines_model):
    """``generate_batch`` (what ``predict`` runs): prompts of different lengths, left-padded in one
    batch, each ending on its own (stop string, end of text, max_tokens) with the tokens and text
    it has when decoded alone."""
    model = aimass.load(headlines_model["model"])
    tokenizer = model.base_.tokenizer
    articles = headline_pairs(4, chars=300, skip=200)[0]
    prompts = [model._prompt_ids(a[: 40 + 80 * i]) for i, a in enumerate(articles)]
    assert len({len(p) for p in prompts}) == 4  # really padded
    for stop in ((), (" ",)):  # a stop string ends rows at different steps
        params = decode.SamplingParams(max_tokens=8, temperature=0.0, stop=stop)
        with model.base_.using(model.adapter_) as net:
            together = decode.generate_batch(net, tokenizer, prompts, params)
            alone = [decode.generate(net, tokenizer, p, params).choices[0] for p in prompts]
        for got, want in zip(together, alone, strict=True):
            assert (got.token_ids, got.text, got.finish_reason) == (
                want.token_ids,
                want.text,
                want.finish_reason,
            )
    assert {c.finish_reason for c in together} == {"stop"} and any(len(c.token_ids) > 1 for c in together)
    assert model.predict(articles[:2]) == [model.generate(a).choices[0].text.strip() for a in articles[:2]]
    assert decode.generate_batch(None, tokenizer, [], params) == []


def test_a_file_of_prompts_is_answered_in_bulk_and_resumes_by_whole_chunks(
    headlines_model, tmp_path, monkeypatch
):
    """``aimass.predict_file`` on a language model: each row's greedy answer (as ``predict``) in
    ``answer``, an empty prompt kept with its error; a run cut in its third row resumes from
    row 2 (chunks of 2 here) and ends equal to the straight run."""
    import csv

    from aimass import scoring

    prompts = [p[:160] for p in headline_pairs(3, skip=120)[0]]
    table = tmp_path / "prompts.csv"
    with open(table, "w", newline="") as handle:
        csv.writer(handle).writerows(
            [["id", "prompt"], *[[f"r{i}", p] for i, p in enumerate(prompts)], ["r3", ""]]
        )
    monkeypatch.setattr(scoring, "ANSWER_CHUNK", 2)
    done = aimass.predict_file(headlines_model["model"], table, tmp_path / "answers.csv")
    assert done["rows"] == 4 and done["classes"] == []
    with open(tmp_path / "answers.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "prompt", "line", "answer", "error"]
    expected = aimass.load(headlines_model["model"]).predict(prompts)
    assert [r["answer"] for r in rows[:3]] == expected and all(expected)
    assert (rows[3]["answer"], rows[3]["error"]) == ("", "empty input")
    straight = (tmp_path / "answers.csv").read_text()
    lines = straight.splitlines(keepends=True)
    (tmp_path / "cut.csv").write_text("".join(lines[:3]) + lines[3][:10])  # header, 2 rows, part of a 3rd
    again = aimass.predict_file(headlines_model["model"], table, tmp_path / "cut.csv", resume=True)
    assert again["resumed_at"] == 2 and (tmp_path / "cut.csv").read_text() == straight
    from tests.unit.serve.test_console_gaps import signed_in

    from aimass.serve import auth
    from aimass.serve.app import create_app

    with signed_in(create_app(refs=[]), auth.admin_token()) as web:  # the model page offers it
        page = web.get(f"/console/models/{headlines_model['model']}")
        assert "Answer the file" in page.text and "Label the file" not in page.text


def test_the_python_api_constrains_an_answer_to_a_schema_a_pattern_or_choices(headlines_model):
    """``generate(schema=...)``, ``regex=`` and ``choices=``: what the OpenAI routes offer, one layer down."""
    model = aimass.load(headlines_model["model"])
    schema = {
        "type": "object",
        "properties": {"topic": {"enum": ["business", "sport", "tech"]}, "words": {"type": "integer"}},
        "required": ["topic", "words"],
        "additionalProperties": False,
    }
    prompt = headline_pairs(1, skip=101)[0][0]
    shaped = model.generate(prompt, schema=schema, max_tokens=30)
    answer = json.loads(shaped.choices[0].text)
    assert answer["topic"] in ("business", "sport", "tech") and isinstance(answer["words"], int), answer
    assert re.fullmatch(
        r"[A-Z][a-z]+ \d{4}", model.generate(prompt, regex=r"[A-Z][a-z]+ \d{4}").choices[0].text
    )
    assert model.generate(prompt, choices=["yes", "no"], temperature=1.0, seed=3).choices[0].text in (
        "yes",
        "no",
    )
    with pytest.raises(ConfigError, match="one of"):
        model.generate(prompt, regex="a", choices=["a"])


class Killed(Exception):
    """Stands in for a process killed in the middle of a step."""


@pytest.mark.slow
def test_same_seed_same_adapter_also_when_resumed_after_a_kill_or_a_pause(tmp_path, monkeypatch):
    """A straight seeded run, and one killed in step 2 then resumed from its checkpoint: the same
    adapter, bit for bit, and the same losses and validation scores (step 3 starts a new seeded
    batch order; validation at the end of the pass, step 2, and of the fit, step 3)."""
    from aimass.tasks import text_generation as tg

    data = headline_pairs(4, chars=100)  # 2 batches of 2 a pass
    valid = headline_pairs(2, chars=100, skip=50)
    params = {**GEN_PARAMS, "max_steps": 3, "batch_size": 2, "max_length": 48}
    straight = TextGenerator(**params).fit(data, valid, progress=False)
    assert [v["step"] for v in straight.valid_history_] == [2, 3]
    assert len(straight.train_accuracy_) == 3 and all(0 <= a <= 1 for a in straight.train_accuracy_)
    monkeypatch.setattr(tg, "CHECKPOINT_SECONDS", 0.0)
    real, calls = tg._token_loss, []

    def dies_in_step_2(model, batch):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(model, batch)

    monkeypatch.setattr(tg, "_token_loss", dies_in_step_2)
    with pytest.raises(Killed):
        TextGenerator(**params).fit(data, valid, run_dir=tmp_path, progress=False)
    folder = tmp_path / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]
    assert json.loads((folder / "checkpoint.json").read_text())["loop"]["step"] == 1
    monkeypatch.setattr(tg, "_token_loss", real)
    resumed = TextGenerator(**params).fit(data, valid, run_dir=tmp_path, resume=True, progress=False)
    assert resumed.train_stats_["resumed_at_step"] == 1 and resumed.train_stats_["steps"] == 3
    assert resumed.history_ == straight.history_
    assert resumed.train_accuracy_ == straight.train_accuracy_
    assert resumed.valid_history_ == straight.valid_history_
    s1, s2 = straight.adapter_state(), resumed.adapter_state()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [c["step"] for c in resumed.checkpoints_] == [2] and resumed.checkpoints_ == straight.checkpoints_
    e1, e2 = straight.snapshots_[2], resumed.snapshots_[2]  # the adapter at the end of the first pass
    assert e1.keys() == s1.keys() and all(torch.equal(e1[k], e2[k]) for k in e1)
    assert any(not torch.equal(e1[k], s1[k]) for k in e1)  # and not the final one
    with pytest.raises(ConfigError, match="other data or settings"):  # refused before loading
        TextGenerator(**{**params, "lr": 5e-4}).fit(data, run_dir=tmp_path, resume=True, progress=False)

    # paused during step 2, the first pass's end (long before a routine checkpoint is due): the
    # loop writes one after that step and stops; resumed, the same fit, the kept adapter included
    monkeypatch.setattr(tg, "CHECKPOINT_SECONDS", 3600.0)
    calls.clear()

    def pause_in_step_2(model, batch):
        calls.append(1)
        if len(calls) == 2:
            progress.request_pause()
        return real(model, batch)

    monkeypatch.setattr(tg, "_token_loss", pause_in_step_2)
    try:
        with pytest.raises(progress.Paused, match="at step 2 of 3"):
            TextGenerator(**params).fit(data, valid, run_dir=tmp_path / "paused", progress=False)
    finally:
        progress.clear_pause()
    monkeypatch.setattr(tg, "_token_loss", real)
    meta = json.loads((tmp_path / "paused" / "checkpoint" / "checkpoint.json").read_text())
    assert meta["loop"]["step"] == 2
    again = TextGenerator(**params).fit(data, valid, run_dir=tmp_path / "paused", resume=True, progress=False)
    assert again.train_stats_["resumed_at_step"] == 2 and again.history_ == straight.history_
    assert again.valid_history_ == straight.valid_history_ and again.checkpoints_ == straight.checkpoints_
    e3, s3 = again.snapshots_[2], again.adapter_state()  # kept before the pause, read from the checkpoint
    assert all(torch.equal(e1[k], e3[k]) for k in e1) and all(torch.equal(s1[k], s3[k]) for k in s1)


def test_rouge_l_matches_a_hand_count():
    # LCS("police arrest man", "man arrested by police") = 1 word of 3 and 4
    assert rouge_l(["police arrest man"], ["man arrested by police"]) == pytest.approx(
        2 * (1 / 3 * 1 / 4) / (1 / 3 + 1 / 4)
    )


def test_the_one_cycle_schedule_builds_and_runs_for_every_step_count():
    """10 steps once divided by zero (a 10% warm-up ending on step 0): the quickstart's setting."""
    from aimass.tasks.text_generation import warm_up

    for steps in range(1, 200):
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=1e-3, total_steps=steps, pct_start=warm_up(steps)
        )
        for _ in range(steps - 1):
            optimizer.step()
            schedule.step()
        assert 0 < optimizer.param_groups[0]["lr"] <= 1e-3


@pytest.mark.slow
def test_examples_train_whole_by_default_and_a_cut_is_counted_and_said(caplog):
    """Without ``max_length`` every example trains whole (the longest sets it); a given one cuts
    the longer examples' start, which the stats count and a warning says (it used to be a silent 256)."""
    prompts, answers = headline_pairs(3, chars=100)
    data = (prompts + [("word " * 300).strip()], answers + ["A long one"])
    params = {**GEN_PARAMS, "max_steps": 1, "batch_size": 2}
    params.pop("max_length")
    whole = TextGenerator(**params).fit(data, progress=False)
    tokenizer = whole.base_.tokenizer
    longest = max(len(encode_example(tokenizer, c, None)[0]) for c in _as_chats(*data))
    assert longest > 256 and whole.max_length_ == -(-longest // 16) * 16
    assert whole.train_stats_["truncated_examples"] == 0
    with caplog.at_level("WARNING", logger="aimass.train"):
        cut = TextGenerator(**params, max_length=64).fit(data, progress=False)
    assert cut.train_stats_["max_length"] == 64 and cut.train_stats_["truncated_examples"] >= 1
    assert "longer than max_length=64" in caplog.text


def _as_chats(prompts, answers):
    return [
        [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
        for p, a in zip(prompts, answers)
    ]
