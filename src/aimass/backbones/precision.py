"""The precision encoders embed and fine-tune in: bfloat16 where the CPU computes it natively.

On a CPU with AMX tiles (Intel Sapphire Rapids and later), ``torch.autocast("cpu", bfloat16)``
runs matrix products in bfloat16 (sums kept in float32, layer norms and softmax in float32): twice
as many texts a second for multilingual-e5-small on 2 cores, vectors at cosine 0.99999 to
float32's; training steps of encoder blocks and LoRA 1.5 to 2 times faster at the same accuracy
(``bench/results/HISTORY.md``, "bfloat16 where the CPU has AMX"). Elsewhere bfloat16 is emulated
and slower, so float32 stays. Used by the embedders, the classifiers' feature cache and stage 2
(:class:`aimass.train.callbacks.MixedPrecision`) and LoRA fine-tuning.

``AIMASS_PRECISION`` overrides the choice: ``bf16`` (force), ``fp32`` (never), ``auto`` (default).

>>> import torch
>>> with low_precision(enabled=False):
...     torch.is_autocast_enabled("cpu")
False
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from aimass.errors import ConfigError

CHOICES = ("auto", "bf16", "fp32")


@functools.cache
def _native_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def bf16_enabled() -> bool:
    """Whether encoders embed and train in bfloat16 here (``AIMASS_PRECISION``, else the CPU)."""
    choice = (os.environ.get("AIMASS_PRECISION") or "auto").lower()
    if choice not in CHOICES:
        raise ConfigError(
            f"AIMASS_PRECISION={choice!r} is not one of {', '.join(CHOICES)}.",
            where="AIMASS_PRECISION",
            hint="Unset it (auto: bfloat16 where the CPU has AMX), or set bf16 or fp32.",
        )
    return choice == "bf16" or (choice == "auto" and _native_bf16())


def low_precision(enabled: bool | None = None):
    """A context in which forward passes run in bfloat16 autocast (``enabled``, by default
    :func:`bf16_enabled`); outputs come back as bfloat16 or float32: cast them with ``.float()``."""
    if enabled is None:
        enabled = bf16_enabled()
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)
