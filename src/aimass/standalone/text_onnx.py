"""Classify texts with an exported aimass text classifier.

Needs only onnxruntime, numpy and tokenizers (README.md has the versions). Run it from anywhere:

    python predict.py "first text" "second text"
    python predict.py --file texts.txt          # one text per line, or a JSON list of strings

Each text gives one JSON line: {"input": ..., "label": ..., "scores": {label: probability}}; a
multi-label model's (``preprocessing.json`` has ``"activation": "sigmoid"`` and a ``threshold``)
gives {"input": ..., "labels": [every label scoring at least the threshold, else the best one],
"scores": ...}. From Python: ``TextModel(folder).predict_proba(texts)`` gives one row per text, one
column per label of labels.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

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


class TextModel:
    """The exported model: ``predict_proba(texts)`` and ``predict(texts)``.

    Args:
        folder: the exported folder (default: the one this file is in).
        int8: use ``model.int8.onnx`` (smaller and faster; scores differ slightly).
        threads: CPU threads for onnxruntime (default: its own choice).
    """

    def __init__(self, folder: str | Path = HERE, int8: bool = False, threads: int | None = None):
        folder = Path(folder)
        self.labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        prep = json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
        self.prefix = prep.get("prefix") or ""
        self.sigmoid = prep.get("activation") == "sigmoid"  # multi-label: one yes/no score per label
        self.threshold = prep.get("threshold")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(prep["max_length"])
        self.tokenizer.enable_padding(pad_id=prep["pad_id"], pad_token=prep["pad_token"])
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        graph = folder / ("model.int8.onnx" if int8 else "model.onnx")
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.lexical = Tfidf(folder) if (folder / "lexical.json").exists() else None

    def logits(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        feed = {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        }
        logits = self.session.run(["logits"], feed)[0]
        return logits + self.lexical.scores(texts) if self.lexical is not None else logits

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            logits = self.logits(texts[start : start + batch_size])
            out[start : start + batch_size] = 1 / (1 + np.exp(-logits)) if self.sigmoid else softmax(logits)
        return out

    def predict(self, texts: list[str]) -> list:
        """Each text's label (a multi-label model's: its list of labels)."""
        return [self.answer(row) for row in self.predict_proba(texts)]

    def answer(self, row: np.ndarray):
        """One row of probabilities as a label, or (multi-label) every label from the threshold."""
        return labels_of(row, self.labels, self.threshold)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify texts; prints one JSON line per text.")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="a UTF-8 file: one text per line, or a .json list of strings")
    parser.add_argument("--int8", action="store_true", help="use the int8 model (smaller, faster)")
    args = parser.parse_args(argv)
    texts = checked(list(args.texts) + (read_texts(args.file) if args.file else []))
    if not texts:
        parser.error("give at least one text, or --file FILE")
    model = TextModel(HERE, int8=args.int8)
    for text, row in zip(texts, model.predict_proba(texts)):
        scores = {label: round(float(p), 6) for label, p in zip(model.labels, row)}
        key = "label" if model.threshold is None else "labels"
        line = {"input": text, key: model.answer(row), "scores": scores}
        print(json.dumps(line, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
