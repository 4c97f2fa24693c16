"""Text classification from an exported folder with onnxruntime and tokenizers only (no torch).

The folder (written by :meth:`aimass.tasks.text_classification.TextClassifier.export_onnx`):

* ``model.onnx`` / ``model.int8.onnx``: token ids + attention mask -> the encoder-side logits;
* ``tokenizer.json``: the backbone's tokenizer;
* ``runtime.json``: classes, text prefix, max length, padding token, and for a multi-label
  model the ``sigmoid`` activation and the threshold;
* ``lexical.json`` + ``lexical.safetensors`` (optional): the TF-IDF branch, added to the logits
  here because string n-grams do not belong in a graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from aimass.runtime.onnx_export import session, softmax
from aimass.tfidf import TfidfLite


class TextRuntime:
    """``predict_proba(texts)`` like the estimator's, from an ONNX folder.

    Args:
        folder: an exported folder.
        int8: use ``model.int8.onnx``.
        threads: intra-op threads (default: every core this process may use).
    """

    def __init__(self, folder: str | Path, *, int8: bool = False, threads: int | None = None):
        folder = Path(folder)
        self.folder, self.int8 = folder, int8
        meta = json.loads((folder / "runtime.json").read_text())
        self.classes_ = meta["classes"]
        self.activation = meta.get("activation", "softmax")  # sigmoid: a multi-label model's labels
        self.threshold_ = meta.get("threshold")
        self.prefix = meta.get("prefix") or ""
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(meta["max_length"])
        self.tokenizer.enable_padding(pad_id=meta["pad_id"], pad_token=meta["pad_token"])
        self.session = session(folder / ("model.int8.onnx" if int8 else "model.onnx"), threads)
        self.lexical, self.lexical_weight = _lexical(folder)

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), len(self.classes_)), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths pad less
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logits = self.logits([texts[i] for i in idx])
            out[idx] = 1 / (1 + np.exp(-logits)) if self.activation == "sigmoid" else softmax(logits)
        return out

    def logits(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        logits = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        if self.lexical is not None:
            logits = logits + self.lexical.scores(texts, self.lexical_weight)
        return logits

    def predict(self, texts: list[str]) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(texts).argmax(axis=1)]


def _lexical(folder: Path):
    if not (folder / "lexical.json").exists():
        return None, None

    meta = json.loads((folder / "lexical.json").read_text())
    tensors = load_file(str(folder / "lexical.safetensors"))
    return TfidfLite(meta["settings"], meta["vocabulary"], tensors["idf"]), tensors["weight"]
