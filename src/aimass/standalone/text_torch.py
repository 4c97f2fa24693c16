"""Classify texts with the fine-tuned weights of an aimass text classifier, in PyTorch.

Needs only torch, transformers, safetensors, tokenizers and numpy (README.md has the versions).
The encoder is rebuilt by ``transformers`` from config.json (no download) and its fine-tuned
weights, the linear head and the TF-IDF branch's weights are model.safetensors. Run it as:

    python predict.py "first text" "second text"

Each text gives one JSON line: {"input": ..., "label": ..., "scores": {label: probability}}
(a multi-label model's: "labels", every label from its threshold).
From Python: ``TextModel(folder).predict_proba(texts)``; ``TextModel(folder).net`` is the
``torch.nn.Module`` (token ids + attention mask -> the encoder's part of the logits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoConfig, AutoModel

HERE = Path(__file__).resolve().parent
# shared: text_prep.py (`aimass export` writes that file's code here: predict.py stands alone)
from aimass.standalone.text_prep import SPACES, WORD, Tfidf  # noqa: E402, F401

# end shared
# isort: split
# shared: answer.py
from aimass.standalone.answer import labels_of  # noqa: E402, F401

# end shared
# isort: split
# shared: texts_in.py
from aimass.standalone.texts_in import checked, read_texts  # noqa: E402, F401

# end shared


class Classifier(nn.Module):
    """Token ids + attention mask -> logits: the encoder, the mean of its token vectors over the
    mask (L2-normalised), a linear layer."""

    def __init__(self, folder: Path, n_classes: int):
        super().__init__()
        config = AutoConfig.from_pretrained(folder)
        self.encoder = AutoModel.from_config(config, add_pooling_layer=False)
        self.dense = nn.Linear(config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.dense(nn.functional.normalize(pooled, dim=-1))


HEAD_COUNTS = ("num_attention_heads", "n_heads")  # BERT's (and DeBERTa's), DistilBERT's
HEAD_ROWS = ("query", "q_lin", "query_proj")  # the query projection: one slice of rows per head


def reshape(encoder: nn.Module, weights: dict) -> None:
    """Shape the encoder built from config.json like a pruned model's saved ``weights`` (config.json
    cannot say that a layer lost attention heads or feed-forward channels): every linear layer
    whose saved weight has another shape is replaced by one of the saved shape, and each attention
    module then runs as many heads as its query projection has rows for."""
    for name, module in list(encoder.named_modules()):
        saved = weights.get(f"{name}.weight")
        if isinstance(module, nn.Linear) and saved is not None and saved.shape != module.weight.shape:
            parent, _, child = name.rpartition(".")
            out, into = saved.shape
            setattr(encoder.get_submodule(parent) if parent else encoder, child, nn.Linear(into, out))
    for module in encoder.modules():
        query = next((getattr(module, n) for n in HEAD_ROWS if hasattr(module, n)), None)
        size = getattr(module, "attention_head_size", None)
        if not isinstance(query, nn.Linear) or not size:
            continue
        for count in HEAD_COUNTS:
            if hasattr(module, count):
                setattr(module, count, query.out_features // size)
        if hasattr(module, "all_head_size"):
            module.all_head_size = query.out_features


class TextModel:
    """The exported model: ``predict_proba(texts)`` and ``predict(texts)``."""

    def __init__(self, folder: str | Path = HERE):
        folder = Path(folder)
        self.labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        prep = json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
        self.prefix = prep.get("prefix") or ""
        self.sigmoid = prep.get("activation") == "sigmoid"  # multi-label: one yes/no score per label
        self.threshold = prep.get("threshold")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(prep["max_length"])
        self.tokenizer.enable_padding(pad_id=prep["pad_id"], pad_token=prep["pad_token"])
        state = load_file(str(folder / "model.safetensors"))
        self.net = Classifier(folder, len(self.labels)).eval()
        weights = {k[8:]: v for k, v in state.items() if k.startswith("encoder.")}
        reshape(self.net.encoder, weights)
        self.net.encoder.load_state_dict(weights)
        self.net.dense.load_state_dict({k[11:]: v for k, v in state.items() if k.startswith("head.dense.")})
        lexical = state.get("head.lexical.weight")
        self.lexical = Tfidf(folder, lexical.numpy()) if lexical is not None else None

    @torch.inference_mode()
    def logits(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        ids = torch.tensor([e.ids for e in encoded], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.long)
        logits = self.net(ids, mask).numpy()
        return logits + self.lexical.scores(texts) if self.lexical is not None else logits

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            logits = torch.from_numpy(self.logits(texts[start : start + batch_size]))
            out[start : start + batch_size] = (
                logits.sigmoid() if self.sigmoid else logits.softmax(-1)
            ).numpy()
        return out

    def predict(self, texts: list[str]) -> list:
        """Each text's label (a multi-label model's: its list of labels)."""
        return [self.answer(row) for row in self.predict_proba(texts)]

    def answer(self, row: np.ndarray):
        """One row of probabilities as a label, or (multi-label) every label from the threshold."""
        return labels_of(row, self.labels, self.threshold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify texts; prints one JSON line per text.")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="a UTF-8 file: one text per line, or a .json list of strings")
    args = parser.parse_args(argv)
    texts = checked(list(args.texts) + (read_texts(args.file) if args.file else []))
    if not texts:
        parser.error("give at least one text, or --file FILE")
    model = TextModel(HERE)
    for text, row in zip(texts, model.predict_proba(texts)):
        scores = {label: round(float(p), 6) for label, p in zip(model.labels, row)}
        key = "label" if model.threshold is None else "labels"
        line = {"input": text, key: model.answer(row), "scores": scores}
        print(json.dumps(line, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
