"""Find the named entities in texts with an exported aimass entity tagger.

Needs only numpy, plus onnxruntime and tokenizers when the folder holds ``model.onnx`` (the
encoder; README.md has the versions). Run it from anywhere:

    python predict.py "first text" "second text"
    python predict.py --file texts.txt          # one text per line, or a JSON list of strings

Each text gives one JSON line: {"input": ..., "entities": [{"text", "label", "start", "end",
"score"}]}, character offsets (end exclusive) and the mean probability of the entity's tags, as
aimass serves it. From Python: ``EntityModel(folder).predict_entities(texts)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# shared: units.py (`aimass export` writes that file's code here: predict.py stands alone)
from aimass.standalone.units import add_to_units, decode, emissions, lexical, unit_means, units  # noqa: E402, F401

# end shared
# isort: split
# shared: texts_in.py
from aimass.standalone.texts_in import checked, read_texts  # noqa: E402, F401

# end shared

BATCH = 16  # encoder windows a run


class EntityModel:
    """The exported tagger: ``predict_entities(texts)`` and ``predict(texts)``.

    Args:
        folder: the exported folder (default: the one this file is in).
        threads: CPU threads for onnxruntime (default: its own choice).
    """

    def __init__(self, folder: str | Path = HERE, threads: int | None = None):
        folder = Path(folder)
        self.meta = json.loads((folder / "entities.json").read_text(encoding="utf-8"))
        self.weights = {
            k: np.load(folder / f"crf_{k}.npy") for k in ("lex_ids", "lex", "dense", "transitions")
        }
        self.session = None
        if self.meta["network"]:  # the CRF reads the encoder's unit vectors too
            import onnxruntime as ort
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.tokenizer.no_truncation()
            self.tokenizer.no_padding()
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            graph = str(folder / "model.onnx")
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
            self.pca = {k: np.load(folder / f"pca_{k}.npy") for k in ("mean", "components")}

    def unit_vectors(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's units as the encoder reads them: the mean of the states of the sub-word tokens
        overlapping each unit, L2-normalised, reduced by the stored PCA (a long text in windows)."""
        meta = self.meta
        head, room = [meta["cls_id"], *meta["prefix_ids"]], meta["room"]
        windows = []  # (text index, token ids, offsets)
        for i, text in enumerate(texts):
            enc = self.tokenizer.encode(text, add_special_tokens=False)
            for s in range(0, max(1, len(enc.ids)), room):
                windows.append((i, enc.ids[s : s + room], enc.offsets[s : s + room]))
        cuts = [np.array(units(t), dtype=np.int64).reshape(-1, 2) for t in texts]
        sums, counts = None, [np.zeros(len(c), dtype=np.float32) for c in cuts]
        windows.sort(key=lambda w: len(w[1]))
        for b in range(0, len(windows), BATCH):
            batch = windows[b : b + BATCH]
            rows = [[*head, *w[1], meta["sep_id"]] for w in batch]
            width = max(map(len, rows))
            ids = np.full((len(rows), width), meta["pad_id"], dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, row in enumerate(rows):
                ids[r, : len(row)], mask[r, : len(row)] = row, 1
            states = self.session.run(["states"], {"input_ids": ids, "attention_mask": mask})[0]
            if sums is None:
                sums = [np.zeros((len(c), states.shape[-1]), dtype=np.float32) for c in cuts]
            for r, (i, _, offsets) in enumerate(batch):
                mine = states[r, len(head) : len(head) + len(offsets)]
                add_to_units(sums[i], counts[i], cuts[i], np.array(offsets).reshape(-1, 2), mine)
        out = []
        for i in range(len(texts)):
            vectors = unit_means(sums[i], counts[i]) if sums else np.zeros((len(cuts[i]), 1), np.float32)
            reduced = (vectors - self.pca["mean"]) @ self.pca["components"].T * np.float32(meta["pca_scale"])
            out.append(reduced.astype(np.float64))
        return out

    def predict_entities(self, texts: list[str]) -> list[list[dict]]:
        """Per text, its entities: ``{"text", "label", "start", "end", "score"}``."""
        texts = list(texts)
        dense = self.unit_vectors(texts) if self.session is not None else [None] * len(texts)
        out = []
        for text, vectors in zip(texts, dense):
            scores = emissions(self.weights, lexical(text), vectors)
            found, means = decode(text, scores, self.weights["transitions"], self.meta["tags"])
            out.append(
                [
                    {"text": text[s:e], "label": label, "start": s, "end": e, "score": round(p, 4)}
                    for (s, e, label), p in zip(found, means)
                ]
            )
        return out

    def predict(self, texts: list[str]) -> list[list[list]]:
        """Per text, its ``[start, end, label]`` spans."""
        return [[[e["start"], e["end"], e["label"]] for e in found] for found in self.predict_entities(texts)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Find the entities in texts; prints one JSON line per text.")
    parser.add_argument("texts", nargs="*", help="texts to read")
    parser.add_argument("--file", help="a UTF-8 file: one text per line, or a .json list of strings")
    args = parser.parse_args(argv)
    texts = checked(list(args.texts) + (read_texts(args.file) if args.file else []))
    if not texts:
        parser.error("give at least one text, or --file FILE")
    for text, found in zip(texts, EntityModel(HERE).predict_entities(texts)):
        print(json.dumps({"input": text, "entities": found}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
