"""A language model's evaluation: perplexity on whole examples (not cut to the training length) and
on the answer tokens only, ``--data FILE`` scoring every conversation of the file, a bounded and
sampled held-out pass, and ROUGE-L words in every script."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import aimass
from aimass import api
from aimass.data import list_datasets
from aimass.llm import backbone as llm_backbone
from aimass.llm.backbone import get_llm_backbone, load_tokenizer
from aimass.llm.metrics import exact_match, rouge_l, words
from aimass.tasks.text_generation import (
    TextGeneration,
    TextGenerator,
    _collate,
    _token_loss,
    encode_example,
    sample_held_out,
)

LONG_PROMPT = "Summarise this article: " + " ".join(
    ["The committee met on Tuesday to discuss the proposed changes to the regional transport plan."] * 12
)
LONG_ANSWER = "The committee discussed changes to the regional transport plan."


def _chat(prompt: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


@pytest.fixture
def quiet(headlines_model):
    """The registered fine-tune, loaded as its own instance (on the shared base) that answers no
    prompt in ``evaluate`` (``eval_examples=0``): the loss pass alone, in a second or two."""
    model = TextGenerator.load(headlines_model["path"])
    model.eval_examples = 0
    yield model
    model.release()


# ------------------------------------------------ 1 and 5. what a held-out example is scored on
def test_the_scored_span_ends_at_the_end_of_turn_token_training_keeps_the_newline():
    tokenizer = load_tokenizer(get_llm_backbone("smollm2-135m"))
    messages = [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]

    def learned(**kwargs) -> str:
        ids, labels = encode_example(tokenizer, messages, None, **kwargs)
        return tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != -100])

    assert learned(trailing=False) == "Paris.<|im_end|>Rome.<|im_end|>"
    assert learned() == "Paris.<|im_end|>\nRome.<|im_end|>\n"  # training's labels, as before


def test_perplexity_is_measured_on_the_whole_example_not_the_training_length(quiet):
    """The fine-tune trained on 96 tokens per example; a 240-token held-out example is scored whole
    (before: on its last 96 tokens), its answer and end-of-turn token only, as a hand count with
    transformers finds."""
    conversation = _chat(LONG_PROMPT, LONG_ANSWER)
    examples, cut = quiet.held_out_examples([conversation])
    ids = examples[0][0]
    assert len(ids) > 200 > quiet.max_length_ and cut == 0
    tokenizer = quiet.base_.tokenizer
    prompt = tokenizer.apply_chat_template(conversation[:1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(conversation, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert full_ids == ids and tokenizer.decode(full_ids[-1:]) == "\n"
    with quiet.base_.using(None) as model, torch.inference_mode():
        logits = model(input_ids=torch.tensor([full_ids])).logits[0, :-1].float()
    nll = -torch.log_softmax(logits, -1)[torch.arange(len(full_ids) - 1), torch.tensor(full_ids[1:])]
    by_hand = nll[len(prompt_ids) - 1 : -1].mean().item()  # the answer and <|im_end|>, not the "\n"
    assert quiet.loss([conversation], base=True) == pytest.approx(by_hand, abs=1e-4)
    report = quiet.evaluate(([LONG_PROMPT], [LONG_ANSWER]))
    assert report["loss_base"] == pytest.approx(by_hand, abs=1e-4) and report["truncated"] == 0
    assert report["perplexity_base"] == pytest.approx(math.exp(by_hand), rel=1e-3)


def test_a_conversation_longer_than_the_context_is_counted_and_said(quiet, monkeypatch, caplog):
    spec = get_llm_backbone("smollm2-135m")
    monkeypatch.setitem(llm_backbone._TABLE, spec.name, dataclasses.replace(spec, context_length=128))
    assert quiet.eval_length() == 128  # the backbone's context (longer than max_length_ 96)
    report = quiet.evaluate(([LONG_PROMPT, "Say hi."], [LONG_ANSWER, "Hi!"]))
    assert report["truncated"] == 1 and report["n_scored"] == 2
    assert (
        "1 of the 2 held-out conversations" in report["warnings"][0] and "128 tokens" in report["warnings"][0]
    )
    assert "truncated" in caplog.text


def test_scoring_only_the_labelled_positions_gives_the_full_logits_loss(quiet):
    """The evaluation's ``logits_to_keep`` pass equals the training-style pass over every position,
    on a padded batch whose answers sit at different positions."""
    tokenizer = quiet.base_.tokenizer
    examples = [
        encode_example(tokenizer, c, None, trailing=False)
        for c in (_chat("Say hi.", "Hi there!"), _chat(LONG_PROMPT[:300], LONG_ANSWER))
    ]
    batch = _collate(examples, tokenizer.pad_token_id)
    with quiet.base_.using(quiet.adapter_) as model, torch.inference_mode():
        full, n_full, right_full = _token_loss(model, batch)
        kept, n_kept, right_kept = _token_loss(model, batch, labelled_only=True)
    assert (n_kept, right_kept) == (n_full, right_full) and n_full > 10
    assert float(kept) == pytest.approx(float(full), rel=1e-5)


# ------------------------------------------------ 2. --data FILE: every conversation, not imported
def test_evaluate_data_file_scores_every_conversation_without_importing_it(headlines_model, tmp_path):
    """A 5-row chat JSONL (2 rows the version trained on, 3 new, 1 malformed line) is evaluated
    whole: no 20% test split of it, no 10-row minimum, no dataset stored, overlap counted."""
    trained = aimass.load_dataset(headlines_model["dataset"]).rows("train")[:2]
    new = [_chat(f"Write a headline: item {i} happened in town today.", f"Item {i}") for i in range(3)]
    lines = [json.dumps({"messages": m}) for m in [r["messages"] for r in trained] + new]
    path = tmp_path / "held_out.jsonl"
    path.write_text("\n".join([*lines, '{"messages": [{"role": "robot"}]}']) + "\n")
    stored = len(list_datasets())
    report = api.evaluate(headlines_model["model"], str(path))
    assert report["n"] == 5 and report["n_scored"] == 5 and report["n_generated"] == 1
    assert report["overlap_with_train"] == 2 and report["rejected"] == 1  # the malformed line, said
    assert len(list_datasets()) == stored


def test_eval_data_reads_prompt_completion_tables_and_chat_files(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text("source,target\nHello,Hi\nBye,See you\n,empty prompt\n")
    conversations, answers = TextGeneration.eval_data(table)
    assert answers == ["Hi", "See you"] and conversations[0] == _chat("Hello", "Hi")
    (tmp_path / "texts.csv").write_text("text,label\nfine,pos\n")
    assert TextGeneration.eval_data(tmp_path / "texts.csv") is None  # a classifier's table
    assert TextGeneration.eval_data(tmp_path / "no-such-dataset") is None  # a stored dataset's name


# ------------------------------------------------ 3. a bounded held-out pass, a sampled generated set
def test_the_loss_pass_is_capped_and_sampled(quiet, monkeypatch):
    prompts = [f"Write a headline: event {i} took place." for i in range(12)]
    answers = [f"Event {i}" for i in range(12)]
    report = quiet.evaluate((prompts, answers), max_scored=3)
    assert (report["n"], report["n_scored"]) == (12, 3)
    monkeypatch.setenv("AIMASS_MAX_EVAL_CONVERSATIONS", "4")
    assert quiet.evaluate((prompts, answers))["n_scored"] == 4
    scored, _ = sample_held_out(12, 4, 0, quiet.seed)
    assert quiet.evaluate(([prompts[i] for i in scored], [answers[i] for i in scored]))[
        "loss"
    ] == pytest.approx(quiet.evaluate((prompts, answers))["loss"], abs=1e-4)


def test_the_generated_examples_are_a_seeded_sample_not_the_first_rows(quiet):
    scored, shown = sample_held_out(100, 512, 8, 0)
    assert len(scored) == 100 and len(shown) == 8 and shown != list(range(8))
    assert shown == sample_held_out(100, 512, 8, 0)[1] != sample_held_out(100, 512, 8, 1)[1]
    assert set(sample_held_out(100, 20, 8, 0)[1]) <= set(sample_held_out(100, 20, 8, 0)[0])
    quiet.eval_examples, quiet.max_new_tokens = 2, 2
    prompts = [f"Write a headline: event {i} took place." for i in range(12)]
    report = quiet.evaluate((prompts, [f"Event {i}" for i in range(12)]), top_k=2)
    picked = [prompts[i] for i in sample_held_out(12, 512, 2, quiet.seed)[1]]
    assert [row["prompt"] for row in report["side_by_side"]] == picked != prompts[:2]


# ------------------------------------------------ 4. ROUGE-L words in every script
def test_identical_answers_score_1_in_every_script():
    for text in ("Привет мир", "Ελλάδα", "مرحبا بالعالم", "naïve résumé", "नमस्ते दुनिया", "שלום עולם"):
        assert rouge_l([text], [text]) == 1.0, text
    assert words("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]  # vowel signs stay in their word
    assert words("cafe\u0301 CAFÉ ＧＤＰ") == ["café", "café", "gdp"]  # NFKC, then case folding
    assert rouge_l(["Москва столица России"], ["Столица России Москва"]) == pytest.approx(2 / 3)
    assert exact_match(["STRASSE"], ["Straße"]) == 1.0


def test_english_figures_are_rouge_scores():
    """Computed with the ``rouge-score`` package (0.1.2, ``RougeScorer(["rougeL"])``, no stemmer)."""
    pairs = {
        ("Ad sales boost Time Warner profit", "Time Warner profit rises on ad sales"): 0.4615384615384615,
        ("U.S. stocks fell 2.5% on Monday", "us stocks fall 2 5 percent monday"): 0.5333333333333333,
        ("Dollar gains on Greenspan speech", "Greenspan speech lifts the dollar"): 0.4000000000000001,
        ("don't stop", "do not stop"): 0.3333333333333333,
    }
    for (prediction, reference), score in pairs.items():
        assert rouge_l([prediction], [reference]) == pytest.approx(score, abs=1e-12)
