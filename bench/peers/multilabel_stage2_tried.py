"""Tried and not kept (bench/results/HISTORY.md, "Multi-label text"): does fine-tuning MiniLM's top
blocks with a binary cross-entropy beat the frozen multi-label head on bench/multilabel.py's split?

    python bench/peers/multilabel_stage2_tried.py 2 3     # top 2 blocks, 3 epochs (then: 4 4)
"""

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["AIMASS_HOME"] = tempfile.mkdtemp()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from multilabel import build_rows, write_jsonl

import aimass
from aimass.data.multilabel import split_labels
from aimass.evaluation.metrics import decide, multi_hot, multilabel_report
from aimass.tasks.label_sets import best_threshold as _best_threshold
from aimass.train import stages
from aimass.train.cache import cached_embeddings

train_rows, test_rows = build_rows(0)
folder = Path(os.environ["AIMASS_HOME"]) / "d"
folder.mkdir()
ds = aimass.import_dataset(
    write_jsonl(folder / "t.jsonl", train_rows), test_path=write_jsonl(folder / "s.jsonl", test_rows)
)
r = aimass.train_model(None, ds.id)
model = aimass.load(r["model"])
print("stage 1 test micro", r["metrics"]["micro_f1"], model.candidates_[model.chosen_])
net = model.net_
n_top = int(sys.argv[1]) if len(sys.argv) > 1 else 2
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
start = net.n_layers - n_top


def feats(split):
    texts = ds.texts(split)
    labels = [split_labels(x) for x in ds.labels(split)]
    c = cached_embeddings(
        net.encoder,
        model.tokenizer_,
        model._prefixed(texts),
        f"p|{split}|{start}",
        max_length=model.max_length_,
        keep_layer=start,
        progress=False,
    )
    lex = model.lexical_.transform(texts) if model.lexical_ else None
    Y = torch.tensor(multi_hot(labels, model.classes_), dtype=torch.float32)
    return stages.Features(c["pooled"], Y.argmax(1), c["hidden"], c["mask"], lex), Y, texts, labels


tr, Ytr, _, _ = feats("train")
va, Yva, _, lva = feats("valid")
te, Yte, tt, lte = feats("test")
bce = torch.nn.functional.binary_cross_entropy_with_logits
stages.set_trainable(net, n_top)
learn = stages.top_learner(
    net,
    tr,
    None,
    start=start,
    seed=0,
    batch_size=16,
    loss=lambda logits, index: bce(logits.float(), Ytr[index]),
)
t = time.perf_counter()
res = stages.train_top(learn.unfreeze(n_top), epochs, (1e-4, 1e-3 / 3))
print("stage 2 s", round(time.perf_counter() - t, 1))
net.eval()


def proba(f):
    with torch.no_grad():
        out = []
        for s in range(0, len(f), 64):
            idx = torch.arange(s, min(s + 64, len(f)))
            out.append(torch.sigmoid(stages._top_forward(net, start, f, idx)))
        return torch.cat(out).numpy()


pv = proba(va)
thr, sc = _best_threshold(pv, Yva.numpy().astype(int), None, decide)
print("valid after", sc, thr)
pt = proba(te)
rep = multilabel_report(tt, lte, pt, model.classes_, thr)
print(
    "test after: micro",
    round(rep["micro_f1"], 4),
    "macro",
    round(rep["macro_f1"], 4),
    "exact",
    round(rep["accuracy"], 4),
)
