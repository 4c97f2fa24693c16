"""Fixtures for text generation: real BBC article -> headline pairs."""

from __future__ import annotations

import json

import pytest


def bbc_pairs(n: int = 32, chars: int = 300, skip: int = 0) -> list[tuple[str, str]]:
    """``n`` (article opening, headline) pairs, round-robin over the five BBC topics."""
    from aimass.data import bbc_news_path

    folders = [sorted(f.glob("*.txt")) for f in sorted(bbc_news_path().iterdir())]
    pairs = []
    for i in range(skip, skip + n):
        text = folders[i % 5][i // 5].read_text(encoding="latin-1").strip()
        headline, _, body = text.partition("\n")
        pairs.append((" ".join(body.split())[:chars], headline.strip()))
    return pairs


def chat_line(article: str, headline: str) -> str:
    messages = [
        {"role": "system", "content": "Write the headline of this news article."},
        {"role": "user", "content": article},
        {"role": "assistant", "content": headline},
    ]
    return json.dumps({"messages": messages})


@pytest.fixture(scope="session")
def headlines_jsonl(tmp_path_factory):
    """32 BBC pairs as chat JSONL, the OpenAI fine-tuning format."""
    path = tmp_path_factory.mktemp("gen") / "headlines.jsonl"
    path.write_text("".join(chat_line(a, h) + "\n" for a, h in bbc_pairs(32, chars=200)))
    return path


GEN_PARAMS = {"max_steps": 2, "batch_size": 4, "max_length": 96, "max_new_tokens": 8, "eval_examples": 1}


@pytest.fixture(scope="session")
def headlines_model(headlines_jsonl):
    """A LoRA fine-tune of SmolLM2 (2 steps of 4 on BBC pairs), trained, evaluated and registered once."""
    import aimass

    ds = aimass.import_dataset(headlines_jsonl, name="headlines")
    return aimass.train_model("text-generation", ds, name="headlines", progress=False, seed=0, **GEN_PARAMS)
