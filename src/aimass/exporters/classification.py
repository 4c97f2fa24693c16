"""The export recipes of the classification tasks (text and image), registered in the table of
:mod:`aimass.exporters.table` under the tasks' names: ``onnx`` (the serving engine's graphs, no
torch) and ``safetensors`` (the fine-tuned weights, for PyTorch users).

torch, safetensors and the runtimes' export modules are imported where they are used: exporting
is rare, and ``aimass.api`` (which imports this package) stays light for the command line.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from aimass.compressors.onnx import stored_calibration
from aimass.data.images import byte_limit, pixel_limit
from aimass.errors import ConfigError
from aimass.exporters.table import register_export
from aimass.tasks import get_task
from aimass.tasks.recipe import Recipe


def _onnx_files(model, folder: Path) -> dict:
    """The estimator's own ONNX export, with runtime.json named preprocessing.json and any
    safetensors file turned into ``.npy`` files (``lexical.safetensors`` -> ``lexical_idf.npy``,
    ``lexical_weight.npy``) so that the folder needs no safetensors package."""
    from safetensors.numpy import load_file  # heavy: safetensors (and numpy's reader) on export only

    work = folder / ".onnx"
    served = _served_onnx(model)
    if served is not None:  # an onnx / onnx-int8 version: the very graphs it serves, no second export
        shutil.copytree(served, work)
        report = json.loads((work / "export.json").read_text())
    else:
        report = model.export_onnx(
            work, **stored_calibration(getattr(model, "data_digest_", None), get_task(model.task))
        )
    for path in sorted(work.iterdir()):
        if path.suffix == ".safetensors":
            for key, array in load_file(str(path)).items():
                np.save(folder / f"{path.stem}_{key}.npy", np.ascontiguousarray(array), allow_pickle=False)
        elif path.name == "runtime.json":
            path.rename(folder / "preprocessing.json")
        elif path.name != "export.json":
            path.rename(folder / path.name)
    shutil.rmtree(work)
    return {k: v for k, v in report.items() if k not in ("files", "seconds")}


def _served_onnx(model) -> Path | None:
    """The ONNX folder a compressed version already predicts from (both graphs and the check
    report the compressor wrote), or None for a torch model."""
    folder = getattr(getattr(model, "runtime_", None), "folder", None)
    if folder is None:
        return None
    needed = ("model.onnx", "model.int8.onnx", "export.json")
    return Path(folder) if all((Path(folder) / f).is_file() for f in needed) else None


def _float_state(state: dict, drop: tuple[str, ...] = ()) -> dict:
    """``state`` as plain contiguous tensors; quantised weights cannot be stored as safetensors."""
    import torch  # heavy: the export layer is imported by aimass.api

    out = {}
    for key, value in state.items():
        if key.startswith(drop):
            continue
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            raise ConfigError(
                "This version holds quantised weights (int8-dynamic), which safetensors cannot store.",
                hint="Export the version it was compressed from, or use --format onnx.",
            )
        out[key] = value.detach().contiguous()
    return out


def _text_weights(model, folder: Path) -> dict:
    """model.safetensors (encoder, head, TF-IDF weights), config.json, tokenizer.json, the TF-IDF
    vocabulary and idf, preprocessing.json."""
    from safetensors.torch import save_file  # heavy: torch

    net = model.net_.eval()
    save_file(_float_state(net.state_dict()), str(folder / "model.safetensors"), metadata={"format": "pt"})
    net.encoder.config.to_json_file(str(folder / "config.json"))
    tokenizer = model.tokenizer_
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    if model.lexical_ is not None:
        meta, tensors = model.lexical_.state()
        (folder / "lexical.json").write_text(json.dumps(meta, ensure_ascii=False))
        np.save(folder / "lexical_idf.npy", tensors["lexical.idf"].numpy(), allow_pickle=False)
    prep = {
        "prefix": model.prefix_,
        "max_length": model.max_length_,
        "pad_id": tokenizer.pad_token_id,
        "pad_token": tokenizer.pad_token,
        "pooling": "mean of the token vectors over the attention mask, L2-normalised",
        "backbone": model.backbone_,
        # a pruned child's removed heads and narrower feed-forward layers: config.json cannot say them
        "structure": getattr(model, "structure_", None),
    }
    if getattr(model, "threshold_", None) is not None:  # multi-label: a sigmoid per label, labels from here
        prep |= {"activation": "sigmoid", "threshold": model.threshold_}
    (folder / "preprocessing.json").write_text(json.dumps(prep, indent=2, ensure_ascii=False) + "\n")
    return {}


def _image_weights(model, folder: Path) -> dict:
    """model.safetensors (backbone with its BatchNorm statistics, head) and preprocessing.json."""
    from safetensors.torch import save_file  # heavy: torch

    state = _float_state(model.net_.eval().state_dict(), drop=("encoder.classifier.",))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    prep = {
        "image_size": model.image_size_,
        "resize": model.resize_,
        "resample": "bicubic",
        "normalisation": "(x * 255 - 127) / 128 on RGB in [0, 1]",
        "tta": bool(model.tta),
        "max_pixels": pixel_limit(),
        "max_bytes": byte_limit(),
        "backbone": model.backbone_,
        "structure": getattr(model, "structure_", None),  # a distilled/pruned child's smaller stages
        "activation": getattr(model, "activation", "softmax"),  # sigmoid: one yes/no per label
        "threshold": getattr(model, "threshold_", None),  # from which a multi-label model gives a label
    }
    from aimass.backbones.pixel_net import PixelNet  # torch: the console imports the recipes

    if isinstance(model.net_, PixelNet):  # the portfolio picked the pixel baseline: no backbone
        prep["pixels"] = model.net_.config()
    (folder / "preprocessing.json").write_text(json.dumps(prep, indent=2) + "\n")
    return {}


def _text_samples() -> list[str]:
    from aimass.runtime.text_export import CHECK_TEXTS  # heavy: torch, transformers

    return list(CHECK_TEXTS)


def _image_samples() -> list[bytes]:
    from aimass.runtime.image_export import check_images  # heavy: torch

    return check_images()


_TEXT_EXAMPLE = ("The striker scored twice in the final.", "Shares fell 3% after the forecast.")
_IMAGE_EXAMPLE = ("photo1.jpg", "photo2.png")
_TEXT_HOW = (
    "Each text (after the prefix in `preprocessing.json`, if any) is split into tokens by `tokenizer.json`, "
    "truncated to `max_length` tokens and padded to the longest text of its batch. The network turns the "
    "token ids and attention mask into one score per label. If the model has a TF-IDF branch "
    "(`lexical.json`), predict.py adds its scores: the text's n-grams (lower-cased words, or characters, "
    "as `lexical.json` says) that are in the vocabulary, weighted (1 + log count) x idf, scaled to unit "
    "length, times the branch's weights. A softmax of the sum gives the probabilities."
)
_TEXT_TORCH_HOW = (
    "`transformers` builds the encoder from `config.json` (nothing is downloaded) and the fine-tuned "
    "weights are loaded from `model.safetensors` (keys `encoder.*`, `head.dense.*` and, with a TF-IDF "
    "branch, `head.lexical.weight`). The logits are a linear layer over the mean of the encoder's token "
    "vectors (over the attention mask, L2-normalised). " + _TEXT_HOW
)
_IMAGE_HOW = (
    "Each image is decoded as aimass decodes it for training: the pixel count is checked against "
    "`max_pixels` from the file header before decoding, the EXIF orientation is applied, transparency "
    "is flattened on white and the image is converted to RGB. Its shorter side is resized to `resize` "
    "pixels (bicubic), the centre square is kept, then the centre `image_size` x `image_size` crop, as "
    "floats in [0, 1] (divided by 255), channels first. The network turns those into one score per label "
    "and a softmax gives the probabilities."
)
_IMAGE_ONNX_HOW = _IMAGE_HOW + (
    " The backbone's normalisation is part of the graph, and so is the average with the mirror image "
    "when the model was trained with test-time augmentation."
)
_IMAGE_TORCH_HOW = _IMAGE_HOW + (
    " The network (EfficientNet-Lite0, an L2-normalised 1280-d feature, a linear layer) is defined in "
    "predict.py; it scales the pixels as (x * 255 - 127) / 128 itself. When `preprocessing.json` says "
    "`tta`, the probabilities are averaged with those of the mirror image. When `preprocessing.json` "
    "has `pixels` (the model's portfolio picked its pixel baseline), the network is instead a linear "
    "layer over the standardised pixels (their channel mean when `grey`), and `model.safetensors` "
    "holds `mean`, `scale` and `linear.*`."
)

_MULTILABEL_EXAMPLE = ("The minister said the new phone tax would hit music sales.", "Shares fell 3%.")
_MULTILABEL_HOW = _TEXT_HOW.replace(
    "A softmax of the sum gives the probabilities.",
    "A sigmoid of each label's sum gives its probability (the labels are not exclusive); a text is "
    "given every label whose probability is at least `threshold` in `preprocessing.json`, or its best "
    "label when none is.",
)
TEXT_ONNX = Recipe(
    _onnx_files,
    "text_onnx.py",
    "TextModel",
    ("onnxruntime", "numpy", "tokenizers"),
    _text_samples,
    "text",
    _TEXT_EXAMPLE,
    _TEXT_HOW,
)
TEXT_MULTILABEL_ONNX = replace(TEXT_ONNX, example=_MULTILABEL_EXAMPLE, how=_MULTILABEL_HOW)
IMAGE_ONNX = Recipe(
    _onnx_files,
    "image_onnx.py",
    "ImageModel",
    ("onnxruntime", "numpy", "pillow"),
    _image_samples,
    "image",
    _IMAGE_EXAMPLE,
    _IMAGE_ONNX_HOW,
)
TEXT_SAFETENSORS = Recipe(
    _text_weights,
    "text_torch.py",
    "TextModel",
    ("torch", "transformers", "safetensors", "tokenizers", "numpy"),
    _text_samples,
    "text",
    _TEXT_EXAMPLE,
    _TEXT_TORCH_HOW,
)
TEXT_MULTILABEL_SAFETENSORS = replace(
    TEXT_SAFETENSORS,
    example=_MULTILABEL_EXAMPLE,
    how=_TEXT_TORCH_HOW.replace(_TEXT_HOW, _MULTILABEL_HOW),
)
IMAGE_SAFETENSORS = Recipe(
    _image_weights,
    "image_torch.py",
    "ImageModel",
    ("torch", "safetensors", "numpy", "pillow"),
    _image_samples,
    "image",
    _IMAGE_EXAMPLE,
    _IMAGE_TORCH_HOW,
)
_IMAGE_MULTILABEL = (
    "and a softmax gives the probabilities.",
    "and a sigmoid of each score gives that label's probability (the labels are not exclusive); an "
    "image is given every label whose probability is at least `threshold` in `preprocessing.json`, or "
    "its best label when none is.",
)
IMAGE_MULTILABEL_ONNX = replace(IMAGE_ONNX, how=IMAGE_ONNX.how.replace(*_IMAGE_MULTILABEL))
IMAGE_MULTILABEL_SAFETENSORS = replace(
    IMAGE_SAFETENSORS, how=IMAGE_SAFETENSORS.how.replace(*_IMAGE_MULTILABEL)
)

register_export("text-classification", "onnx", TEXT_ONNX)
register_export("text-classification", "safetensors", TEXT_SAFETENSORS)
register_export("text-multilabel", "onnx", TEXT_MULTILABEL_ONNX)
register_export("text-multilabel", "safetensors", TEXT_MULTILABEL_SAFETENSORS)
register_export("image-classification", "onnx", IMAGE_ONNX)
register_export("image-classification", "safetensors", IMAGE_SAFETENSORS)
register_export("image-multilabel", "onnx", IMAGE_MULTILABEL_ONNX)
register_export("image-multilabel", "safetensors", IMAGE_MULTILABEL_SAFETENSORS)
