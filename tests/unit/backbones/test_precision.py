"""``AIMASS_PRECISION``: bfloat16 where the CPU has AMX, or as the operator says."""

from __future__ import annotations

import pytest
import torch

from aimass.backbones import precision
from aimass.errors import ConfigError


def test_the_setting_forces_or_turns_off_bfloat16_and_a_wrong_one_names_itself(monkeypatch):
    monkeypatch.setenv("AIMASS_PRECISION", "fp32")
    assert not precision.bf16_enabled()
    with precision.low_precision():
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("AIMASS_PRECISION", "BF16")
    assert precision.bf16_enabled()
    with precision.low_precision():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("AIMASS_PRECISION", "auto")
    assert precision.bf16_enabled() == precision._native_bf16()
    monkeypatch.setenv("AIMASS_PRECISION", "half")
    with pytest.raises(ConfigError, match="AIMASS_PRECISION") as wrong:
        precision.bf16_enabled()
    assert "fp32" in str(wrong.value) or "fp32" in (wrong.value.hint or "")


def test_features_embedded_in_one_precision_are_not_read_back_in_the_other(monkeypatch, tmp_path):
    from aimass.train.cache import cache_path

    monkeypatch.setenv("AIMASS_HOME", str(tmp_path))
    monkeypatch.setenv("AIMASS_PRECISION", "fp32")
    fp32 = cache_path("minilm-l6|digest|128", ["a text"])
    assert cache_path("minilm-l6|digest|128", ["a text"]) == fp32
    monkeypatch.setenv("AIMASS_PRECISION", "bf16")
    assert cache_path("minilm-l6|digest|128", ["a text"]) != fp32
