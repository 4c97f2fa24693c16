"""The frozen-backbone feature cache, keyed by backbone + data + settings.

A second ``fit`` on the same data (a retrain, a resume, a hyper-parameter
search) skips the encoder pass entirely.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from aimass import paths
from aimass.backbones.precision import bf16_enabled
from aimass.backbones.text_net import embed
from aimass.train.progress import make_progress


def cache_path(key: str, texts: list[str]) -> Path:
    """Where the features of ``texts`` under ``key`` are kept; keyed by the precision the encoder
    embeds in too, so ``AIMASS_PRECISION=fp32`` reproduces a float32 fit rather than reading the
    bfloat16 features of an earlier one."""
    digest = hashlib.sha256(f"{key}|{'bf16' if bf16_enabled() else 'fp32'}".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "replace") + b"\0")
    return paths.subdir(paths.FEATURES) / f"{digest.hexdigest()[:32]}.safetensors"


def cached_embeddings(
    encoder,
    tokenizer,
    texts: list[str],
    key: str,
    *,
    max_length: int,
    keep_layer: int | None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Embeddings (and layer ``keep_layer``'s hidden states) for ``texts``, from disk if cached."""

    def compute() -> dict[str, torch.Tensor]:
        with make_progress(progress) as bar:
            task = bar.add_task("embed (frozen backbone)", total=len(texts), info="")
            return embed(
                encoder,
                tokenizer,
                texts,
                max_length=max_length,
                keep_layer=keep_layer,
                progress=lambda n: bar.update(task, advance=n),
            )

    return cached(cache_path(key, texts), compute)


def cached(path: Path, compute) -> dict[str, torch.Tensor]:
    """``compute()``'s tensors, stored at ``path`` (safetensors) and read back next time."""
    if path.exists():
        try:
            return load_file(str(path))
        except Exception:  # a torn or foreign file: recompute and overwrite
            path.unlink(missing_ok=True)
    out = compute()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in out.items()}, str(tmp))
    os.replace(tmp, path)
    return out
