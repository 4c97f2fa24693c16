"""The backbone table: lookups, errors, local folders and the language default."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from aimass.backbones import available_backbones, default_backbone, get_backbone, layers, param_groups
from aimass.backbones.text_net import Head
from aimass.errors import ConfigError, NotFoundError


def test_table_and_defaults():
    assert {"minilm-l6", "multilingual-e5-small"} <= set(available_backbones())
    assert default_backbone("en") == "minilm-l6"
    assert default_backbone("zh") == "multilingual-e5-small"
    with pytest.raises(NotFoundError, match="available: .*minilm-l6"):
        get_backbone("bert-huge")


def test_hub_name_is_resolved_lazily():
    spec = get_backbone("hf:sentence-transformers/all-MiniLM-L6-v2")
    assert spec.locate() == "sentence-transformers/all-MiniLM-L6-v2"  # nothing is downloaded here


def test_a_hub_name_never_names_a_folder_of_this_machine(tmp_path, monkeypatch):
    """transformers loads a folder when the id it is given is one: ``hf:/srv/x`` (or a relative
    ``hf:x`` that exists here) would read a folder no data root grants."""
    from aimass.llm.backbone import get_llm_backbone

    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    for name in (f"hf:{tmp_path}", "hf:../etc", "hf:org/name", "hf:", "hf:a/b/c", "hf:~/x"):
        for lookup in (get_backbone, get_llm_backbone):
            with pytest.raises(ConfigError, match="Hugging Face model id|a folder of this machine"):
                lookup(name)
    assert get_llm_backbone("hf:org/other").locate() == "org/other"  # no such folder: a Hub id


def test_local_folder_loads_like_a_bundled_backbone(tmp_path):
    folder = tmp_path / "my-encoder"
    shutil.copytree(get_backbone("minilm-l6").locate(), folder)
    tokenizer, encoder = get_backbone(str(folder)).load()
    ids = tokenizer(["a local model folder"], return_tensors="pt")
    assert encoder(**ids).last_hidden_state.shape[-1] == 384
    assert len(layers(encoder)) == 6
    pickled = tmp_path / "pickled-encoder"  # the same weights as a pytorch_model.bin: never unpickled
    shutil.copytree(folder, pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="cannot be loaded from") as refused:
        get_backbone(str(pickled)).load()
    assert "never loads pickled weights" in refused.value.hint


def test_discriminative_learning_rates():
    _, encoder = get_backbone("minilm-l6").load()
    head = Head(384, 3)
    groups = param_groups(encoder, head.parameters(), n_top=2, lr_head=1e-3, lr_body=1e-4, decay=0.5)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4, 5e-5]
    top = {id(p) for p in layers(encoder)[-1].parameters()}
    assert {id(p) for p in groups[1]["params"]} == top
    assert all(isinstance(p, torch.nn.Parameter) for g in groups for p in g["params"])
