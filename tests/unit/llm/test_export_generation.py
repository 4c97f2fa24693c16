"""A language-model fine-tune exported for other runtimes, its LoRA merged: a transformers folder
whose own predict.py answers as aimass does, and a GGUF for llama.cpp and ollama that is the base's
GGUF with the trained projections replaced (read back here with gguf's reader and transformers')."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

import aimass
from aimass.cli import app
from aimass.errors import ConfigError
from aimass.exporters.generation import write_gguf
from aimass.llm import backbone
from aimass.llm.backbone import LLMBackbone, get_llm_backbone, gguf_path

PROMPT = "Write a one-line headline for: Shares in the carmaker rose 5% after record profits."


def test_the_safetensors_export_answers_as_aimass_does(headlines_model, tmp_path):
    out = tmp_path / "headlines-hf"
    result = CliRunner().invoke(
        app, ["export", headlines_model["model"], "--format", "safetensors", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "next token as aimass's at 100.0%" in result.output, result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["check"]["max_abs_diff_logits"] < 1e-3 and manifest["task"] == "text-generation"
    assert {"config.json", "model.safetensors", "tokenizer.json", "predict.py", "README.md"} <= set(
        manifest["files"]
    )
    # readable by another user (`vllm serve .` in a container); pins pip can install (no "+cpu")
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir() if p.is_file()} == {"0o644"}
    assert "+" not in (out / "requirements.txt").read_text()
    want = aimass.load(headlines_model["model"]).generate(PROMPT, max_tokens=24).choices[0].text.strip()
    spec = importlib.util.spec_from_file_location("exported_predict", out / "predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)  # the folder's own script, as `python predict.py` runs it
    assert predict.answer(PROMPT, 24) == want  # the merged weights greedy-decode aimass's answer


def test_the_gguf_export_is_the_base_gguf_with_merged_projections(headlines_model, tmp_path):
    manifest = aimass.export(headlines_model["model"], "gguf", tmp_path / "headlines-gguf")
    check = manifest["check"]
    assert check["quant"] == "q8_0" and check["next_token_agreement"] >= 0.9, check
    assert {"model.gguf", "Modelfile", "README.md"} == set(manifest["files"])
    assert json.loads((tmp_path / "headlines-gguf/export.json").read_text())["check"] == check

    base, ours = (
        gguf.GGUFReader(str(gguf_path())),
        gguf.GGUFReader(str(tmp_path / "headlines-gguf/model.gguf")),
    )
    for key in ("tokenizer.chat_template", "tokenizer.ggml.tokens", "llama.attention.head_count_kv"):
        assert ours.fields[key].contents() == base.fields[key].contents()
    theirs = {t.name: t for t in base.tensors}
    assert len(ours.tensors) == len(theirs)
    changed = set()
    for tensor in ours.tensors:
        before = theirs[tensor.name]
        if tensor.tensor_type == before.tensor_type and np.array_equal(tensor.data, before.data):
            continue
        changed.add(tensor.name.split(".")[2])
        assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0, tensor.name
    # exactly the seven LoRA-trained projections changed; embeddings and norms are the base's bytes
    assert changed == {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}


def test_a_base_without_a_gguf_file_is_refused_with_the_way_to_convert_it(tmp_path, monkeypatch):
    smollm = get_llm_backbone("smollm2-135m")
    monkeypatch.setitem(backbone._TABLE, "local-no-gguf", LLMBackbone("local-no-gguf", smollm.locate))
    with pytest.raises(ConfigError, match="no GGUF file") as caught:
        write_gguf(SimpleNamespace(backbone_="local-no-gguf"), tmp_path, "q8_0")
    assert "convert_hf_to_gguf.py" in caught.value.hint and not any(tmp_path.iterdir())
