"""The ``onnx`` export of an entity tagger (``token-classification``): a folder that finds entities
without aimass or torch.

What it holds: the CRF's weights and the PCA as ``.npy`` files (numpy reads them without pickle),
``entities.json`` (the tags and how the encoder is fed), a ``predict.py``
(:mod:`aimass.standalone.entities_onnx`, reading texts with the very code aimass reads them with:
:mod:`aimass.standalone.units`) and, when the encoder's ``network`` won the fit, the frozen encoder
as ``model.onnx`` (token ids -> last hidden states) with its ``tokenizer.json``. A lexical CRF's
folder needs numpy alone. The folder is checked before it is written out: ``predict.py`` against
aimass on a few texts (the same entities, their scores within ``check.max_abs_diff_score``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aimass import standalone
from aimass.exporters.folder import import_script, pins, write_requirements
from aimass.exporters.table import register_export
from aimass.tasks.recipe import Recipe

TASK = "token-classification"
CHECK_TEXTS = (
    "新华社北京一月一日电，江泽民在人民大会堂发表讲话。",
    "Li Na won the Australian Open in Melbourne after beating Dominika Cibulkova.",
    "国务院总理李鹏今天在上海会见了日本经济代表团。",
    "",
)


def write(model, folder: Path) -> dict:
    """Every file of the folder; returns the check numbers."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in model.weights_.arrays().items():
        np.save(folder / f"crf_{key}.npy", np.ascontiguousarray(array), allow_pickle=False)
    network = model.reducer_ is not None
    meta = {
        "format": 1,
        "task": TASK,
        "tags": model.weights_.tags,
        "labels": model.labels_,
        "network": network,
    }
    if network:
        meta.update(_encoder(model, folder))
    (folder / "entities.json").write_text(
        json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (folder / "predict.py").write_text(standalone.script("entities_onnx.py"), encoding="utf-8")
    packages = ("numpy", "onnxruntime", "tokenizers") if network else ("numpy",)
    write_requirements(folder, packages)
    check = _check(model, folder)
    (folder / "README.md").write_text(_readme(model, meta, packages, check), encoding="utf-8")
    return check


def _encoder(model, folder: Path) -> dict:
    """The frozen encoder as ``model.onnx`` (ids and mask in, ``states`` out), its tokenizer and
    the PCA; what ``entities.json`` says of how it is fed."""
    import torch  # heavy: only an export traces the encoder
    from torch import nn

    from aimass.runtime.onnx_export import export_graph

    class States(nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    tok = model.tokenizer_
    enc = tok(list(CHECK_TEXTS[:2]), padding=True)
    args = (torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"]))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    names = ["input_ids", "attention_mask"]
    export_graph(
        States(model.encoder_), args, folder / "model.onnx", names, axes, ("states", axes["input_ids"])
    )
    tok.backend_tokenizer.save(str(folder / "tokenizer.json"))
    for key in ("mean", "components"):
        np.save(folder / f"pca_{key}.npy", np.ascontiguousarray(model.reducer_[key]), allow_pickle=False)
    prefix = tok(model.prefix_, add_special_tokens=False)["input_ids"] if model.prefix_ else []
    return {
        "backbone": model.backbone_,
        "prefix_ids": prefix,
        "cls_id": tok.cls_token_id,
        "sep_id": tok.sep_token_id,
        "pad_id": tok.pad_token_id,
        "room": min(510, getattr(tok, "model_max_length", 512) - 2) - len(prefix),
        "pca_scale": float(model.reducer_["scale"]),
    }


def _check(model, folder: Path) -> dict:
    """``predict.py`` (imported from the folder) against aimass on :data:`CHECK_TEXTS`."""
    got = import_script(folder).EntityModel(folder).predict_entities(list(CHECK_TEXTS))
    want = model.predict_entities(list(CHECK_TEXTS))
    same = [
        [(e["start"], e["end"], e["label"]) for e in g] == [(e["start"], e["end"], e["label"]) for e in w]
        for g, w in zip(got, want, strict=True)
    ]
    diffs = [abs(a["score"] - b["score"]) for g, w in zip(got, want, strict=True) for a, b in zip(g, w)]
    return {
        "check_inputs": len(CHECK_TEXTS),
        "predict_py_same_entities": float(np.mean(same)),
        "max_abs_diff_score": round(max(diffs, default=0.0), 6),
        "entities_found": sum(len(w) for w in want),
    }


def _readme(model, meta: dict, packages: tuple[str, ...], check: dict) -> str:
    network = (
        f"the frozen encoder `{meta['backbone']}` as `model.onnx` (token ids -> last hidden states) with "
        "`tokenizer.json`, and the PCA that reduces each unit's vector (`pca_*.npy`);"
        if meta["network"]
        else "no encoder: the lexical CRF won the fit, so numpy alone runs it;"
    )
    pinned = "\n".join(f"{name}=={v}" for name, v in pins(packages).items())
    return f"""# Entity tagger, exported by aimass

Finds {", ".join(meta["labels"])} entities in texts, without aimass or torch.

## What is here

- `predict.py`: reads each text as aimass reads it (units, hashed lexical features, the encoder's
  unit vectors), decodes the CRF (Viterbi) and scores each entity (forward-backward);
- `crf_*.npy`: the CRF's weights; `entities.json`: its tags and how the encoder is fed;
- {network}
- `export.json`: the source version and the check below.

## Run it

```bash
pip install -r requirements.txt      # {pinned.replace(chr(10), ", ")}
python predict.py "{CHECK_TEXTS[0]}"
python predict.py --file texts.txt   # one text per line, or a .json list of strings
```

Each text gives one JSON line: `{{"input": ..., "entities": [{{"text", "label", "start", "end",
"score"}}]}}` (character offsets, end exclusive). From Python:
`EntityModel(folder).predict_entities(texts)`.

## Checked when written

On {check["check_inputs"]} texts, `predict.py` found the same entities as aimass on
{check["predict_py_same_entities"]:.0%} of them ({check["entities_found"]} entities), scores within
{check["max_abs_diff_score"]}.
"""


ENTITIES_ONNX = register_export(
    TASK,
    "onnx",
    Recipe(
        write=None,
        script=None,
        runner="EntityModel",
        packages=("numpy", "onnxruntime", "tokenizers"),
        samples=lambda: list(CHECK_TEXTS),
        unit="text",
        example=CHECK_TEXTS[:1],
        how="CRF decoded in numpy; the encoder (if any) in onnxruntime",
        folder=write,
    ),
)
