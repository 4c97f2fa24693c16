"""Write a fitted TextClassifier as a self-contained ONNX folder (see :mod:`aimass.runtime.text`)
and check it against torch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import nn

from aimass.backbones.text_net import mean_pool
from aimass.runtime.onnx_export import export_graph, quantize_int8
from aimass.runtime.text import TextRuntime
from aimass.version import __version__

FORMAT = 1
CHECK_TEXTS = [
    "The striker scored twice as United won the cup final.",
    "Shares fell after the bank cut its profit forecast for the year.",
    "这家酒店的服务很好，房间也很干净。",
    "质量太差了，用了两天就坏了，不推荐。",
    "ok",
]


class EncoderLogits(nn.Module):
    """Token ids + mask -> the head's logits from the pooled embedding (the graph's part)."""

    def __init__(self, net):
        super().__init__()
        self.encoder, self.dense = net.encoder, net.head.dense

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.dense(mean_pool(hidden, attention_mask))


def export_text(model, folder: str | Path, *, int8: bool = True, texts: list[str] | None = None) -> dict:
    """Export ``model`` to ``folder``; returns the files and the largest differences from torch."""

    began = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = list(texts or []) + CHECK_TEXTS
    tok = model.tokenizer_
    enc = tok(model._prefixed(texts[:2]), truncation=True, max_length=model.max_length_, padding=True)
    args = (torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"]))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    export_graph(
        EncoderLogits(model.net_), args, folder / "model.onnx", ["input_ids", "attention_mask"], axes
    )
    tok.backend_tokenizer.save(str(folder / "tokenizer.json"))
    meta = {
        "format": FORMAT,
        "task": model.task,
        "classes": list(model.classes_),
        "prefix": model.prefix_,
        "max_length": model.max_length_,
        "pad_id": tok.pad_token_id,
        "pad_token": tok.pad_token,
        "backbone": model.backbone_,
        "activation": getattr(model, "activation", "softmax"),  # sigmoid: one yes/no per label
        "threshold": getattr(model, "threshold_", None),  # from which a multi-label model gives a label
        "aimass_version": __version__,
    }
    (folder / "runtime.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    if model.lexical_ is not None:
        lex_meta, lex_tensors = model.lexical_.state()
        (folder / "lexical.json").write_text(json.dumps(lex_meta, ensure_ascii=False))
        weight = model.net_.head.lexical.weight.detach().numpy()
        save_file(
            {"idf": lex_tensors["lexical.idf"].numpy(), "weight": np.ascontiguousarray(weight)},
            str(folder / "lexical.safetensors"),
        )
    if int8:
        quantize_int8(folder / "model.onnx", folder / "model.int8.onnx")
    report = {"seconds": 0.0, **check(model, folder, texts, int8)}
    report["files"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    report["seconds"] = round(time.perf_counter() - began, 2)
    (folder / "export.json").write_text(json.dumps(report, indent=2))
    return report


def check(model, folder: Path, texts: list[str], int8: bool) -> dict:
    """Largest absolute differences between the torch model and the exported graph(s)."""
    want_logits = model.logits(texts).numpy()
    want = model.predict_proba(texts)
    fp32 = TextRuntime(folder)
    out = {
        "max_abs_diff_logits": float(np.abs(fp32.logits(texts) - want_logits).max()),
        "max_abs_diff_proba": float(np.abs(fp32.predict_proba(texts) - want).max()),
    }
    if int8:
        q = TextRuntime(folder, int8=True).predict_proba(texts)
        out["int8_max_abs_diff_proba"] = float(np.abs(q - want).max())
        out["int8_same_label"] = float(np.mean(q.argmax(1) == want.argmax(1)))
    return out
